"""TensorBoard event files for each job (loss and metrics against the global step).

A reporter wrapper rather than Keras' TensorBoard callback: fit runs once per epoch here, and
that callback's batch counter restarts with every fit call.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import tensorflow as tf

from app.core.schemas import Evaluation, Progress
from worker.reporter import Reporter, StopSignal


class TensorBoardReporter:
    def __init__(self, inner: Reporter, log_dir: Path) -> None:
        self.inner = inner
        self.train = tf.summary.create_file_writer(str(log_dir / "train"))
        self.validation = tf.summary.create_file_writer(str(log_dir / "validation"))

    def event(self, type: str, message: str, **data: Any) -> None:
        self.inner.event(type, message, **data)

    def progress(self, progress: Progress) -> None:
        with self.train.as_default(step=progress.step):
            if progress.loss is not None:
                tf.summary.scalar("loss", progress.loss)
            if progress.tokens_per_second:
                tf.summary.scalar("tokens_per_second", progress.tokens_per_second)
        self.inner.progress(progress)

    def evaluation(self, record: Evaluation) -> None:
        with self.validation.as_default(step=record.step):
            for name, value in record.metrics.items():
                if name not in ("epoch", "step"):
                    tf.summary.scalar(name, float(value))
        self.validation.flush()
        self.inner.evaluation(record)

    def stop_requested(self) -> StopSignal:
        return self.inner.stop_requested()

    def should_prune(self, record: Evaluation) -> bool:
        return self.inner.should_prune(record)

    def assert_owner(self) -> None:
        self.inner.assert_owner()

    def close(self) -> None:
        self.train.close()
        self.validation.close()
