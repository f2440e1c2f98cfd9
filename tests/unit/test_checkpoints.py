"""`checkpoint_every_steps: "auto"`: when a periodic checkpoint is due, on a real Checkpointer
(a small Keras model written to a temporary folder)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import worker  # noqa: F401  (Keras 2 before TensorFlow)
from worker import checkpoints
from worker.checkpoints import Checkpointer, TrainState


@pytest.fixture
def checkpointer(tmp_path: Path) -> Checkpointer:
    import tf_keras

    model = tf_keras.Sequential([tf_keras.layers.Dense(4, input_shape=(8,))])
    optimizer = tf_keras.optimizers.legacy.Adam()
    return Checkpointer(tmp_path / "checkpoints", model, optimizer, keep=3)


def due_after(checkpointer: Checkpointer, seconds: float) -> bool:
    """Whether a periodic checkpoint is due `seconds` after the last one."""
    checkpointer.last_saved_at = time.monotonic() - seconds
    return checkpointer.periodic_due()


def test_first_periodic_checkpoint_after_a_minute(checkpointer: Checkpointer) -> None:
    assert checkpoints.AUTO_CHECKPOINT_MIN_SECONDS == 60
    assert not checkpointer.periodic_due()  # just started
    assert not due_after(checkpointer, 59)
    assert due_after(checkpointer, 61)


def test_slow_writes_space_checkpoints_to_fifty_times_their_cost(
    checkpointer: Checkpointer,
) -> None:
    checkpointer.save(TrainState(global_step=5))
    assert checkpointer.written == 1 and checkpointer.last_write_seconds is not None
    assert checkpointer.write_seconds == checkpointer.last_write_seconds > 0
    assert not checkpointer.periodic_due()  # the clock restarts at each checkpoint
    # A small model writes in milliseconds: the minute decides.
    assert due_after(checkpointer, 61)
    # A write of 2.5 s (MiniLM with Adam's slots on a slow disk): every 125 s, 2% of the run.
    checkpointer.last_write_seconds = 2.5
    assert not due_after(checkpointer, 120)
    assert due_after(checkpointer, 126)


def test_rewriting_a_saved_steps_state_is_not_counted_as_a_write(
    checkpointer: Checkpointer,
) -> None:
    """A periodic checkpoint on an epoch's last step, then the epoch's own: the tensors are
    written once, and only that write's time counts."""
    checkpointer.save(TrainState(global_step=5, epoch=0, step_in_epoch=5))
    first = checkpointer.last_write_seconds
    checkpointer.save(TrainState(global_step=5, epoch=1, step_in_epoch=0))
    assert checkpointer.written == 1 and checkpointer.last_write_seconds == first
    checkpointer.save(TrainState(global_step=9, epoch=1, step_in_epoch=4))
    assert checkpointer.written == 2
