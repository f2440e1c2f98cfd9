"""Test data made here: tiny random BERT models and small labelled datasets."""

from __future__ import annotations

import csv
import random
from pathlib import Path

POSITIVE = ["good", "great", "fine", "happy", "love", "nice", "excellent", "fun", "bright", "warm"]
NEGATIVE = ["bad", "awful", "poor", "sad", "hate", "ugly", "terrible", "boring", "dark", "cold"]
NEUTRAL = [
    "the",
    "a",
    "movie",
    "film",
    "was",
    "is",
    "very",
    "plot",
    "actor",
    "story",
    "it",
    "this",
    "and",
    "quite",
    "really",
    "scene",
    "music",
    "ending",
]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def build_tiny_bert(folder: Path, *, layers: int = 2, hidden: int = 32, seed: int = 0) -> Path:
    """A randomly initialised BERT (a few thousand weights) with a word-level vocabulary."""
    from worker.quiet import native_start_up_silenced  # Keras 2 and quiet, before TF loads

    with native_start_up_silenced():
        import tf_keras
        from transformers import BertConfig, BertTokenizerFast, TFBertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(POSITIVE + NEGATIVE + NEUTRAL)) + [".", ",", "!", "?"]
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(folder / "vocab.txt"), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=hidden * 2,
        max_position_embeddings=128,
    )
    tf_keras.utils.set_random_seed(seed)
    model = TFBertModel(config)
    model(model.dummy_inputs)
    model.save_pretrained(str(folder))
    return folder


def sentiment_rows(n: int, seed: int = 0, *, noise: float = 0.0) -> list[tuple[str, int]]:
    """Sentences whose label is decided by which kind of sentiment word they contain."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.choices(NEUTRAL, k=rng.randint(2, 12))
        words.insert(rng.randrange(len(words) + 1), rng.choice(POSITIVE if label else NEGATIVE))
        if rng.random() < noise:
            label = 1 - label
        rows.append((" ".join(words), label))
    return rows


def write_csv(path: Path, header: list[str], rows: list[tuple]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path
