"""Batch predictions and on-demand evaluations: real workers over uploaded files."""

from __future__ import annotations

import csv
import json
import signal
from pathlib import Path

import numpy as np
import pytest

from app.core.schemas import FileObject, Job, JobStatus
from finetune import Client, Invalid, NotFound
from tests.support.factories import sentiment_rows, write_csv
from tests.support.harness import Service, running_service, wait_until
from tests.support.jobs import submit_tiny
from tests.support.models import float32_policy, load_reference

DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
HEADER = ["sentence", "label"]


@pytest.fixture(scope="module")
def trained(alice: Client, data_dir: Path) -> Job:
    file = alice.upload(data_dir / "train.csv")
    job = submit_tiny(alice, file.id, hyperparameters={"epochs": 3, "checkpoint_every_steps": 30})
    done = alice.wait(job.id, until=DONE, timeout=180, interval=0.2)
    assert done.status == "succeeded", done.error
    return done


@pytest.fixture(scope="module")
def validation_file(alice: Client, data_dir: Path) -> FileObject:
    return alice.upload(data_dir / "validation.csv")


def model_outputs(folder: Path, texts: list[str], checkpoint: Path | None = None) -> np.ndarray:
    import tensorflow as tf
    from scipy.special import softmax

    model, tokenizer = load_reference(folder)
    if checkpoint is not None:
        tf.train.Checkpoint(model=model).read(str(checkpoint)).expect_partial()
    encoded = tokenizer(texts, truncation=True, max_length=128, padding=True, return_tensors="tf")
    return softmax(model(encoded).logits.numpy().astype(np.float64), axis=-1)


def test_batch_prediction_writes_every_row_with_the_models_scores(
    alice: Client, trained: Job, tmp_path: Path
) -> None:
    rows = [(text, label) for text, label in sentiment_rows(30, seed=9)]
    rows[4] = ("", rows[4][1])  # an empty text: that row fails, the others do not
    uploaded = alice.upload(write_csv(tmp_path / "score.csv", HEADER, rows))
    batch = alice.batch_predict(trained.id, uploaded.id)
    assert batch.status == "queued" and batch.output is None
    done = alice.wait_batch(batch.id, timeout=120, interval=0.2)
    assert done.status == "succeeded", done.error
    assert (done.rows, done.rows_failed, done.progress.step) == (30, 1, 30)
    assert done.report is None  # no label column: predictions only

    output = list(csv.DictReader(alice.download_predictions(batch.id, tmp_path / "out.csv").open()))
    assert [r["sentence"] for r in output] == [r[0] for r in rows]
    assert output[4]["predicted_label"] == "" and "empty text" in output[4]["error"]
    texts = [r[0] for i, r in enumerate(rows) if i != 4]
    expected = model_outputs(alice.download(trained.id, tmp_path / "model"), texts)
    scored = [r for i, r in enumerate(output) if i != 4]
    got = np.array([[float(r["score_0"]), float(r["score_1"])] for r in scored])
    assert np.allclose(got, expected, atol=1e-5)
    assert [r["predicted_label"] for r in scored] == [str(i) for i in expected.argmax(-1)]
    assert alice.batches().data[0].id == batch.id

    # Idempotency-Keys: a retry returns the same batch; the same key on a job is another space.
    key = f"score-{uploaded.id}"
    first = alice.batch_predict(trained.id, uploaded.id, idempotency_key=key)
    assert alice.batch_predict(trained.id, uploaded.id, idempotency_key=key).id == first.id
    job = alice.submit(
        model="tiny",
        training_file=uploaded.id,
        text_column="sentence",
        idempotency_key=key,
        hyperparameters={"epochs": 1},
    )
    assert job.id.startswith("job_") and alice.job(job.id).id == job.id
    alice.cancel(job.id)
    alice.wait_batch(first.id, timeout=120, interval=0.2)


def test_evaluation_report_of_a_file_and_of_a_checkpoint(
    alice: Client, bob: Client, trained: Job, validation_file: FileObject, data_dir: Path,
    tmp_path: Path,
) -> None:  # fmt: skip
    evaluation = alice.evaluate(trained.id, validation_file.id)
    assert evaluation.label_column == "label"
    done = alice.wait_batch(evaluation.id, timeout=120, interval=0.2)
    assert done.status == "succeeded", done.error
    report = alice.batch_report(evaluation.id)

    rows = list(csv.DictReader((data_dir / "validation.csv").open()))
    model = alice.download(trained.id, tmp_path / "model")
    predicted = model_outputs(model, [r["sentence"] for r in rows]).argmax(-1)
    expected = [[0, 0], [0, 0]]
    for row, guess in zip(rows, predicted, strict=True):
        expected[int(row["label"])][int(guess)] += 1
    assert report.confusion_matrix == expected
    # The baseline always answers the training set's majority label (job.json records counts).
    counts = json.loads((model / "job.json").read_text())["training_labels"]["counts"]
    majority = max(counts, key=lambda label: counts[label])
    share = sum(r["label"] == majority for r in rows) / len(rows)
    assert report.baseline["accuracy"] == pytest.approx(share, abs=1e-6)
    assert done.metrics["accuracy"] == report.metrics["accuracy"]

    checkpoints = alice.checkpoints(trained.id)
    early = checkpoints[0].name
    at_checkpoint = alice.evaluate(trained.id, validation_file.id, checkpoint=early)
    assert alice.wait_batch(at_checkpoint.id, timeout=120, interval=0.2).status == "succeeded"
    output = alice.download_predictions(at_checkpoint.id, tmp_path / "early.csv")
    scores = [float(r["score_1"]) for r in csv.DictReader(output.open())]
    final = model_outputs(model, [r["sentence"] for r in rows])[:, 1]
    assert not np.allclose(scores, final, atol=1e-4)  # another step's weights

    with pytest.raises(Invalid) as missing:
        alice.evaluate(trained.id, validation_file.id, checkpoint="ckpt-999999")
    assert missing.value.param == "checkpoint"
    with pytest.raises(NotFound):
        bob.evaluate(trained.id, bob.upload(data_dir / "validation.csv").id)
    odd = alice.upload(write_csv(tmp_path / "odd.csv", HEADER, [("a film", "maybe")] * 3))
    with pytest.raises(Invalid) as unknown:
        alice.evaluate(trained.id, odd.id)
    assert unknown.value.param == "label_column" and "maybe" in str(unknown.value)


def test_a_killed_batch_resumes_without_repeated_or_missing_rows(
    tmp_path: Path, models_dir: Path, data_dir: Path
) -> None:
    with running_service(tmp_path, models_dir) as (_, svc):
        client = Client(svc.url, "", retries=2, backoff=0.2)
        first = svc.start_worker("doomed")
        train = client.upload(data_dir / "train.csv")
        job = client.wait(submit_tiny(client, train.id).id, until=DONE, timeout=180, interval=0.2)
        assert job.status == "succeeded", job.error
        rows = sentiment_rows(16_000, seed=5)
        big = client.upload(write_csv(tmp_path / "big.csv", HEADER, rows))
        batch = client.batch_predict(job.id, big.id)
        wait_until(
            lambda: 2_000 <= client.batch(batch.id).progress.step < 13_000,
            120,
            "the batch part-way",
            interval=0.05,
        )
        svc.stop_worker(first, signal.SIGKILL)
        svc.start_worker("rescuer")
        resumed = client.wait_batch(batch.id, timeout=300, interval=0.2)
        assert resumed.status == "succeeded", resumed.error
        assert resumed.attempt == 2 and resumed.rows == 16_000
        events = [e.message for e in client.batch_events(batch.id)]
        assert any(m.startswith("resuming at row") for m in events), events

        clean = client.batch_predict(job.id, big.id)
        assert client.wait_batch(clean.id, timeout=300, interval=0.2).status == "succeeded"
        interrupted = client.download_predictions(batch.id, tmp_path / "a.csv").read_bytes()
        uninterrupted = client.download_predictions(clean.id, tmp_path / "b.csv").read_bytes()
        assert interrupted == uninterrupted
        assert interrupted.count(b"\n") == 16_001  # the header and every row once


def test_a_checkpoint_of_a_cancelled_job_can_be_evaluated(
    alice: Client, service: Service, validation_file: FileObject, data_dir: Path, tmp_path: Path
) -> None:
    import tensorflow as tf
    from scipy.special import softmax
    from transformers import AutoConfig, AutoTokenizer, TFAutoModelForSequenceClassification

    file = alice.upload(data_dir / "train.csv")
    job = submit_tiny(alice, file.id, hyperparameters={"epochs": 60, "checkpoint_every_steps": 10})
    wait_until(lambda: len(alice.checkpoints(job.id)) >= 2, 120, "two checkpoints", interval=0.2)
    alice.cancel(job.id)
    assert alice.wait(job.id, until=DONE, timeout=60, interval=0.2).status == "cancelled"
    with pytest.raises(Invalid) as refused:
        alice.evaluate(job.id, validation_file.id)
    assert refused.value.param == "job_id"

    name = alice.checkpoints(job.id)[0].name
    evaluation = alice.evaluate(job.id, validation_file.id, checkpoint=name)
    done = alice.wait_batch(evaluation.id, timeout=120, interval=0.2)
    assert done.status == "succeeded", done.error
    output = alice.download_predictions(evaluation.id, tmp_path / "scored.csv")
    scores = [float(r["score_1"]) for r in csv.DictReader(output.open())]

    saved = Path(service.env["FINETUNE_STORAGE_DIR"]) / "jobs" / job.id / "checkpoints"
    float32_policy()
    model = TFAutoModelForSequenceClassification.from_config(
        AutoConfig.from_pretrained(saved / "model")
    )
    model.build_in_name_scope()
    tf.train.Checkpoint(model=model).read(str(saved / name)).expect_partial()
    tokenizer = AutoTokenizer.from_pretrained(saved / "model")
    rows = list(csv.DictReader((data_dir / "validation.csv").open()))
    encoded = tokenizer([r["sentence"] for r in rows], padding=True, return_tensors="tf")
    expected = softmax(model(encoded).logits.numpy().astype(np.float64), axis=-1)[:, 1]
    assert np.allclose(scores, expected, atol=1e-5)
    assert alice.batch_report(evaluation.id).rows == len(rows)
