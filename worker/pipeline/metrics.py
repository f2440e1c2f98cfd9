"""Validation metrics from one prediction pass (loss included, so no second evaluate pass)."""

from __future__ import annotations

import numpy as np
from scipy.special import log_softmax
from sklearn.metrics import accuracy_score, f1_score, matthews_corrcoef


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    logits = logits.astype(np.float64)
    labels = labels.astype(np.int64)
    loss = -log_softmax(logits, axis=-1)[np.arange(len(labels)), labels].mean()
    predicted = logits.argmax(axis=-1)
    return {
        "loss": float(loss),
        "accuracy": float(accuracy_score(labels, predicted)),
        "f1_macro": float(f1_score(labels, predicted, average="macro", zero_division=0)),
        "matthews_correlation": float(matthews_corrcoef(labels, predicted)),
    }


def regression_metrics(predictions: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    predictions = predictions.astype(np.float64).reshape(-1)
    targets = targets.astype(np.float64).reshape(-1)
    mse = float(np.mean((predictions - targets) ** 2))
    if predictions.std() == 0 or targets.std() == 0:
        pearson = 0.0
    else:
        pearson = float(np.corrcoef(predictions, targets)[0, 1])
    return {"loss": mse, "mse": mse, "pearson": pearson}
