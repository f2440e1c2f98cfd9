"""Job and file records, events, progress and leases in Redis.

Both the API and the workers use this module, so every status transition is written in one
place. Transitions are optimistic transactions (WATCH/MULTI) over the record and the job's
lease: a worker may change a job only while it holds the lease it claimed (its token is the
fencing token), so a stale or duplicate delivery can never finish, fail or re-queue a job that
another worker now owns.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import redis
import redis.asyncio as redis_async
from pydantic import BaseModel, Field
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.core.schemas import (
    TERMINAL_STATUSES,
    ErrorInfo,
    Evaluation,
    Event,
    FileObject,
    Job,
    JobCreate,
    JobSpec,
    JobStatus,
    Progress,
)

PREFIX = "ft"
DURATION_BUCKETS = (10.0, 30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)
QUEUE_BUCKETS = (0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
EVENTS_MAXLEN = 20_000
HISTORY_MAX = 500  # evaluations kept per job in Redis (returned with every GET of the job)
IDEMPOTENCY_TTL_SECONDS = 24 * 3600


def now() -> datetime:
    return datetime.now(UTC)


def new_id(kind: str) -> str:
    return f"{kind}_{secrets.token_hex(16)}"


def connect(url: str, *, fail_fast: bool = False) -> redis.Redis:
    """A client that rides out a Redis restart of several seconds instead of failing a write
    (workers: hours of training must not fail over a blip), or, with `fail_fast` (the API: a
    person or a client with its own retries is waiting), one that gives up within a second."""
    if fail_fast:
        return redis.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=0.3,
            socket_timeout=2,
            health_check_interval=10,
            retry=Retry(ExponentialBackoff(cap=0.1, base=0.05), retries=1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=2,
        socket_timeout=10,
        health_check_interval=10,
        retry=Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=40),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class FileRecord(BaseModel):
    public: FileObject
    tenant: str
    path: str
    dtypes: dict[str, str]


class JobRecord(BaseModel):
    id: str
    tenant: str
    status: JobStatus
    request: JobCreate
    spec: JobSpec
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 1
    handovers: int = 0  # attempts that ended by a graceful hand-back; they do not count
    dispatched_attempt: int = 0
    queued_at: float = Field(default_factory=time.time)
    lease_token: str | None = None
    worker: str | None = None
    error: ErrorInfo | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    warnings: list[str] = Field(default_factory=list)
    has_artifact: bool = False


class TransitionRefused(Exception):
    """The job is not in a state that allows this change (or the caller lost its lease)."""


class TenantAtLimit(Exception):
    """The job's tenant already runs as many jobs as it may; the job waits in the queue."""


class Store:
    def __init__(self, client: redis.Redis) -> None:
        self.r = client

    # -- keys ---------------------------------------------------------------------------------
    @staticmethod
    def _job(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}"

    @staticmethod
    def _lease(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:lease"

    @staticmethod
    def _events(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:events"

    @staticmethod
    def _progress(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:progress"

    @staticmethod
    def _history(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:history"

    @staticmethod
    def _cancel(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:cancel"

    @staticmethod
    def _tenant_jobs(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:jobs"

    @staticmethod
    def _tenant_queued(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:queued"

    @staticmethod
    def _tenant_running(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:running"

    @staticmethod
    def _tenant_files(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:files"

    @staticmethod
    def _file(file_id: str) -> str:
        return f"{PREFIX}:file:{file_id}"

    ACTIVE = f"{PREFIX}:jobs:active"  # ids of jobs not yet terminal, for the reaper
    OUTBOX = f"{PREFIX}:webhooks"  # a stream: one entry per terminal state to announce
    OUTBOX_GROUP = "senders"

    # -- files ----------------------------------------------------------------------------------
    def put_file(self, record: FileRecord) -> None:
        score = record.public.created_at.timestamp()
        with self.r.pipeline() as pipe:
            pipe.set(self._file(record.public.id), record.model_dump_json())
            pipe.zadd(self._tenant_files(record.tenant), {record.public.id: score})
            pipe.execute()

    def get_file(self, tenant: str, file_id: str) -> FileRecord | None:
        raw = self.r.get(self._file(file_id))
        if raw is None:
            return None
        record = FileRecord.model_validate_json(raw)
        return record if record.tenant == tenant else None

    def list_files(self, tenant: str, limit: int = 1000) -> list[FileRecord]:
        ids = self.r.zrevrange(self._tenant_files(tenant), 0, limit - 1)
        raws = self.r.mget([self._file(i) for i in ids]) if ids else []
        return [FileRecord.model_validate_json(raw) for raw in raws if raw]

    def delete_file(self, tenant: str, file_id: str) -> FileRecord | None:
        record = self.get_file(tenant, file_id)
        if record is None:
            return None
        with self.r.pipeline() as pipe:
            pipe.delete(self._file(file_id))
            pipe.zrem(self._tenant_files(tenant), file_id)
            pipe.execute()
        return record

    # -- jobs: creation and reads ---------------------------------------------------------------
    _CREATE_JOB = """
    if KEYS[1] ~= '' then
        local claimed = redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[4])
        if not claimed then return redis.call('get', KEYS[1]) end
    end
    redis.call('set', KEYS[2], ARGV[2])
    redis.call('zadd', KEYS[3], ARGV[3], ARGV[1])
    redis.call('sadd', KEYS[4], ARGV[1])
    redis.call('sadd', KEYS[5], ARGV[1])
    return ARGV[1]
    """

    def _idempotency(self, tenant: str, key: str) -> str:
        return f"{PREFIX}:idem:{tenant}:{key}"

    def find_idempotent(self, tenant: str, key: str) -> JobRecord | None:
        job_id = self.r.get(self._idempotency(tenant, key))
        return self.get_job(tenant, job_id) if job_id else None

    def create_job(self, record: JobRecord, idempotency_key: str | None = None) -> JobRecord:
        """Store a new queued job; with an idempotency key, a retry returns the first job.

        The key and the record are written in one script, so two concurrent retries can never
        both create a job."""
        idem = self._idempotency(record.tenant, idempotency_key) if idempotency_key else ""
        stored_id = self.r.eval(
            self._CREATE_JOB,
            5,
            idem,
            self._job(record.id),
            self._tenant_jobs(record.tenant),
            self.ACTIVE,
            self._tenant_queued(record.tenant),
            record.id,
            record.model_dump_json(),
            record.created_at.timestamp(),
            IDEMPOTENCY_TTL_SECONDS,
        )
        if stored_id != record.id:
            existing = self.get_job(record.tenant, stored_id)
            assert existing is not None
            return existing
        self.add_event(record.id, "status", "job queued", status=JobStatus.queued.value)
        return record

    def get_record(self, job_id: str) -> JobRecord | None:
        raw = self.r.get(self._job(job_id))
        return JobRecord.model_validate_json(raw) if raw else None

    def get_job(self, tenant: str, job_id: str) -> JobRecord | None:
        record = self.get_record(job_id)
        return record if record is not None and record.tenant == tenant else None

    def list_jobs(
        self,
        tenant: str,
        *,
        limit: int,
        after: str | None = None,
        status: JobStatus | None = None,
    ) -> tuple[list[JobRecord], bool]:
        """Newest first; `after` is the last id of the previous page."""
        key = self._tenant_jobs(tenant)
        max_score: str = "+inf"
        if after:
            score = self.r.zscore(key, after)
            if score is None:
                return [], False
            max_score = f"({score}"
        found: list[JobRecord] = []
        offset, page = 0, max(limit * 2, 50)
        while len(found) <= limit:
            ids = self.r.zrevrangebyscore(key, max_score, "-inf", start=offset, num=page)
            if not ids:
                break
            offset += len(ids)
            for raw in self.r.mget([self._job(i) for i in ids]):
                if not raw:
                    continue
                record = JobRecord.model_validate_json(raw)
                if status is None or record.status == status:
                    found.append(record)
        return found[:limit], len(found) > limit

    def count_active(self, tenant: str) -> dict[JobStatus, int]:
        """Queued and running (incl. cancelling) jobs of a tenant, from sets kept in step with
        every transition: O(1), so admission control stays cheap under a burst."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.scard(self._tenant_queued(tenant))
            pipe.scard(self._tenant_running(tenant))
            queued, running = pipe.execute()
        return {JobStatus.queued: queued, JobStatus.running: running}

    def public_job(self, record: JobRecord, artifact_url: Callable[[str], str]) -> Job:
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(self._progress(record.id))
            pipe.lrange(self._history(record.id), 0, -1)
            progress_raw, history_raw = pipe.execute()
        return public_job(record, progress_raw, history_raw, artifact_url)

    # -- transitions ------------------------------------------------------------------------------
    def _transition(
        self,
        job_id: str,
        change: Callable[[JobRecord, str | None], JobRecord],
        *,
        set_lease: tuple[str, float] | None = None,
        drop_lease: bool = False,
        running_limit: int | None = None,
    ) -> JobRecord:
        """Apply `change(record, current_lease_token)` atomically; it raises TransitionRefused.

        `set_lease=(token, seconds)` takes the lease in the same MULTI when the job ends up
        running; `drop_lease` releases it. With `running_limit`, a job may only start running
        while its tenant has fewer running jobs (TenantAtLimit otherwise)."""
        job_key, lease_key = self._job(job_id), self._lease(job_id)

        def attempt(pipe: redis.client.Pipeline) -> JobRecord:
            raw = pipe.get(job_key)
            if raw is None:
                raise TransitionRefused(f"job {job_id} does not exist")
            record = JobRecord.model_validate_json(raw)
            record_was_terminal = record.status in TERMINAL_STATUSES
            was_queued_never_started = record.started_at is None
            running_key = self._tenant_running(record.tenant)
            pipe.watch(running_key)
            was_running = record.status in (JobStatus.running, JobStatus.cancelling)
            updated = change(record, pipe.get(lease_key))
            now_running = updated.status in (JobStatus.running, JobStatus.cancelling)
            if running_limit is not None and now_running and not was_running:
                running = pipe.smembers(running_key) - {job_id}
                if len(running) >= running_limit:
                    raise TenantAtLimit(f"tenant already runs {len(running)} jobs")
            pipe.multi()
            pipe.set(job_key, updated.model_dump_json())
            if now_running:
                pipe.sadd(running_key, job_id)
            else:
                pipe.srem(running_key, job_id)
            if updated.status == JobStatus.queued:
                pipe.sadd(self._tenant_queued(record.tenant), job_id)
            else:
                pipe.srem(self._tenant_queued(record.tenant), job_id)
            if updated.status in TERMINAL_STATUSES:
                pipe.srem(self.ACTIVE, job_id)
                pipe.delete(lease_key, self._cancel(job_id))
                if record_was_terminal is False:
                    self._observe_end(pipe, updated)
                    if updated.request.webhook_url:
                        # In the same MULTI as the transition: one webhook per terminal state,
                        # whoever made it, and it survives any process dying after it.
                        pipe.xadd(self.OUTBOX, {"job_id": job_id, "status": updated.status.value})
            elif drop_lease:
                pipe.delete(lease_key)
            elif set_lease is not None and updated.status == JobStatus.running:
                pipe.set(lease_key, set_lease[0], px=int(set_lease[1] * 1000))
            if was_queued_never_started and updated.started_at is not None:
                queued_for = (updated.started_at - updated.created_at).total_seconds()
                self._observe(pipe, "queue_seconds", queued_for, QUEUE_BUCKETS)
            return updated

        updated: JobRecord = self.r.transaction(
            attempt, job_key, lease_key, value_from_callable=True
        )
        return updated

    # -- operator statistics (kept in Redis so every process sees the same numbers) ------------
    STATS_TERMINAL = f"{PREFIX}:stats:terminal"

    def _observe_end(self, pipe: redis.client.Pipeline, record: JobRecord) -> None:
        pipe.hincrby(self.STATS_TERMINAL, record.status.value, 1)
        if record.started_at is not None and record.finished_at is not None:
            seconds = (record.finished_at - record.started_at).total_seconds()
            self._observe(pipe, "duration_seconds", seconds, DURATION_BUCKETS)

    @staticmethod
    def _observe(
        pipe: redis.client.Pipeline, name: str, value: float, buckets: tuple[float, ...]
    ) -> None:
        key = f"{PREFIX}:stats:hist:{name}"
        bucket = next((b for b in buckets if value <= b), float("inf"))
        pipe.hincrby(key, f"le:{bucket}", 1)
        pipe.hincrbyfloat(key, "sum", value)
        pipe.hincrby(key, "count", 1)

    def histogram(
        self, name: str, buckets: tuple[float, ...]
    ) -> tuple[list[tuple[str, int]], float]:
        """Cumulative (upper bound, count) pairs and the sum, Prometheus style."""
        raw = self.r.hgetall(f"{PREFIX}:stats:hist:{name}")
        cumulative, running = [], 0
        for bound in (*buckets, float("inf")):
            running += int(raw.get(f"le:{bound}", 0))
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
        return cumulative, float(raw.get("sum", 0.0))

    def status_counts(self) -> dict[str, int]:
        counts = {s.value: 0 for s in JobStatus}
        for status, count in self.r.hgetall(self.STATS_TERMINAL).items():
            counts[status] = int(count)
        ids = list(self.r.smembers(self.ACTIVE))
        for raw in self.r.mget([self._job(i) for i in ids]) if ids else []:
            if raw:
                counts[JobRecord.model_validate_json(raw).status.value] += 1
        return counts

    def running_throughput(self) -> dict[str, float]:
        """tokens/s of each running job, from its latest progress report."""
        ids = list(self.r.smembers(self.ACTIVE))
        result = {}
        for job_id, raw in zip(
            ids, self.r.mget([self._progress(i) for i in ids]) if ids else [], strict=False
        ):
            if raw:
                progress = Progress.model_validate_json(raw)
                if progress.tokens_per_second and progress.percent < 100:
                    result[job_id] = progress.tokens_per_second
        return result

    def mark_dispatched(self, job_id: str, attempt: int) -> None:
        def change(record: JobRecord, _lease: str | None) -> JobRecord:
            if record.attempt == attempt:
                record.dispatched_attempt = max(record.dispatched_attempt, attempt)
            return record

        self._transition(job_id, change)

    def claim(
        self,
        job_id: str,
        attempt: int,
        worker: str,
        lease_seconds: float,
        running_limit: int | None = None,
    ) -> str | None:
        """Take the job for this delivery; None when it is not ours to run (stale, duplicate,
        cancelled or finished). Returns the fencing token otherwise; raises TenantAtLimit when
        the tenant already runs `running_limit` jobs."""
        token = secrets.token_hex(12)
        outcome: dict[str, Any] = {}

        def change(record: JobRecord, lease: str | None) -> JobRecord:
            outcome.clear()
            if record.status in TERMINAL_STATUSES:
                raise TransitionRefused(f"job is already {record.status.value}")
            if record.attempt != attempt:
                raise TransitionRefused(f"stale delivery of attempt {attempt}")
            if lease is not None:
                raise TransitionRefused("another worker holds the job's lease")
            if record.status == JobStatus.cancelling:
                record.status = JobStatus.cancelled
                record.finished_at = now()
                outcome["cancelled"] = True
                return record
            outcome["redelivered"] = record.status == JobStatus.running
            record.status = JobStatus.running
            record.started_at = record.started_at or now()
            record.lease_token, record.worker = token, worker
            return record

        try:
            self._transition(
                job_id, change, set_lease=(token, lease_seconds), running_limit=running_limit
            )
        except TransitionRefused:
            return None
        if outcome.get("cancelled"):
            self.add_event(job_id, "status", "job cancelled", status="cancelled")
            return None
        return token

    def renew_lease(self, job_id: str, token: str, lease_seconds: float) -> bool:
        """Extend our lease; False means it expired or another worker took the job over."""
        script = (
            "if redis.call('get', KEYS[1]) == ARGV[1] then "
            "return redis.call('pexpire', KEYS[1], ARGV[2]) else return 0 end"
        )
        return bool(self.r.eval(script, 1, self._lease(job_id), token, int(lease_seconds * 1000)))

    def finish(
        self,
        job_id: str,
        token: str,
        status: JobStatus,
        *,
        error: ErrorInfo | None = None,
        metrics: dict[str, float] | None = None,
        warnings: list[str] | None = None,
        has_artifact: bool = False,
    ) -> JobRecord:
        """The one terminal transition of a running job, fenced by the worker's lease token."""

        def change(record: JobRecord, lease: str | None) -> JobRecord:
            if record.status in TERMINAL_STATUSES:
                raise TransitionRefused(f"job is already {record.status.value}")
            if lease != token or record.lease_token != token:
                raise TransitionRefused("this worker no longer holds the job's lease")
            record.status, record.finished_at = status, now()
            record.error, record.has_artifact = error, has_artifact
            record.metrics = metrics or {}
            record.warnings = warnings or []
            record.lease_token = None
            return record

        updated = self._transition(job_id, change)
        message = f"job {status.value}" + (f": {error.message}" if error else "")
        self.add_event(
            job_id,
            "error" if status == JobStatus.failed else "status",
            message,
            status=status.value,
            **({"code": error.code} if error else {}),
        )
        return updated

    def requeue(
        self,
        job_id: str,
        *,
        token: str | None,
        reason: str,
        max_attempts: int,
        graceful: bool = False,
    ) -> JobRecord | None:
        """Hand a job back for another attempt (worker shutdown, or a lease that expired).

        With a token, only the lease holder may do it; without one (the reaper), only when no
        lease is live. Past `max_attempts` the job fails instead. Returns the record when a new
        attempt must be dispatched.
        """
        outcome: dict[str, Any] = {}

        def change(record: JobRecord, lease: str | None) -> JobRecord:
            outcome.clear()
            if record.status not in (JobStatus.running, JobStatus.cancelling):
                raise TransitionRefused(f"job is {record.status.value}")
            if token is not None and (lease != token or record.lease_token != token):
                raise TransitionRefused("this worker no longer holds the job's lease")
            if token is None and lease is not None:
                raise TransitionRefused("the job's lease is live")
            record.lease_token, record.worker = None, None
            if record.status == JobStatus.cancelling:
                record.status, record.finished_at = JobStatus.cancelled, now()
                outcome["event"] = ("status", "job cancelled", {"status": "cancelled"})
            elif not graceful and record.attempt - record.handovers >= max_attempts:
                record.status, record.finished_at = JobStatus.failed, now()
                record.error = ErrorInfo(
                    code="worker_lost",
                    message=f"{reason}; gave up after {record.attempt} attempts",
                )
                outcome["event"] = (
                    "error",
                    f"job failed: {record.error.message}",
                    {"status": "failed", "code": "worker_lost"},
                )
            else:
                record.status = JobStatus.queued
                record.handovers += int(graceful)
                record.attempt += 1
                record.queued_at = time.time()
                outcome["event"] = (
                    "status",
                    f"job re-queued (attempt {record.attempt}): {reason}",
                    {"status": "queued", "attempt": record.attempt},
                )
                outcome["dispatch"] = True
            return record

        try:
            updated = self._transition(job_id, change, drop_lease=True)
        except TransitionRefused:
            return None
        kind, message, data = outcome["event"]
        self.add_event(job_id, kind, message, **data)
        return updated if outcome.get("dispatch") else None

    def request_cancel(self, tenant: str, job_id: str) -> JobRecord:
        """Queued jobs end at once; running ones become `cancelling` until the worker stops."""

        def change(record: JobRecord, _lease: str | None) -> JobRecord:
            if record.tenant != tenant:
                raise TransitionRefused("not found")
            if record.status in TERMINAL_STATUSES:
                raise TransitionRefused(f"job is already {record.status.value}")
            if record.status == JobStatus.queued:
                record.status, record.finished_at = JobStatus.cancelled, now()
            elif record.status == JobStatus.running:
                record.status = JobStatus.cancelling
            return record

        updated = self._transition(job_id, change)
        self.r.set(self._cancel(job_id), "1", ex=7 * 24 * 3600)
        self.add_event(job_id, "status", f"job {updated.status.value}", status=updated.status.value)
        return updated

    def cancel_requested(self, job_id: str) -> bool:
        return bool(self.r.exists(self._cancel(job_id)))

    def active_job_ids(self) -> list[str]:
        return list(self.r.smembers(self.ACTIVE))

    def lease_alive(self, job_id: str) -> bool:
        return bool(self.r.exists(self._lease(job_id)))

    def lease_held(self, job_id: str, token: str) -> bool:
        return bool(self.r.get(self._lease(job_id)) == token)

    # -- the webhook outbox ------------------------------------------------------------------
    def outbox_take(
        self, sender: str, block_ms: int, reclaim_idle_ms: int
    ) -> tuple[str, str, str] | None:
        """The next webhook to send, as (entry id, job id, status): first one a vanished sender
        held for longer than `reclaim_idle_ms`, else a new one (waiting up to `block_ms`)."""
        try:
            self.r.xgroup_create(self.OUTBOX, self.OUTBOX_GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        _, claimed, *_ = self.r.xautoclaim(
            self.OUTBOX, self.OUTBOX_GROUP, sender, min_idle_time=reclaim_idle_ms, count=1
        )
        entries = claimed or [
            entry
            for _, stream_entries in self.r.xreadgroup(
                self.OUTBOX_GROUP, sender, {self.OUTBOX: ">"}, count=1, block=block_ms
            )
            or []
            for entry in stream_entries
        ]
        for entry_id, fields in entries:
            if fields:  # an entry deleted meanwhile comes back empty
                return entry_id, fields["job_id"], fields["status"]
            self.outbox_done(entry_id)
        return None

    def outbox_done(self, entry_id: str) -> None:
        with self.r.pipeline() as pipe:
            pipe.xack(self.OUTBOX, self.OUTBOX_GROUP, entry_id)
            pipe.xdel(self.OUTBOX, entry_id)
            pipe.execute()

    def outbox_length(self) -> int:
        return int(self.r.xlen(self.OUTBOX))

    # -- receipts: a worker has taken a job's message off the queue ---------------------------
    # Celery's message for a job is only a doorbell: once a worker has taken it (it then sits
    # in the broker's "unacked" set until the visibility timeout, an hour), a worker that dies
    # before claiming the job would leave it queued and unserved for that hour. The worker
    # notes the receipt with a time to live; a queued job whose last receipt has expired
    # without a claim has lost its message, and the reaper rings again.
    @staticmethod
    def _receipt(job_id: str) -> str:
        return f"{PREFIX}:job:{job_id}:receipt"

    def note_receipt(self, job_id: str, attempt: int, worker: str, ttl_seconds: float) -> None:
        with self.r.pipeline() as pipe:
            pipe.set(self._receipt(job_id), f"{attempt} {worker}", px=int(ttl_seconds * 1000))
            pipe.set(self._receipt(job_id) + ":attempt", attempt, ex=30 * 24 * 3600)
            pipe.execute()

    def lost_message(self, job_id: str, attempt: int) -> bool:
        """Whether this attempt's message was taken by a worker that then went silent."""
        with self.r.pipeline() as pipe:
            pipe.get(self._receipt(job_id) + ":attempt")
            pipe.exists(self._receipt(job_id))
            received, alive = pipe.execute()
        return received is not None and int(received) == attempt and not alive

    def forget_receipt(self, job_id: str) -> None:
        self.r.delete(self._receipt(job_id), self._receipt(job_id) + ":attempt")

    # -- progress, metrics, events ----------------------------------------------------------------
    def set_progress(self, job_id: str, progress: Progress) -> None:
        self.r.set(self._progress(job_id), progress.model_dump_json(), ex=30 * 24 * 3600)

    def add_evaluation(self, job_id: str, record: Evaluation) -> None:
        """Evaluations are keyed by step, so one repeated after a resume replaces, not adds.
        At most HISTORY_MAX are kept: past that, every other older one is dropped (the curve
        keeps its shape at half the resolution; the job's own history.json has them all)."""
        key = self._history(job_id)
        existing = [Evaluation.model_validate_json(h) for h in self.r.lrange(key, 0, -1)]
        kept = sorted([e for e in existing if e.step != record.step] + [record], key=_step)
        if len(kept) > HISTORY_MAX:
            kept = [*kept[:-1:2], kept[-1]]  # thin the older ones; the newest always stays
        with self.r.pipeline() as pipe:
            pipe.delete(key)
            pipe.rpush(key, *(e.model_dump_json() for e in kept))
            pipe.execute()

    def add_event(self, job_id: str, type: str, message: str, **data: Any) -> str:
        fields = {
            "type": type,
            "message": message,
            "time": now().isoformat(),
            "data": json.dumps(data, default=str),
        }
        event_id: str = self.r.xadd(
            self._events(job_id), fields, maxlen=EVENTS_MAXLEN, approximate=True
        )
        return event_id

    def events(self, job_id: str, after: str | None, limit: int) -> tuple[list[Event], bool]:
        start = f"({after}" if after else "-"
        entries = self.r.xrange(self._events(job_id), min=start, max="+", count=limit + 1)
        events = [
            Event(
                id=entry_id,
                time=datetime.fromisoformat(f["time"]),
                type=f["type"],
                message=f["message"],
                data=json.loads(f.get("data") or "{}"),
            )
            for entry_id, f in entries[:limit]
        ]
        return events, len(entries) > limit

    # -- workers ---------------------------------------------------------------------------
    def worker_heartbeat(self, name: str, ttl_seconds: float) -> None:
        self.r.set(f"{PREFIX}:worker:{name}", str(time.time()), px=int(ttl_seconds * 1000))

    def live_workers(self) -> list[str]:
        return [k.split(":", 2)[2] for k in self.r.scan_iter(f"{PREFIX}:worker:*", count=100)]

    def set_draining(self, name: str, ttl_seconds: float = 3600) -> None:
        self.r.set(f"{PREFIX}:draining:{name}", "1", ex=int(ttl_seconds))

    def clear_draining(self, name: str) -> None:
        self.r.delete(f"{PREFIX}:draining:{name}")

    def is_draining(self, name: str) -> bool:
        return bool(self.r.exists(f"{PREFIX}:draining:{name}"))

    def ping(self) -> bool:
        return bool(self.r.ping())


def _step(evaluation: Evaluation) -> int:
    return evaluation.step


def public_job(
    record: JobRecord,
    progress_raw: str | None,
    history_raw: list[str],
    artifact_url: Callable[[str], str],
) -> Job:
    history = [Evaluation.model_validate_json(h) for h in history_raw]
    req = record.request
    metrics = record.metrics or (history[-1].metrics if history else {})
    return Job(
        id=record.id,
        status=record.status,
        model=req.model,
        training_file=req.training_file,
        validation_file=req.validation_file,
        text_column=req.text_column,
        text_pair_column=req.text_pair_column,
        label_column=req.label_column,
        hyperparameters=req.hyperparameters,
        metadata=req.metadata,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempt=record.attempt,
        progress=Progress.model_validate_json(progress_raw) if progress_raw else Progress(),
        metrics=metrics,
        warnings=record.warnings,
        history=history,
        error=record.error,
        artifacts={"model": artifact_url(record.id)} if record.has_artifact else {},
    )


class AsyncReader:
    """The status poll's read path on redis.asyncio: no thread hop, and a slow or restarting
    Redis never blocks the API's event loop (it fails within a second: the API answers 503)."""

    def __init__(self, url: str) -> None:
        self.r = redis_async.Redis.from_url(
            url,
            decode_responses=True,
            socket_connect_timeout=0.3,
            socket_timeout=2,
            retry=AsyncRetry(ExponentialBackoff(cap=0.1, base=0.05), retries=1),
            retry_on_error=[RedisConnectionError, RedisTimeoutError],
        )

    async def job_view(
        self, tenant: str, job_id: str, artifact_url: Callable[[str], str]
    ) -> Job | None:
        """The public job in one round trip."""
        async with self.r.pipeline(transaction=False) as pipe:
            pipe.get(Store._job(job_id))
            pipe.get(Store._progress(job_id))
            pipe.lrange(Store._history(job_id), 0, -1)
            raw, progress_raw, history_raw = await pipe.execute()
        if raw is None:
            return None
        record = JobRecord.model_validate_json(raw)
        if record.tenant != tenant:
            return None
        return public_job(record, progress_raw, history_raw, artifact_url)
