"""The epoch order: seeded, resumable, every row once, and length-grouped with little padding."""

from __future__ import annotations

import itertools
from collections import Counter
from pathlib import Path

import numpy as np

from worker.pipeline.batching import (
    BucketCollator,
    length_buckets,
    length_grouped_order,
    shuffled_order,
)


def test_orders_are_seeded_permutations() -> None:
    lengths = np.random.default_rng(0).integers(5, 60, size=1003)
    for make in (
        lambda s, e: shuffled_order(1003, s, e),
        lambda s, e: length_grouped_order(lengths, 16, s, e),
    ):
        first = make(42, 0)
        assert sorted(first.tolist()) == list(range(1003))  # every row exactly once
        assert np.array_equal(first, make(42, 0))  # the same again from (seed, epoch)
        assert not np.array_equal(first, make(42, 1))  # a new order each epoch
        assert not np.array_equal(first, make(7, 0))


def test_length_grouping_cuts_padding() -> None:
    lengths = np.random.default_rng(1).integers(5, 60, size=4000)

    def efficiency(order: np.ndarray) -> float:
        batches = [lengths[order[i : i + 16]] for i in range(0, len(order), 16)]
        return sum(b.sum() for b in batches) / sum(len(b) * b.max() for b in batches)

    assert efficiency(shuffled_order(4000, 0, 0)) < 0.7
    assert efficiency(length_grouped_order(lengths, 16, 0, 0)) > 0.95


def brute_force_waste(lengths: np.ndarray, count: int) -> int:
    """The least padding any choice of `count` buckets (ending at the longest row) allows."""
    values = sorted(set(lengths.tolist()))
    best = None
    for inner in itertools.combinations(values[:-1], count - 1):
        buckets = np.array([*inner, values[-1]])
        waste = int((buckets[np.searchsorted(buckets, lengths)] - lengths).sum())
        best = waste if best is None else min(best, waste)
    return best


def test_length_buckets_waste_the_fewest_tokens() -> None:
    rng = np.random.default_rng(3)
    for trial in range(20):
        lengths = rng.integers(3, 30, size=200) if trial % 2 else rng.poisson(9, 300) + 2
        buckets = length_buckets(lengths, 4)
        assert len(buckets) <= 4 and buckets[-1] == lengths.max()
        waste = int((buckets[np.searchsorted(buckets, lengths)] - lengths).sum())
        assert waste == brute_force_waste(lengths, 4)


def test_length_buckets_respect_multiples_and_small_datasets() -> None:
    lengths = np.array([3, 5, 9, 17, 17, 40])
    assert length_buckets(lengths, 16).tolist() == [3, 5, 9, 17, 40]  # fewer lengths than buckets
    rounded = length_buckets(lengths, 2, multiple_of=8)
    assert all(b % 8 == 0 for b in rounded) and rounded[-1] == 40 and len(rounded) == 2
    assert length_buckets(lengths, 1).tolist() == [40]


def test_every_epoch_trains_on_every_row_and_label_once_however_it_is_batched() -> None:
    rng = np.random.default_rng(4)
    lengths = rng.poisson(10, 1003) + 2
    labels = rng.integers(0, 3, 1003)
    for epoch in range(3):
        grouped = length_grouped_order(lengths, 16, 42, epoch)
        plain = shuffled_order(1003, 42, epoch)
        assert sorted(grouped.tolist()) == sorted(plain.tolist()) == list(range(1003))
        assert Counter(labels[grouped].tolist()) == Counter(labels[plain].tolist())
        assert Counter(lengths[grouped].tolist()) == Counter(lengths[plain].tolist())


def test_batches_are_padded_to_their_bucket(tmp_path: Path) -> None:
    from transformers import BertTokenizerFast

    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\nword\n")
    collate = BucketCollator(BertTokenizerFast(str(tmp_path / "vocab.txt")), np.array([4, 8, 12]))
    batch = collate([{"input_ids": [4] * n, "attention_mask": [1] * n} for n in (2, 5)])
    assert batch["input_ids"].shape == (2, 8)
    assert batch["attention_mask"].sum() == 7
    assert (batch["input_ids"][0, 2:] == 0).all()  # [PAD]
    longer = collate([{"input_ids": [4] * 13, "attention_mask": [1] * 13}])
    assert longer["input_ids"].shape == (1, 13)  # past the last bucket: as long as it is


def test_a_run_that_ends_inside_an_epoch_takes_its_first_batches() -> None:
    from datasets import Dataset

    from worker.pipeline.batching import plan_epoch
    from worker.pipeline.data import LENGTH
    from worker.pipeline.train import run_length

    lengths = np.random.default_rng(5).integers(3, 40, size=100)
    plan = plan_epoch(Dataset.from_dict({LENGTH: lengths}), 16, 42, 1, True)
    assert plan.steps == 7  # six of 16 and the short one of 4, last
    part = plan.first(3)
    assert part.steps == 3 and len(part.order) == 48
    assert part.order.tolist() == plan.order[:48].tolist()
    assert part.real_tokens.sum() == lengths[part.order].sum()
    assert plan.first(7) is plan and plan.first(9) is plan
    # max_steps: as many passes as the steps take, the last one cut short.
    assert run_length(3, 7, None) == (3, 21)
    assert run_length(3, 7, 10) == (2, 10)  # 7 + 3: the second pass has 3 batches
    assert run_length(1, 7, 14) == (2, 14)  # more steps than epochs give: max_steps wins
