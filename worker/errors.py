"""Typed job outcomes: every way a job can end other than success has a class and a code.

`retryable` separates bad input (never retried: it would fail the same way) from faults of the
machine or the network (a later attempt may succeed).
"""

from __future__ import annotations


class JobError(Exception):
    code = "job_error"
    retryable = False

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code


class InvalidInput(JobError):
    """The data or the spec cannot be trained on (missing column, bad labels, empty data)."""

    code = "invalid_input"


class ModelNotFound(JobError):
    code = "model_not_found"


class DataNotFound(JobError):
    code = "data_not_found"


class OutOfMemory(JobError):
    code = "out_of_memory"


class StorageError(JobError):
    """Checkpoint or artifact could not be written (disk full, permissions)."""

    code = "storage_error"
    retryable = True


class TrainingDiverged(JobError):
    code = "training_diverged"


class StopRequested(Exception):
    """Training stopped on request, with its state checkpointed."""

    def __init__(self, reason: str, global_step: int) -> None:
        super().__init__(f"stopped ({reason}) at step {global_step}")
        self.reason = reason
        self.global_step = global_step


class JobCancelled(StopRequested):
    def __init__(self, global_step: int) -> None:
        super().__init__("cancelled", global_step)


class JobInterrupted(StopRequested):
    """The worker is shutting down: hand the job back to the queue to resume elsewhere."""

    def __init__(self, global_step: int) -> None:
        super().__init__("interrupted", global_step)
