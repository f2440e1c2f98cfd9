"""Operator statistics, kept in Redis so every API replica reports the same numbers."""

from __future__ import annotations

import redis

from app.core.schemas import (
    JobStatus,
    Progress,
)
from app.core.store.base import DURATION_BUCKETS, PREFIX, JobRecord, StoreBase


class Stats(StoreBase):
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
