"""Faults injected for real: killed workers, graceful shutdown, Redis restarts, duplicate
deliveries, an API restart, a full disk. Each test has its own Redis, API and workers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from app.core.queue import dispatch, make_celery
from app.core.schemas import Job, JobCreate, JobSpec, JobStatus
from app.core.settings import Settings
from app.core.store import JobRecord, Store, connect, new_id, now
from finetune import Client, Invalid
from tests.support.factories import first_rows
from tests.support.harness import RedisServer, Service, running_service, wait_until
from tests.support.jobs import tiny_job_body
from tests.support.jobs import upload_and_submit as submit_tiny_upload
from tests.support.webhooks import Receiver

# Long enough to be interrupted mid-way on tiny models: 100 steps an epoch.
SLOW_JOB = {
    "epochs": 4,  # 400 steps: time to freeze, kill or stop a worker part-way
    "batch_size": 4,
    "learning_rate": 0.005,
    "checkpoint_every_steps": 20,
    "log_every_steps": 5,
}


@pytest.fixture
def stack(tmp_path: Path, models_dir: Path) -> Iterator[tuple[RedisServer, Service]]:
    with running_service(tmp_path, models_dir) as running:
        yield running


def upload_and_submit(client: Client, data_dir: Path, **hyper: Any) -> str:
    job = submit_tiny_upload(client, data_dir / "train.csv", hyperparameters={**SLOW_JOB, **hyper})
    return job.id


def client_for(svc: Service) -> Client:
    return Client(svc.url, "", retries=2, backoff=0.2)


def finish(client: Client, job_id: str, timeout: float = 240) -> Job:
    done = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
    return client.wait(job_id, until=done, timeout=timeout, interval=0.2)


def wait_for_step(client: Client, job_id: str, step: int, timeout: float = 120) -> None:
    wait_until(
        lambda: client.job(job_id).progress.step >= step,
        timeout,
        f"{job_id} at step {step}",
        interval=0.1,
    )


def status_events(client: Client, job_id: str) -> list[str]:
    return [e.data["status"] for e in client.events(job_id) if "status" in e.data]


def test_killed_worker_job_resumes_elsewhere_and_matches_an_uninterrupted_run(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    _, svc = stack
    client = client_for(svc)
    first = svc.start_worker("doomed")
    job_id = upload_and_submit(client, data_dir)
    wait_for_step(client, job_id, 130)  # past the checkpoints at 120 (and epoch end 100)
    svc.stop_worker(first, signal.SIGKILL)  # a reclaimed spot machine: no goodbye
    svc.start_worker("rescuer")
    done = finish(client, job_id, timeout=240)
    assert done.status == "succeeded", done.error
    assert done.attempt == 2

    events = client.events(job_id)
    requeued = [e for e in events if "re-queued" in e.message]
    resumed = [e for e in events if e.data.get("resumed")]
    assert len(requeued) == 1 and "lease expired" in requeued[0].message
    assert len(resumed) == 1 and resumed[0].data["step"] >= 120  # not from step 0
    assert status_events(client, job_id).count("succeeded") == 1
    assert [e.type for e in events].count("error") == 0

    baseline = upload_and_submit(client, data_dir)
    clean = finish(client, baseline, timeout=240)
    for name, value in clean.metrics.items():
        assert done.metrics[name] == pytest.approx(value, abs=1e-4), name
    artifact = svc.env["FINETUNE_STORAGE_DIR"] + f"/jobs/{job_id}/model.tar.gz"
    assert Path(artifact).is_file()
    assert sorted(p.name for p in Path(artifact).parent.iterdir() if "tar" in p.name) == [
        "model.tar.gz"
    ]


def test_sigterm_checkpoints_and_hands_the_job_back(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    _, svc = stack
    client = client_for(svc)
    worker = svc.start_worker("leaving")
    # Only epoch-end checkpoints: the hand-back's own checkpoint is the only one mid-epoch.
    job_id = upload_and_submit(client, data_dir, checkpoint_every_steps=100_000)
    wait_for_step(client, job_id, 50)
    svc.stop_worker(worker, signal.SIGTERM, timeout=60)
    assert worker.returncode == 0
    handed_back = client.job(job_id)
    assert handed_back.status == "queued" and handed_back.attempt == 2
    messages = [e.message for e in client.events(job_id)]
    assert any("the worker shut down" in m for m in messages)

    svc.start_worker("next")
    done = finish(client, job_id, timeout=240)
    assert done.status == "succeeded"
    resumed = [e for e in client.events(job_id) if e.data.get("resumed")]
    per_epoch = done.progress.total_steps // done.progress.epochs
    assert resumed and resumed[0].data["step"] >= 50
    assert resumed[0].data["step"] % per_epoch != 0, (resumed[0].data, per_epoch)


def test_job_whose_workers_keep_vanishing_fails_after_max_attempts(
    tmp_path: Path, models_dir: Path, data_dir: Path
) -> None:
    with running_service(tmp_path, models_dir, FINETUNE_MAX_ATTEMPTS="2") as (_, svc):
        client = client_for(svc)
        job_id = upload_and_submit(client, data_dir, epochs=50)
        for attempt in (1, 2):
            worker = svc.start_worker(f"victim{attempt}")
            wait_until(
                lambda a=attempt: (
                    client.job(job_id).attempt == a and client.job(job_id).status == "running"
                ),
                120,
                "running",
            )
            wait_for_step(client, job_id, 10 * attempt)
            svc.stop_worker(worker, signal.SIGKILL)
        svc.start_worker("observer")  # its reaper finds the second lost attempt
        done = finish(client, job_id, timeout=60)
        assert done.status == "failed" and done.error and done.error.code == "worker_lost"
        assert "gave up after 2 attempts" in done.error.message


def test_redis_restart_loses_nothing_and_running_job_finishes(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    redis_server, svc = stack
    client = client_for(svc)
    svc.start_worker("steady")
    running = upload_and_submit(client, data_dir, epochs=6)  # still running after the restart
    queued = upload_and_submit(client, data_dir, epochs=1)
    wait_for_step(client, running, 40)
    files_before = client.files()
    events_before = len(client.events(running))

    redis_server.stop(signal.SIGTERM)  # append-only file on, as in docker-compose.yml
    time.sleep(2)
    redis_server.start()

    assert client.files() == files_before
    assert len(client.events(running)) >= events_before
    done = finish(client, running, timeout=240)
    assert done.status == "succeeded", done.error
    assert finish(client, queued, timeout=240).status == "succeeded"
    assert status_events(client, running).count("succeeded") == 1


def test_duplicate_delivery_trains_once(stack: tuple[RedisServer, Service], data_dir: Path) -> None:
    _, svc = stack
    client = client_for(svc)
    svc.start_worker("a")
    svc.start_worker("b")
    wait_until(lambda: svc.worker_count() >= 2, 60, "two workers")
    job_id = upload_and_submit(client, data_dir, epochs=2)
    # The transport re-delivers the same message (as after its visibility timeout).
    celery = make_celery(Settings(redis_url=svc.env["FINETUNE_REDIS_URL"]))
    dispatch(celery, "finetune", job_id, 1)
    dispatch(celery, "finetune", job_id, 1)
    done = finish(client, job_id, timeout=240)
    assert done.status == "succeeded"

    def skipped() -> int:
        logs = "".join(p.read_text() for p in svc.log_dir.glob("worker-*.log"))
        return logs.count("delivery skipped")

    wait_until(lambda: skipped() >= 2, 60, "both duplicates consumed and skipped")
    statuses = status_events(client, job_id)
    assert statuses.count("running") == 1 and statuses.count("succeeded") == 1


def test_api_restart_keeps_idempotency_and_hides_partial_uploads(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    _, svc = stack
    client = client_for(svc)
    file_id = client.upload(data_dir / "train.csv").id
    body = tiny_job_body(file_id, hyperparameters={"epochs": 1})
    first = client.submit(body, idempotency_key="once")

    # An upload cut off by the API going down: the API dies while the body streams in.
    def slow_body() -> Iterator[bytes]:
        yield b'--xyz\r\nContent-Disposition: form-data; name="file"; filename="cut.csv"\r\n\r\n'
        yield b"sentence,label\n"
        for _ in range(50):
            time.sleep(0.1)
            yield b"a fine sentence,1\n" * 100

    def upload() -> None:
        with contextlib.suppress(httpx.HTTPError):
            httpx.post(
                svc.url + "/v1/files",
                content=slow_body(),
                timeout=30,
                headers={"Content-Type": "multipart/form-data; boundary=xyz"},
            )

    thread = threading.Thread(target=upload)
    thread.start()
    time.sleep(1.0)
    assert svc.api is not None
    svc.api.kill()
    svc.api.wait()
    thread.join(timeout=30)
    svc.start_api()

    again = client.submit(body, idempotency_key="once")
    assert again.id == first.id
    names = [f.filename for f in client.files()]
    assert names == ["train.csv"]


def test_full_disk_while_checkpointing_fails_readably_and_keeps_the_last_checkpoint(
    tmp_path: Path, models_dir: Path, data_dir: Path
) -> None:
    """A real ENOSPC: checkpoints on a tiny tmpfs that fills up after the first one."""
    import worker  # noqa: F401
    from app.core.layout import list_checkpoints
    from app.core.schemas import Hyperparameters, JobSpec
    from worker.errors import StorageError
    from worker.pipeline.run import PipelineOptions, run_pipeline
    from worker.reporter import LogReporter

    mount = tmp_path / "small-disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m", "tmpfs", str(mount)]).returncode:
        pytest.fail("this test needs root to mount a tmpfs")
    try:
        checkpoints = mount / "checkpoints"

        class FillsTheDisk(LogReporter):
            def progress(self, progress: Any) -> None:
                if progress.step == 12 and not (mount / "filler").exists():
                    with (mount / "filler").open("wb", buffering=0) as filler:
                        try:
                            while True:
                                filler.write(b"\0" * 65536)
                        except OSError:
                            pass

        spec = JobSpec(
            model="tiny",
            training_file=str(data_dir / "train.csv"),
            text_column="sentence",
            label_column="label",
            hyperparameters=Hyperparameters(epochs=2, checkpoint_every_steps=10, log_every_steps=1),
        )
        with pytest.raises(StorageError, match="could not write checkpoint at step 20"):
            run_pipeline(
                spec,
                tmp_path / "out",
                checkpoints,
                FillsTheDisk(),
                PipelineOptions(models_dir=models_dir),
            )
        saved = list_checkpoints(checkpoints)
        assert [c["global_step"] for c in saved] == [10]
        (mount / "filler").unlink()
        metrics = run_pipeline(
            spec,
            tmp_path / "out",
            checkpoints,
            LogReporter(),
            PipelineOptions(models_dir=models_dir),
        )
        assert metrics["resumed_from_step"] == 10
        assert (
            json.loads((tmp_path / "out" / "metrics.json").read_text())["global_step"] == 46
        )  # 360 rows after the hold-out: 23 steps an epoch
    finally:
        subprocess.run(["umount", "-l", str(mount)])


def test_redis_down_answers_503_within_a_second(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    redis_server, svc = stack
    client = client_for(svc)
    file_id = client.upload(data_dir / "train.csv").id
    job_id = upload_and_submit(client, data_dir, epochs=1)
    redis_server.stop(signal.SIGTERM)
    try:
        for method, path, body in (
            ("GET", "/healthz", None),
            ("GET", f"/v1/jobs/{job_id}", None),
            ("GET", "/v1/jobs", None),
            ("POST", "/v1/jobs", tiny_job_body(file_id)),
        ):
            started = time.monotonic()
            response = httpx.request(method, svc.url + path, json=body, timeout=30)
            elapsed = time.monotonic() - started
            assert response.status_code == 503, (path, response.text)
            assert elapsed < 1.0, (path, elapsed)
            if path != "/healthz":
                assert response.json()["error"]["code"] == "service_unavailable"
                assert int(response.headers["Retry-After"]) > 0
        assert httpx.get(svc.url + "/healthz").json()["status"] == "degraded"
    finally:
        redis_server.start()
    wait_until(lambda: client.health()["redis"] == "ok", 30, "redis back in /healthz")
    assert client.job(job_id).id == job_id


def test_sigstopped_worker_is_fenced_when_it_wakes_up(
    tmp_path: Path, models_dir: Path, data_dir: Path
) -> None:
    """A worker frozen (SIGSTOP: a long GC pause, a suspended VM) past its lease loses the job
    to another worker; woken up (SIGCONT), it must not write anything for it any more: the
    model equals an uninterrupted run's, one terminal event, one webhook."""
    receiver = Receiver()
    with running_service(tmp_path, models_dir, FINETUNE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1") as (
        redis_server,
        svc,
    ):
        try:
            client = client_for(svc)
            workers = {name: svc.start_worker(name) for name in ("sleepy", "awake")}
            job_id = submit_tiny_upload(
                client,
                data_dir / "train.csv",
                webhook_url=receiver.url,
                hyperparameters=SLOW_JOB,
            ).id
            wait_for_step(client, job_id, 20)
            store = Store(connect(redis_server.url))
            holder = (store.get_record(job_id).worker or "").split("@")[0]  # type: ignore[union-attr]
            frozen = workers[holder]
            os.killpg(frozen.pid, signal.SIGSTOP)  # the pool child that trains, too
            try:
                wait_until(lambda: client.job(job_id).attempt == 2, 60, "the job taken over")
            finally:
                os.killpg(frozen.pid, signal.SIGCONT)
            done = finish(client, job_id)
            assert done.status == "succeeded" and done.attempt == 2, done.error
            log = svc.log_dir / f"worker-{holder}.log"
            wait_until(lambda: "lease lost" in log.read_text(), 60, "the woken worker noticing")
            assert frozen.poll() is None  # it dropped the job, not its life
            clean = finish(client, upload_and_submit(client, data_dir))
            for name, value in clean.metrics.items():
                assert done.metrics[name] == pytest.approx(value, abs=1e-4), name
            wait_until(lambda: any(c[0] == 200 for c in receiver.calls), 60, "the webhook")
            time.sleep(5)  # longer than the retry delays: anything more would have come
            mine = [c for c in receiver.calls if json.loads(c[2])["job"]["id"] == job_id]
            assert [status for status, _, _ in mine] == [500, 200]  # one webhook (retried once)
            assert status_events(client, job_id).count("succeeded") == 1
        finally:
            receiver.server.shutdown()


def test_reaper_dispatches_a_job_stored_but_never_sent(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    """The API stores the job, then dies before Celery's send: the record alone must suffice."""
    redis_server, svc = stack
    client = client_for(svc)
    uploaded = client.upload(data_dir / "train.csv")
    store = Store(connect(redis_server.url))
    file_record = store.get_file("default", uploaded.id)
    assert file_record is not None
    request = JobCreate.model_validate(tiny_job_body(uploaded.id, hyperparameters={"epochs": 1}))
    spec = JobSpec.model_validate(
        {**request.model_dump(), "training_file": file_record.path}, strict=False
    )
    record = JobRecord(
        id=new_id("job"),
        tenant="default",
        status=JobStatus.queued,
        request=request,
        spec=spec,
        created_at=now(),
    )
    store.create_job(record)  # stored, never dispatched
    svc.start_worker("reaper")
    done = finish(client, record.id, timeout=120)
    assert done.status == "succeeded", done.error
    logs = (svc.log_dir / "worker-reaper.log").read_text()
    assert "dispatching a job that was stored but never sent" in logs


def test_worker_processes_are_recycled_after_their_job_budget(
    tmp_path: Path, models_dir: Path, data_dir: Path
) -> None:
    with running_service(tmp_path, models_dir, FINETUNE_WORKER_MAX_JOBS_PER_PROCESS="1") as (
        _,
        svc,
    ):
        svc.start_worker("recycled")
        client = client_for(svc)
        ids = [upload_and_submit(client, data_dir, epochs=1) for _ in range(2)]
        assert [finish(client, job_id).status for job_id in ids] == ["succeeded"] * 2
        entries = [
            json.loads(line)
            for line in (svc.log_dir / "worker-recycled.log").read_text().splitlines()
            if line.startswith("{")
        ]
        # The job's own run (the worker logger): the main process's reaper may log about a job
        # too (seen once: the second job's message re-sent after the first child exited).
        pids = [
            {
                e["pid"]
                for e in entries
                if e.get("job_id") == job_id and e.get("logger") == "finetune.worker"
            }
            for job_id in ids
        ]
        assert all(len(p) == 1 for p in pids), pids  # each job ran in one process
        assert pids[0] != pids[1], pids  # and the second in a fresh one


def test_worker_killed_between_receipt_and_claim_loses_no_job(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    """The worker takes the job's message off the queue, then dies before claiming it (its pool
    process was still importing TensorFlow). The message is stuck in the broker's unacked set
    for an hour; the job must not be: it finishes once, within receipt time + a few seconds."""
    _, svc = stack
    client = client_for(svc)
    job_id = upload_and_submit(client, data_dir, epochs=1)  # no worker yet: it waits
    doomed = svc.start_worker("doomed", wait=False)
    log = svc.log_dir / "worker-doomed.log"
    wait_until(lambda: log.exists() and "received" in log.read_text(), 90, "the message taken")
    assert client.job(job_id).status == "queued"  # received, not claimed
    svc.stop_worker(doomed, signal.SIGKILL)
    killed_at = time.monotonic()
    svc.start_worker("rescuer")
    done = finish(client, job_id, timeout=180)
    assert done.status == "succeeded", done.error
    # receipt (2 leases: 12 s here) + a reaper pass (1 s) + a cold worker's start and the job
    waited = time.monotonic() - killed_at
    assert waited < 90, waited
    rescuer_log = (svc.log_dir / "worker-rescuer.log").read_text()
    assert "re-sending a job whose message was lost" in rescuer_log
    assert status_events(client, job_id).count("succeeded") == 1


def test_loopback_webhooks_are_refused_without_an_allow_list(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    """This service has no FINETUNE_WEBHOOK_ALLOWED_HOSTS; only loopback targets are tried."""
    _, svc = stack
    client = client_for(svc)
    file_id = client.upload(data_dir / "train.csv").id
    for target in ("http://127.0.0.1:9/hook", "http://localhost:9/hook", "http://[::1]:9/"):
        with pytest.raises(Invalid) as refused:
            client.submit(tiny_job_body(file_id, webhook_url=target))
        assert refused.value.param == "webhook_url", target
    assert client.jobs().data == []


def test_answered_writes_survive_kill_9_of_redis(
    stack: tuple[RedisServer, Service], data_dir: Path
) -> None:
    """Redis runs with appendfsync always here (as docker-compose.yml does): whatever the API
    answered, and every terminal transition, is on disk before the answer."""
    redis_server, svc = stack
    client = client_for(svc)
    uploaded = client.upload(data_dir / "train.csv")
    job = client.submit(tiny_job_body(uploaded.id, hyperparameters={"epochs": 1}))
    redis_server.stop(signal.SIGKILL)  # right after the 201
    redis_server.start()
    assert client.file(uploaded.id).id == uploaded.id
    assert client.job(job.id).status == "queued"
    svc.start_worker("after-crash")
    done = finish(client, job.id)
    assert done.status == "succeeded", done.error
    redis_server.stop(signal.SIGKILL)  # right after the terminal transition
    redis_server.start()
    assert client.job(job.id).status == "succeeded"
    time.sleep(3)  # a worker that thought otherwise would run it again now
    assert status_events(client, job.id).count("succeeded") == 1
    assert status_events(client, job.id).count("running") == 1


@pytest.mark.slow
def test_a_worker_frozen_while_saving_cannot_publish_over_its_successor(
    tmp_path: Path, models_dir: Path
) -> None:
    """all-MiniLM-L6-v2 (90 MB to save and pack: seconds): the worker is frozen as soon as it
    reports "saving model", loses its lease, and is woken once its successor has taken over.
    Its late writes go to its own attempt's folder and its publish is refused; the job's model
    is the successor's, equal to an uninterrupted run's; one terminal event."""
    sst2 = Path(__file__).resolve().parents[1] / "data" / "sst2"
    for split in ("train", "validation"):  # 100 rows each: the save is what this test is about
        first_rows(sst2 / f"{split}.csv", 100, tmp_path / f"{split}.csv")
    with running_service(tmp_path, models_dir) as (redis_server, svc):
        client = client_for(svc)
        workers = {name: svc.start_worker(name) for name in ("frozen", "successor")}
        body = {
            "model": "all-MiniLM-L6-v2",
            "training_file": client.upload(tmp_path / "train.csv").id,
            "validation_file": client.upload(tmp_path / "validation.csv").id,
            "text_column": "sentence",
            "hyperparameters": {"epochs": 1, "batch_size": 32, "learning_rate": 1e-4},
        }
        job = client.submit(body)
        saving = wait_until(
            lambda: next((e for e in client.events(job.id) if e.message == "saving model"), None),
            300,
            "the save",
            interval=0.02,
        )
        assert saving is not None
        store = Store(connect(redis_server.url))
        holder = (store.get_record(job.id).worker or "").split("@")[0]  # type: ignore[union-attr]
        os.killpg(workers[holder].pid, signal.SIGSTOP)
        try:
            assert client.job(job.id).status == "running"  # frozen before it could finish
            wait_until(lambda: client.job(job.id).attempt == 2, 60, "the job taken over")
        finally:
            os.killpg(workers[holder].pid, signal.SIGCONT)
        done = finish(client, job.id, timeout=300)
        assert done.status == "succeeded" and done.attempt == 2, done.error
        log = svc.log_dir / f"worker-{holder}.log"
        wait_until(lambda: "lease lost" in log.read_text(), 120, "the woken worker noticing")
        assert status_events(client, job.id).count("succeeded") == 1
        clean = finish(client, client.submit(body).id, timeout=300)
        for name, value in clean.metrics.items():
            assert done.metrics[name] == pytest.approx(value, abs=1e-4), name
