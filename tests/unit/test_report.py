"""The evaluation report against numbers worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from worker.pipeline.report import classification_report, regression_report


def logits_for(predicted: list[int], classes: int, confidence: list[float] | None = None):
    """Logits whose argmax is `predicted` (and, for two classes, whose positive-class
    probability is `confidence`)."""
    if confidence is not None:
        p = np.asarray(confidence)
        return np.log(np.stack([1 - p, p], axis=1))
    out = np.zeros((len(predicted), classes))
    out[np.arange(len(predicted)), predicted] = 2.0
    return out


def test_confusion_matrix_and_per_class_scores() -> None:
    targets = np.array([0, 0, 0, 1, 1, 2, 2, 2, 2])
    predicted = [0, 0, 1, 1, 2, 2, 2, 2, 0]
    report = classification_report(logits_for(predicted, 3), targets, ["a", "b", "c"], 2)
    # rows: true a, b, c; columns: predicted a, b, c
    assert report.confusion_matrix == [[2, 1, 0], [0, 1, 1], [1, 0, 3]]
    a, b, c = report.per_class
    assert (a.label, a.support) == ("a", 3)
    assert a.precision == pytest.approx(2 / 3) and a.recall == pytest.approx(2 / 3)
    assert b.precision == pytest.approx(1 / 2) and b.recall == pytest.approx(1 / 2)
    assert c.precision == pytest.approx(3 / 4) and c.recall == pytest.approx(3 / 4)
    assert c.f1 == pytest.approx(0.75)
    assert report.metrics["accuracy"] == pytest.approx(6 / 9, abs=1e-6)
    assert report.baseline["accuracy"] == pytest.approx(4 / 9, abs=1e-6)  # always "c"
    assert report.binary is None and report.predicted_classes == 3 and not report.warnings


def test_binary_scores_and_threshold_table() -> None:
    targets = np.array([0, 0, 1, 1])
    confidence = [0.1, 0.6, 0.4, 0.8]
    report = classification_report(logits_for([], 2, confidence), targets, ["neg", "pos"], 0)
    binary = report.binary
    assert binary is not None and binary.positive_label == "pos"
    # Pairs (positive, negative) ranked correctly: (0.4>0.1), (0.8>0.1), (0.8>0.6); not (0.4<0.6)
    assert binary.roc_auc == pytest.approx(3 / 4)
    by_threshold = {row.threshold: row for row in binary.thresholds}
    assert by_threshold[0.5].predicted_positive == 2  # 0.6 and 0.8
    assert by_threshold[0.5].precision == pytest.approx(0.5)
    assert by_threshold[0.3].predicted_positive == 3 and by_threshold[0.3].recall == 1.0
    assert by_threshold[0.9].predicted_positive == 0 and by_threshold[0.9].precision == 0.0


def test_a_degenerate_model_is_reported_with_its_warning() -> None:
    targets = np.array([1] * 7 + [0] * 3)
    report = classification_report(logits_for([1] * 10, 2), targets, ["no", "yes"], 1)
    assert report.predicted_classes == 1
    assert report.confusion_matrix == [[0, 3], [0, 7]]
    assert "single class ('yes')" in report.warnings[0]
    assert report.binary is not None and report.binary.roc_auc == pytest.approx(0.5)


def test_regression_against_the_training_mean() -> None:
    targets = np.array([1.0, 2.0, 3.0])
    good = regression_report(np.array([1.1, 2.0, 2.9]), targets, train_mean=2.0)
    assert good.baseline["mse"] == pytest.approx(2 / 3) and not good.warnings
    flat = regression_report(np.array([2.0, 2.0, 2.0]), targets, train_mean=2.0)
    assert "training mean" in flat.warnings[0]


def test_a_degenerate_model_whose_scores_rank_well_is_told_so() -> None:
    targets = np.array([1] * 7 + [0] * 3)
    # Every row is called "yes" at 0.5, but the "no" rows score lower: ROC AUC 1.
    confidence = [0.9] * 7 + [0.6] * 3
    report = classification_report(logits_for([], 2, confidence), targets, ["no", "yes"], 1)
    assert report.binary is not None and report.binary.roc_auc == 1.0
    single, ranking = report.warnings
    assert "single class" in single and "ROC AUC 1.000" in ranking
