"""The job state machine: every status change, fenced by the job's lease.

Transitions are optimistic transactions (WATCH/MULTI) over the record and the job's lease: a
worker may change a job only while it holds the lease it claimed (its token is the fencing
token), so a stale or duplicate delivery can never finish, fail or re-queue a job that another
worker now owns. The side effects that must happen exactly once with a transition (the
statistics, the webhook outbox entry) are written in the same transaction."""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable
from typing import Any

import redis

from app.core.schemas import (
    TERMINAL_STATUSES,
    ErrorInfo,
    JobStatus,
)
from app.core.store.base import (
    EVENTS_MAXLEN,
    QUEUE_BUCKETS,
    JobRecord,
    TenantAtLimit,
    TransitionRefused,
    now,
)
from app.core.store.jobs import Jobs
from app.core.store.stats import Stats


def webhook_url(record: JobRecord) -> str | None:
    request = record.request if record.kind == "fine_tune" else record.batch_request
    return request.webhook_url if request is not None else None


class Transitions(Jobs, Stats):
    # -- transitions ------------------------------------------------------------------------------
    def _transition(
        self,
        job_id: str,
        change: Callable[[JobRecord, str | None], JobRecord],
        *,
        set_lease: tuple[str, float] | None = None,
        drop_lease: bool = False,
        running_limit: int | None = None,
        event: tuple[str, str, dict[str, Any]] | None = None,
    ) -> JobRecord:
        """Apply `change(record, current_lease_token)` atomically; it raises TransitionRefused.

        `event` (type, message, data) is appended in the same MULTI: a reader that sees the new
        status also sees the event that says why.

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
            previous_status = record.status  # `change` may update the record in place
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
            if updated.status != previous_status:
                created = updated.created_at.timestamp()
                pipe.zrem(
                    self._tenant_status(record.tenant, previous_status.value, record.kind), job_id
                )
                pipe.zadd(
                    self._tenant_status(record.tenant, updated.status.value, record.kind),
                    {job_id: created},
                )
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
                    finished = (updated.finished_at or now()).timestamp()
                    pipe.zadd(self.FINISHED, {job_id: finished})
                    pipe.zadd(self.FINISHED_WITH_CHECKPOINTS, {job_id: finished})
                    if webhook_url(updated):
                        # In the same MULTI as the transition: one webhook per terminal state,
                        # whoever made it, and it survives any process dying after it.
                        pipe.xadd(self.OUTBOX, {"job_id": job_id, "status": updated.status.value})
            elif drop_lease:
                pipe.delete(lease_key)
            elif set_lease is not None and updated.status == JobStatus.running:
                pipe.set(lease_key, set_lease[0], px=int(set_lease[1] * 1000))
            if event is not None:
                pipe.xadd(
                    self._events(job_id),
                    self.event_fields(*event),
                    maxlen=EVENTS_MAXLEN,
                    approximate=True,
                )
            if was_queued_never_started and updated.started_at is not None:
                queued_for = (updated.started_at - updated.created_at).total_seconds()
                self._observe(pipe, "queue_seconds", queued_for, QUEUE_BUCKETS)
            return updated

        updated: JobRecord = self.r.transaction(
            attempt, job_key, lease_key, value_from_callable=True
        )
        return updated

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
            # Only finite values: JSON (and so the API and Redis) has no NaN or infinity.
            record.metrics = {k: v for k, v in (metrics or {}).items() if math.isfinite(v)}
            record.warnings = warnings or []
            record.lease_token = None
            return record

        message = f"job {status.value}" + (f": {error.message}" if error else "")
        data: dict[str, Any] = {"status": status.value, **({"code": error.code} if error else {})}
        kind = "error" if status == JobStatus.failed else "status"
        return self._transition(job_id, change, event=(kind, message, data))

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
