"""Job records: creation (idempotent), reads, listings and the public view."""

from __future__ import annotations

from collections.abc import Callable

from app.core.schemas import (
    BatchPrediction,
    Evaluation,
    Job,
    JobStatus,
    Progress,
)
from app.core.store.base import IDEMPOTENCY_TTL_SECONDS, PREFIX, JobKind, JobRecord
from app.core.store.events import EventLog


class Jobs(EventLog):
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
    redis.call('zadd', KEYS[6], ARGV[3], ARGV[1])
    return ARGV[1]
    """

    def _idempotency(self, tenant: str, key: str, kind: JobKind = "fine_tune") -> str:
        """Per tenant and per kind: a key used for a job never answers for a batch."""
        scope = "" if kind == "fine_tune" else f"{kind}:"
        return f"{PREFIX}:idem:{tenant}:{scope}{key}"

    def find_idempotent(
        self, tenant: str, key: str, kind: JobKind = "fine_tune"
    ) -> JobRecord | None:
        job_id = self.r.get(self._idempotency(tenant, key, kind))
        return self.get_job(tenant, job_id) if job_id else None

    def create_job(
        self,
        record: JobRecord,
        idempotency_key: str | None = None,
        warnings: list[str] | None = None,
    ) -> JobRecord:
        """Store a new queued job (`warnings`, e.g. the data checks', follow its first event);
        with an idempotency key, a retry returns the first job.

        The key and the record are written in one script, so two concurrent retries can never
        both create a job."""
        idem = (
            self._idempotency(record.tenant, idempotency_key, record.kind)
            if idempotency_key
            else ""
        )
        stored_id = self.r.eval(
            self._CREATE_JOB,
            6,
            idem,
            self._job(record.id),
            self._tenant_jobs(record.tenant, record.kind),
            self.ACTIVE,
            self._tenant_queued(record.tenant),
            self._tenant_status(record.tenant, JobStatus.queued.value, record.kind),
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
        for warning in warnings or []:
            self.add_event(record.id, "warning", warning)
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
        kind: JobKind = "fine_tune",
    ) -> tuple[list[JobRecord], bool]:
        """Newest first; `after` is the last id of the previous page. With `status`, from that
        status's own index: the work is proportional to the page, not to the tenant's jobs."""
        key = self._tenant_jobs(tenant, kind)
        max_score: str = "+inf"
        if after:
            score = self.r.zscore(key, after)
            if score is None:
                return [], False
            max_score = f"({score}"
        index = (
            key if status is None else self._tenant_status(tenant, JobStatus(status).value, kind)
        )
        ids = self.r.zrevrangebyscore(index, max_score, "-inf", start=0, num=limit + 1)
        records = [
            JobRecord.model_validate_json(raw)
            for raw in (self.r.mget([self._job(i) for i in ids]) if ids else [])
            if raw
        ]
        # A record read between a transition's index update and ours may disagree: skip it.
        found = [r for r in records if status is None or r.status == status]
        return found[:limit], len(ids) > limit

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

    def public_batch(self, record: JobRecord, urls: Callable[[str, str], str]) -> BatchPrediction:
        return public_batch(record, self.r.get(self._progress(record.id)), urls)


def public_job(
    record: JobRecord,
    progress_raw: str | None,
    history_raw: list[str],
    artifact_url: Callable[[str], str],
) -> Job:
    history = [Evaluation.model_validate_json(h) for h in history_raw]
    req = record.request
    assert req is not None, "a fine-tuning job's record"
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
        task=req.task,
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


def public_batch(
    record: JobRecord, progress_raw: str | None, urls: Callable[[str, str], str]
) -> BatchPrediction:
    """The public view of a batch prediction; `urls(id, what)` names its output and report."""
    req, spec = record.batch_request, record.batch
    assert req is not None and spec is not None, "a batch prediction's record"
    progress = Progress.model_validate_json(progress_raw) if progress_raw else Progress()
    done = record.status == JobStatus.succeeded and record.has_artifact
    return BatchPrediction(
        id=record.id,
        status=record.status,
        job_id=req.job_id,
        input_file=req.input_file,
        text_column=spec.text_column,
        text_pair_column=spec.text_pair_column,
        label_column=spec.label_column,
        checkpoint=req.checkpoint,
        metadata=req.metadata,
        created_at=record.created_at,
        started_at=record.started_at,
        finished_at=record.finished_at,
        attempt=record.attempt,
        progress=progress,
        rows=int(record.metrics.get("rows", progress.total_steps)),
        rows_failed=int(record.metrics.get("rows_failed", progress.failed or 0)),
        metrics={k: v for k, v in record.metrics.items() if k not in ("rows", "rows_failed")},
        error=record.error,
        output=urls(record.id, "output") if done else None,
        report=urls(record.id, "report") if done and (spec.label_column or spec.evaluate) else None,
    )
