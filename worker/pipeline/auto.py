"""`"auto"` hyperparameters: epochs, batch size and learning rate chosen from the data set (its
size, label balance and token lengths) and the model (its width), each with the reason, which
job.json records.

What the choices rest on (measured with all-MiniLM-L6-v2 on this project's benchmarks, the
README's Benchmarks section has the tables): small models want a higher peak rate than
BERT-base's usual 2e-5 to 5e-5 on short runs of one or two passes (full CoLA, one epoch:
median MCC 0.205 at 1e-4 and batch 32, 0.185 at 5e-5 and batch 16, other settings not equal
either: a hint, not a controlled comparison), but not on three passes
over a small data set (300 SST-2 rows, 3 passes held constant, seeds 1-6: 1e-4 scored below
5e-5 on every seed, median 0.706 against 0.749; an older rule doubled such runs, from
measurements made before the output layer computed in float32) nor on long runs (full CoLA:
1e-4 gave MCC 0.215 against 0.244 at 3e-5); imbalanced data needs class weights (full CoLA,
70% one class: MCC 0.316 balanced against 0.250); on long runs a small model did better at
3e-5 and with a decay to 0 (full CoLA, auto otherwise, one run each: 5e-5 constant 0.251,
3e-5 constant 0.291, 5e-5 linear 0.296, 3e-5 linear 0.319), while one epoch decayed to 0
learned nothing, unless class weights held it off the majority class (full CoLA, one epoch,
balanced weights, seeds 1, 2, 3: MCC 0.174, 0.142, 0.164 decayed against 0.175, 0.054, 0.000
held constant at batch 16 and 1e-4; 0.213, 0.204, 0.205 against 0.132, 0.174, 0.165 at batch
32). Small data sets want many passes with a decay: 300 SST-2 rows, seeds 1, 2, 3, gave
validation accuracy 0.762, 0.720, 0.703 (median 0.720) with 10 epochs at 1e-4 held constant,
and 0.766, 0.725, 0.752 (median 0.752) with 20 epochs at 5e-5 decayed linearly; three passes
at 5e-5 tie 20 there (medians of six seeds 0.749 and 0.754) in a fifth of the time, but fall
behind on harder data, on every seed measured (300 CoLA rows: MCC 0.014 or less with balanced
weights against 0.044 for 20 passes; 2,000 CoLA rows: 0.094 against 0.144 for 10). So: a batch
size that keeps memory in bounds for long rows, enough epochs to reach about `TARGET_STEPS`
optimizer steps (between `MIN_EPOCHS` and `MAX_EPOCHS`), more when the rarest class would be
seen too seldom, a peak learning rate by model width (doubled for short runs of one or two
passes, 3e-5 for small models on long ones), with `lr_scheduler: "auto"` linear decay for runs
of `LONG_RUN_STEPS` or more, of `MANY_EPOCHS` or more, or with class weights (constant
otherwise), with `class_weight: "auto"`, balanced class weights for imbalanced labels, and,
with `eval_every: "auto"`, an evaluation after every epoch unless many passes over a small
training set would spend as long validating as training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from app.core.schemas import Hyperparameters

TARGET_STEPS = 1200
MIN_EPOCHS, MAX_EPOCHS = 2, 20
LARGE_EPOCH_STEPS = 5000  # an epoch this long is enough on its own: one epoch
MIN_MINORITY_VIEWS = 300  # rows of the rarest class seen over training, at least
LARGE_DATA_ROWS = 20_000
LONG_ROWS = 256  # tokens at the 95th percentile: halve the batch
SHORT_RUN_STEPS = 600  # fewer optimizer steps than this in at most SHORT_RUN_PASSES: doubled rate
SHORT_RUN_PASSES = 2
MANY_EPOCHS = 10  # this many passes or more: a decay to 0 has time to help
LONG_RUN_STEPS = 1200  # this many or more: linear decay ("auto" schedule), 3e-5 for small models
IMBALANCED = 1.5  # majority / minority rows from which class weights are balanced
# A validation row costs about a third of a training row (a forward pass against a forward and
# a backward one: 872 SST-2 rows took 2.2 s to validate, an epoch of 300 rows 2.15 s, MiniLM),
# so a validation set under 0.3x the training rows costs under a tenth of an epoch.
VALIDATION_ROW_COST = 1 / 3  # of a training row's
CHEAP_VALIDATION = 0.3
EVALUATIONS = 5  # a run of more epochs, with a costly validation set: about this many


@dataclass
class AutoChoices:
    hyperparameters: Hyperparameters
    reasons: dict[str, dict[str, Any]] = field(default_factory=dict)

    def summary(self) -> str:
        return "; ".join(f"{k} {v['value']} ({v['reason']})" for k, v in self.reasons.items())


def resolve_auto(
    hp: Hyperparameters,
    rows: int,
    lengths: np.ndarray,
    class_counts: list[int] | None,
    hidden_size: int | None,
    validation_rows: int | None = None,
) -> AutoChoices:
    """Concrete values for every hyperparameter set to "auto" (the others are kept).
    `validation_rows`: how many rows each evaluation validates (None: not known, and so every
    epoch is validated)."""
    reasons: dict[str, dict[str, Any]] = {}
    batch_size = hp.batch_size
    if batch_size == "auto":
        p95 = int(np.percentile(lengths, 95)) if len(lengths) else 0
        batch_size = 32 if rows > LARGE_DATA_ROWS else 16
        why = f"{rows} training rows" + (" (a large set)" if rows > LARGE_DATA_ROWS else "")
        if p95 > LONG_ROWS:
            batch_size //= 2
            why += f", long rows ({p95} tokens at the 95th percentile)"
        reasons["batch_size"] = {"value": batch_size, "reason": why}
    epochs = hp.epochs
    steps_per_epoch = max(math.ceil(rows / batch_size), 1)
    if hp.max_steps is not None:
        # The run's length is given in steps: the rules below judge it by those.
        passes = math.ceil(hp.max_steps / steps_per_epoch)
        if epochs == "auto":
            reasons["epochs"] = {
                "value": passes,
                "reason": f"max_steps {hp.max_steps} at {steps_per_epoch} steps per epoch",
            }
        epochs = passes
    elif epochs == "auto":
        epochs = auto_epochs(rows, batch_size, class_counts, reasons)
    total_steps = hp.max_steps or steps_per_epoch * epochs
    learning_rate = hp.learning_rate
    if learning_rate == "auto":
        learning_rate = auto_learning_rate(hidden_size, total_steps, epochs, reasons)
    class_weight = hp.class_weight
    if class_weight == "auto":
        class_weight = auto_class_weight(class_counts, reasons)
    lr_scheduler = hp.lr_scheduler
    if lr_scheduler == "auto":
        if total_steps >= LONG_RUN_STEPS:
            lr_scheduler = "linear"
            why = f"{total_steps} optimizer steps: long enough to decay to 0"
        elif epochs >= MANY_EPOCHS:
            lr_scheduler = "linear"
            why = f"{epochs} passes over a small data set: long enough to decay to 0"
        elif class_weight is not None:
            lr_scheduler = "linear"
            why = (
                f"{total_steps} optimizer steps, with class weights: they keep a decayed short "
                "run off the majority class, and the decay then helps"
            )
        else:
            lr_scheduler = "constant"
            why = (
                f"{total_steps} optimizer steps in {epochs} epochs: fewer than {LONG_RUN_STEPS}, "
                "a decay to 0 would cut learning short"
            )
        reasons["lr_scheduler"] = {"value": lr_scheduler, "reason": why}
    eval_every = hp.eval_every
    if eval_every == "auto":
        eval_every = auto_eval_every(hp, epochs, steps_per_epoch, rows, validation_rows, reasons)
    resolved = hp.model_copy(
        update={
            "epochs": epochs,
            "batch_size": batch_size,
            "learning_rate": learning_rate,
            "lr_scheduler": lr_scheduler,
            "class_weight": class_weight,
            "eval_every": eval_every,
        }
    )
    return AutoChoices(resolved, reasons)


def auto_eval_every(
    hp: Hyperparameters,
    epochs: int,
    steps_per_epoch: int,
    rows: int,
    validation_rows: int | None,
    reasons: dict[str, Any],
) -> Literal["epoch"] | int:
    """Every epoch, unless validating after each one would cost a large share of the run: many
    passes over a small training set with a larger validation set (300 SST-2 rows, 20
    epochs, 872 validation rows: 44 s of the job's 100 s of training went on validation, 43 s
    on the training steps). Those are validated every few epochs, about `EVALUATIONS` times,
    and always at the end. Evaluations never change the weights, only what is seen
    along the way; early stopping counts evaluations, so it keeps one per epoch."""
    if hp.early_stopping_patience is not None:
        why = "early stopping counts evaluations: one per epoch"
    elif validation_rows is None:
        why = "the validation set's size is not known: one evaluation per epoch"
    elif validation_rows <= CHEAP_VALIDATION * rows:
        why = f"validation ({validation_rows} rows) costs little beside an epoch ({rows} rows)"
    elif epochs <= EVALUATIONS:
        why = f"{epochs} epochs: one evaluation each"
    else:
        every_epochs = math.ceil(epochs / EVALUATIONS)
        steps = every_epochs * steps_per_epoch
        why = (
            f"{epochs} epochs over {rows} rows, each validation pass ({validation_rows} rows) "
            f"costing about {validation_rows * VALIDATION_ROW_COST / rows:.1f} epochs of "
            f"training: every {every_epochs} epochs ({steps} steps) and at the end"
        )
        reasons["eval_every"] = {"value": steps, "reason": why}
        return steps
    reasons["eval_every"] = {"value": "epoch", "reason": why}
    return "epoch"


def auto_learning_rate(
    hidden_size: int | None, total_steps: int, epochs: int, reasons: dict[str, Any]
) -> float:
    """By model width; small models take 3e-5 on long runs. Doubled for a short run of one or
    two passes over its data, not for three passes or more (300 SST-2 rows, 3 passes of batch
    16 held constant, seeds 1-6: 1e-4 scored below 5e-5 on every seed, median 0.706 against
    0.749)."""
    if hidden_size is not None and hidden_size <= 384 and total_steps >= LONG_RUN_STEPS:
        rate = 3e-5
        why = f"a small model (hidden size {hidden_size}) on a long run ({total_steps} steps)"
    elif hidden_size is not None and hidden_size <= 384:
        rate, why = 5e-5, f"a small model (hidden size {hidden_size})"
    elif hidden_size is not None and hidden_size <= 768:
        rate, why = 3e-5, f"a base-sized model (hidden size {hidden_size})"
    else:
        rate, why = 2e-5, f"a large model (hidden size {hidden_size})"
    if total_steps < SHORT_RUN_STEPS and epochs <= SHORT_RUN_PASSES:
        rate *= 2
        passes = "1 epoch" if epochs == 1 else f"{epochs} epochs"
        why += f", doubled for a short run ({total_steps} optimizer steps in {passes})"
    reasons["learning_rate"] = {"value": rate, "reason": why}
    return rate


def auto_class_weight(
    class_counts: list[int] | None, reasons: dict[str, Any]
) -> Literal["balanced"] | None:
    """Balanced weights when one class outnumbers another by `IMBALANCED` or more."""
    if not class_counts or min(class_counts) == 0:
        reasons["class_weight"] = {"value": None, "reason": "not single-label classification"}
        return None
    ratio = max(class_counts) / min(class_counts)
    if ratio >= IMBALANCED:
        reasons["class_weight"] = {
            "value": "balanced",
            "reason": f"the most frequent class has {ratio:.1f}x the rows of the rarest",
        }
        return "balanced"
    reasons["class_weight"] = {"value": None, "reason": f"balanced enough ({ratio:.1f}x)"}
    return None


def auto_epochs(
    rows: int, batch_size: int, class_counts: list[int] | None, reasons: dict[str, Any]
) -> int:
    steps_per_epoch = math.ceil(rows / batch_size)
    if steps_per_epoch >= LARGE_EPOCH_STEPS:
        epochs = 1
        why = f"{steps_per_epoch} steps per epoch: one epoch is enough"
    else:
        wanted = math.ceil(TARGET_STEPS / steps_per_epoch)
        epochs = min(max(wanted, MIN_EPOCHS), MAX_EPOCHS)
        why = (
            f"{steps_per_epoch} steps per epoch; about {TARGET_STEPS} optimizer steps "
            f"wanted, {MIN_EPOCHS}-{MAX_EPOCHS} epochs"
        )
        if class_counts and min(class_counts) > 0:
            rarest = min(class_counts)
            needed = math.ceil(MIN_MINORITY_VIEWS / rarest)
            if needed > epochs and epochs < MAX_EPOCHS:
                epochs = min(needed, MAX_EPOCHS)
                why += f"; the rarest class has {rarest} rows, each seen {epochs} times"
    reasons["epochs"] = {"value": epochs, "reason": why}
    return epochs
