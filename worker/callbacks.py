"""Keras callbacks that make `model.fit` observable, checkpointed and stoppable.

They share the run's TrainState and act in list order at each batch end: count the step, report
progress, evaluate (maybe early-stop), checkpoint, then look for a stop request.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, Literal

import numpy as np
import tf_keras as keras

from app.core.schemas import Progress
from worker.checkpoints import Checkpointer, TrainState
from worker.errors import TrainingDiverged
from worker.pipeline.batching import EpochPlan
from worker.reporter import Reporter, StopSignal


class StepCounter(keras.callbacks.Callback):
    """Keeps the position in the epoch from Keras' batch index, and the epoch's mean loss.

    With `steps_per_execution` > 1, Keras calls batch-end callbacks once per execution with the
    index of its last step, so positions advance by up to that many steps at a time; the
    callbacks below act when a step count they watch for has been reached or passed.

    Keras' `loss` is the mean over this `fit` call's batches, and a resumed epoch's call covers
    only its rest, so the mean of the part trained before the checkpoint is kept in the state
    and the two are weighted by their rows (as Keras weights per-row losses; a loss that is one
    number per batch, as token classification's, makes a resumed epoch's figure a close
    estimate). An uninterrupted epoch's figure is Keras' own.
    """

    def __init__(self, state: TrainState, rows_per_step: np.ndarray) -> None:
        super().__init__()
        self.state = state
        self.rows_per_step = rows_per_step
        self.start_in_epoch = state.step_in_epoch
        self.start_global = state.global_step
        self.previous_global = state.global_step
        self.loss_before, self.rows_before = state.epoch_loss_so_far, state.epoch_rows_so_far
        self.rows_this_call = 0

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.previous_global = self.state.global_step
        done_before = self.state.step_in_epoch
        self.state.step_in_epoch = self.start_in_epoch + batch + 1
        self.state.global_step = self.start_global + batch + 1
        self.rows_this_call += int(self.rows_per_step[done_before : self.state.step_in_epoch].sum())
        loss = float((logs or {}).get("loss", math.nan))
        total = self.rows_before + self.rows_this_call
        self.state.epoch_loss_so_far = (
            self.loss_before * self.rows_before + loss * self.rows_this_call
        ) / max(total, 1)
        self.state.epoch_rows_so_far = total


def reached(counter: StepCounter, every_steps: int) -> bool:
    """Whether the last execution reached a multiple of `every_steps`."""
    return counter.state.global_step // every_steps > counter.previous_global // every_steps


class ProgressCallback(keras.callbacks.Callback):
    """Throughput in real (unpadded) tokens, ETA, and the running loss every few steps."""

    def __init__(
        self,
        counter: StepCounter,
        plan: EpochPlan,
        reporter: Reporter,
        epochs: int,
        total_steps: int,
        every_steps: int,
    ) -> None:
        super().__init__()
        self.counter, self.state, self.plan = counter, counter.state, plan
        self.reporter = reporter
        self.epochs, self.total_steps, self.every_steps = epochs, total_steps, every_steps
        self.window_start = time.monotonic()
        self.window_tokens = 0
        self.window_rows = 0
        self.window_steps = 0
        self.tokens_per_second: float | None = None
        self.samples_per_second: float | None = None
        self.seconds_per_step: float | None = None
        self.reported = False  # the first step of a run is always reported (time to train)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.window_start = time.monotonic()

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = float((logs or {}).get("loss", math.nan))
        if not math.isfinite(loss):
            raise TrainingDiverged(
                f"the training loss became {loss} at step {self.state.global_step}; "
                "try a lower learning_rate"
            )
        done = self.state.global_step - self.counter.previous_global
        steps = slice(self.state.step_in_epoch - done, self.state.step_in_epoch)
        self.window_tokens += int(self.plan.real_tokens[steps].sum())
        self.window_rows += int(self.plan.rows[steps].sum())
        self.window_steps += done
        first_of_run = not self.reported
        last = self.state.global_step == self.total_steps
        if not (reached(self.counter, self.every_steps) or first_of_run or last):
            return
        self.reported = True
        elapsed = max(time.monotonic() - self.window_start, 1e-9)
        self.tokens_per_second = self.window_tokens / elapsed
        self.samples_per_second = self.window_rows / elapsed
        self.seconds_per_step = elapsed / self.window_steps
        self.window_start, self.window_tokens, self.window_rows = time.monotonic(), 0, 0
        self.window_steps = 0
        self.reporter.progress(self.snapshot(loss))

    def snapshot(self, loss: float | None) -> Progress:
        remaining = self.total_steps - self.state.global_step
        return Progress(
            epoch=self.state.epoch + 1,
            epochs=self.epochs,
            step=self.state.global_step,
            total_steps=self.total_steps,
            percent=round(100.0 * self.state.global_step / max(self.total_steps, 1), 2),
            eta_seconds=(
                round(remaining * self.seconds_per_step, 1) if self.seconds_per_step else None
            ),
            tokens_per_second=self.tokens_per_second and round(self.tokens_per_second, 1),
            samples_per_second=self.samples_per_second and round(self.samples_per_second, 2),
            loss=loss,
        )


class StepEvaluation(keras.callbacks.Callback):
    """Evaluate every N steps (when `eval_every` is a step count), inside the epoch: a step
    count reached at the epoch's last step is left to the loop, which evaluates after `fit`."""

    def __init__(
        self,
        counter: StepCounter,
        every_steps: int,
        epoch_steps: int,
        evaluate: Callable[[], bool],
    ) -> None:
        super().__init__()
        self.counter, self.every_steps, self.evaluate = counter, every_steps, evaluate
        self.epoch_steps = epoch_steps

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.counter.state.step_in_epoch >= self.epoch_steps:
            return
        if reached(self.counter, self.every_steps) and self.evaluate():
            self.model.stop_training = True


class PeriodicCheckpoint(keras.callbacks.Callback):
    """Every `every_steps` steps, or with "auto" when the checkpointer says one is due."""

    def __init__(
        self, counter: StepCounter, checkpointer: Checkpointer, every_steps: int | Literal["auto"]
    ) -> None:
        super().__init__()
        self.counter, self.checkpointer, self.every_steps = counter, checkpointer, every_steps

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        every = self.every_steps
        due = self.checkpointer.periodic_due() if every == "auto" else reached(self.counter, every)
        if due:
            self.checkpointer.save(self.counter.state)


class StopWatcher(keras.callbacks.Callback):
    """Ends the epoch early when the job is cancelled or the worker is shutting down.

    It sets `stop_training` rather than raising, so `fit` unwinds normally and the loop can
    checkpoint the exact position before ending the job; evaluation is not part of `fit`
    here, so nothing else runs after the request.
    """

    def __init__(self, reporter: Reporter, min_interval_seconds: float = 0.05) -> None:
        super().__init__()
        self.reporter = reporter
        self.min_interval = min_interval_seconds
        self.last_check = 0.0
        self.signal: StopSignal = None

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        now = time.monotonic()
        if now - self.last_check < self.min_interval:
            return
        self.last_check = now
        signal = self.reporter.stop_requested()
        if signal is not None:
            self.signal = signal
            self.model.stop_training = True
