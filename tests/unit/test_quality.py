"""The verdict on a trained classifier against the majority-class baseline."""

from __future__ import annotations

import numpy as np
import pytest

from worker.pipeline.quality import judge_classification, majority_class

NAMES = ["negative", "positive"]
# 70% positive: a constant "positive" is right 70% of the time.
TARGETS = np.array([1] * 70 + [0] * 30)


def test_majority_class_of_the_training_labels() -> None:
    assert majority_class(np.array([0, 1, 1, 2, 1])) == 1
    assert majority_class(np.array([2, 0, 2, 0])) == 0  # a tie goes to the lowest id


def test_a_single_class_model_is_named_and_advised() -> None:
    final = {"accuracy": 0.7, "matthews_correlation": 0.0}
    report = judge_classification(np.ones(100, int), TARGETS, 1, final, NAMES)
    assert report.baseline["accuracy"] == pytest.approx(0.7)
    assert report.baseline["matthews_correlation"] == 0.0
    assert report.predicted_classes == 1
    (warning,) = report.warnings
    assert "single class ('positive')" in warning and "learning_rate" in warning


def test_a_model_no_better_than_the_baseline_is_flagged() -> None:
    predicted = np.array([1] * 69 + [0] * 1 + [1] * 30)  # two classes, but no skill
    final = {"accuracy": 0.69, "matthews_correlation": -0.05}
    (warning,) = judge_classification(predicted, TARGETS, 1, final, NAMES).warnings
    assert "no better than always answering the majority class" in warning


def test_a_model_that_learned_gets_no_warning() -> None:
    predicted = TARGETS.copy()
    predicted[:5] = 0
    final = {"accuracy": 0.95, "matthews_correlation": 0.89}
    report = judge_classification(predicted, TARGETS, 1, final, NAMES)
    assert report.warnings == [] and report.predicted_classes == 2
    # Imbalanced data: beating the baseline's accuracy by a little is not enough without MCC.
    weak = {"accuracy": 0.705, "matthews_correlation": 0.02}
    assert judge_classification(predicted, TARGETS, 1, weak, NAMES).warnings
