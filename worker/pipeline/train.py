"""Stages 4 and 5: compile with the model's own loss and `create_optimizer`, then `fit`.

`fit` runs once per epoch (or the rest of one, after a resume) because each epoch has its own
seeded order; Keras keeps the compiled train step across the calls.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TFPreTrainedModel

from app.core.layout import write_atomically
from app.core.schemas import MINIMISED_METRICS, Evaluation, Hyperparameters
from worker.callbacks import (
    PeriodicCheckpoint,
    ProgressCallback,
    StepCounter,
    StepEvaluation,
    StopWatcher,
)
from worker.checkpoints import Checkpointer, TrainState, seed_dropout
from worker.errors import InvalidInput, JobCancelled, JobInterrupted, OutOfMemory, TrainingDiverged
from worker.pipeline.batching import (
    eval_batches,
    eval_rows,
    length_buckets,
    plan_epoch,
    train_batches,
)
from worker.pipeline.data import LABELS, LENGTH, LabelInfo, column_array
from worker.pipeline.optimizer import TrainingSchedule, build_optimizer
from worker.pipeline.tasks import TaskType
from worker.pipeline.warm import CompiledModel
from worker.reporter import Reporter


@dataclass
class TrainResult:
    state: TrainState
    final_metrics: dict[str, float]
    stopped_early: bool
    pruned: bool  # a sweep's trial stopped by the sweep's pruner
    restored_best: bool
    resumed_from_step: int | None
    seconds: float
    fit_seconds: float  # inside model.fit only: the training steps (and checkpoints)
    fit_cpu_seconds: float  # CPU time of the process (all threads) over the same span
    checkpoints_written: int  # by this process (a resumed run's earlier ones not counted)
    checkpoint_seconds: float  # writing them, in and out of `fit`
    real_tokens: int
    padded_tokens: int
    batch_shapes: int
    train_step_traces: int  # by this job (0 for a warm start on shapes traced before)


def skip_autograph_for_library_code() -> None:
    """Trace transformers' and tf-keras' code as it is written, without AutoGraph rewriting.

    Their layers are written for graph mode and XLA (no tensor-dependent Python control flow),
    so AutoGraph's source-to-source conversion of some 170 functions buys nothing and cost
    about 3 s of the first train step (MiniLM). Keras' own multi-step loop is still converted:
    a function handed to `tf.function` is always converted. Uses a TensorFlow-internal list; if
    that moves in a future release, tracing is only slower.
    """
    try:
        from tensorflow.python.autograph.core import config
    except ImportError:  # pragma: no cover - depends on the TensorFlow release
        return
    rules = getattr(config, "CONVERSION_RULES", None)
    if rules is None or any(getattr(r, "name", None) == "transformers" for r in rules):
        return
    config.CONVERSION_RULES = (
        config.DoNotConvert("transformers"),
        config.DoNotConvert("tf_keras"),
        *rules,
    )


def create_step_variables(
    model: TFPreTrainedModel, optimizer: Any, task: TaskType, labels: LabelInfo
) -> None:
    """Create now the variables the first train step would create (optimizer slots, the loss
    and metric totals): a `tf.function` that creates variables is traced twice, and one trace
    of this model costs seconds. Checkpoints restore into them as usual; the metric totals are
    reset when `fit` starts an epoch."""
    variables = model.trainable_variables
    if hasattr(optimizer, "_create_all_weights"):  # the legacy optimizers (ours)
        optimizer._create_all_weights(variables)
    else:
        optimizer.build(variables)
    task.build_step_variables(model, labels)


def concrete(hp: Hyperparameters) -> tuple[int, int, float]:
    """(epochs, batch_size, learning_rate) once "auto" was resolved (worker/pipeline/auto.py)."""
    if hp.epochs == "auto" or hp.batch_size == "auto" or hp.learning_rate == "auto":
        raise ValueError("resolve 'auto' hyperparameters before training")
    if hp.lr_scheduler == "auto" or hp.eval_every == "auto":
        raise ValueError("resolve 'auto' hyperparameters before training")
    return hp.epochs, hp.batch_size, hp.learning_rate


def run_length(epochs: int, steps_per_epoch: int, max_steps: int | None) -> tuple[int, int]:
    """(passes over the data, optimizer steps): `epochs` whole ones, or with `max_steps` as
    many as those steps take, the last one cut short where they end (Hugging Face's
    `max_steps`)."""
    if max_steps is None:
        return epochs, epochs * steps_per_epoch
    return math.ceil(max_steps / steps_per_epoch), max_steps


def class_weights(
    setting: str | dict[str, float] | None, names: list[str], train_labels: np.ndarray
) -> dict[int, float] | None:
    """Keras' `class_weight` (label id -> weight) from the job's setting. Each row's loss is
    scaled by its class's weight (the model's own per-row loss, before Keras averages it), so
    rare classes count as much as the user asks."""
    if setting is None:
        return None
    if setting == "auto":
        raise ValueError("resolve class_weight 'auto' before training")
    if setting == "balanced":
        from sklearn.utils.class_weight import compute_class_weight

        present = np.unique(train_labels.astype(np.int64))
        weights = compute_class_weight("balanced", classes=present, y=train_labels)
        found = dict(zip(present.tolist(), weights.tolist(), strict=True))
        return {i: round(float(found.get(i, 1.0)), 6) for i in range(len(names))}
    assert isinstance(setting, dict)
    return {i: float(setting.get(name, 1.0)) for i, name in enumerate(names)}


skip_autograph_for_library_code()
BEFORE_TRAINING_FILE = "before_training.json"


class Trainer:
    def __init__(
        self,
        model: TFPreTrainedModel,
        tokenizer: PreTrainedTokenizerBase,
        task: TaskType,
        train_ds: Dataset,
        validation_ds: Dataset,
        labels: LabelInfo,
        hp: Hyperparameters,
        reporter: Reporter,
        checkpoint_dir: Path,
        warm: CompiledModel | None = None,
    ) -> None:
        """`warm`: a compiled model a warm worker kept (worker/pipeline/warm.py), already reset
        to this job's start and holding `model`; it is given this job's schedule and reused
        without compiling (and so without tracing) again."""
        self.model, self.tokenizer, self.task = model, tokenizer, task
        self.train_ds, self.validation_ds = train_ds, validation_ds
        self.labels, self.hp, self.reporter = labels, hp, reporter
        self.epochs, self.batch_size, learning_rate = concrete(hp)
        self.steps_per_epoch = math.ceil(len(train_ds) / self.batch_size)
        if self.steps_per_epoch == 0:
            raise InvalidInput("training data has no rows")
        self.epochs, self.total_steps = run_length(self.epochs, self.steps_per_epoch, hp.max_steps)
        warmup_steps = int(hp.warmup_ratio * self.total_steps)
        scheduler = hp.lr_scheduler
        assert scheduler != "auto"  # resolved with the rest (`concrete` said so)
        if warm is not None:
            warm.schedule.configure(scheduler, learning_rate, self.total_steps, warmup_steps)
            self.compiled = warm
        else:
            schedule = TrainingSchedule(scheduler, learning_rate, self.total_steps, warmup_steps)
            optimizer = build_optimizer(schedule, hp.weight_decay, hp.embedding_updates)
            # Without a loss argument, transformers' models compute their own task loss.
            model.compile(
                optimizer=optimizer,
                steps_per_execution=hp.steps_per_execution,
                jit_compile=hp.jit_compile,
                **task.compile_options(labels),
            )
            create_step_variables(model, optimizer, task, labels)
            self.compiled = CompiledModel(model, optimizer, schedule)
        self.traces_before = self.train_step_traces()
        seed_dropout(model, hp.seed)
        # The optimizer as the model holds it: under mixed_float16 Keras wraps ours for loss
        # scaling, and the wrapper is what a checkpoint must save (the loss scale is state too).
        # Handing it ours beside the model would reach our slots by two paths, which
        # TensorFlow refuses at the first save.
        self.checkpointer = Checkpointer(
            checkpoint_dir, model, model.optimizer, hp.keep_checkpoints, reporter.assert_owner
        )
        self.buckets = length_buckets(
            column_array(train_ds, LENGTH), hp.length_buckets, hp.pad_to_multiple_of
        )
        self.eval_rows = eval_rows(validation_ds)
        self.eval_ds = eval_batches(
            model,
            self.eval_rows,
            self.batch_size,
            task.collator(tokenizer, self.buckets, hp, epoch=None),
        )
        self.class_weight = (
            class_weights(hp.class_weight, labels.names, column_array(train_ds, LABELS))
            if labels.task == "classification"
            else None
        )
        self.state = TrainState()
        self.stopped_early = False
        self.pruned = False
        self.fit_seconds = self.fit_cpu_seconds = 0.0
        self.shapes: set[tuple[int, int]] = set()

    # -- evaluation and early stopping -------------------------------------------------------

    def validation_outputs(self) -> Any:
        """The current model's outputs for the validation rows, in `eval_rows`' order."""
        return self.task.validation_outputs(self.model, self.eval_ds)

    def evaluate(self) -> bool:
        """Run validation, record it, and say whether early stopping should end training."""
        metrics = self.task.metrics(self.validation_outputs(), self.eval_rows, self.labels)
        broken = sorted(name for name, value in metrics.items() if not math.isfinite(value))
        if broken:
            raise TrainingDiverged(
                f"validation {', '.join(broken)} became {metrics[broken[0]]} at step "
                f"{self.state.global_step}: the model's outputs are no longer numbers; try a "
                "lower learning_rate (or precision float32)"
            )
        record = Evaluation.at(
            epoch=round(self.state.global_step / self.steps_per_epoch, 4),
            step=self.state.global_step,
            metrics={k: round(v, 6) for k, v in metrics.items()},
        )
        self.state.evaluations.append(record)
        self.reporter.evaluation(record)
        if self.reporter.should_prune(record):
            self.stopped_early = self.pruned = True
            self.reporter.event(
                "stage",
                f"pruned at step {self.state.global_step}: this trial is below the median of "
                "the sweep's earlier trials at the same point of training",
                step=self.state.global_step,
                pruned=True,
            )
            return True
        return self._update_early_stopping(metrics)

    def _update_early_stopping(self, metrics: dict[str, float]) -> bool:
        patience = self.hp.early_stopping_patience
        if patience is None:
            return False
        name = self.hp.early_stopping_metric
        if name not in metrics:
            raise InvalidInput(
                f"early_stopping_metric '{name}' does not apply to {self.labels.task}; "
                f"use one of {', '.join(metrics)}"
            )
        value = metrics[name]
        best = self.state.best_value
        improved = best is None or (value < best if name in MINIMISED_METRICS else value > best)
        if improved:
            self.state.best_value, self.state.best_step = value, self.state.global_step
            self.state.evals_without_improvement = 0
            self.checkpointer.save_best(self.state.global_step)
            return False
        self.state.evals_without_improvement += 1
        if self.state.evals_without_improvement >= patience:
            self.stopped_early = True
            self.reporter.event(
                "stage",
                f"early stopping at step {self.state.global_step}: {name} has not improved on "
                f"{best:.4f} (step {self.state.best_step}) for {patience} evaluations",
                step=self.state.global_step,
            )
            return True
        return False

    def before_training(self) -> dict[str, float] | None:
        """Tasks whose baseline is the model before training (masked LM: the pretrained
        model's perplexity) measure it once, before the first step; it is kept beside the
        checkpoints so a resumed run reports the same one."""
        if not self.task.baseline_before_training:
            return None
        kept = self.checkpointer.directory / BEFORE_TRAINING_FILE
        if kept.is_file():
            return {k: float(v) for k, v in json.loads(kept.read_text()).items()}
        if self.checkpointer.manager.latest_checkpoint is not None:
            return None  # resumed from a run that did not record it
        metrics = self.task.metrics(self.validation_outputs(), self.eval_rows, self.labels)
        measured = {k: round(v, 6) for k, v in metrics.items()}
        self.reporter.assert_owner()
        self.checkpointer.directory.mkdir(parents=True, exist_ok=True)
        write_atomically(kept, json.dumps(measured))
        self.reporter.event(
            "stage",
            "before training: validation " + ", ".join(f"{k} {v:.4f}" for k, v in measured.items()),
            before_training=measured,
        )
        return measured

    # -- the loop ------------------------------------------------------------------------------

    def run(self) -> TrainResult:
        started = time.monotonic()
        restored = self.checkpointer.restore_latest()
        resumed_from = None
        if restored is not None:
            self.state = restored
            resumed_from = restored.global_step
            self.reporter.event(
                "stage",
                f"resumed from checkpoint at step {restored.global_step} "
                f"(epoch {restored.epoch + 1}, batch {restored.step_in_epoch})",
                step=restored.global_step,
                resumed=True,
            )
            patience = self.hp.early_stopping_patience
            if patience is not None and restored.evals_without_improvement >= patience:
                self.stopped_early = True
        real_tokens = padded_tokens = 0
        try:
            while self.state.epoch < self.epochs and not self.stopped_early:
                real, padded = self._run_epoch()
                real_tokens += real
                padded_tokens += padded
        except tf.errors.ResourceExhaustedError as exc:
            raise OutOfMemory(
                f"out of memory at step {self.state.global_step}; lower batch_size or max_length"
            ) from exc
        restored_best = False
        if self.hp.early_stopping_patience is not None and self.state.best_step is not None:
            restored_best = self.checkpointer.restore_best()
        final = self._final_metrics()
        return TrainResult(
            state=self.state,
            final_metrics=final,
            stopped_early=self.stopped_early,
            pruned=self.pruned,
            restored_best=restored_best,
            resumed_from_step=resumed_from,
            seconds=time.monotonic() - started,
            fit_seconds=self.fit_seconds,
            fit_cpu_seconds=self.fit_cpu_seconds,
            checkpoints_written=self.checkpointer.written,
            checkpoint_seconds=self.checkpointer.write_seconds,
            real_tokens=real_tokens,
            padded_tokens=padded_tokens,
            batch_shapes=len(self.shapes),
            train_step_traces=self.train_step_traces() - self.traces_before,
        )

    def train_step_traces(self) -> int:
        """How many times TensorFlow traced the train step (each new trace costs seconds)."""
        function = getattr(self.model, "train_function", None)
        count = getattr(function, "experimental_get_tracing_count", None)
        return int(count()) if count else 0

    def _run_epoch(self) -> tuple[int, int]:
        """One pass (or the rest of one), then the epoch's end: evaluation when due, and a
        checkpoint where the run was evaluated and at its end. Where validations are spaced
        out (`eval_every` "auto" on many cheap passes), so are these checkpoints: a 300-row
        run's epoch takes about 2 s and its checkpoint (weights and Adam slots, 270 MB for
        MiniLM) about 0.6 s. Lost work stays bounded by the periodic checkpoint
        (`checkpoint_every_steps`), and a checkpoint's validation score is then known."""
        hp, state = self.hp, self.state
        plan = plan_epoch(self.train_ds, self.batch_size, hp.seed, state.epoch, hp.group_by_length)
        plan = plan.first(self.total_steps - state.epoch * self.steps_per_epoch)
        skip = state.step_in_epoch
        real = int(plan.real_tokens[skip:].sum())
        padded = int(plan.padded_tokens(self.buckets)[skip:].sum())
        lengths = plan.padded_lengths(self.buckets)
        self.shapes.update(zip(plan.rows[skip:], lengths[skip:], strict=True))
        self.reporter.event(
            "stage",
            f"epoch {state.epoch + 1}/{self.epochs} started",
            epoch=state.epoch + 1,
            step=state.global_step,
        )
        counter = StepCounter(state, plan.rows)
        progress = ProgressCallback(
            counter, plan, self.reporter, self.epochs, self.total_steps, hp.log_every_steps
        )
        watcher = StopWatcher(self.reporter)
        callbacks: list[Any] = [counter, progress]
        if hp.eval_every != "epoch":
            every = int(hp.eval_every)
            callbacks.append(StepEvaluation(counter, every, plan.steps, self.evaluate))
        callbacks += [
            PeriodicCheckpoint(counter, self.checkpointer, hp.checkpoint_every_steps),
            watcher,
        ]
        if skip < plan.steps:
            collate = self.task.collator(self.tokenizer, self.buckets, hp, state.epoch)
            batches = train_batches(self.model, self.train_ds, plan, collate, skip)
            fit_started, cpu_started = time.monotonic(), time.process_time()
            self.model.fit(
                batches,
                epochs=state.epoch + 1,
                initial_epoch=state.epoch,
                callbacks=callbacks,
                class_weight=self.class_weight,
                verbose=0,
            )
            self.fit_seconds += time.monotonic() - fit_started
            self.fit_cpu_seconds += time.process_time() - cpu_started
        if watcher.signal is not None:
            if self.checkpointer.last_saved_step != state.global_step:
                self.checkpointer.save(state)
            if watcher.signal == "cancel":
                raise JobCancelled(state.global_step)
            raise JobInterrupted(state.global_step)
        if self.stopped_early:
            return real, padded
        state.epoch_losses.append(round(state.epoch_loss_so_far, 6))
        state.epoch += 1
        state.step_in_epoch = 0
        state.epoch_loss_so_far, state.epoch_rows_so_far = 0.0, 0
        evaluated = self.evaluation_due()
        if evaluated:
            self.evaluate()
        if evaluated or state.epoch == self.epochs:
            self.checkpointer.save(state)
        return real, padded

    def evaluation_due(self) -> bool:
        """At an epoch's end: with `eval_every` "epoch", or when a multiple of its step count
        was reached since the last evaluation. `StepEvaluation` leaves an epoch's last step to
        this, so an evaluation there runs outside `fit` (whose time and throughput are then the
        training steps') and after a resume at an epoch's end too."""
        every = self.hp.eval_every
        if every == "epoch":
            return True
        reached_multiple = self.state.global_step // int(every) * int(every)
        evaluations = self.state.evaluations
        return reached_multiple > (evaluations[-1].step if evaluations else 0)

    def _final_metrics(self) -> dict[str, float]:
        evaluations = self.state.evaluations
        if self.hp.early_stopping_patience is not None and self.state.best_step is not None:
            best = [e for e in evaluations if e.step == self.state.best_step]
            if best:
                return best[-1].metrics
        if not evaluations or evaluations[-1].step != self.state.global_step:
            self.evaluate()
        return self.state.evaluations[-1].metrics
