"""Stage 2: tokenize with `dataset.map(batched=True)`, truncating, padding left to batching."""

from __future__ import annotations

from typing import Any

from datasets import Dataset
from transformers import PreTrainedTokenizerBase

from worker.pipeline.data import LABELS

LENGTH = "length"  # real tokens per row: batching groups by it and progress counts it


def tokenize(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    text_pair_column: str | None,
    max_length: int,
) -> Dataset:
    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
        encoded[LENGTH] = [len(ids) for ids in encoded["input_ids"]]
        return dict(encoded)

    keep = {LABELS}
    return ds.map(
        encode,
        batched=True,
        remove_columns=[c for c in ds.column_names if c not in keep],
        desc="tokenizing",
    )
