"""The evaluation report: what a user needs to judge a model without downloading it.

Computed from one prediction pass over labelled rows (the job's validation data, or a file
evaluated on demand): the model's scores beside the trivial baseline, and for classification
the confusion matrix, per-class precision/recall/F1/support and, with two classes, ROC AUC,
PR AUC and a threshold table (the decision threshold is the lever users pull on imbalanced
data). scikit-learn's definitions throughout, so the numbers match what users compute
themselves.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.special import softmax
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    confusion_matrix,
    precision_recall_fscore_support,
    roc_auc_score,
)

from app.core.schemas import BinaryScores, ClassScores, EvaluationReport, ThresholdScores
from worker.pipeline.metrics import classification_metrics, regression_metrics
from worker.pipeline.quality import judge_classification

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def round6(value: float | np.floating[Any]) -> float:
    """Scores as reports and metrics files keep them: six decimals."""
    return round(float(value), 6)


def classification_report(
    logits: np.ndarray, targets: np.ndarray, names: list[str], majority: int
) -> EvaluationReport:
    """`logits` (rows x classes) against integer `targets`; `majority` is the training set's
    most frequent class, the baseline a useful model must beat."""
    targets = targets.astype(np.int64)
    classes = list(range(len(names)))
    metrics = {k: round6(v) for k, v in classification_metrics(logits, targets).items()}
    predicted = logits.argmax(axis=-1)
    quality = judge_classification(predicted, targets, majority, metrics, names)
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, predicted, labels=classes, zero_division=0
    )
    per_class = [
        ClassScores(
            label=names[i],
            precision=round6(precision[i]),
            recall=round6(recall[i]),
            f1=round6(f1[i]),
            support=int(support[i]),
        )
        for i in classes
    ]
    matrix = confusion_matrix(targets, predicted, labels=classes)
    binary = None
    if len(names) == 2:
        probabilities = softmax(logits.astype(np.float64), axis=-1)[:, 1]
        binary = binary_scores(probabilities, targets == 1, names[1])
    warnings = list(quality.warnings)
    if warnings and binary is not None and binary.roc_auc is not None and binary.roc_auc >= 0.7:
        warnings.append(
            f"its scores do rank the classes (ROC AUC {binary.roc_auc:.3f}): the threshold "
            "table in the report shows where another decision threshold would separate them; "
            "more training usually moves the default one into place"
        )
    return EvaluationReport(
        task="classification",
        rows=len(targets),
        metrics=metrics,
        baseline=quality.baseline,
        labels=names,
        confusion_matrix=matrix.astype(int).tolist(),
        per_class=per_class,
        predicted_classes=quality.predicted_classes,
        binary=binary,
        warnings=warnings,
    )


def binary_scores(probabilities: np.ndarray, positive: np.ndarray, label: str) -> BinaryScores:
    both = bool(positive.any() and not positive.all())
    rows = []
    for threshold in THRESHOLDS:
        chosen = probabilities >= threshold
        precision, recall, f1, _ = precision_recall_fscore_support(
            positive, chosen, average="binary", zero_division=0
        )
        rows.append(
            ThresholdScores(
                threshold=threshold,
                precision=round6(precision),
                recall=round6(recall),
                f1=round6(f1),
                accuracy=round6(accuracy_score(positive, chosen)),
                predicted_positive=int(chosen.sum()),
            )
        )
    return BinaryScores(
        positive_label=label,
        roc_auc=round6(roc_auc_score(positive, probabilities)) if both else None,
        pr_auc=round6(average_precision_score(positive, probabilities)) if both else None,
        thresholds=rows,
    )


def regression_report(
    predictions: np.ndarray, targets: np.ndarray, train_mean: float
) -> EvaluationReport:
    metrics = {k: round6(v) for k, v in regression_metrics(predictions, targets).items()}
    constant = np.full(len(targets), train_mean, dtype=np.float64)
    baseline = {
        "mse": round6(np.mean((constant - targets.astype(np.float64).reshape(-1)) ** 2)),
        "pearson": 0.0,
    }
    warnings = []
    if metrics["mse"] >= baseline["mse"]:
        warnings.append(
            f"the model does no better than always answering the training mean "
            f"({train_mean:.4g}): validation mse {metrics['mse']:.4g} against "
            f"{baseline['mse']:.4g}; try more epochs or a higher learning_rate"
        )
    return EvaluationReport(
        task="regression",
        rows=len(targets),
        metrics=metrics,
        baseline=baseline,
        warnings=warnings,
    )
