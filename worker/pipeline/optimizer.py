"""The optimizer: a warm-up schedule (linear, cosine or constant after it), with an Adam update
that is cheap on a CPU.

Profiled on MiniLM (batch 16 x 16 tokens, float32): forward and backward take about 70 ms and
Keras' default Adam about 35 ms more, most of it dense passes over the 30,522 x 384 word
embedding table of which a batch touches a few hundred rows. Two changes cut that:

- the legacy Keras Adam, whose dense update is one fused kernel per variable
  (`ResourceApplyAdam`) instead of a chain of element-wise ops;
- "lazy" updates for embedding tables (sparse gradients): only the rows a batch used get their
  moments and weights updated, as in TensorFlow Addons' LazyAdam. Rows a batch did not use keep
  their moments until they are next seen, instead of decaying and drifting on stale momentum;
  the bench measures the effect on validation quality (`embedding_updates="dense"` restores
  the textbook update).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import tensorflow as tf
from transformers.modeling_tf_utils import keras
from transformers.optimization_tf import AdamWeightDecay

EmbeddingUpdates = Literal["lazy", "dense"]
Scheduler = Literal["linear", "cosine", "constant"]
NO_WEIGHT_DECAY = ["LayerNorm", "layer_norm", "bias"]


SCHEDULER_INDEX: dict[str, int] = {"linear": 0, "cosine": 1, "constant": 2}


class TrainingSchedule(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to the peak over the warm-up steps, then linear decay to 0 (transformers'
    `create_optimizer`), cosine decay to 0, or the peak held (the seed page's recipe).

    Every number, and the kind, lives in a variable the traced train step reads, so a warm
    worker (worker/pipeline/warm.py) gives its kept train step a new job's schedule with
    `configure` instead of tracing a new one. Left out of checkpoints on purpose: the job's
    own hyperparameters set it, also on a resume.
    """

    def __init__(self, kind: Scheduler, peak: float, total_steps: int, warmup_steps: int) -> None:
        super().__init__()
        self.kind = tf.Variable(0, dtype=tf.int32, trainable=False, name="schedule_kind")
        self.peak = tf.Variable(0.0, dtype=tf.float32, trainable=False, name="schedule_peak")
        self.warmup_steps = tf.Variable(0.0, trainable=False, name="schedule_warmup_steps")
        self.decay_steps = tf.Variable(1.0, trainable=False, name="schedule_decay_steps")
        self.configure(kind, peak, total_steps, warmup_steps)

    def configure(self, kind: Scheduler, peak: float, total_steps: int, warmup_steps: int) -> None:
        self.kind.assign(SCHEDULER_INDEX[kind])
        self.peak.assign(peak)
        self.warmup_steps.assign(float(max(warmup_steps, 0)))
        self.decay_steps.assign(float(max(total_steps - max(warmup_steps, 0), 1)))

    def __call__(self, step: tf.Tensor) -> tf.Tensor:
        step = tf.cast(step, tf.float32)
        peak = self.peak.read_value()
        warmup = self.warmup_steps.read_value()
        warming = peak * step / tf.maximum(warmup, 1.0)
        done = tf.minimum(tf.maximum(step - warmup, 0.0), self.decay_steps) / self.decay_steps
        after = tf.stack([peak * (1.0 - done), peak * 0.5 * (1.0 + tf.cos(math.pi * done)), peak])
        return tf.where(step < warmup, warming, tf.gather(after, self.kind))

    def get_config(self) -> dict[str, Any]:
        kind = {v: k for k, v in SCHEDULER_INDEX.items()}[int(self.kind.numpy())]
        return {
            "kind": kind,
            "peak": float(self.peak.numpy()),
            "total_steps": int(self.warmup_steps.numpy() + self.decay_steps.numpy()),
            "warmup_steps": int(self.warmup_steps.numpy()),
        }


def learning_rate_schedule(
    kind: Scheduler, peak: float, total_steps: int, warmup_steps: int
) -> TrainingSchedule:
    """The schedule a job with these settings trains with (see `TrainingSchedule`)."""
    return TrainingSchedule(kind, peak, total_steps, warmup_steps)


class LazyEmbeddingAdam(AdamWeightDecay):
    """AdamWeightDecay whose sparse (embedding) updates touch only the rows in the batch."""

    def _resource_apply_sparse(
        self, grad: tf.Tensor, var: tf.Variable, indices: tf.Tensor, apply_state: Any = None
    ) -> tf.Operation:
        var_dtype = var.dtype.base_dtype
        lr_t, _ = self._get_lr(var.device, var_dtype, apply_state)
        coefficients = (apply_state or {}).get((var.device, var_dtype)) or (
            self._fallback_apply_state(var.device, var_dtype)
        )
        beta_1 = coefficients["beta_1_t"]
        beta_2 = coefficients["beta_2_t"]
        epsilon = coefficients["epsilon"]
        step_size = coefficients["lr"]  # lr_t * sqrt(1 - beta_2^t) / (1 - beta_1^t)

        rows = tf.gather(var, indices)
        updates = []
        if self._do_use_weight_decay(var.name):
            rows = rows - lr_t * rows * coefficients["weight_decay_rate"]
        m = self.get_slot(var, "m")
        v = self.get_slot(var, "v")
        m_rows = beta_1 * tf.gather(m, indices) + (1 - beta_1) * grad
        v_rows = beta_2 * tf.gather(v, indices) + (1 - beta_2) * tf.square(grad)
        updates.append(m.scatter_update(tf.IndexedSlices(m_rows, indices)))
        updates.append(v.scatter_update(tf.IndexedSlices(v_rows, indices)))
        new_rows = rows - step_size * m_rows / (tf.sqrt(v_rows) + epsilon)
        updates.append(var.scatter_update(tf.IndexedSlices(new_rows, indices)))
        return tf.group(*updates)


def build_optimizer(
    schedule: TrainingSchedule, weight_decay: float, embedding_updates: EmbeddingUpdates
) -> Any:
    """Adam on the schedule: with `dense` updates the optimizer transformers'
    `create_optimizer` builds (AdamWeightDecay with weight decay, Keras' Adam without), else
    the lazy-embedding Adam."""
    adam = {"learning_rate": schedule, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-8}
    if embedding_updates == "dense" and weight_decay == 0:
        return keras.optimizers.Adam(**adam)
    kind = AdamWeightDecay if embedding_updates == "dense" else LazyEmbeddingAdam
    return kind(**adam, weight_decay_rate=weight_decay, exclude_from_weight_decay=NO_WEIGHT_DECAY)


def reset_optimizer(optimizer: Any, variables: list[tf.Variable]) -> None:
    """Back to a newly built optimizer's state: step 0, every moment 0 and, under mixed_float16,
    the loss scale at its start (a warm start's first update is then exactly a cold start's).
    Hyperparameter variables (the betas) are constants and stay."""
    scale = getattr(optimizer, "_loss_scale", None)  # Keras wraps it for mixed_float16
    if scale is not None:
        if not optimizer.dynamic:
            raise ValueError("a fixed loss scale has no state to reset")  # we never set one
        scale._current_loss_scale.assign(optimizer.initial_scale)
        scale._counter.assign(0)
        optimizer = optimizer.inner_optimizer
    optimizer.iterations.assign(0)
    for name in optimizer.get_slot_names():
        for variable in variables:
            slot = optimizer.get_slot(variable, name)
            slot.assign(tf.zeros(slot.shape, dtype=slot.dtype))
