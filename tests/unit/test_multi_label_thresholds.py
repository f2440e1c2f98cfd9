"""Multi-label decision thresholds: each label's own where validation has enough of its rows,
the shared one elsewhere, and the saved ones read back."""

from __future__ import annotations

import numpy as np
import pytest

import worker  # noqa: F401  (Keras 2 before TensorFlow)


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def validation_set() -> tuple[np.ndarray, np.ndarray]:
    """Label 0: positives score 0.32, negatives 0.22 (best cut between them: 0.25 to 0.30);
    label 1: positives 0.82, negatives 0.72 (0.75 to 0.80); label 2: 5 positives only."""
    rows = 60
    targets = np.zeros((rows, 3), dtype=np.int64)
    probabilities = np.full((rows, 3), 0.1)
    targets[:30, 0] = 1
    probabilities[:, 0] = np.where(targets[:, 0] == 1, 0.32, 0.22)
    targets[10:40, 1] = 1
    probabilities[:, 1] = np.where(targets[:, 1] == 1, 0.82, 0.72)
    targets[:5, 2] = 1
    probabilities[:5, 2] = 0.9
    logits = np.vectorize(logit)(probabilities)
    return logits, targets


def test_each_label_with_enough_rows_gets_its_own_threshold() -> None:
    from worker.pipeline.tasks.multi_label import label_set_report

    logits, targets = validation_set()
    report = label_set_report(logits, targets, ["a", "b", "c"], np.zeros(3), decision=None)
    cutoffs = report.label_thresholds
    assert cutoffs is not None
    assert 0.22 < cutoffs["a"] <= 0.32 and 0.72 < cutoffs["b"] <= 0.82
    assert cutoffs["c"] == report.threshold  # 5 positive rows: the shared threshold
    assert report.metrics["f1_macro"] == pytest.approx(1.0)  # every label separated
    # No single threshold separates both a and b: the shared one scores lower.
    assert max(row["f1_macro"] for row in report.thresholds) < 1.0
    assert {c.label: c.f1 for c in report.per_class} == {"a": 1.0, "b": 1.0, "c": 1.0}


def test_saved_thresholds_are_used_as_saved() -> None:
    from types import SimpleNamespace

    from worker.pipeline.tasks.multi_label import label_set_report, saved_decision

    logits, targets = validation_set()
    config = SimpleNamespace(decision_threshold=0.5, decision_thresholds={"a": 0.3, "b": 0.8})
    decision = saved_decision(config, ["a", "b", "c"])
    assert decision.cutoffs.tolist() == [0.3, 0.8, 0.5]  # c: not saved, the shared one
    report = label_set_report(logits, targets, ["a", "b", "c"], np.zeros(3), decision=decision)
    assert report.label_thresholds == {"a": 0.3, "b": 0.8, "c": 0.5}
    old = saved_decision(SimpleNamespace(decision_threshold=0.4), ["a", "b", "c"])
    assert old.cutoffs.tolist() == [0.4, 0.4, 0.4] and old.by_label(["a", "b", "c"]) is None
