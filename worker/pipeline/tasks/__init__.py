"""The tasks a job can train, one module each behind `TaskType` (see `base.py`)."""

from __future__ import annotations

from worker.pipeline.tasks.base import TaskType
from worker.pipeline.tasks.masked_lm import MaskedLanguageModelling
from worker.pipeline.tasks.multi_label import MultiLabelClassification
from worker.pipeline.tasks.sequence import SequenceClassification
from worker.pipeline.tasks.token import TokenClassification

TASKS: dict[str, TaskType] = {
    task.name: task
    for task in (
        SequenceClassification(),
        MultiLabelClassification(),
        TokenClassification(),
        MaskedLanguageModelling(),
    )
}


def task_named(name: str) -> TaskType:
    """The task of a job (`JobSpec.task`) or of a trained model (job.json's "task", where
    sequence classification reads "classification" or "regression")."""
    if name in ("classification", "regression"):
        name = SequenceClassification.name
    return TASKS[name]


__all__ = ["TASKS", "TaskType", "task_named"]
