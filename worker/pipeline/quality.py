"""Is the trained model any good? Its validation scores beside the majority-class baseline, and
the warnings a user must see when it learned nothing.

A classifier that answers the training set's most frequent class for every row scores the
majority rate in accuracy and exactly 0 in Matthews correlation; on imbalanced data (CoLA is 70%
one class) its accuracy looks respectable. Short or small jobs often end there (too few
optimizer steps, a learning rate too low for the data), and a `succeeded` status alone would
hide it. So every classification job is compared with that baseline, and a model that predicts a
single class, or does no better than the baseline, gets a warning that says so and what to try.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import accuracy_score, f1_score

# "No better than the baseline": within this much of its accuracy and of MCC 0. Validation sets
# of a few hundred rows move accuracy by about a point between equally good models.
ACCURACY_MARGIN = 0.01
MCC_MARGIN = 0.05
ADVICE = (
    'try more epochs (or epochs "auto"), a higher learning_rate for a run of one or two passes '
    "(1e-4 for small models such as all-MiniLM-L6-v2; with more passes it did worse than 5e-5), "
    "or more rows, and check the labels (GET /v1/jobs/{id}/events lists what was used)"
)


@dataclass
class QualityReport:
    baseline: dict[str, float]  # the majority-class baseline's validation scores
    predicted_classes: int  # how many distinct classes the model predicts on validation
    warnings: list[str] = field(default_factory=list)


def majority_class(train_labels: np.ndarray) -> int:
    """The training set's most frequent class (ties: the lowest id, as argmax does)."""
    return int(np.bincount(train_labels.astype(np.int64)).argmax())


def judge_classification(
    predicted: np.ndarray,
    targets: np.ndarray,
    majority: int,
    final: dict[str, float],
    class_names: list[str],
) -> QualityReport:
    """Compare the final model's validation predictions with always answering `majority`."""
    targets = targets.astype(np.int64)
    constant = np.full_like(targets, majority)
    baseline = {
        "accuracy": round(float(accuracy_score(targets, constant)), 6),
        "f1_macro": round(float(f1_score(targets, constant, average="macro", zero_division=0)), 6),
        "matthews_correlation": 0.0,
    }
    distinct = np.unique(predicted)
    report = QualityReport(baseline=baseline, predicted_classes=len(distinct))
    accuracy = final.get("accuracy", 0.0)
    mcc = final.get("matthews_correlation", 0.0)
    if len(distinct) == 1:
        only = class_names[int(distinct[0])] if int(distinct[0]) < len(class_names) else "?"
        report.warnings.append(
            f"the model predicts a single class ('{only}') for all {len(targets)} validation "
            f"rows: it has learned nothing beyond the class balance (accuracy {accuracy:.3f}, "
            f"the majority-class baseline {baseline['accuracy']:.3f}); {ADVICE}"
        )
    elif accuracy <= baseline["accuracy"] + ACCURACY_MARGIN and mcc <= MCC_MARGIN:
        report.warnings.append(
            f"the model does no better than always answering the majority class: accuracy "
            f"{accuracy:.3f} against {baseline['accuracy']:.3f}, Matthews correlation "
            f"{mcc:.3f}; {ADVICE}"
        )
    return report
