"""Stage 3: batches through `model.prepare_tf_dataset`, in an order we own.

`prepare_tf_dataset(shuffle=True)` draws an unseeded permutation every epoch, which makes a run
neither reproducible nor resumable. So the epoch's order is computed here from (seed, epoch),
applied with `Dataset.select`, and handed over with `shuffle=False`; a resumed run rebuilds the
same order and skips the batches it already trained on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf
from datasets import Dataset
from transformers import DataCollatorWithPadding, PreTrainedTokenizerBase, TFPreTrainedModel

from worker.pipeline.encode import LENGTH

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
    longest: np.ndarray  # per batch: the row length the batch is padded to (before rounding)

    @property
    def steps(self) -> int:
        return len(self.rows)

    def padded_tokens(self, pad_to_multiple_of: int) -> np.ndarray:
        """Tokens per batch after padding, what the model actually computes on."""
        m = max(pad_to_multiple_of, 1)
        return self.rows * (-(-self.longest // m) * m)


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
    lengths = np.asarray(ds[LENGTH], dtype=np.int64)
    if group_by_length:
        order = length_grouped_order(lengths, batch_size, seed, epoch)
    else:
        order = shuffled_order(len(lengths), seed, epoch)
    batch_starts = range(0, len(order), batch_size)
    real_tokens = np.array([lengths[order[s : s + batch_size]].sum() for s in batch_starts])
    rows = np.array([len(order[s : s + batch_size]) for s in batch_starts])
    longest = np.array([lengths[order[s : s + batch_size]].max() for s in batch_starts])
    return EpochPlan(order, batch_size, real_tokens, rows, longest)


def collator(
    tokenizer: PreTrainedTokenizerBase, pad_to_multiple_of: int
) -> DataCollatorWithPadding:
    """Per-batch padding, rounded up so only a few distinct batch shapes reach the train step."""
    return DataCollatorWithPadding(
        tokenizer=tokenizer,
        pad_to_multiple_of=pad_to_multiple_of if pad_to_multiple_of > 1 else None,
        return_tensors="np",
    )


def train_batches(
    model: TFPreTrainedModel,
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    plan: EpochPlan,
    pad_to_multiple_of: int,
    skip_batches: int = 0,
) -> tf.data.Dataset:
    ordered = ds.select(plan.order[skip_batches * plan.batch_size :])
    return model.prepare_tf_dataset(
        ordered,
        batch_size=plan.batch_size,
        shuffle=False,
        collate_fn=collator(tokenizer, pad_to_multiple_of),
        drop_remainder=False,
    )


def eval_batches(
    model: TFPreTrainedModel,
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    batch_size: int,
    pad_to_multiple_of: int,
) -> tf.data.Dataset:
    """Validation rows sorted by length (less padding); metrics do not depend on order."""
    order = np.argsort(np.asarray(ds[LENGTH]), kind="stable")
    return model.prepare_tf_dataset(
        ds.select(order),
        batch_size=batch_size,
        shuffle=False,
        collate_fn=collator(tokenizer, pad_to_multiple_of),
        drop_remainder=False,
    )


def eval_labels(ds: Dataset) -> np.ndarray:
    """Labels in the order `eval_batches` yields them."""
    order = np.argsort(np.asarray(ds[LENGTH]), kind="stable")
    return np.asarray(ds.select(order)["labels"])
