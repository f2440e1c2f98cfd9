"""The training pipeline with real TensorFlow on tiny random BERT models (no service)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import worker  # noqa: F401  (Keras 2 before TensorFlow)
from app.core.layout import list_checkpoints
from tests.support.factories import NEUTRAL, sentiment_rows, write_csv
from tests.support.pipeline import Recorder, assert_same_weights, final_weights, spec_for, train
from worker.errors import DataNotFound, InvalidInput, JobCancelled, ModelNotFound


def test_trains_saves_and_loads_back(models_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    import tensorflow as tf
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    reporter = Recorder()
    # 2e-3, not the tests' 5e-3: at 5e-3 the tiny model's third epoch can blow up on one CPU
    # and not on another (round-off); at 2e-3 nine seeds of nine learn, in both precisions.
    metrics = train(
        spec_for(data_dir / "train.csv", data_dir / "validation.csv", epochs=3, learning_rate=2e-3),
        tmp_path,
        models_dir,
        reporter,
    )
    assert metrics["final"]["accuracy"] > 0.9, metrics  # the keyword task is learnable
    assert len(metrics["evaluations"]) == 3  # one per epoch
    stages = [message for kind, message, _ in reporter.events if kind == "stage"]
    assert any(m.startswith("tokenized 460 rows") for m in stages)
    assert reporter.steps[-1] == metrics["global_step"] == 3 * 25

    folder = tmp_path / "model"
    model = TFAutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    logits = model(
        tokenizer(["a great fun movie", "an awful boring film"], return_tensors="tf", padding=True)
    ).logits.numpy()
    assert list(logits.argmax(-1)) == [1, 0]
    assert model.config.id2label == {0: "0", 1: "1"}
    job = json.loads((folder / "job.json").read_text())
    assert job["seed"] == 42 and job["versions"]["transformers"].startswith("4.5")
    assert job["data"]["training"].startswith("sha256:")
    # The artifact leaves the server: no server paths, no webhook URL in it.
    assert job["spec"]["training_file"] == "train.csv" and "webhook_url" not in job["spec"]
    assert str(data_dir) not in (folder / "job.json").read_text()
    history = json.loads((folder / "history.json").read_text())
    assert len(history["epoch_train_loss"]) == 3
    saved = json.loads((folder / "metrics.json").read_text())
    assert saved["final"] == metrics["final"]
    report = json.loads((folder / "report.json").read_text())
    assert saved["report"] == report
    assert sum(map(sum, report["confusion_matrix"])) == report["rows"] == 60
    tags = set()
    for event_file in (folder / "tensorboard").rglob("events.out.tfevents.*"):
        for record in tf.compat.v1.train.summary_iterator(str(event_file)):
            tags |= {value.tag for value in record.summary.value}
    assert {"loss", "tokens_per_second", "matthews_correlation", "accuracy"} <= tags


@pytest.mark.parametrize("precision", ["mixed_bfloat16", "float32"])
def test_each_precision_trains_a_usable_float32_model(
    models_dir: Path, data_dir: Path, tmp_path: Path, precision: str
) -> None:
    from transformers import TFAutoModelForSequenceClassification

    from worker.hardware import cpu_supports_bfloat16_matmul
    from worker.pipeline import warm

    # Traced here, not taken warm from the case before (which is float32 on a CPU without
    # bfloat16 instructions, and so has the same warm key).
    warm.compiled_models.items.clear()
    spec = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        epochs=3,
        learning_rate=2e-3,  # see test_trains_saves_and_loads_back
        precision=precision,
        steps_per_execution=8,
        embedding_updates="lazy",
    )
    metrics = train(spec, tmp_path, models_dir)
    assert metrics["final"]["accuracy"] > 0.9, metrics
    assert metrics["global_step"] == 3 * 25
    job = json.loads((tmp_path / "model" / "job.json").read_text())
    bfloat16 = precision == "mixed_bfloat16" and cpu_supports_bfloat16_matmul()
    assert job["precision"] == ("mixed_bfloat16" if bfloat16 else "float32")
    assert metrics["batch_shapes"] <= 16 + 1  # the buckets, and one short last batch
    assert metrics["train_step_traces"] == 1  # every shape, every epoch: one trace
    model = TFAutoModelForSequenceClassification.from_pretrained(tmp_path / "model")
    assert {w.dtype.name for w in model.weights} == {"float32"}  # saved weights are float32


def test_mixed_float16_the_gpu_default_checkpoints_resumes_and_warm_starts(
    models_dir: Path, data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """mixed_float16, the precision "auto" picks on a GPU, where Keras wraps the optimizer for
    loss scaling. There is no GPU here, so the device check is told there is one and
    TensorFlow's CPU float16 kernels run the very same code path. The run learns, writes its
    checkpoints (the first save used to fail: the wrapped optimizer's slots were reached by
    two paths), a warm start ends with the cold run's exact weights, and a run crashed at step
    37 resumes from 35 (loss scale included) and ends with them too."""
    from worker import hardware
    from worker.pipeline import warm

    monkeypatch.setattr(hardware, "configure_devices", lambda: ["/physical_device:GPU:0"])
    warm.configure(2)
    warm.compiled_models.items.clear()
    spec = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        learning_rate=2e-3,  # see test_trains_saves_and_loads_back
        precision="mixed_float16",
        seed=5,
    )
    try:
        cold = train(spec, tmp_path / "cold", models_dir)
        warm_metrics = train(spec, tmp_path / "warm", models_dir)
        with pytest.raises(RuntimeError, match="simulated crash"):
            train(spec, tmp_path / "resumed", models_dir, Recorder(crash_at=37))
        resumed = train(spec, tmp_path / "resumed", models_dir)
    finally:
        warm.compiled_models.items.clear()  # float16 models: of no use to later tests
    assert cold["final"]["accuracy"] > 0.9, cold
    job = json.loads((tmp_path / "cold" / "model" / "job.json").read_text())
    assert job["precision"] == "mixed_float16"
    assert len(list_checkpoints(tmp_path / "cold" / "checkpoints")) == 3  # keep_checkpoints
    assert (cold["train_step_traces"], warm_metrics["train_step_traces"]) == (1, 0)
    assert resumed["resumed_from_step"] == 35
    cold_model = tmp_path / "cold" / "model"
    assert {w.dtype.name for w in final_weights(cold_model).values()} == {"float32"}
    assert_same_weights(cold_model, tmp_path / "warm" / "model", exact=True)
    assert_same_weights(cold_model, tmp_path / "resumed" / "model")


def test_under_mixed_precision_the_head_outputs_float32(models_dir: Path) -> None:
    """The encoder computes in bfloat16, the output layer in float32: a regression output
    near 2.5 would otherwise move in steps of 0.016."""
    import tensorflow as tf
    import tf_keras

    from app.core.catalog import ModelRef
    from worker.pipeline.data import LabelInfo
    from worker.pipeline.model import compute_output_in_float32, load_model
    from worker.pipeline.tasks import task_named

    ref = ModelRef(name="tiny", source="local", location=str(models_dir / "tiny"))
    inputs = {"input_ids": tf.constant([[2, 10, 11, 3]]), "attention_mask": tf.ones([1, 4])}
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        for task, labels in [
            (task_named("regression"), LabelInfo("regression")),
            (task_named("token_classification"), LabelInfo("token_classification", ["O", "B-X"])),
        ]:
            model = load_model(ref, task, labels)
            assert model(inputs).logits.dtype == tf.bfloat16  # as transformers builds it
            compute_output_in_float32(model, task)
            assert model(inputs).logits.dtype == tf.float32
            assert task.output_layer(model).compute_dtype == "float32"
            encoder = getattr(model, model.base_model_prefix)
            assert encoder.compute_dtype == "bfloat16"
        masked = task_named("masked_lm")
        model = load_model(ref, masked, LabelInfo("masked_lm"))
        compute_output_in_float32(model, masked)  # tied to the embeddings: left as it is
        assert model(inputs).logits.dtype == tf.bfloat16
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_under_bfloat16_the_activations_compute_in_float32(models_dir: Path) -> None:
    """GELU runs in float32 (vectorised on CPUs, unlike bfloat16) and hands bfloat16 on: the
    model's own function, computed more precisely; Keras' layers and float32 runs untouched."""
    import tensorflow as tf
    import tf_keras
    from transformers.activations_tf import get_tf_activation

    from app.core.catalog import ModelRef
    from worker.pipeline.data import LabelInfo
    from worker.pipeline.model import compute_activations_in_float32, load_model
    from worker.pipeline.tasks import task_named

    ref = ModelRef(name="tiny", source="local", location=str(models_dir / "tiny"))
    task, labels = task_named("sequence_classification"), LabelInfo("classification", ["a", "b"])
    gelu = get_tf_activation("gelu")

    def patched(model: Any) -> list[Any]:
        return [
            layer
            for layer in model._flatten_layers()
            if getattr(getattr(layer, "intermediate_act_fn", None), "computes_in_float32", False)
        ]

    model = load_model(ref, task, labels)
    compute_activations_in_float32(model)  # float32 policy: nothing to do
    assert patched(model) == []
    tf_keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = load_model(ref, task, labels)
        inputs = {"input_ids": tf.constant([[2, 10, 11, 3]]), "attention_mask": tf.ones([1, 4])}
        before = model(inputs).logits.numpy()
        compute_activations_in_float32(model)
        layers = patched(model)
        assert len(layers) == model.config.num_hidden_layers  # each layer's intermediate GELU
        x = tf.cast(tf.linspace(-4.0, 4.0, 1001), tf.bfloat16)
        y = layers[0].intermediate_act_fn(x)
        assert y.dtype == tf.bfloat16
        exact = gelu(tf.cast(x, tf.float32))
        assert tf.reduce_all(y == tf.cast(exact, tf.bfloat16))  # float32, rounded once
        assert not tf.reduce_all(gelu(x) == y)  # bfloat16 throughout rounds differently
        after = model(inputs).logits.numpy()
        assert abs(after - before).max() < 0.05  # the same function
        pooler = model.bert.pooler.dense  # a Keras Dense: serialises "tanh" by name
        assert pooler.activation is tf_keras.activations.tanh
    finally:
        tf_keras.mixed_precision.set_global_policy("float32")


def test_string_labels_are_mapped_in_sorted_order(models_dir: Path, tmp_path: Path) -> None:
    names = {0: "negative", 1: "positive"}
    rows = [(text, names[label]) for text, label in sentiment_rows(120, seed=5)]
    csv = write_csv(tmp_path / "train.csv", ["text", "sentiment"], rows)
    train(
        spec_for(csv, text_column="text", label_column="sentiment", epochs=1), tmp_path, models_dir
    )
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["id2label"] == {"0": "negative", "1": "positive"}
    assert config["label2id"] == {"negative": 0, "positive": 1}


def test_sentence_pairs(models_dir: Path, tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from worker.pipeline.data import load_splits
    from worker.pipeline.tasks import task_named

    rng = random.Random(7)
    rows = [(rng.choice(NEUTRAL), text, label) for text, label in sentiment_rows(400, seed=8)]
    csv = write_csv(tmp_path / "pairs.csv", ["premise", "hypothesis", "label"], rows)
    spec = spec_for(csv, text_column="premise", text_pair_column="hypothesis", epochs=4)
    task = task_named(spec.task)
    data = load_splits(spec, task, allow_hub=False, max_labels=10)
    encoded = task.tokenize(data.train, AutoTokenizer.from_pretrained(models_dir / "tiny"), spec)
    assert 1 in encoded[0]["token_type_ids"]  # the pair is encoded as two segments
    metrics = train(spec, tmp_path, models_dir)
    assert metrics["final"]["accuracy"] > 0.8  # the label follows the second sentence


def test_regression_with_float_labels(models_dir: Path, tmp_path: Path) -> None:
    rows = [(text, float(label) * 4.0 + 0.5) for text, label in sentiment_rows(400, seed=9)]
    csv = write_csv(tmp_path / "scores.csv", ["sentence", "score"], rows)
    # Decayed from 3e-3 over 6 epochs: pearson 0.98 or more on nine seeds of nine, in float32
    # and in bfloat16 (whose float32 output layer this needs: a bfloat16 one left one seed's
    # predictions all equal). At 5e-3 the tiny model is chaotic (0.58 to 1.0 by seed and CPU).
    spec = spec_for(csv, label_column="score", epochs=6, learning_rate=3e-3, lr_scheduler="linear")
    metrics = train(spec, tmp_path, models_dir)
    assert set(metrics["final"]) == {"loss", "mse", "pearson"}
    assert metrics["final"]["pearson"] > 0.9
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["problem_type"] == "regression" and len(config["id2label"]) == 1


def test_held_out_validation_is_seeded(models_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    from worker.pipeline.data import load_splits
    from worker.pipeline.tasks import task_named

    spec = spec_for(data_dir / "train.csv", validation_fraction=0.25)
    task = task_named(spec.task)
    first = load_splits(spec, task, allow_hub=False, max_labels=10)
    again = load_splits(spec, task, allow_hub=False, max_labels=10)
    assert (len(first.train), len(first.validation)) == (300, 100)
    assert first.validation["sentence"] == again.validation["sentence"]
    assert first.validation_held_out
    other = load_splits(
        spec.model_copy(
            update={"hyperparameters": spec.hyperparameters.model_copy(update={"seed": 7})}
        ),
        task,
        allow_hub=False,
        max_labels=10,
    )
    assert other.validation["sentence"] != first.validation["sentence"]


@pytest.mark.parametrize(
    ("steps_per_execution", "crash_at", "resumed_from"),
    [
        # The last checkpoint is at step 30 (mid-epoch 2), so the resumed run must rebuild
        # epoch 2's order, skip its first 5 batches and redo 31-33 identically.
        (1, 33, 30),
        # Four steps per call: epoch 2 runs 26-29, 30-33 (checkpoint: step 30 was reached),
        # then crashes at 37; the resumed run starts mid-call, at batch 9 of epoch 2.
        (4, 37, 33),
    ],
)
def test_resumed_run_ends_with_the_same_weights(
    models_dir: Path,
    data_dir: Path,
    tmp_path: Path,
    steps_per_execution: int,
    crash_at: int,
    resumed_from: int,
) -> None:
    spec = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        epochs=2,
        steps_per_execution=steps_per_execution,
    )
    train(spec, tmp_path / "straight", models_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, tmp_path / "resumed", models_dir, Recorder(crash_at=crash_at))
    reporter = Recorder()
    metrics = train(spec, tmp_path / "resumed", models_dir, reporter)
    assert metrics["resumed_from_step"] == resumed_from
    assert any(data.get("resumed") for _, _, data in reporter.events)
    assert reporter.steps[0] == min(resumed_from + steps_per_execution, 50)
    # The epoch the crash cut short reports its whole loss, not only the resumed part's.
    losses = [
        json.loads((tmp_path / run / "model" / "history.json").read_text())["epoch_train_loss"]
        for run in ("straight", "resumed")
    ]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    assert_same_weights(tmp_path / "straight" / "model", tmp_path / "resumed" / "model")


def test_a_run_resumed_at_an_epochs_last_step_evaluates_there_and_ends_the_same(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """2 epochs of 25 steps, validated every 5 and checkpointed every 25: the checkpoint at
    step 25 is written inside `fit`, before the epoch's end, whose validation the loop runs.
    A crash in that validation leaves the checkpoint at the epoch's very last step; the resumed
    run trains nothing of epoch 1, validates at 25 as the straight run did, and ends with its
    weights, validations and per-epoch losses."""
    spec = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        epochs=2,
        eval_every=5,
        checkpoint_every_steps=25,
        keep_checkpoints=50,
    )
    straight = Recorder()
    train(spec, tmp_path / "straight", models_dir, straight)
    assert [e.step for e in straight.evaluations] == list(range(5, 51, 5))
    with pytest.raises(RuntimeError, match="simulated crash evaluating step 25"):
        train(spec, tmp_path / "resumed", models_dir, Recorder(crash_evaluating_at=25))
    (saved,) = list_checkpoints(tmp_path / "resumed" / "checkpoints")
    state = json.loads((tmp_path / "resumed" / "checkpoints" / "ckpt-25.state.json").read_text())
    assert saved["global_step"] == 25 and (state["epoch"], state["step_in_epoch"]) == (0, 25)
    resumed = Recorder()
    metrics = train(spec, tmp_path / "resumed", models_dir, resumed)
    assert metrics["resumed_from_step"] == 25
    assert resumed.steps[0] == 26  # nothing of epoch 1 trained again
    assert resumed.evaluations == straight.evaluations[4:]
    histories = [
        json.loads((tmp_path / run / "model" / "history.json").read_text())
        for run in ("straight", "resumed")
    ]
    assert histories[0]["evaluations"] == histories[1]["evaluations"]
    np.testing.assert_allclose(
        histories[1]["epoch_train_loss"], histories[0]["epoch_train_loss"], rtol=1e-5
    )
    assert_same_weights(tmp_path / "straight" / "model", tmp_path / "resumed" / "model")


def test_auto_checkpoints_a_short_run_only_at_its_epoch_ends(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """`checkpoint_every_steps` "auto", the default: a run of seconds writes no periodic
    checkpoint (the first is due after a minute), only its 3 epoch ends', and reports how
    many it wrote and how long writing them took."""
    spec = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        checkpoint_every_steps="auto",
        keep_checkpoints=50,
    )
    metrics = train(spec, tmp_path, models_dir)
    assert [c["global_step"] for c in list_checkpoints(tmp_path / "checkpoints")] == [25, 50, 75]
    assert metrics["checkpoints_written"] == 3
    assert 0 < metrics["checkpoint_seconds"] < metrics["train_seconds"]


def test_max_steps_ends_inside_an_epoch_and_resumes_there(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """40 steps of 25-step epochs: one whole pass and the first 15 batches of the second,
    the schedule spanning the 40; a crash at 37 resumes from the checkpoint at 35 and ends
    with the uninterrupted run's weights."""
    spec = spec_for(data_dir / "train.csv", data_dir / "validation.csv", epochs=3, max_steps=40)
    reporter = Recorder()
    metrics = train(spec, tmp_path / "straight", models_dir, reporter)
    assert metrics["global_step"] == reporter.steps[-1] == 40
    assert [(e.epoch, e.step) for e in reporter.evaluations] == [(1.0, 25), (1.6, 40)]
    stages = [message for kind, message, _ in reporter.events if kind == "stage"]
    assert "training: 2 epochs of 25 steps, 40 steps in all (max_steps)" in stages
    job = json.loads((tmp_path / "straight" / "model" / "job.json").read_text())
    assert job["hyperparameters"]["max_steps"] == 40
    # Step 40 is a periodic checkpoint (every 5) and the epoch's end: the tensors are written
    # once, then only the state again (epoch 2 done).
    checkpoints = tmp_path / "straight" / "checkpoints"
    state = checkpoints / "ckpt-40.state.json"
    assert json.loads(state.read_text())["epoch"] == 2
    tensors = max(p.stat().st_mtime_ns for p in checkpoints.glob("ckpt-40.data-*"))
    assert tensors < state.stat().st_mtime_ns
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, tmp_path / "resumed", models_dir, Recorder(crash_at=37))
    metrics = train(spec, tmp_path / "resumed", models_dir, Recorder())
    assert metrics["resumed_from_step"] == 35 and metrics["global_step"] == 40
    assert_same_weights(tmp_path / "straight" / "model", tmp_path / "resumed" / "model")


def test_a_warm_worker_reuses_data_and_weights_and_trains_the_same(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    from worker import cache

    cache.configure(4)
    cache.tokenized_data.items.clear()
    cache.pretrained.items.clear()
    spec = spec_for(data_dir / "train.csv", data_dir / "validation.csv", seed=7)
    cold, warm = Recorder(), Recorder()
    train(spec, tmp_path / "cold", models_dir, cold)
    train(spec, tmp_path / "warm", models_dir, warm)
    cold_stages = [m for kind, m, _ in cold.events if kind == "stage"]
    warm_stages = [m for kind, m, _ in warm.events if kind == "stage"]
    assert not any("cache" in m or m.startswith("reused") for m in cold_stages)
    assert any("from this worker's cache" in m for m in warm_stages)
    assert any(m.startswith("reused 460 tokenized rows") for m in warm_stages)
    first = final_weights(tmp_path / "cold" / "model")
    second = final_weights(tmp_path / "warm" / "model")
    for name in first:  # the cached start is exactly the fresh one, so training is too
        np.testing.assert_allclose(second[name], first[name], rtol=1e-6, atol=1e-7, err_msg=name)

    # Content, not names: an edited data file or model folder is a miss.
    changed = tmp_path / "changed.csv"
    changed.write_text((data_dir / "train.csv").read_text() + "a great film,1\n")
    again = Recorder()
    train(spec_for(changed, data_dir / "validation.csv", seed=7), tmp_path / "c", models_dir, again)
    assert not any(m.startswith("reused") for kind, m, _ in again.events if kind == "stage")
    other_seed = Recorder()
    train(
        spec_for(changed, data_dir / "validation.csv", seed=8),
        tmp_path / "d",
        models_dir,
        other_seed,
    )
    messages = [m for kind, m, _ in other_seed.events if kind == "stage"]
    assert any(m.startswith("reused") for m in messages)  # same data, new seed
    assert not any("cache" in m for m in messages)  # but a new head: the model is loaded anew


def test_a_warm_start_skips_tracing_and_ends_with_a_cold_starts_weights(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """A worker that trained this model shape reuses its compiled model (no new trace) for a
    job with another seed, learning rate, schedule, warm-up and epochs, and ends exactly where
    a worker that never saw the shape ends."""
    from worker import cache
    from worker.pipeline import warm

    cache.configure(4)
    warm.configure(2)
    warm.compiled_models.items.clear()
    first = spec_for(data_dir / "train.csv", data_dir / "validation.csv", seed=3, epochs=1)
    second = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        seed=11,
        epochs=2,
        learning_rate=2e-3,
        lr_scheduler="cosine",
        warmup_ratio=0.3,
        # dropout masks drawn from the seed differ between runs unless reset exactly
    )
    try:
        train(first, tmp_path / "first", models_dir)
        assert len(warm.compiled_models.items) == 1
        reporter = Recorder()
        warm_metrics = train(second, tmp_path / "warm", models_dir, reporter)
        warm.configure(0)  # a worker that keeps nothing: the cold start
        cold_metrics = train(second, tmp_path / "cold", models_dir)
    finally:
        warm.configure(2)
    stages = [(m, data) for kind, m, data in reporter.events if kind == "stage"]
    assert any(data.get("warm_start") for _, data in stages), stages
    assert warm_metrics["train_step_traces"] == 0
    assert cold_metrics["train_step_traces"] == 1
    assert_same_weights(tmp_path / "cold" / "model", tmp_path / "warm" / "model", exact=True)
    assert warm_metrics["evaluations"] == cold_metrics["evaluations"]
    # The first job's names (labels, threshold) do not leak into the second's model.
    warm_config = json.loads((tmp_path / "warm" / "model" / "config.json").read_text())
    cold_config = json.loads((tmp_path / "cold" / "model" / "config.json").read_text())
    assert warm_config == cold_config


def test_cancel_stops_within_a_few_steps_and_checkpoints(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = spec_for(data_dir / "train.csv", epochs=5, checkpoint_every_steps=1000)
    reporter = Recorder(stop_at=7)
    with pytest.raises(JobCancelled) as stopped:
        train(spec, tmp_path, models_dir, reporter)
    # Stop requests are read at most 20 times a second, so how many steps pass after step 7
    # depends on the machine's speed; what cannot vary: it stopped after the request, well
    # before the first epoch (23 steps) ended, and checkpointed exactly where it stopped.
    assert 7 <= stopped.value.global_step < 23
    saved = list_checkpoints(tmp_path / "checkpoints")
    assert saved[-1]["global_step"] == stopped.value.global_step
    assert not (tmp_path / "model" / "metrics.json").exists()


def test_early_stopping_keeps_the_best_weights(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    # A learning rate far too high: after a first good step or two, the updates overshoot and
    # the validation loss rises, so the last weights are worse than the best ones.
    spec = spec_for(
        data_dir / "train.csv",
        data_dir / "validation.csv",
        epochs=20,
        learning_rate=0.3,
        eval_every=5,
        steps_per_execution=5,
        early_stopping_patience=2,
        early_stopping_metric="loss",
        precision="float32",  # so this test's own float32 evaluation can match the pipeline's
    )
    metrics = train(spec, tmp_path, models_dir)
    evaluations = metrics["evaluations"]
    assert metrics["stopped_early"] and metrics["restored_best_weights"]
    best = next(e for e in evaluations if e["step"] == metrics["best_step"])
    last = evaluations[-1]
    assert last["step"] == metrics["global_step"]
    assert [e["step"] > best["step"] for e in evaluations].count(True) == 2  # the patience
    assert last["loss"] > best["loss"] + 1e-3, evaluations  # the last weights are worse
    assert {k: metrics["final"][k] for k in best if k not in ("epoch", "step")} == {
        k: v for k, v in best.items() if k not in ("epoch", "step")
    }
    # The saved model is the best one: its own validation loss is the best evaluation's.
    saved_loss = validation_loss(tmp_path / "model", data_dir / "validation.csv")
    assert saved_loss == pytest.approx(best["loss"], abs=2e-3)
    assert abs(saved_loss - last["loss"]) > 1e-3


def validation_loss(model_dir: Path, validation: Path) -> float:
    """Mean cross-entropy of a saved classifier on a CSV, computed here, not by the pipeline."""
    import csv

    import tensorflow as tf
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    with validation.open() as handle:
        rows = list(csv.DictReader(handle))
    model = TFAutoModelForSequenceClassification.from_pretrained(model_dir)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    batch = tokenizer([r["sentence"] for r in rows], padding=True, return_tensors="tf")
    logits = model(batch).logits
    labels = tf.constant([model.config.label2id[r["label"]] for r in rows])
    losses = tf.keras.losses.sparse_categorical_crossentropy(labels, logits, from_logits=True)
    return float(tf.reduce_mean(losses))


def test_unknown_model(models_dir: Path, data_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"unknown model 'nope'.*local models: .*tiny"):
        train(spec_for(data_dir / "train.csv", model="nope"), tmp_path, models_dir)
    with pytest.raises(ModelNotFound, match="hub access is off"):
        train(spec_for(data_dir / "train.csv", model="bert/base-uncased"), tmp_path, models_dir)


@pytest.mark.parametrize(
    ("header", "rows", "message"),
    [
        (["text", "label"], [("good", 1)], "no column 'sentence'"),
        (["sentence", "label"], [], "no rows"),
        (["sentence", "label"], [("good", 1), ("bad", 1)], "single class"),
        (["sentence", "label"], [("good", 1), ("bad", "")], "row 2: the label is missing"),
    ],
    ids=["missing-column", "empty", "single-class", "missing-label"],
)
def test_bad_data_fails_with_a_readable_error(
    models_dir: Path, tmp_path: Path, header: list[str], rows: list[tuple], message: str
) -> None:
    csv = write_csv(tmp_path / "bad.csv", header, rows)
    with pytest.raises(InvalidInput, match=message):
        train(spec_for(csv), tmp_path, models_dir)


def test_validation_label_unknown_to_training(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    validation = write_csv(tmp_path / "v.csv", ["sentence", "label"], [("good", 1), ("bad", 7)])
    with pytest.raises(InvalidInput, match="validation data row 2: label 7"):
        train(spec_for(data_dir / "train.csv", validation), tmp_path, models_dir)


def test_missing_data_file(models_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(DataNotFound, match="does not exist"):
        train(spec_for(tmp_path / "gone.csv"), tmp_path, models_dir)


def test_a_batch_rerun_after_its_output_was_published_changes_nothing(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    """The attempt that published the predictions died before the batch was marked done; the
    re-delivered attempt must neither predict again nor damage the published file."""
    from app.core.schemas import BatchSpec
    from worker.batch import run_batch_prediction

    train(spec_for(data_dir / "train.csv", epochs=1), tmp_path, models_dir)
    spec = BatchSpec(
        job_id="job_" + "0" * 32,
        model_path=str(tmp_path / "model"),
        input_path=str(data_dir / "validation.csv"),
        input_format="csv",
        text_column="sentence",
        label_column="label",
    )
    folder = tmp_path / "batch"
    first = run_batch_prediction(spec, folder, Recorder())
    published = (folder / "predictions.csv").read_bytes()
    assert published.count(b"\n") == 61 and (folder / "report.json").is_file()
    again = Recorder()
    assert run_batch_prediction(spec, folder, again) == first
    assert (folder / "predictions.csv").read_bytes() == published
    stages = [message for kind, message, _ in again.events if kind == "stage"]
    assert "all 60 rows were predicted by an earlier attempt" in stages


def test_auto_hyperparameters_are_resolved_and_recorded(
    models_dir: Path, data_dir: Path, tmp_path: Path
) -> None:
    spec = spec_for(  # 60 rows: 54 to train on, 6 held out
        data_dir / "validation.csv",
        epochs="auto",
        batch_size="auto",
        learning_rate="auto",
        max_length=16,
    )
    reporter = Recorder()
    metrics = train(spec, tmp_path, models_dir, reporter)
    job = json.loads((tmp_path / "model" / "job.json").read_text())
    # 54 rows of batch 16: 4 steps an epoch, so 20 epochs (the cap) towards 1200 steps; the
    # tiny model is 32 wide: a small model's rate, not doubled over 20 passes.
    assert job["hyperparameters"]["epochs"] == 20 and job["hyperparameters"]["batch_size"] == 16
    assert job["hyperparameters"]["learning_rate"] == 5e-5
    assert set(job["auto"]) == {"epochs", "batch_size", "learning_rate", "eval_every"}
    assert job["hyperparameters"]["eval_every"] == "epoch"  # 6 validation rows: cheap
    assert "4 steps per epoch" in job["auto"]["epochs"]["reason"]
    assert metrics["global_step"] == 80
    assert any(m.startswith("auto hyperparameters: ") for _, m, _ in reporter.events)


def test_auto_validates_many_passes_over_a_small_set_every_few_epochs(
    models_dir: Path, tmp_path: Path
) -> None:
    """32 training rows (2 steps an epoch) against 60 validation rows, 10 epochs: "auto"
    validates every 2 epochs instead of after each one, and ends with the same weights and
    final metrics as a run validated after every epoch: evaluations only watch. Epoch ends
    are checkpointed where the run was validated, and a run that crashed after an epoch end
    left without one resumes from the one before and still ends with the same weights."""
    train_file = write_csv(tmp_path / "train.csv", ["sentence", "label"], sentiment_rows(32))
    validation = write_csv(
        tmp_path / "validation.csv", ["sentence", "label"], sentiment_rows(60, seed=1)
    )
    runs = {}
    # Periodic checkpoints out of the way (50 steps), all of them kept: the epoch ends' own.
    checkpointing = {"checkpoint_every_steps": 50, "keep_checkpoints": 50}
    for eval_every in ("auto", "epoch"):
        spec = spec_for(train_file, validation, epochs=10, eval_every=eval_every, **checkpointing)
        reporter = Recorder()
        metrics = train(spec, tmp_path / eval_every, models_dir, reporter)
        runs[eval_every] = (reporter, metrics)
    auto, auto_metrics = runs["auto"]
    every_epoch, every_epoch_metrics = runs["epoch"]
    assert [e.step for e in auto.evaluations] == [4, 8, 12, 16, 20]
    assert [e.step for e in every_epoch.evaluations] == list(range(2, 21, 2))
    job = json.loads((tmp_path / "auto" / "model" / "job.json").read_text())
    assert job["hyperparameters"]["eval_every"] == 4
    assert "every 2 epochs (4 steps) and at the end" in job["auto"]["eval_every"]["reason"]
    assert auto_metrics["final"] == every_epoch_metrics["final"]
    assert auto.evaluations[-1] == every_epoch.evaluations[-1]
    assert_same_weights(tmp_path / "epoch" / "model", tmp_path / "auto" / "model", exact=True)

    def saved_steps(run: str) -> list[int]:
        return [c["global_step"] for c in list_checkpoints(tmp_path / run / "checkpoints")]

    assert saved_steps("auto") == [4, 8, 12, 16, 20]
    assert saved_steps("epoch") == list(range(2, 21, 2))
    # A crash at step 7: epoch 3 ended at step 6 without a checkpoint, so the run resumes
    # from epoch 2's (step 4), trains epoch 3 again, and ends where the straight run did.
    spec = spec_for(train_file, validation, epochs=10, eval_every="auto", **checkpointing)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, tmp_path / "resumed", models_dir, Recorder(crash_at=7))
    assert saved_steps("resumed") == [4]
    resumed = Recorder()
    resumed_metrics = train(spec, tmp_path / "resumed", models_dir, resumed)
    assert resumed_metrics["resumed_from_step"] == 4
    assert [e.step for e in resumed.evaluations] == [8, 12, 16, 20]
    assert resumed_metrics["final"] == auto_metrics["final"]
    assert_same_weights(tmp_path / "auto" / "model", tmp_path / "resumed" / "model")
