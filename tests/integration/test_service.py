"""The job service end to end: real Redis, the API as a process, a real Celery worker."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from app.core.schemas import FileObject, Job, JobStatus
from finetune import Client, Conflict, Invalid, NotFound, TooLarge, Unauthorized
from tests.conftest import KEYS, OPERATOR_KEY, tenant_client
from tests.support.factories import write_csv
from tests.support.harness import ROOT, Service, wait_until
from tests.support.jobs import submit_tiny, tiny_job_body
from tests.support.models import load_reference

DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


def finish(client: Client, job_id: str, timeout: float = 180) -> Job:
    return client.wait(job_id, until=DONE, timeout=timeout, interval=0.2)


@pytest.fixture(scope="module")
def train_file(alice: Client, data_dir: Path) -> FileObject:
    return alice.upload(data_dir / "train.csv")


@pytest.fixture(scope="module")
def validation_file(alice: Client, data_dir: Path) -> FileObject:
    return alice.upload(data_dir / "validation.csv")


def test_upload_submit_poll_download_predict(
    alice: Client,
    train_file: FileObject,
    validation_file: FileObject,
    data_dir: Path,
    tmp_path: Path,
) -> None:
    assert train_file.rows == 400 and train_file.columns == ["sentence", "label"]
    assert train_file.format == "csv"
    job = submit_tiny(
        alice,
        train_file.id,
        validation_file=validation_file.id,
        hyperparameters={"epochs": 3},
        metadata={"team": "nlp"},
    )
    assert job.status == "queued" and job.hyperparameters.batch_size == "auto"  # the default
    done = finish(alice, job.id)
    assert done.status == "succeeded", done.error
    assert done.metrics["accuracy"] > 0.9 and done.warnings == []
    assert 0.4 < done.metrics["baseline_accuracy"] < 0.6  # balanced data: the baseline beside it
    assert len(done.history) == 3 and done.progress.percent == 100.0
    assert done.progress.tokens_per_second and done.progress.tokens_per_second > 0
    assert done.started_at and done.finished_at and done.metadata == {"team": "nlp"}

    events = alice.events(done.id)
    kinds = [e.type for e in events]
    assert kinds[0] == "status" and kinds[-1] == "status" and "metric" in kinds
    assert [e.data.get("status") for e in events if e.type == "status"] == [
        "queued",
        "running",
        "succeeded",
    ]
    # What the defaults' "auto" became, once the worker had the data: 400 rows, batch 16;
    # 3 epochs of 25 steps held constant; balanced labels, no class weights; validated after
    # each epoch (3 epochs of 400 rows against 60 validation rows: cheap and few).
    chosen = next(e.data["auto"] for e in events if e.type == "stage" and "auto" in e.data)
    assert {name: c["value"] for name, c in chosen.items()} == {
        "batch_size": 16,
        "lr_scheduler": "constant",
        "class_weight": None,
        "eval_every": "epoch",
    }
    checkpoints = alice.checkpoints(done.id)
    assert checkpoints and checkpoints[-1].global_step == 75

    model, tokenizer = load_reference(alice.download(done.id, tmp_path))
    batch = tokenizer(
        ["a warm and fun film", "a cold and boring plot"], return_tensors="tf", padding=True
    )
    assert list(model(batch).logits.numpy().argmax(-1)) == [1, 0]

    # The report's confusion matrix is the downloaded model's own, on the validation rows. The
    # worker evaluates in its training precision (bfloat16 on CPUs with bfloat16 instructions),
    # this test in float32: a row near the boundary may fall on either side (measured on an
    # AVX-512 BF16 EPYC: a row 0.14 apart in float32 logits, against 5.8 or more for every
    # other row, went the other way), so rows within 0.5 may move one count each, no other.
    report = alice.report(done.id)
    rows = list(csv.DictReader((data_dir / "validation.csv").open()))
    names = [model.config.id2label[i] for i in range(model.config.num_labels)]
    assert report.labels == names and report.rows == len(rows)
    encoded = tokenizer([r["sentence"] for r in rows], return_tensors="tf", padding=True)
    logits = model(encoded).logits.numpy()
    predicted = logits.argmax(-1)
    near_boundary = int((np.abs(logits[:, 1] - logits[:, 0]) < 0.5).sum())
    expected = [[0] * len(names) for _ in names]
    for row, guess in zip(rows, predicted, strict=True):
        expected[names.index(row["label"])][int(guess)] += 1
    moved = sum(
        abs(a - b)
        for got, want in zip(report.confusion_matrix, expected, strict=True)
        for a, b in zip(got, want, strict=True)
    )
    assert moved <= 2 * near_boundary, (report.confusion_matrix, expected, near_boundary)
    assert [sum(r) for r in report.confusion_matrix] == [sum(r) for r in expected]
    assert report.metrics["accuracy"] == pytest.approx(done.metrics["accuracy"], abs=1e-6)
    assert report.baseline["accuracy"] == done.metrics["baseline_accuracy"]
    assert report.binary is not None and report.binary.roc_auc is not None
    assert [c.support for c in report.per_class] == [sum(r) for r in expected]
    with pytest.raises(NotFound, match="report"):
        alice.report(submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1}).id)


@pytest.mark.parametrize(
    ("change", "param"),
    [
        ({"model": "missing-model"}, "model"),
        ({"model": "../../etc"}, "model"),
        ({"model": "/etc/passwd"}, "model"),
        ({"model": "org/hub-model"}, "model"),
        ({"training_file": "file_" + "0" * 32}, "training_file"),
        ({"training_file": "../../secret.csv"}, "training_file"),
        ({"text_column": "text"}, "text_column"),
        ({"label_column": "labels"}, "label_column"),
        ({"text_pair_column": "nope"}, "text_pair_column"),
        ({"hyperparameters": {"epochs": 0}}, "hyperparameters.epochs"),
        ({"hyperparameters": {"learning_rate": -1}}, "hyperparameters.learning_rate"),
        ({"hyperparameters": {"batch_size": "16"}}, "hyperparameters.batch_size"),
        ({"hyperparameters": {"max_length": 100000}}, "hyperparameters.max_length"),
        (
            {"hyperparameters": {"early_stopping_metric": "mse", "early_stopping_patience": 2}},
            "hyperparameters.early_stopping_metric",
        ),
        ({"hyperparameters": {"early_stopping_metric": "accuracy"}}, "hyperparameters"),
        ({"hyperparameters": {"trust_remote_code": True}}, "hyperparameters.trust_remote_code"),
        ({"trust_remote_code": True}, "trust_remote_code"),
        ({"label_column": "sentence", "text_column": "sentence"}, None),
    ],
)
def test_invalid_submissions_name_the_field(
    alice: Client, train_file: FileObject, change: dict[str, Any], param: str | None
) -> None:
    body = {
        "model": "tiny",
        "training_file": train_file.id,
        "text_column": "sentence",
        "label_column": "label",
        **change,
    }
    with pytest.raises(Invalid) as refused:
        alice.submit(body)
    assert refused.value.param == param, refused.value
    assert refused.value.message and refused.value.code


def test_label_problems_found_before_queueing(alice: Client, tmp_path: Path) -> None:
    single = alice.upload(
        write_csv(tmp_path / "one.csv", ["sentence", "label"], [("good", 1), ("fine", 1)])
    )
    with pytest.raises(Invalid) as refused:
        alice.submit(model="tiny", training_file=single.id, text_column="sentence")
    assert refused.value.param == "label_column"
    assert "single class" in refused.value.message


def test_idempotent_retry_returns_the_same_job(
    alice: Client, bob: Client, train_file: FileObject, data_dir: Path
) -> None:
    body = tiny_job_body(train_file.id, hyperparameters={"epochs": 1})
    key = f"retry-{time.time()}"
    with ThreadPoolExecutor(4) as pool:
        jobs = list(pool.map(lambda _: alice.submit(body, idempotency_key=key), range(4)))
    ids = {job.id for job in jobs}
    assert len(ids) == 1
    # Keys belong to a tenant: Bob's same key makes Bob's own job, not a view of Alice's.
    bobs = bob.submit(
        tiny_job_body(bob.upload(data_dir / "train.csv").id, hyperparameters={"epochs": 1}),
        idempotency_key=key,
    )
    assert bobs.id not in ids
    assert bob.submit(body | {"training_file": bobs.training_file}, idempotency_key=key).id == (
        bobs.id
    )
    assert finish(alice, ids.pop()).status == "succeeded"
    assert finish(bob, bobs.id).status == "succeeded"


def test_cancel_while_queued_and_while_running(alice: Client, train_file: FileObject) -> None:
    # About 90 steps an epoch and no step checkpoints: one mid-epoch is the cancel's own.
    running = submit_tiny(
        alice,
        train_file.id,
        hyperparameters={"epochs": 50, "batch_size": 4, "checkpoint_every_steps": 100_000},
    )
    queued = submit_tiny(alice, train_file.id)  # one worker: waits behind the first
    alice.wait(running.id, until={JobStatus.running}, timeout=120, interval=0.2)
    wait_for_step(alice, running.id, 5)

    assert alice.cancel(queued.id).status == "cancelled"
    assert alice.cancel(running.id).status == "cancelling"
    done = finish(alice, running.id, timeout=60)
    per_epoch = done.progress.total_steps // done.progress.epochs
    assert done.status == "cancelled" and done.progress.step < 50 * per_epoch
    saved = alice.checkpoints(running.id)
    assert saved and saved[-1].global_step % per_epoch != 0, saved  # the cancel's checkpoint
    with pytest.raises(Conflict):
        alice.cancel(running.id)
    # The cancelled queued job is skipped by the worker, never run.
    time.sleep(1)
    assert alice.job(queued.id).started_at is None


def wait_for_step(client: Client, job_id: str, step: int, timeout: float = 120) -> None:
    wait_until(
        lambda: client.job(job_id).progress.step >= step, timeout, f"step {step}", interval=0.2
    )


def test_tenants_see_only_their_own(
    alice: Client, bob: Client, service: Service, train_file: FileObject
) -> None:
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1})
    # Probed once the artifact exists, so the owner's 200 and Bob's 404 are both meaningful.
    assert finish(alice, job.id).status == "succeeded"
    artifact = f"/v1/jobs/{job.id}/artifacts/model.tar.gz"
    paths = (
        f"/v1/jobs/{job.id}",
        f"/v1/files/{train_file.id}",
        f"/v1/jobs/{job.id}/events",
        f"/v1/jobs/{job.id}/checkpoints",
        artifact,
    )
    for path in paths:
        assert alice.http.get(path).status_code == 200, path
        assert bob.http.get(path).status_code == 404, path
    assert bob.http.post(f"/v1/jobs/{job.id}/cancel").status_code == 404
    assert bob.http.delete(f"/v1/files/{train_file.id}").status_code == 404
    assert job.id not in {j.id for j in bob.jobs(limit=100).data}
    assert train_file.id not in {f.id for f in bob.files()}
    # Bob cannot train on Alice's file either.
    with pytest.raises(Invalid) as refused:
        bob.submit(tiny_job_body(train_file.id))
    assert refused.value.param == "training_file"
    anonymous = tenant_client(service, None)
    for headers in (
        {},
        {"Authorization": "Bearer wrong"},
        {"Authorization": KEYS["alice"]},
        {"Authorization": "Basic " + KEYS["alice"]},
    ):
        response = anonymous.http.get("/v1/jobs", headers=headers)
        assert response.status_code == 401 and response.json()["error"]["code"] == "unauthorized"
    with pytest.raises(Unauthorized):
        anonymous.jobs()


def test_failed_training_shows_failed_with_its_error(
    alice: Client, train_file: FileObject, models_dir: Path
) -> None:
    # The API sees a model folder with a config; only loading its weights shows they are bad.
    broken = models_dir / "broken"
    broken.mkdir(exist_ok=True)
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (broken / name).write_bytes((models_dir / "tiny" / name).read_bytes())
    (broken / "tf_model.h5").write_bytes(b"not an HDF5 file")
    job = submit_tiny(alice, train_file.id, model="broken")
    done = finish(alice, job.id)
    assert done.status == "failed" and done.error
    assert done.error.code == "model_not_found"
    assert "could not load model 'broken'" in done.error.message
    assert alice.events(job.id)[-1].type == "error"
    assert done.artifacts == {}


def test_concurrent_submissions_all_finish(alice: Client, train_file: FileObject) -> None:
    with ThreadPoolExecutor(6) as pool:
        jobs = list(
            pool.map(
                lambda i: submit_tiny(
                    alice, train_file.id, hyperparameters={"epochs": 1, "seed": i}
                ),
                range(6),
            )
        )
    assert len({j.id for j in jobs}) == 6
    for job in jobs:
        assert finish(alice, job.id, timeout=240).status == "succeeded"
    listed = alice.jobs(limit=3)
    assert len(listed.data) == 3 and listed.has_more
    newer_first = [j.created_at for j in listed.data]
    assert newer_first == sorted(newer_first, reverse=True)
    page2 = alice.jobs(limit=3, after=listed.data[-1].id)
    assert not {j.id for j in page2.data} & {j.id for j in listed.data}
    only = alice.jobs(status="succeeded", limit=100)
    assert only.data and all(j.status == "succeeded" for j in only.data)


def test_health_reports_redis_and_workers(service: Service) -> None:
    body = tenant_client(service, None).health()
    assert body["redis"] == "ok" and body["workers"] >= 1 and body["status"] == "ok"


def test_the_api_never_imports_tensorflow(
    service: Service, train_file: FileObject, tmp_path: Path
) -> None:
    """Build the app and serve every kind of request in a fresh interpreter."""
    script = f"""
import sys
from fastapi.testclient import TestClient
from app.api.main import create_app
import app.api.routes.jobs, app.api.routes.files
with TestClient(create_app()) as client:
    headers = {{"Authorization": "Bearer {KEYS["alice"]}"}}
    assert client.get("/v1/jobs", headers=headers).status_code == 200
    assert client.get("/v1/files/{train_file.id}", headers=headers).status_code == 200
    r = client.post("/v1/jobs", headers=headers, json={{"model": "tiny",
        "training_file": "{train_file.id}", "text_column": "sentence",
        "label_column": "label", "hyperparameters": {{"epochs": 1}}}})
    assert r.status_code == 201, r.text
    client.post("/v1/jobs/" + r.json()["id"] + "/cancel", headers=headers)
    assert client.get("/healthz").status_code == 200
loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "tf_keras",
                "transformers", "keras", "worker"))
print("LOADED", loaded)
assert not loaded, loaded
"""
    result = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env=service.env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "LOADED []" in result.stdout


def test_uploads_are_checked_before_they_are_listed(alice: Client, tmp_path: Path) -> None:
    before = {f.id for f in alice.files()}
    latin1 = tmp_path / "latin1.csv"
    latin1.write_bytes(b"sentence,label\ncaf\xe9 au lait,1\n")
    with pytest.raises(Invalid, match="not UTF-8"):
        alice.upload(latin1)
    ragged = tmp_path / "ragged.csv"
    ragged.write_text("sentence,label\nfine,1\nbad,0,extra\n")
    with pytest.raises(Invalid, match="ragged"):
        alice.upload(ragged)
    with pytest.raises(Invalid) as refused:
        alice.upload(write_csv(tmp_path / "x.txt", ["a"], [("b",)]))
    assert refused.value.param == "file"
    response = alice.http.post("/v1/files", data={"other": "field"})
    assert response.status_code == 422 and response.json()["error"]["param"] == "file"
    assert {f.id for f in alice.files()} == before


def test_upload_limit_is_enforced_while_streaming(alice: Client, tmp_path: Path) -> None:
    # The service under test allows 2,000,000 bytes.
    big = tmp_path / "big.csv"
    big.write_text("sentence,label\n" + "a fine sentence,1\n" * 150_000)  # 2.7 MB
    with pytest.raises(TooLarge) as refused:
        alice.upload(big)
    assert refused.value.code == "file_too_large"

    def chunked() -> Any:  # no Content-Length: only counting while reading can stop it
        boundary = b"--xyz"
        yield boundary + b'\r\nContent-Disposition: form-data; name="file"; filename="b.csv"'
        yield b"\r\nContent-Type: text/csv\r\n\r\nsentence,label\r\n"
        for _ in range(300):
            yield b"a fine sentence,1\n" * 500
        yield b"\r\n" + boundary + b"--\r\n"

    response = alice.http.post(
        "/v1/files",
        content=chunked(),
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )
    assert response.status_code == 413


def test_delete_file_keeps_queued_jobs_working(alice: Client, data_dir: Path) -> None:
    upload = alice.upload(data_dir / "train.csv")
    job = submit_tiny(alice, upload.id, hyperparameters={"epochs": 1})
    assert alice.delete_file(upload.id).id == upload.id
    with pytest.raises(NotFound):
        alice.file(upload.id)
    assert finish(alice, job.id).status == "succeeded"


def test_prometheus_metrics(alice: Client, service: Service, train_file: FileObject) -> None:
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1})
    finish(alice, job.id)
    alice.job(job.id)
    text = tenant_client(service, None).http.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            samples[name] = float(value)
    assert samples['finetune_jobs{status="succeeded"}'] >= 1
    assert "finetune_queue_length" in samples
    assert samples['finetune_storage_bytes{kind="free"}'] > 0
    assert "finetune_webhooks_pending" in samples
    assert samples["finetune_job_duration_seconds_count"] >= 1
    assert samples["finetune_job_queue_seconds_count"] >= 1
    assert any(
        name.startswith("finetune_api_request_seconds_count")
        and 'route="/v1/jobs/{job_id}"' in name
        for name in samples
    )


def test_hostile_ids_and_names_answer_404(alice: Client, train_file: FileObject) -> None:
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1})
    for path in (
        f"/v1/jobs/{job.id}/artifacts/..%2F..%2Fjob.json",
        f"/v1/jobs/{job.id}/artifacts/model.tar.gz%00.txt",
        "/v1/jobs/..%2F..%2Fetc%2Fpasswd",
        "/v1/files/..%2Fsecret",
        "/v1/jobs/job_../events",
        f"/v1/files/{train_file.id}..%2F",
    ):
        assert alice.http.get(path, follow_redirects=True).status_code == 404, path
    finish(alice, job.id)


def test_every_endpoint_refuses_missing_wrong_and_malformed_keys(
    service: Service, train_file: FileObject
) -> None:
    job_id = "job_" + "1" * 32
    endpoints = [
        ("GET", "/v1/files"),
        ("POST", "/v1/files"),
        ("GET", f"/v1/files/{train_file.id}"),
        ("DELETE", f"/v1/files/{train_file.id}"),
        ("GET", "/v1/jobs"),
        ("POST", "/v1/jobs"),
        ("GET", f"/v1/jobs/{job_id}"),
        ("POST", f"/v1/jobs/{job_id}/cancel"),
        ("GET", f"/v1/jobs/{job_id}/events"),
        ("GET", f"/v1/jobs/{job_id}/checkpoints"),
        ("GET", f"/v1/jobs/{job_id}/artifacts/model.tar.gz"),
        ("GET", "/v1/models"),
    ]
    anonymous = tenant_client(service, None).http
    for headers in (
        {},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer nope"},
        {"Authorization": "Token " + KEYS["alice"]},
        {"Authorization": "Bearer " + KEYS["alice"] + "x"},
    ):
        for method, path in endpoints:
            response = anonymous.request(method, path, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
    assert tenant_client(service, "alice").http.get(f"/v1/files/{train_file.id}").is_success


def test_odd_but_valid_and_invalid_uploads(alice: Client, tmp_path: Path) -> None:
    huge_line = tmp_path / "huge.csv"
    huge_line.write_text("sentence,label\n" + "word " * 200_000 + ",1\nshort,0\n")  # 1 MB row
    uploaded = alice.upload(huge_line)
    assert uploaded.rows == 2
    with pytest.raises(Invalid, match="validation_file is the training file"):
        alice.submit(
            model="tiny",
            training_file=uploaded.id,
            validation_file=uploaded.id,
            text_column="sentence",
        )
    binary = tmp_path / "random.csv"
    binary.write_bytes(bytes(range(256)) * 20)
    with pytest.raises(Invalid):
        alice.upload(binary)


def test_worker_logs_are_json_with_the_job_id(
    alice: Client, service: Service, train_file: FileObject
) -> None:
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1})
    assert finish(alice, job.id).status == "succeeded"
    done = alice.job(job.id)
    assert done.started_at and done.finished_at
    lines = (service.log_dir / "worker-main.log").read_text().splitlines()
    entries = [json.loads(line) for line in lines if line.startswith("{")]
    # Everything this worker's own loggers wrote while the job ran (it runs one job at a time),
    # chosen by time, not by the field under test.
    ours = [
        e
        for e in entries
        if e["logger"].startswith("finetune")
        and done.started_at <= datetime.fromisoformat(e["time"]) <= done.finished_at
    ]
    assert len(ours) >= 10
    missing = [e["message"] for e in ours if e.get("job_id") != job.id]
    assert not missing, missing
    assert any(e["message"].startswith("epoch 1/1 started") for e in ours)


def test_events_page_without_gaps_or_repeats(alice: Client, train_file: FileObject) -> None:
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1, "log_every_steps": 1})
    assert finish(alice, job.id).status == "succeeded"
    everything = alice.events_page(job.id, limit=1000)
    assert not everything.has_more and len(everything.data) > 12
    pages, after = [], None
    while True:
        page = alice.events_page(job.id, after=after, limit=5)
        pages.append(page)
        if not page.has_more:
            break
        assert len(page.data) == 5
        after = page.data[-1].id
    paged = [event.id for page in pages for event in page.data]
    assert paged == [event.id for event in everything.data]
    assert len(pages) == -(-len(paged) // 5)
    assert alice.events(job.id, after=everything.data[-3].id) == everything.data[-2:]


def test_keep_checkpoints_keeps_only_the_newest(alice: Client, train_file: FileObject) -> None:
    every = 10
    job = submit_tiny(
        alice,
        train_file.id,
        hyperparameters={"epochs": 2, "checkpoint_every_steps": every, "keep_checkpoints": 2},
    )
    done = finish(alice, job.id)
    assert done.status == "succeeded"
    total, epochs = done.progress.total_steps, done.progress.epochs
    per_epoch = total // epochs
    written = sorted(
        set(range(every, total + 1, every)) | {per_epoch * e for e in range(1, epochs + 1)}
    )
    assert len(written) > 2
    assert [c.global_step for c in alice.checkpoints(job.id)] == written[-2:]


def test_models_lists_local_and_packaged_models(alice: Client, service: Service) -> None:
    names = {m.id: m.source for m in alice.models()}
    assert names["tiny"] == "local"  # from FINETUNE_MODELS_DIR
    assert names["all-MiniLM-L6-v2"] == "local"  # from the installed model package
    anonymous = tenant_client(service, None)
    with pytest.raises(Unauthorized):
        anonymous.models()


def test_metrics_show_a_running_jobs_throughput(
    alice: Client, service: Service, train_file: FileObject
) -> None:
    job = submit_tiny(
        alice,
        train_file.id,
        hyperparameters={"epochs": 30, "batch_size": 4, "checkpoint_every_steps": 100_000},
    )
    wait_for_step(alice, job.id, 5)
    series = f'finetune_training_tokens_per_second{{job_id="{job.id}"}}'

    def sample(key: str | None = OPERATOR_KEY) -> float | None:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        text = tenant_client(service, None).http.get("/metrics", headers=headers).text
        for line in text.splitlines():
            if line.startswith(series):
                return float(line.rsplit(" ", 1)[1])
        return None

    wait_until(lambda: (sample() or 0) > 0, 30, "the running job's series")
    assert sample(None) is None and sample(KEYS["alice"]) is None  # job ids: operator only
    alice.cancel(job.id)
    assert finish(alice, job.id, timeout=60).status == "cancelled"
    assert sample() is None  # only running jobs have a series


def test_a_model_that_learned_nothing_succeeds_with_a_warning(
    alice: Client, train_file: FileObject
) -> None:
    """A learning rate too small to move the weights: the job succeeds, and says it is useless."""
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1, "learning_rate": 1e-9})
    done = finish(alice, job.id)
    assert done.status == "succeeded"
    assert len(done.warnings) == 1, done.warnings
    assert "single class" in done.warnings[0] or "no better than" in done.warnings[0]
    assert "baseline_accuracy" in done.metrics
    warned = [e for e in alice.events(job.id) if e.type == "warning"]
    assert [e.message for e in warned] == done.warnings
    report = alice.report(job.id)
    assert report.warnings == done.warnings
    assert report.predicted_classes == 1 or report.metrics["matthews_correlation"] <= 0.05


def test_class_weight_shapes_what_the_model_learns(alice: Client, train_file: FileObject) -> None:
    """Class '0' weighs almost nothing: the model learns to answer '1' (the same job without
    weights learns both classes: test_upload_submit_poll_download_predict)."""
    job = submit_tiny(
        alice,
        train_file.id,
        hyperparameters={"epochs": 3, "class_weight": {"0": 0.001}},
    )
    done = finish(alice, job.id)
    assert done.status == "succeeded", done.error
    report = alice.report(job.id)
    assert [row[0] for row in report.confusion_matrix] == [0, 0], report.confusion_matrix
    stage = [e for e in alice.events(job.id) if e.message.startswith("class weights")]
    assert stage and stage[0].data["class_weight"] == {"0": 0.001, "1": 1.0}
    with pytest.raises(Invalid) as unknown:
        submit_tiny(alice, train_file.id, hyperparameters={"class_weight": {"maybe": 2.0}})
    assert unknown.value.param == "hyperparameters.class_weight"


def test_continued_training_starts_from_the_previous_jobs_weights(
    alice: Client, bob: Client, train_file: FileObject, data_dir: Path, tmp_path: Path
) -> None:
    from transformers import TFAutoModelForSequenceClassification

    def weights(folder: Path) -> dict[str, Any]:
        model = TFAutoModelForSequenceClassification.from_pretrained(folder)
        return {w.name.split("/", 1)[-1]: w.numpy() for w in model.weights}

    first = finish(alice, submit_tiny(alice, train_file.id).id)
    assert first.status == "succeeded", first.error
    # A learning rate too small to move anything: the result is where training started.
    still = {"epochs": 1, "learning_rate": 1e-12}
    same = finish(
        alice, submit_tiny(alice, train_file.id, model=first.id, hyperparameters=still).id
    )
    assert same.status == "succeeded", same.error
    rows = list(csv.reader((data_dir / "train.csv").open()))[1:]
    renamed = [(text, "pos" if label == "1" else "neg") for text, label in rows]
    relabelled = alice.upload(write_csv(tmp_path / "named.csv", ["sentence", "label"], renamed))
    fresh = finish(
        alice, submit_tiny(alice, relabelled.id, model=first.id, hyperparameters=still).id
    )
    assert fresh.status == "succeeded", fresh.error

    before = weights(alice.download(first.id, tmp_path / "first"))
    after_same = weights(alice.download(same.id, tmp_path / "same"))
    after_fresh = weights(alice.download(fresh.id, tmp_path / "fresh"))
    assert before.keys() == after_same.keys() == after_fresh.keys()
    for name, value in before.items():
        assert np.allclose(value, after_same[name], atol=1e-6), name
        head = name.startswith("classifier")
        assert np.allclose(value, after_fresh[name], atol=1e-6) != head, name
    events = {e.message for e in alice.events(fresh.id) if e.type == "warning"}
    assert any("the classification head starts fresh" in m for m in events), events
    recorded = json.loads((tmp_path / "same" / "model" / "job.json").read_text())
    assert recorded["model_source"]["job_id"] == first.id
    assert recorded["model_source"]["previous"]["name"] == "tiny"
    assert "base_model_path" not in recorded["spec"]

    with pytest.raises(NotFound):
        submit_tiny(bob, bob.upload(data_dir / "train.csv").id, model=first.id)
    running = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 60})
    with pytest.raises(Invalid, match="once the job succeeded"):
        submit_tiny(alice, train_file.id, model=running.id)
    alice.cancel(running.id)
