"""How workers coordinate through Redis besides job records: the webhook outbox, receipts of
job messages, heartbeats and draining flags."""

from __future__ import annotations

import time
from typing import Literal

import redis

from app.core.store.base import PREFIX, StoreBase

WorkerKind = Literal["worker", "predictor"]


class Coordination(StoreBase):
    # -- retention of finished jobs ---------------------------------------------------------
    def finished_before(self, cutoff: float, with_checkpoints: bool, limit: int = 100) -> list[str]:
        """Terminal jobs that finished before `cutoff` (epoch seconds), oldest first."""
        index = self.FINISHED_WITH_CHECKPOINTS if with_checkpoints else self.FINISHED
        return list(self.r.zrangebyscore(index, "-inf", f"({cutoff}", start=0, num=limit))

    def checkpoints_removed(self, job_id: str) -> None:
        self.r.zrem(self.FINISHED_WITH_CHECKPOINTS, job_id)

    def forget_job(self, job_id: str, tenant: str) -> None:
        """Every key of a finished job (its files on disk are the caller's)."""
        with self.r.pipeline() as pipe:
            pipe.delete(
                self._job(job_id),
                self._events(job_id),
                self._progress(job_id),
                self._history(job_id),
                self._lease(job_id),
                self._cancel(job_id),
                f"{PREFIX}:job:{job_id}:receipt",
                f"{PREFIX}:job:{job_id}:receipt:attempt",
            )
            for kind in ("fine_tune", "batch_prediction"):
                pipe.zrem(self._tenant_jobs(tenant, kind), job_id)
                for status in ("succeeded", "failed", "cancelled"):
                    pipe.zrem(self._tenant_status(tenant, status, kind), job_id)
            pipe.zrem(self.FINISHED, job_id)
            pipe.zrem(self.FINISHED_WITH_CHECKPOINTS, job_id)
            pipe.execute()

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

    # -- workers ---------------------------------------------------------------------------
    def worker_heartbeat(self, name: str, ttl_seconds: float, kind: WorkerKind = "worker") -> None:
        self.r.set(f"{PREFIX}:{kind}:{name}", str(time.time()), px=int(ttl_seconds * 1000))

    def live_workers(self, kind: WorkerKind = "worker") -> list[str]:
        """Training workers, or (`kind="predictor"`) prediction workers, by heartbeat."""
        return [k.split(":", 2)[2] for k in self.r.scan_iter(f"{PREFIX}:{kind}:*", count=100)]

    # -- replies to online requests (predictions) ------------------------------------------
    # The request travels as a Celery message on its own queue; its answer comes back in a
    # one-off list the API blocks on (BLPOP), so no result backend's pub/sub is shared between
    # the API's threads (Celery's is not thread-safe) and an answer nobody awaits expires.

    @staticmethod
    def reply_key(request_id: str) -> str:
        return f"{PREFIX}:reply:{request_id}"

    def put_reply(self, request_id: str, payload: str, ttl_seconds: float) -> None:
        key = self.reply_key(request_id)
        with self.r.pipeline() as pipe:
            pipe.rpush(key, payload)
            pipe.expire(key, max(1, int(ttl_seconds)))
            pipe.execute()

    def set_draining(self, name: str, ttl_seconds: float = 3600) -> None:
        self.r.set(f"{PREFIX}:draining:{name}", "1", ex=int(ttl_seconds))

    def clear_draining(self, name: str) -> None:
        self.r.delete(f"{PREFIX}:draining:{name}")

    def is_draining(self, name: str) -> bool:
        return bool(self.r.exists(f"{PREFIX}:draining:{name}"))

    def ping(self) -> bool:
        return bool(self.r.ping())
