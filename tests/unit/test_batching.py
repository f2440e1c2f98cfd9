"""The epoch order: seeded, resumable, every row once, and length-grouped with little padding."""

from __future__ import annotations

import numpy as np

from worker.pipeline.batching import length_grouped_order, shuffled_order


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
