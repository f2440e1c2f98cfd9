"""Stage 3: batches through `model.prepare_tf_dataset`, in an order and shapes we own.

`prepare_tf_dataset(shuffle=True)` draws an unseeded permutation every epoch, which makes a run
neither reproducible nor resumable. So the epoch's order is computed here from (seed, epoch),
applied with `Dataset.select`, and handed over with `shuffle=False`; a resumed run rebuilds the
same order and skips the batches it already trained on.

Padding: each batch is padded to the smallest of a few padded lengths ("buckets") that holds its
longest row. The buckets are chosen per dataset to waste the fewest tokens, so padding stays
low (on CoLA: 0.95 real/padded with 16 buckets) while the train step sees a bounded number of
shapes (XLA compiles, and oneDNN builds kernels, once per shape).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, TFPreTrainedModel

from worker.pipeline.data import LENGTH, column_array

Collator = Callable[[list[dict[str, Any]]], dict[str, Any]]

# Rows sorted together when grouping by length: large enough that batches come out nearly
# uniform in length, small enough that the epoch still mixes the whole dataset.
MEGABATCH_BATCHES = 50


@dataclass(frozen=True)
class EpochPlan:
    """The rows of one epoch in training order, cut into batches."""

    order: np.ndarray
    batch_size: int
    real_tokens: np.ndarray  # per batch
    rows: np.ndarray  # per batch
    longest: np.ndarray  # per batch: its longest row

    @property
    def steps(self) -> int:
        return len(self.rows)

    def first(self, steps: int) -> EpochPlan:
        """The epoch's first `steps` batches only (a run that ends inside this epoch)."""
        if steps >= self.steps:
            return self
        return EpochPlan(
            self.order[: int(self.rows[:steps].sum())],
            self.batch_size,
            self.real_tokens[:steps],
            self.rows[:steps],
            self.longest[:steps],
        )

    def padded_lengths(self, buckets: np.ndarray) -> np.ndarray:
        return buckets[np.searchsorted(buckets, self.longest)]

    def padded_tokens(self, buckets: np.ndarray) -> np.ndarray:
        """Tokens per batch after padding, what the model actually computes on."""
        return self.rows * self.padded_lengths(buckets)


def length_buckets(lengths: np.ndarray, count: int, multiple_of: int = 1) -> np.ndarray:
    """At most `count` padded lengths (multiples of `multiple_of`) that waste the fewest tokens.

    Each row is charged the padding up to the smallest bucket that holds it: with batches
    grouped by length, a batch's longest row is close to all of its rows, so this is close to
    the padding training will see. Exact dynamic programme over the distinct lengths.
    """
    m = max(multiple_of, 1)
    rounded = -(-np.asarray(lengths, dtype=np.int64) // m) * m
    values, counts = np.unique(rounded, return_counts=True)
    if len(values) <= count:
        return values
    # cost[i, j]: rows with lengths values[i..j] padded to values[j]
    n_before = np.concatenate([[0], np.cumsum(counts)])
    sum_before = np.concatenate([[0], np.cumsum(counts * values)])
    i, j = np.meshgrid(np.arange(len(values)), np.arange(len(values)), indexing="ij")
    cost = values[j] * (n_before[j + 1] - n_before[i]) - (sum_before[j + 1] - sum_before[i])
    cost = np.where(j >= i, cost, np.iinfo(np.int64).max // 4)
    best = cost[0].copy()  # best[j]: values[..j] in one bucket ending at j
    choice = []
    for _ in range(count - 1):
        # a new last bucket values[i..j] after the best split of values[..i-1]
        totals = np.concatenate([[0], best[:-1]])[:, None] + cost
        totals[0] = cost[0]
        choice.append(totals.argmin(axis=0))
        best = totals.min(axis=0)
    bounds = [len(values) - 1]
    for pick in reversed(choice):
        start = int(pick[bounds[-1]])
        if start == 0:
            break
        bounds.append(start - 1)
    return values[sorted(set(bounds))]


def shuffled_order(num_rows: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng([seed, epoch]).permutation(num_rows)


def length_grouped_order(lengths: np.ndarray, batch_size: int, seed: int, epoch: int) -> np.ndarray:
    """Shuffle, sort by length within megabatches, then shuffle the batches.

    Every row appears once per epoch (the same multiset as a plain shuffle); only which rows
    share a batch changes, so padding shrinks without changing what the model sees.
    """
    rng = np.random.default_rng([seed, epoch, 1])
    order = rng.permutation(len(lengths))
    mega = batch_size * MEGABATCH_BATCHES
    chunks = []
    for start in range(0, len(order), mega):
        part = order[start : start + mega]
        chunks.append(part[np.argsort(-lengths[part], kind="stable")])
    grouped = np.concatenate(chunks) if chunks else order
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    # Keep the final (short) batch last so every other batch is full.
    full, tail = (batches[:-1], batches[-1:]) if len(grouped) % batch_size else (batches, [])
    permuted = [full[i] for i in rng.permutation(len(full))] + tail
    return np.concatenate(permuted) if permuted else grouped


def plan_epoch(
    ds: Dataset, batch_size: int, seed: int, epoch: int, group_by_length: bool
) -> EpochPlan:
    lengths = column_array(ds, LENGTH).astype(np.int64)
    if group_by_length:
        order = length_grouped_order(lengths, batch_size, seed, epoch)
    else:
        order = shuffled_order(len(lengths), seed, epoch)
    batch_starts = range(0, len(order), batch_size)
    real_tokens = np.array([lengths[order[s : s + batch_size]].sum() for s in batch_starts])
    rows = np.array([len(order[s : s + batch_size]) for s in batch_starts])
    longest = np.array([lengths[order[s : s + batch_size]].max() for s in batch_starts])
    return EpochPlan(order, batch_size, real_tokens, rows, longest)


def bucket_length(buckets: np.ndarray, features: list[dict[str, Any]]) -> int | None:
    """The smallest bucket that holds the batch's longest row; None when none does
    (validation rows longer than every training row: padded to their own longest)."""
    longest = max(len(f["input_ids"]) for f in features)
    at = int(np.searchsorted(buckets, longest))
    return None if at == len(buckets) else int(buckets[at])


class BucketCollator:
    """Per-batch padding up to the smallest bucket that holds the batch's longest row."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, buckets: np.ndarray) -> None:
        self.pad = DataCollatorWithPadding(tokenizer=tokenizer, return_tensors="np")
        self.buckets = buckets

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        length = bucket_length(self.buckets, features)
        if length is None:
            self.pad.padding, self.pad.max_length = "longest", None
        else:
            self.pad.padding, self.pad.max_length = "max_length", length
        return dict(self.pad(features))


def train_batches(
    model: TFPreTrainedModel,
    ds: Dataset,
    plan: EpochPlan,
    collate_fn: Collator,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    ordered = ds.select(plan.order[skip_batches * plan.batch_size :])
    return model.prepare_tf_dataset(
        ordered,
        batch_size=plan.batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        drop_remainder=False,
    )


def eval_rows(ds: Dataset) -> Dataset:
    """Validation rows sorted by length (less padding); metrics do not depend on order. The
    outputs of `eval_batches` come in this order."""
    return ds.select(np.argsort(column_array(ds, LENGTH), kind="stable"))


def eval_batches(
    model: TFPreTrainedModel, rows: Dataset, batch_size: int, collate_fn: Collator
) -> tf.data.Dataset:
    return model.prepare_tf_dataset(
        rows,
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collate_fn,
        drop_remainder=False,
    )
