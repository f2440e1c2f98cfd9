"""Test data made here: tiny random BERT models and small labelled datasets."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

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


PEOPLE = ["john", "mary", "alice", "peter"]
SURNAMES = ["smith", "jones"]
PLACES = ["paris", "london", "berlin", "rome"]
COMPANIES = ["acme", "globex", "initech"]
FILM_WORDS = ["film", "movie", "actor", "scene"]
# Words of the entity vocabulary, and a word piece: "parises" is tokenized "paris", "##es".
ENTITY_WORDS = [*PEOPLE, *SURNAMES, *PLACES, *COMPANIES, "new", "york", "visited", "met", "##es"]


def build_tiny_bert(
    folder: Path,
    *,
    layers: int = 2,
    hidden: int = 32,
    seed: int = 0,
    extra_words: list[str] | None = None,
) -> Path:
    """A randomly initialised BERT (a few thousand weights) with a word-level vocabulary
    (`extra_words` appended to it)."""
    from worker.quiet import native_start_up_silenced  # Keras 2 and quiet, before TF loads

    with native_start_up_silenced():
        import tf_keras
        from transformers import BertConfig, BertTokenizerFast, TFBertModel

    folder.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + sorted(set(POSITIVE + NEGATIVE + NEUTRAL)) + [".", ",", "!", "?"]
    vocab += extra_words or []
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


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


TOPICS = (("positive", ["great", "love"]), ("negative", ["awful", "hate"]), ("film", FILM_WORDS))


def topic_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Multi-label rows: each label when one of its words is in the text (each independently;
    a row can have none). Few words per label: a tiny random model learns one word feature
    after another, and with ten words per label it needs many epochs for the second."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words = rng.choices([w for w in NEUTRAL if w not in FILM_WORDS], k=rng.randint(2, 8))
        labels = []
        for label, pool in TOPICS:
            if rng.random() < 0.45:
                words.insert(rng.randrange(len(words) + 1), rng.choice(pool))
                labels.append(label)
        rows.append({"text": " ".join(words), "labels": labels})
    return rows


def entity_rows(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """Token-classification rows (cased words, IOB2 tags): people (one or two words), places
    (one word, or "New York") and companies among filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(rng.randint(1, 3)):
            filler = rng.choices(NEUTRAL, k=rng.randint(1, 4))
            words += filler
            tags += ["O"] * len(filler)
            kind = rng.choice(["PER", "LOC", "ORG"])
            if kind == "PER":
                name = [rng.choice(PEOPLE).title()]
                if rng.random() < 0.5:
                    name.append(rng.choice(SURNAMES).title())
            elif kind == "LOC":
                name = ["New", "York"] if rng.random() < 0.3 else [rng.choice(PLACES).title()]
            else:
                name = [rng.choice(COMPANIES).upper()]
            words += name
            tags += [f"B-{kind}"] + [f"I-{kind}"] * (len(name) - 1)
        words.append(".")
        tags.append("O")
        rows.append({"tokens": words, "ner_tags": tags})
    return rows


def first_rows(source: Path, rows: int, target: Path) -> Path:
    """The first `rows` rows of a committed sample (a CSV keeps its header), written to
    `target`: the suite's time budget, where a test needs real data but not all of it."""
    lines = source.read_text().splitlines(keepends=True)
    target.write_text("".join(lines[: rows + (source.suffix == ".csv")]))
    return target
