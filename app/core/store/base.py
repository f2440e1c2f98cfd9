"""Keys, records and connections: what every part of the store shares."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime
from typing import Literal

import redis
from pydantic import BaseModel, Field
from redis.backoff import ExponentialBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry

from app.core.schemas import (
    BatchPredictionCreate,
    BatchSpec,
    ErrorInfo,
    FileObject,
    JobCreate,
    JobSpec,
    JobStatus,
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
    return redis.Redis.from_url(
        url,
        decode_responses=True,
        socket_connect_timeout=0.3 if fail_fast else 2,
        socket_timeout=2 if fail_fast else 10,
        health_check_interval=10,
        retry=Retry(
            ExponentialBackoff(cap=0.1 if fail_fast else 1.0, base=0.05),
            retries=1 if fail_fast else 40,
        ),
        retry_on_error=[RedisConnectionError, RedisTimeoutError],
    )


class FileRecord(BaseModel):
    public: FileObject
    tenant: str
    path: str
    dtypes: dict[str, str]


JobKind = Literal["fine_tune", "batch_prediction"]
KIND_INDEX: dict[str, str] = {"fine_tune": "jobs", "batch_prediction": "batches"}
ID_PREFIX: dict[str, str] = {"fine_tune": "job", "batch_prediction": "batch"}


class JobRecord(BaseModel):
    id: str
    tenant: str
    status: JobStatus
    # A fine-tuning job has `request` and `spec`; a batch prediction (scoring a file with a
    # job's model) has `batch_request` and `batch`. Both share the whole lifecycle.
    kind: JobKind = "fine_tune"
    request: JobCreate | None = None
    spec: JobSpec | None = None
    batch_request: BatchPredictionCreate | None = None
    batch: BatchSpec | None = None
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


class StoreBase:
    """A Redis client and the key schema (one place for every key name)."""

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
    def _tenant_jobs(tenant: str, kind: JobKind = "fine_tune") -> str:
        return f"{PREFIX}:tenant:{tenant}:{KIND_INDEX[kind]}"

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

    @staticmethod
    def _tenant_status(tenant: str, status: str, kind: JobKind = "fine_tune") -> str:
        """A tenant's jobs (or batch predictions) in one status, by creation time: a filtered
        listing reads only its page, however many jobs the tenant has."""
        scope = "" if kind == "fine_tune" else f"{KIND_INDEX[kind]}:"
        return f"{PREFIX}:tenant:{tenant}:{scope}status:{status}"

    ACTIVE = f"{PREFIX}:jobs:active"  # ids of jobs not yet terminal, for the reaper
    FINISHED = f"{PREFIX}:jobs:finished"  # terminal jobs by finish time, for retention
    FILES_BY_AGE = f"{PREFIX}:files:by_age"  # every upload by upload time, for retention
    # Terminal jobs whose checkpoints are still on disk, by finish time, for retention.
    FINISHED_WITH_CHECKPOINTS = f"{PREFIX}:jobs:finished:checkpoints"
    OUTBOX = f"{PREFIX}:webhooks"  # a stream: one entry per terminal state to announce
    OUTBOX_GROUP = "senders"
