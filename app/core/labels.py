"""Label rules shared by the API (checks before queueing) and the worker (the mapping itself)."""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Literal

Task = Literal[
    "classification",
    "regression",
    "multi_label_classification",
    "token_classification",
    "masked_lm",
]


class LabelProblem(ValueError):
    """Label values that a sequence-classification model cannot be trained on."""


def task_for_dtype(dtype: str) -> Task:
    """A float label column means regression (num_labels=1); anything else is classes.

    `dtype` is an Arrow/`datasets` type name such as "int64", "double", "string", "bool".
    """
    return "regression" if dtype.startswith(("float", "double", "halffloat")) else "classification"


def class_names(values: Iterable[object], max_labels: int) -> list[str]:
    """The sorted distinct labels, as strings; their order defines the label ids.

    Integers sort numerically (so 0/1 stay ids 0/1), strings lexically; mixing them is an error.
    """
    distinct = set()
    for row, value in enumerate(values, start=1):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise LabelProblem(f"row {row}: the label is missing")
        distinct.add(value)
    kinds = {type(v) for v in distinct}
    if len(kinds) > 1 and not kinds <= {int, bool}:
        raise LabelProblem(
            "labels mix types (" + ", ".join(sorted(k.__name__ for k in kinds)) + "); "
            "use all strings or all integers"
        )
    if len(distinct) < 2:
        only = next(iter(distinct), None)
        raise LabelProblem(
            f"the labels have a single class ({only!r}); classification needs at least two"
        )
    if len(distinct) > max_labels:
        raise LabelProblem(f"{len(distinct)} distinct labels is more than the limit {max_labels}")
    # One kind (checked above), so the values compare with each other.
    return [str(v) for v in sorted(distinct, key=lambda v: v)]  # type: ignore[arg-type,return-value]


def check_regression_targets(values: Iterable[object], first_row: int = 1) -> None:
    for row, value in enumerate(values, start=first_row):
        if value is None or not isinstance(value, int | float) or not math.isfinite(value):
            raise LabelProblem(f"row {row}: regression label {value!r} is not a finite number")


def label_set(value: object, delimiter: str) -> list[object]:
    """A multi-label row's labels: a list (JSON Lines, Parquet), or a delimited string (CSV;
    empty means no label). Missing is an error: a row without labels is an empty list."""
    if value is None:
        raise LabelProblem("the label set is missing (an empty list means no label)")
    if isinstance(value, str):
        return [part.strip() for part in value.split(delimiter) if part.strip()]
    if isinstance(value, list | tuple):
        for item in value:
            if item is None or not isinstance(item, str | int) or isinstance(item, bool):
                raise LabelProblem(f"label {item!r} in a label set is not text or an integer")
        return list(value)
    raise LabelProblem(f"{type(value).__name__} is not a label set; use a list of labels")
