"""How a running pipeline tells the world what it is doing and learns it should stop.

The pipeline only sees this interface; the service backs it with Redis (worker/tasks.py), the
offline `finetune train` command with a progress bar.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal, Protocol

from app.core.schemas import Evaluation, Progress

StopSignal = Literal["cancel", "interrupt"] | None

log = logging.getLogger("finetune.pipeline")


class Reporter(Protocol):
    def event(self, type: str, message: str, **data: Any) -> None: ...

    def progress(self, progress: Progress) -> None: ...

    def evaluation(self, record: Evaluation) -> None:
        """One validation result."""

    def stop_requested(self) -> StopSignal: ...

    def should_prune(self, record: Evaluation) -> bool:
        """For a sweep's trial: report the evaluation to the sweep; whether to stop."""

    def assert_owner(self) -> None:
        """Before every write that must not come from a worker that lost the job (checkpoints,
        best weights, the model folder): raises if this process no longer owns it."""


class LogReporter:
    """Logs events; never asks to stop. The base for other reporters and for tests."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def event(self, type: str, message: str, **data: Any) -> None:
        log.info(message, extra={"event_type": type, "data": data})

    def progress(self, progress: Progress) -> None:
        log.debug("progress", extra={"data": progress.model_dump()})

    def evaluation(self, record: Evaluation) -> None:
        log.info("evaluation", extra={"data": record.model_dump()})

    def stop_requested(self) -> StopSignal:
        return None

    def should_prune(self, record: Evaluation) -> bool:
        return False

    def assert_owner(self) -> None:
        """Nothing else can own a job run in this process alone."""
