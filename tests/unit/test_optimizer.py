"""The lazy-embedding Adam against a NumPy reference, and the dense path left untouched."""

from __future__ import annotations

import math

import numpy as np
import pytest

import worker  # noqa: F401  (Keras 2 before TensorFlow)


def reference_lazy_adam(
    table: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]], lr: float, decay: float
) -> np.ndarray:
    """LazyAdam by hand: only the rows a step used move, with Adam's bias correction."""
    w, m, v = table.copy(), np.zeros_like(table), np.zeros_like(table)
    b1, b2, eps = 0.9, 0.999, 1e-8
    for t, (rows, grads) in enumerate(steps, start=1):
        summed: dict[int, np.ndarray] = {}
        for row, grad in zip(rows.tolist(), grads, strict=True):  # repeated rows add up
            summed[row] = summed.get(row, 0) + grad
        step = lr * np.sqrt(1 - b2**t) / (1 - b1**t)
        for row, grad in summed.items():
            w[row] -= lr * decay * w[row]
            m[row] = b1 * m[row] + (1 - b1) * grad
            v[row] = b2 * v[row] + (1 - b2) * grad**2
            w[row] -= step * m[row] / (np.sqrt(v[row]) + eps)
    return w


@pytest.mark.parametrize("decay", [0.0, 0.01])
def test_lazy_updates_touch_only_the_rows_a_batch_used(decay: float) -> None:
    import tensorflow as tf

    from worker.pipeline.optimizer import LazyEmbeddingAdam

    rng = np.random.default_rng(0)
    table = rng.normal(size=(50, 4)).astype(np.float32)
    variable = tf.Variable(table, name="word_embeddings/weight")
    optimizer = LazyEmbeddingAdam(learning_rate=0.01, weight_decay_rate=decay)
    steps = [
        (np.array([1, 3, 3, 7]), rng.normal(size=(4, 4)).astype(np.float32)),
        (np.array([3, 9]), rng.normal(size=(2, 4)).astype(np.float32)),
        (np.array([1, 40]), rng.normal(size=(2, 4)).astype(np.float32)),
    ]
    for rows, grads in steps:
        gradient = tf.IndexedSlices(tf.constant(grads), tf.constant(rows), tf.constant([50, 4]))
        optimizer.apply_gradients([(gradient, variable)])
    expected = reference_lazy_adam(table, steps, 0.01, decay)
    np.testing.assert_allclose(variable.numpy(), expected, rtol=1e-5, atol=1e-6)
    untouched = sorted(set(range(50)) - {1, 3, 7, 9, 40})
    np.testing.assert_array_equal(variable.numpy()[untouched], table[untouched])


def test_dense_weights_get_the_usual_adam_update() -> None:
    import tensorflow as tf
    import tf_keras

    from worker.pipeline.optimizer import LazyEmbeddingAdam

    start = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    ours, keras = tf.Variable(start), tf.Variable(start)
    lazy = LazyEmbeddingAdam(learning_rate=0.05)
    plain = tf_keras.optimizers.Adam(learning_rate=0.05)
    for k in range(3):
        gradient = tf.constant(np.cos(start * (k + 1)))
        lazy.apply_gradients([(gradient, ours)])
        plain.apply_gradients([(gradient, keras)])
    np.testing.assert_allclose(ours.numpy(), keras.numpy(), rtol=1e-5, atol=1e-6)
    assert not np.allclose(ours.numpy(), start)


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        # peak 1e-3, 100 steps, 10 of warm-up; rates at steps 0, 5, 10, 55, 100
        ("linear", [0.0, 5e-4, 1e-3, 5e-4, 0.0]),
        ("cosine", [0.0, 5e-4, 1e-3, 5e-4, 0.0]),
        ("constant", [0.0, 5e-4, 1e-3, 1e-3, 1e-3]),
    ],
)
def test_learning_rate_schedules_by_hand(kind: str, expected: list[float]) -> None:
    from worker.pipeline.optimizer import learning_rate_schedule

    schedule = learning_rate_schedule(kind, 1e-3, total_steps=100, warmup_steps=10)  # type: ignore[arg-type]
    rates = [float(schedule(step)) for step in (0, 5, 10, 55, 100)]
    assert rates == pytest.approx(expected, abs=1e-9)
    # Cosine and linear agree at the ends and the middle, and differ elsewhere:
    # a quarter of the way through the decay, cos gives (1 + cos(pi/4)) / 2 of the peak.
    quarter = float(learning_rate_schedule(kind, 1e-3, 100, 10)(32.5))  # type: ignore[arg-type]
    by_hand = {
        "linear": 0.75e-3,
        "cosine": (1 + math.cos(math.pi / 4)) / 2 * 1e-3,
        "constant": 1e-3,
    }
    assert quarter == pytest.approx(by_hand[kind], rel=1e-5)


def test_class_weights_balanced_and_given() -> None:
    from worker.pipeline.train import class_weights

    labels = np.array([0, 0, 0, 1])
    balanced = class_weights("balanced", ["no", "yes"], labels)
    assert balanced == {0: pytest.approx(4 / (2 * 3)), 1: pytest.approx(4 / (2 * 1))}
    assert class_weights({"yes": 5.0}, ["no", "yes"], labels) == {0: 1.0, 1: 5.0}
    assert class_weights(None, ["no", "yes"], labels) is None


def test_reset_optimizer_returns_to_a_new_optimizers_state() -> None:
    """Step 0 and zero moments, and under mixed_float16 the loss scale back at its start: the
    state a warm start's first update needs to equal a cold start's."""
    import tensorflow as tf
    import tf_keras

    from worker.pipeline.optimizer import LazyEmbeddingAdam, TrainingSchedule, reset_optimizer

    def run(optimizer: object, variable: tf.Variable) -> None:
        for k in range(3):
            optimizer.apply_gradients([(tf.constant([0.5, -1.0]) * (k + 1), variable)])  # type: ignore[attr-defined]

    schedule = TrainingSchedule("linear", 0.1, total_steps=10, warmup_steps=2)
    fresh_variable, used_variable = tf.Variable([1.0, 2.0]), tf.Variable([1.0, 2.0])
    fresh = LazyEmbeddingAdam(learning_rate=schedule)
    run(fresh, fresh_variable)

    used = LazyEmbeddingAdam(learning_rate=TrainingSchedule("linear", 0.1, 10, 2))
    run(used, used_variable)
    scaled = tf_keras.mixed_precision.LossScaleOptimizer(used, initial_scale=2.0**10)
    scaled.apply_gradients([(tf.constant([np.inf, 1.0]), used_variable)])  # an overflow
    assert float(scaled.loss_scale.numpy()) == 2.0**9  # halved, the step skipped
    reset_optimizer(scaled, [used_variable])
    assert int(used.iterations.numpy()) == 0
    assert float(scaled.loss_scale.numpy()) == 2.0**10
    assert not used.get_slot(used_variable, "m").numpy().any()
    used_variable.assign([1.0, 2.0])
    run(used, used_variable)  # the same three updates again: the same result as a fresh one
    np.testing.assert_array_equal(used_variable.numpy(), fresh_variable.numpy())
