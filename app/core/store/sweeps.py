"""Sweep records, per tenant, and the set of sweeps still running (for the reapers)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from app.core.schemas import (
    ErrorInfo,
    JobCreate,
    JobSpec,
    JobStatus,
    SweepCreate,
    SweepStatus,
)
from app.core.store.base import PREFIX, StoreBase


class TrialRecord(BaseModel):
    number: int
    optuna_trial_id: int
    job_id: str
    params: dict[str, float | int | str]
    created_at: datetime
    # Filled when the sweep has seen the trial's job end and told the study.
    told: bool = False
    status: JobStatus = JobStatus.queued
    value: float | None = None
    pruned: bool = False
    error: ErrorInfo | None = None
    finished_at: datetime | None = None


class SweepRecord(BaseModel):
    id: str
    tenant: str
    status: SweepStatus
    request: SweepCreate
    job_request: JobCreate  # the job every trial varies
    base: JobSpec  # the same, with the sweep's own links to its data (and base model)
    metric: str
    direction: Literal["maximize", "minimize"]
    max_trials: int  # the budget, capped by the grid's size
    trials: list[TrialRecord] = Field(default_factory=list)
    best_number: int | None = None
    cancel_requested: bool = False
    error: ErrorInfo | None = None
    created_at: datetime
    finished_at: datetime | None = None


class Sweeps(StoreBase):
    ACTIVE_SWEEPS = f"{PREFIX}:sweeps:active"
    FINISHED_SWEEPS = f"{PREFIX}:sweeps:finished"  # by finish time, for retention

    @staticmethod
    def _sweep(sweep_id: str) -> str:
        return f"{PREFIX}:sweep:{sweep_id}"

    @staticmethod
    def _tenant_sweeps(tenant: str) -> str:
        return f"{PREFIX}:tenant:{tenant}:sweeps"

    @staticmethod
    def sweep_lock_key(sweep_id: str) -> str:
        return f"{PREFIX}:sweep:{sweep_id}:lock"

    def put_sweep(self, record: SweepRecord) -> None:
        """Create or update; a finished sweep leaves the active set in the same MULTI."""
        with self.r.pipeline() as pipe:
            pipe.set(self._sweep(record.id), record.model_dump_json())
            pipe.zadd(
                self._tenant_sweeps(record.tenant), {record.id: record.created_at.timestamp()}
            )
            if record.status in (SweepStatus.running, SweepStatus.cancelling):
                pipe.sadd(self.ACTIVE_SWEEPS, record.id)
            else:
                pipe.srem(self.ACTIVE_SWEEPS, record.id)
                finished = (record.finished_at or record.created_at).timestamp()
                pipe.zadd(self.FINISHED_SWEEPS, {record.id: finished})
            pipe.execute()

    def get_sweep_record(self, sweep_id: str) -> SweepRecord | None:
        raw = self.r.get(self._sweep(sweep_id))
        return SweepRecord.model_validate_json(raw) if raw else None

    def get_sweep(self, tenant: str, sweep_id: str) -> SweepRecord | None:
        record = self.get_sweep_record(sweep_id)
        return record if record is not None and record.tenant == tenant else None

    def list_sweeps(
        self, tenant: str, *, limit: int, after: str | None = None
    ) -> tuple[list[SweepRecord], bool]:
        key = self._tenant_sweeps(tenant)
        max_score: str = "+inf"
        if after:
            score = self.r.zscore(key, after)
            if score is None:
                return [], False
            max_score = f"({score}"
        ids = self.r.zrevrangebyscore(key, max_score, "-inf", start=0, num=limit + 1)
        raws = self.r.mget([self._sweep(i) for i in ids]) if ids else []
        records = [SweepRecord.model_validate_json(raw) for raw in raws if raw]
        return records[:limit], len(ids) > limit

    def active_sweep_ids(self) -> list[str]:
        return sorted(self.r.smembers(self.ACTIVE_SWEEPS))

    def sweeps_finished_before(self, cutoff: float, limit: int = 100) -> list[str]:
        return list(
            self.r.zrangebyscore(self.FINISHED_SWEEPS, "-inf", f"({cutoff}", start=0, num=limit)
        )

    def forget_sweep(self, sweep_id: str, tenant: str) -> None:
        """The sweep's record (its trials are jobs: retention takes them as any job)."""
        with self.r.pipeline() as pipe:
            pipe.delete(self._sweep(sweep_id), self.sweep_lock_key(sweep_id))
            pipe.zrem(self._tenant_sweeps(tenant), sweep_id)
            pipe.zrem(self.FINISHED_SWEEPS, sweep_id)
            pipe.srem(self.ACTIVE_SWEEPS, sweep_id)
            pipe.execute()
