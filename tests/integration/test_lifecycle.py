"""The job lifecycle called directly, against a real Redis and a real Celery queue: the store's
fenced transitions, the outbox, `run_attempt`'s early exits, `reap_once`, and the fence on
publishing an artifact. (The process-level tests in test_faults drive the same code through
real workers and signals.)"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from app.core.lifecycle import ring
from app.core.queue import make_celery
from app.core.schemas import JobCreate, JobSpec, JobStatus
from app.core.settings import Settings
from app.core.store import JobRecord, Store, TenantAtLimit, TransitionRefused, connect, new_id, now
from tests.support.harness import RedisServer, wait_until
from tests.support.jobs import tiny_job_body
from worker.reaper import reap_once
from worker.runner import LeaseKeeper, LeaseLost, pack_artifact, run_attempt


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """A database of these tests' own, emptied for each: the reaper sees only their jobs, and
    the session's service and worker never see them."""
    url = redis_server.url.rsplit("/", 1)[0] + "/5"
    redis.Redis.from_url(url).flushdb()
    return url


@pytest.fixture
def store(redis_url: str) -> Store:
    return Store(connect(redis_url))


@pytest.fixture
def settings(redis_url: str) -> Iterator[Settings]:
    yield Settings(
        redis_url=redis_url,
        queue_name=f"lifecycle-{uuid.uuid4().hex[:8]}",
        lease_seconds=1.5,
        max_attempts=3,
    )


def queued_messages(settings: Settings) -> int:
    return int(redis.Redis.from_url(settings.redis_url).llen(settings.queue_name))


def new_job(store: Store, tenant: str = "lifecycle", **overrides: object) -> JobRecord:
    request = JobCreate.model_validate(tiny_job_body("file_" + "0" * 32, **overrides))
    spec = JobSpec.model_validate(
        {**request.model_dump(), "training_file": "/nonexistent/train.csv"}, strict=False
    )
    record = JobRecord(
        id=new_id("job"),
        tenant=tenant,
        status=JobStatus.queued,
        request=request,
        spec=spec,
        created_at=now(),
    )
    return store.create_job(record)


def sender(store: Store, settings: Settings) -> Callable[..., None]:
    """How a worker sends a job on (worker/tasks.py): the real queue, this test's own."""
    celery = make_celery(settings)
    return lambda jid, att, countdown=None: ring(
        store, celery, settings.queue_name, jid, att, countdown=countdown
    )


def statuses(store: Store, job_id: str) -> list[str]:
    events, _ = store.events(job_id, None, 1000)
    return [e.data["status"] for e in events if "status" in e.data]


def test_terminal_transitions_are_fenced_and_announced_once(store: Store) -> None:
    job = new_job(store, webhook_url="http://127.0.0.1:9/hook")
    outbox_before = store.outbox_length()
    first = store.claim(job.id, 1, "a@host", 30)
    assert first is not None
    assert store.claim(job.id, 1, "b@host", 30) is None  # a duplicate delivery: dropped
    with pytest.raises(TransitionRefused):
        store.finish(job.id, "not-the-token", JobStatus.succeeded)
    store.finish(job.id, first, JobStatus.succeeded, metrics={"accuracy": 0.9})
    with pytest.raises(TransitionRefused):
        store.finish(job.id, first, JobStatus.failed)  # one terminal state only
    assert statuses(store, job.id) == ["queued", "succeeded"]
    assert store.outbox_length() == outbox_before + 1  # one webhook for the one terminal state


def test_a_worker_that_lost_its_lease_cannot_publish_the_artifact(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    job = new_job(store)
    token_a = store.claim(job.id, 1, "a@host", settings.lease_seconds)
    assert token_a is not None
    keeper_a = LeaseKeeper(store, job.id, token_a, settings.lease_seconds)  # not renewing
    keeper_a.verify()  # still ours
    wait_until(lambda: not store.lease_alive(job.id), 10, "the lease to expire")
    requeued = store.requeue(job.id, token=None, reason="lease expired", max_attempts=3)
    assert requeued is not None and requeued.attempt == 2
    token_b = store.claim(job.id, 2, "b@host", 30)
    assert token_b is not None

    folder = tmp_path / "output"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    target = tmp_path / "model.tar.gz"
    with pytest.raises(LeaseLost):
        pack_artifact(folder, target, 1, guard=keeper_a.verify)
    assert not target.exists() and list(tmp_path.glob(".model.tar.gz*")) == []
    keeper_b = LeaseKeeper(store, job.id, token_b, 30)
    pack_artifact(folder, target, 2, guard=keeper_b.verify)
    assert target.is_file() and list(tmp_path.glob(".model.tar.gz*")) == []
    with pytest.raises(TransitionRefused):
        store.finish(job.id, token_a, JobStatus.succeeded)
    store.finish(job.id, token_b, JobStatus.succeeded)
    assert statuses(store, job.id).count("succeeded") == 1


def test_run_attempt_drops_stale_deliveries(store: Store, settings: Settings) -> None:
    job = new_job(store)
    sent = queued_messages(settings)
    outcome = run_attempt(
        store, settings, job.id, 7, "a@host", sender(store, settings)
    )  # attempt 7: not the job's
    assert outcome == "skipped"
    assert store.get_record(job.id).status == JobStatus.queued  # type: ignore[union-attr]
    assert queued_messages(settings) == sent


def test_a_deferral_whose_send_fails_is_rung_again_by_the_reaper(
    store: Store, settings: Settings
) -> None:
    """The tenant is at its running limit, and sending the deferred message fails (Redis
    blip): the job must not be orphaned."""
    limited = settings.model_copy(update={"max_running_jobs_per_tenant": 1})
    tenant = f"busy-{uuid.uuid4().hex[:6]}"
    running = new_job(store, tenant)
    assert store.claim(running.id, 1, "a@host", 60) is not None
    waiting = new_job(store, tenant)
    with pytest.raises(TenantAtLimit):
        store.claim(waiting.id, 1, "b@host", 60, running_limit=1)

    celery = make_celery(limited)
    before = queued_messages(limited)
    outcome = run_attempt(store, limited, waiting.id, 1, "b@host", sender(store, limited))
    assert outcome == "deferred" and queued_messages(limited) == before + 1  # offered again

    def failing_send(job_id: str, attempt: int, countdown: float | None = None) -> None:
        raise redis.ConnectionError("the broker is down")  # an injected fault, once

    with pytest.raises(redis.ConnectionError):
        run_attempt(store, limited, waiting.id, 1, "b@host", failing_send)
    assert store.get_record(waiting.id).status == JobStatus.queued  # type: ignore[union-attr]
    wait_until(lambda: store.lost_message(waiting.id, 1), 30, "the receipt to expire", interval=0.5)
    before = queued_messages(limited)
    reap_once(store, celery, limited)
    assert queued_messages(limited) == before + 1  # rung again
    assert not store.lost_message(waiting.id, 1)  # and only once
    reap_once(store, celery, limited)
    assert queued_messages(limited) == before + 1


def test_reap_once_requeues_a_job_whose_lease_expired_before_any_progress(
    store: Store, settings: Settings
) -> None:
    job = new_job(store)
    assert store.claim(job.id, 1, "gone@host", settings.lease_seconds) is not None
    celery = make_celery(settings)
    before = queued_messages(settings)
    assert reap_once(store, celery, settings) == 0  # its lease is alive: nothing to do
    wait_until(lambda: not store.lease_alive(job.id), 10, "the lease to expire")
    time.sleep(0.1)
    reap_once(store, celery, settings)
    record = store.get_record(job.id)
    assert record is not None and record.status == JobStatus.queued and record.attempt == 2
    assert record.dispatched_attempt == 2
    assert queued_messages(settings) == before + 1


def test_the_evaluation_history_stays_bounded(store: Store) -> None:
    from app.core.schemas import Evaluation
    from app.core.store import HISTORY_MAX

    job = new_job(store)
    for step in range(1, 3 * HISTORY_MAX + 1):
        store.add_evaluation(job.id, Evaluation.at(step / 100, step, {"loss": 1 / step}))
    store.add_evaluation(job.id, Evaluation.at(0.01, 1, {"loss": 9.0}))  # a repeat replaces
    history = store.public_job(store.get_record(job.id), lambda i: i).history  # type: ignore[arg-type]
    assert len(history) <= HISTORY_MAX
    steps = [e.step for e in history]
    assert steps == sorted(steps) and steps[-1] == 3 * HISTORY_MAX  # the newest is kept
    assert len(set(steps)) == len(steps)


def test_listing_by_status_reads_that_status_alone(store: Store) -> None:
    tenant = f"lister-{uuid.uuid4().hex[:6]}"
    jobs = [new_job(store, tenant) for _ in range(5)]
    token = store.claim(jobs[1].id, 1, "a@host", 60)
    assert token is not None
    store.finish(jobs[1].id, token, JobStatus.succeeded)
    store.request_cancel(tenant, jobs[3].id)
    queued, more = store.list_jobs(tenant, limit=2, status=JobStatus.queued)
    assert [r.id for r in queued] == [jobs[4].id, jobs[2].id] and more  # newest first
    rest, more = store.list_jobs(tenant, limit=2, status=JobStatus.queued, after=queued[-1].id)
    assert [r.id for r in rest] == [jobs[0].id] and not more
    assert [r.id for r in store.list_jobs(tenant, limit=10, status=JobStatus.succeeded)[0]] == [
        jobs[1].id
    ]
    assert [r.id for r in store.list_jobs(tenant, limit=10, status=JobStatus.cancelled)[0]] == [
        jobs[3].id
    ]
    assert len(store.list_jobs(tenant, limit=10)[0]) == 5


def test_retention_removes_checkpoints_first_then_whole_jobs(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    from app.core.layout import checkpoint_dir, job_dir
    from worker.retention import DAY, apply_retention

    policy = settings.model_copy(
        update={"storage_dir": tmp_path, "retain_checkpoints_days": 1, "retain_jobs_days": 3}
    )
    job = new_job(store)
    token = store.claim(job.id, 1, "a@host", 60)
    assert token is not None
    finished = store.finish(job.id, token, JobStatus.succeeded)
    assert finished.finished_at is not None
    (checkpoint_dir(tmp_path, job.id)).mkdir(parents=True)
    (checkpoint_dir(tmp_path, job.id) / "ckpt-1.index").write_text("x")
    (job_dir(tmp_path, job.id) / "model.tar.gz").write_text("model")
    at = finished.finished_at.timestamp()

    nothing = {"checkpoints": 0, "jobs": 0, "sweeps": 0, "uploads": 0}
    assert apply_retention(store, policy, now=at + 0.5 * DAY) == nothing
    assert apply_retention(store, policy, now=at + 1.5 * DAY) == nothing | {"checkpoints": 1}
    assert not checkpoint_dir(tmp_path, job.id).exists()
    assert (job_dir(tmp_path, job.id) / "model.tar.gz").exists()  # the model stays
    assert store.get_record(job.id) is not None
    assert apply_retention(store, policy, now=at + 1.6 * DAY) == nothing
    assert apply_retention(store, policy, now=at + 3.5 * DAY) == nothing | {"jobs": 1}
    assert store.get_record(job.id) is None and not job_dir(tmp_path, job.id).exists()
    assert store.events(job.id, None, 10) == ([], False)
    assert job.id not in [r.id for r in store.list_jobs(job.tenant, limit=100)[0]]


def test_retention_removes_finished_sweeps(
    store: Store, settings: Settings, tmp_path: Path
) -> None:
    import optuna

    from app.core.layout import sweep_dir
    from app.core.schemas import JobCreate, JobSpec, SearchDimension, SweepCreate, SweepStatus
    from app.core.store import SweepRecord
    from app.core.sweeps import create_study, study_storage
    from worker.retention import DAY, apply_retention

    policy = settings.model_copy(update={"storage_dir": tmp_path, "retain_jobs_days": 3})
    job = JobCreate(model="tiny", training_file="file_" + "0" * 32)
    records = []
    for status in (SweepStatus.succeeded, SweepStatus.running):
        record = SweepRecord(
            id=new_id("sweep"),
            tenant="alice",
            status=status,
            request=SweepCreate(job=job, search={"epochs": SearchDimension(values=[1, 2])}),
            job_request=job,
            base=JobSpec(model="tiny", training_file="/dev/null"),
            metric="accuracy",
            direction="maximize",
            max_trials=2,
            created_at=now(),
            finished_at=now() if status == SweepStatus.succeeded else None,
        )
        create_study(record, policy)
        sweep_dir(tmp_path, record.id).mkdir(parents=True)
        store.put_sweep(record)
        records.append(record)
    finished, running = records
    at = now().timestamp()
    assert apply_retention(store, policy, now=at + 1 * DAY)["sweeps"] == 0
    assert apply_retention(store, policy, now=at + 3.5 * DAY)["sweeps"] == 1
    assert store.get_sweep_record(finished.id) is None
    assert not sweep_dir(tmp_path, finished.id).exists()
    names = [s.study_name for s in optuna.get_all_study_summaries(study_storage(policy.redis_url))]
    assert finished.id not in names and running.id in names
    assert store.get_sweep_record(running.id) is not None  # a running sweep stays
    assert store.list_sweeps("alice", limit=10)[0][0].id == running.id


def test_retention_of_uploads(store: Store, settings: Settings, tmp_path: Path) -> None:
    from app.core.schemas import FileObject
    from app.core.store import FileRecord
    from worker.retention import DAY, apply_retention

    path = tmp_path / "train.csv"
    path.write_text("sentence,label\na,1\n")
    uploaded = FileObject(
        id=new_id("file"),
        filename="train.csv",
        bytes=18,
        format="csv",
        rows=1,
        columns=["sentence", "label"],
        created_at=now(),
    )
    store.put_file(FileRecord(public=uploaded, tenant="t", path=str(path), dtypes={}))
    policy = settings.model_copy(update={"storage_dir": tmp_path, "retain_uploads_days": 2})
    at = uploaded.created_at.timestamp()
    assert apply_retention(store, policy, now=at + DAY)["uploads"] == 0
    assert store.get_file("t", uploaded.id) is not None
    assert apply_retention(store, policy, now=at + 3 * DAY)["uploads"] == 1
    assert store.get_file("t", uploaded.id) is None and not path.exists()


def test_a_cancel_during_a_hand_back_is_announced_once(store: Store) -> None:
    """SIGTERM hands the job back to the queue; a cancel then ends it at once. That terminal
    state gets its webhook like any other (it used to get none)."""
    job = new_job(store, webhook_url="http://127.0.0.1:9/hook")
    token = store.claim(job.id, 1, "leaving@host", 60)
    assert token is not None
    handed = store.requeue(
        job.id, token=token, reason="the worker shut down", max_attempts=3, graceful=True
    )
    assert handed is not None and handed.status == JobStatus.queued
    before = store.outbox_length()
    assert store.request_cancel(job.tenant, job.id).status == JobStatus.cancelled
    assert store.outbox_length() == before + 1
    taken = store.outbox_take("test-sender", block_ms=100, reclaim_idle_ms=60_000)
    assert taken is not None and taken[1:] == (job.id, "cancelled")
    store.outbox_done(taken[0])
    assert store.outbox_length() == before


def test_numbers_json_cannot_hold_never_break_a_job_view(store: Store) -> None:
    """A diverged metric (NaN, infinity) must not make the job unreadable: JSON has no NaN, so
    such a value was stored as null, and every read of the job then failed (HTTP 500)."""
    from app.core.schemas import Evaluation

    job = new_job(store)
    token = store.claim(job.id, 1, "a@host", 60)
    assert token is not None
    store.add_evaluation(job.id, Evaluation.at(0.5, 5, {"loss": float("nan"), "accuracy": 0.5}))
    metrics = {"loss": float("inf"), "accuracy": 0.5}
    store.finish(job.id, token, JobStatus.succeeded, metrics=metrics)
    view = store.public_job(store.get_record(job.id), lambda i: i)  # type: ignore[arg-type]
    assert view.metrics == {"accuracy": 0.5}
    assert view.history[0].metrics == {"accuracy": 0.5}
    view.model_dump_json()  # what the API sends
    store.add_event(job.id, "metric", "diverged", loss=float("nan"), rows=[float("inf"), 1.0])
    events, _ = store.events(job.id, None, 1000)
    assert events[-1].data == {"loss": None, "rows": [None, 1.0]}


def test_one_unreadable_record_does_not_stop_the_reaper(store: Store, settings: Settings) -> None:
    broken = new_job(store)
    store.r.set(store._job(broken.id), "{not json")
    lost = new_job(store)
    assert store.claim(lost.id, 1, "gone@host", settings.lease_seconds) is not None
    wait_until(lambda: not store.lease_alive(lost.id), 10, "the lease to expire")
    assert reap_once(store, make_celery(settings), settings) == 1  # the other job is re-queued
    assert store.get_record(lost.id).attempt == 2  # type: ignore[union-attr]
