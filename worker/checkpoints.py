"""Full training state on disk: weights, optimizer slots, dropout RNG, and the data position.

TensorFlow's CheckpointManager holds the tensors; a JSON state file beside each checkpoint holds
where in the data the run was (epoch, step within it) and the evaluation/early-stopping record.
The state file is written first, under a temporary name, so a checkpoint the index points at
always has its state, and a failed write never damages the previous checkpoint.
"""

from __future__ import annotations

import json
import secrets
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import tensorflow as tf

from app.core.layout import CHECKPOINT_STATE_SUFFIX, write_atomically
from app.core.schemas import Evaluation
from worker.errors import StorageError

BEST_POINTER = "best.json"  # names the folder holding the best weights (early stopping)
# `checkpoint_every_steps` "auto": a periodic checkpoint once this long has passed since the
# last one, and long enough that writing them costs at most this share of the run.
AUTO_CHECKPOINT_MIN_SECONDS = 60.0
AUTO_CHECKPOINT_WRITE_SHARE = 0.02


@dataclass
class TrainState:
    epoch: int = 0  # the epoch in progress (0-based)
    step_in_epoch: int = 0  # batches of that epoch already trained on
    global_step: int = 0
    evaluations: list[Evaluation] = field(default_factory=list)
    epoch_losses: list[float] = field(default_factory=list)
    # The epoch in progress's mean training loss so far and the rows it covers, so that an
    # epoch resumed part-way (or at its very last step) still reports its whole loss.
    epoch_loss_so_far: float = 0.0
    epoch_rows_so_far: int = 0
    best_value: float | None = None
    best_step: int | None = None
    evals_without_improvement: int = 0
    saved_at: float = 0.0

    @classmethod
    def from_json(cls, text: str) -> TrainState:
        raw = json.loads(text)
        known = {k: v for k, v in raw.items() if k in cls.__dataclass_fields__}
        known["evaluations"] = [Evaluation.model_validate(e) for e in known.get("evaluations", [])]
        return cls(**known)

    def to_json(self) -> str:
        fields = asdict(self)
        fields["evaluations"] = [e.model_dump() for e in self.evaluations]
        return json.dumps(fields)


def dropout_generators(model: tf.keras.Model) -> list[tf.random.Generator]:
    """The dropout layers' random generators, in a stable order.

    tf-keras keeps them out of checkpoints on purpose (backward compatibility); without them a
    resumed run would draw different dropout masks than an uninterrupted one. They are created
    lazily inside the first traced step, so create them here, eagerly, from the seeded state.
    """
    generators = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        random_generator = getattr(layer, "_random_generator", None)
        if random_generator is None:
            continue
        random_generator._maybe_init()
        generator = getattr(random_generator, "_generator", None)
        if isinstance(generator, tf.random.Generator):
            generators.append(generator)
    return generators


def seed_dropout(model: tf.keras.Model, seed: int) -> None:
    """Start every dropout generator from the job's seed (and the layer's place), so a model
    a warm worker reuses draws exactly the masks a newly built one would."""
    for index, generator in enumerate(dropout_generators(model)):
        generator.reset_from_seed(seed * 100_003 + index)


class Checkpointer:
    """`guard` runs before every write and raises when this process no longer owns the job
    (a worker that lost its lease must not write into the folder its successor uses)."""

    def __init__(
        self,
        directory: Path,
        model: tf.keras.Model,
        optimizer: Any,
        keep: int,
        guard: Callable[[], None] = lambda: None,
    ) -> None:
        self.directory, self.guard = directory, guard
        directory.mkdir(parents=True, exist_ok=True)
        self.checkpoint = tf.train.Checkpoint(
            model=model, optimizer=optimizer, dropout_rng=dropout_generators(model)
        )
        self.weights_only = tf.train.Checkpoint(model=model)
        self.manager = tf.train.CheckpointManager(
            self.checkpoint, str(directory), max_to_keep=keep, checkpoint_name="ckpt"
        )
        self.last_saved_step: int | None = None
        self.last_saved_at = time.monotonic()
        self.last_write_seconds: float | None = None
        self.written = 0  # tensors written by this process (a state-only rewrite not counted)
        self.write_seconds = 0.0

    def periodic_due(self) -> bool:
        """`checkpoint_every_steps` "auto": whether the time since the last checkpoint is at
        least a minute and 50 times what the last one took to write. A checkpoint bounds the
        work a crash loses, and costs the same whatever a step costs (MiniLM: 270 MB with
        Adam's slots, 0.6 to 2.5 s on the CPUs measured), so a fixed step count is too often
        where steps are fast and needlessly rare where they are slow."""
        interval = AUTO_CHECKPOINT_MIN_SECONDS
        if self.last_write_seconds is not None:
            interval = max(interval, self.last_write_seconds / AUTO_CHECKPOINT_WRITE_SHARE)
        return time.monotonic() - self.last_saved_at >= interval

    def save(self, state: TrainState) -> str:
        """The tensors and the state at this step. When this step's tensors were saved a moment
        ago (a periodic checkpoint on the epoch's last step), only the state is written again:
        no step ran since, so the tensors are the same (260 MB and about a second for MiniLM)."""
        state.saved_at = time.time()
        started = time.monotonic()
        name = f"ckpt-{state.global_step}"
        self.guard()
        latest = self.manager.latest_checkpoint
        tensors_saved = (
            self.last_saved_step == state.global_step
            and latest is not None
            and Path(latest).name == name
        )
        try:
            write_atomically(self.directory / (name + CHECKPOINT_STATE_SUFFIX), state.to_json())
            path = (
                latest if tensors_saved else self.manager.save(checkpoint_number=state.global_step)
            )
        except (OSError, tf.errors.OpError) as exc:
            raise StorageError(
                f"could not write checkpoint at step {state.global_step}: {exc}"
            ) from exc
        self._prune_state_files()
        self.last_saved_step = state.global_step
        self.last_saved_at = time.monotonic()
        if not tensors_saved:
            self.last_write_seconds = self.last_saved_at - started
            self.written += 1
            self.write_seconds += self.last_write_seconds
        return path

    def restore_latest(self) -> TrainState | None:
        latest = self.manager.latest_checkpoint
        if latest is None:
            return None
        state_file = Path(latest + CHECKPOINT_STATE_SUFFIX)
        if not state_file.exists():
            return None
        self.checkpoint.restore(latest)
        self.last_saved_step = None
        return TrainState.from_json(state_file.read_text())

    def save_best(self, global_step: int) -> None:
        """Weights only, for early stopping. Written to a folder of their own, then made the
        best by atomically replacing a small pointer file: a crash mid-write leaves the
        previous best intact, never half of each."""
        self.guard()
        folder = f"best-{global_step}-{secrets.token_hex(3)}"
        try:
            self.weights_only.write(str(self.directory / folder / "weights"))
            write_atomically(self.directory / BEST_POINTER, json.dumps({"folder": folder}))
        except (OSError, tf.errors.OpError) as exc:
            raise StorageError(
                f"could not write the best weights at step {global_step}: {exc}"
            ) from exc
        for old in self.directory.glob("best-*"):
            if old.name != folder:
                shutil.rmtree(old, ignore_errors=True)

    def restore_best(self) -> bool:
        pointer = self.directory / BEST_POINTER
        if not pointer.exists():
            return False
        prefix = self.directory / json.loads(pointer.read_text())["folder"] / "weights"
        if not Path(str(prefix) + ".index").exists():
            return False
        self.weights_only.read(str(prefix)).expect_partial()
        return True

    def _prune_state_files(self) -> None:
        kept = {Path(p).name for p in self.manager.checkpoints}
        for state_file in self.directory.glob("ckpt-*" + CHECKPOINT_STATE_SUFFIX):
            if state_file.name.removesuffix(CHECKPOINT_STATE_SUFFIX) not in kept:
                state_file.unlink(missing_ok=True)
