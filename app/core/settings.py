"""The one place every deployment setting is read: environment variables prefixed FINETUNE_."""

from __future__ import annotations

import logging
from functools import lru_cache
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

Precision = Literal["auto", "float32", "mixed_float16", "mixed_bfloat16"]

log = logging.getLogger(__name__)


def data_home() -> Path:
    """The per-user data folder (~/.local/share/finetune on Linux): the default for storage
    and models, so `finetune` finds the same jobs and models from whatever folder it runs in."""
    return Path(platformdirs.user_data_dir("finetune", appauthor=False))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FINETUNE_", extra="ignore")

    redis_url: str = "redis://127.0.0.1:6379/0"
    # Job files, checkpoints and artifacts: a local folder, or a shared mount in a cluster.
    storage_dir: Path = Field(default_factory=lambda: data_home() / "storage")
    # Sub-folders are models by name (besides the models installed as Python packages).
    models_dir: Path = Field(default_factory=lambda: data_home() / "models")
    # "tenant:key,tenant:key"; empty means single-tenant with no auth (local use).
    api_keys: str = ""
    host: str = "127.0.0.1"
    port: int = 8000
    # Without API keys the API is open to anyone who reaches it: it then refuses to listen
    # beyond loopback unless this says so explicitly.
    allow_open_access: bool = False
    allow_hub: bool = False
    max_upload_bytes: int = Field(default=200 * 1024 * 1024, gt=0)
    max_labels: int = Field(default=1000, ge=2)
    # What one uploaded dataset may hold; checked while it is read, before it is listed.
    max_rows: int = Field(default=5_000_000, ge=1)
    max_columns: int = Field(default=1000, ge=1)
    max_decoded_bytes: int = Field(default=4 * 1024**3, gt=0)  # Parquet, from its metadata
    # Data reports (GET /v1/files/{id}/report, and every submission) read at most this many rows.
    data_report_max_rows: int = Field(default=200_000, ge=1)
    # Per-tenant admission limits; over them a submission answers 429.
    max_running_jobs_per_tenant: int = Field(default=8, ge=1)
    max_queued_jobs_per_tenant: int = Field(default=1000, ge=1)

    # Queue and worker behaviour.
    queue_name: str = "finetune"
    lease_seconds: float = Field(default=30.0, gt=1)
    max_attempts: int = Field(default=3, ge=1)
    reaper_interval_seconds: float = Field(default=5.0, gt=0)
    # Online predictions: their own queue and worker processes (`finetune worker --predictions`),
    # so a long training job never holds a request up; each keeps its most recently used
    # fine-tuned models loaded. The API waits this long for an answer, then says 503.
    prediction_queue_name: str = "finetune-predictions"
    prediction_timeout_seconds: float = Field(default=30.0, gt=0)
    prediction_models_per_worker: int = Field(default=4, ge=1)
    # A fresh process after this many jobs frees memory TensorFlow keeps; 1 on GPU machines.
    worker_max_jobs_per_process: int = Field(default=20, ge=1)
    # Per-worker default; a job's own `precision` hyperparameter wins.
    worker_precision: Precision = "auto"
    # Tokenized datasets and pristine pretrained models a worker process keeps for later jobs.
    worker_cache_entries: int = Field(default=4, ge=0)
    # Compiled models (weights, optimizer, traced train step) a worker process keeps, so a job
    # on a model shape it trained before starts without tracing (0: every job starts cold).
    worker_warm_models: int = Field(default=2, ge=0)
    # Retention of finished jobs, applied by the workers' reaper (0: keep forever). Checkpoints
    # are only needed to resume, so they go first; the record, events and model go with the job.
    retain_checkpoints_days: float = Field(default=7.0, ge=0)
    retain_jobs_days: float = Field(default=0.0, ge=0)
    # Uploads (jobs keep their own link to their data, so this never breaks a job).
    retain_uploads_days: float = Field(default=0.0, ge=0)
    retention_interval_seconds: float = Field(default=600.0, gt=0)
    log_level: str = "INFO"
    # Key for the X-Finetune-Signature HMAC on webhook calls (unsigned when empty).
    webhook_secret: str = ""
    # Webhooks go to public addresses only; these hosts, addresses or networks (comma-separated,
    # e.g. "hooks.internal,10.1.2.0/24") are allowed even when private (app.core.netguard).
    webhook_allowed_hosts: str = ""
    # Shows /metrics' per-job series (job ids) to `Authorization: Bearer OPERATOR_KEY` only.
    operator_key: str = ""
    # Every request body but uploads; enforced before the body is read, before authentication.
    max_request_bytes: int = Field(default=1024 * 1024, gt=0)

    # Client side (the `finetune` commands that talk to a running service).
    url: str = "http://127.0.0.1:8000"
    api_key: str | None = None

    @field_validator("storage_dir", "models_dir")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        """Relative paths are resolved once, against the folder the process starts in, so a
        later change of directory cannot move them."""
        return value.expanduser().absolute()

    @field_validator("api_keys")
    @classmethod
    def _keys_well_formed(cls, value: str) -> str:
        parse_api_keys(value)
        return value

    @property
    def tenants_by_key(self) -> dict[str, str]:
        return parse_api_keys(self.api_keys)

    @property
    def files_dir(self) -> Path:
        return self.storage_dir / "files"

    @property
    def jobs_dir(self) -> Path:
        return self.storage_dir / "jobs"

    @property
    def cache_dir(self) -> Path:
        return self.storage_dir / "cache"


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1", "[::1]"})


def exposure_problem(settings: Settings) -> str | None:
    """Why the API must not start as configured: open (no keys) and reachable from elsewhere."""
    if settings.tenants_by_key or settings.allow_open_access:
        return None
    if settings.host in LOOPBACK_HOSTS or settings.host.startswith("127."):
        return None
    return (
        f"refusing to listen on {settings.host} without API keys: anyone who reaches it could "
        "use the service and read every job. Set FINETUNE_API_KEYS (tenant:key,...), listen "
        "on 127.0.0.1, or set FINETUNE_ALLOW_OPEN_ACCESS=true if that is really meant"
    )


def parse_api_keys(raw: str) -> dict[str, str]:
    """Map key -> tenant from 'tenant:key,tenant:key'."""
    keys: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        tenant, sep, key = item.partition(":")
        if not sep or not tenant or not key:
            raise ValueError("FINETUNE_API_KEYS must look like 'tenant:key,tenant:key'")
        keys[key] = tenant
    return keys


@lru_cache
def get_settings() -> Settings:
    return Settings()
