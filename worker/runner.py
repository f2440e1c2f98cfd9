"""One delivery of a job, from claim to its single terminal transition.

Plain functions (no Celery here), so the whole life of an attempt can be read in one place:
claim the job (or drop a stale/duplicate delivery), keep the lease alive, run the pipeline with
a Redis-backed reporter, then finish, fail or hand the job back, each fenced by the lease.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from redis.exceptions import RedisError

from app.core.layout import attempt_output_dir, checkpoint_dir, fsync_dir, fsync_file, job_dir
from app.core.logs import current_job_id
from app.core.schemas import ErrorInfo, Evaluation, JobStatus, Progress, TrialRef
from app.core.settings import Settings
from app.core.store import Store, TenantAtLimit, TransitionRefused
from worker.errors import JobCancelled, JobError, JobInterrupted, StorageError
from worker.reporter import StopSignal

log = logging.getLogger("finetune.worker")
ARTIFACT_NAME = "model.tar.gz"

Dispatch = Callable[..., None]  # (job_id, attempt, countdown=None): app.core.lifecycle.ring
TENANT_LIMIT_RETRY_SECONDS = 5.0


class LeaseLost(Exception):
    """Another worker owns the job now: stop at once and write nothing more."""


class LeaseKeeper:
    """Renews the job's lease from a thread while the attempt runs."""

    def __init__(self, store: Store, job_id: str, token: str, seconds: float) -> None:
        self.store, self.job_id, self.token, self.seconds = store, job_id, token, seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="lease", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def verify(self) -> None:
        """Ask Redis now (not the last renewal) whether we still hold the lease; raise
        LeaseLost if not. Called before every write another owner could collide with."""
        try:
            held = not self.lost.is_set() and self.store.lease_held(self.job_id, self.token)
        except RedisError:
            held = True  # unknown: the writes are per-attempt or atomic, and the end is fenced
        if not held:
            self.lost.set()
            raise LeaseLost(self.job_id)

    def _run(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                if not self.store.renew_lease(self.job_id, self.token, self.seconds):
                    log.warning("lease lost", extra={"job_id": self.job_id})
                    self.lost.set()
                    return
            except RedisError:
                log.warning("could not renew the lease; retrying", extra={"job_id": self.job_id})


class RedisReporter:
    """Progress, evaluations and events into the job store; stop requests out of it.

    Progress writes are best effort (a Redis blip must not fail hours of training); the stop
    check fails safe (no stop) for the same reason.
    """

    def __init__(
        self,
        store: Store,
        job_id: str,
        worker: str,
        lease: LeaseKeeper,
        settings: Settings,
        trial: TrialRef | None = None,
    ) -> None:
        self.store, self.job_id, self.worker, self.lease = store, job_id, worker, lease
        self.settings, self.trial = settings, trial

    def event(self, type: str, message: str, **data: Any) -> None:
        log.info(message, extra={"job_id": self.job_id, "event_type": type})
        self._best_effort(self.store.add_event, self.job_id, type, message, **data)

    def progress(self, progress: Progress) -> None:
        self._best_effort(self.store.set_progress, self.job_id, progress)
        self._best_effort(
            self.store.add_event,
            self.job_id,
            "progress",
            f"step {progress.step}/{progress.total_steps}",
            **progress.model_dump(),
        )

    def evaluation(self, record: Evaluation) -> None:
        self._best_effort(self.store.add_evaluation, self.job_id, record)
        self.event(
            "metric", f"validation at step {record.step}: {record.summary()}", **record.model_dump()
        )

    def assert_owner(self) -> None:
        self.lease.verify()

    def should_prune(self, record: Evaluation) -> bool:
        if self.trial is None or self.trial.metric not in record.metrics:
            return False
        from app.core.sweeps import should_prune

        return should_prune(
            self.settings, self.trial, record.epoch, record.metrics[self.trial.metric]
        )

    def stop_requested(self) -> StopSignal:
        if self.lease.lost.is_set():
            raise LeaseLost(self.job_id)
        try:
            if self.store.cancel_requested(self.job_id):
                return "cancel"
            if self.store.is_draining(self.worker):
                return "interrupt"
        except RedisError:
            return None
        return None

    def _best_effort(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            write(*args, **kwargs)
        except RedisError:
            log.warning("could not record progress", extra={"job_id": self.job_id})


def pack_artifact(
    folder: Path, target: Path, attempt: int, guard: Callable[[], None] = lambda: None
) -> None:
    """The output folder as model.tar.gz: written under this attempt's own temporary name
    (never one a new owner of the job also writes), flushed to disk, and renamed into place
    only when complete and only while `guard` says this attempt still owns the job."""
    tmp = target.with_name(f".{target.name}.attempt-{attempt}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=3) as tar:
            for path in sorted(folder.iterdir()):
                tar.add(path, arcname=f"model/{path.name}")
        fsync_file(tmp)
        guard()
        tmp.replace(target)
        fsync_dir(target.parent)
    finally:
        tmp.unlink(missing_ok=True)


def remove_other_attempts(storage: Path, job_id: str, attempt: int) -> None:
    """Once this attempt's model is published, the output folders of attempts that were
    interrupted while saving are of no use (a model's worth of disk each)."""
    ours = attempt_output_dir(storage, job_id, attempt).parent
    for folder in ours.parent.iterdir():
        if folder != ours:
            shutil.rmtree(folder, ignore_errors=True)


def _until_written(action: Callable[[], Any], what: str, job_id: str) -> Any:
    """Terminal writes must land: retry through a Redis outage (bounded, about 10 minutes)."""
    for delay in [0.5] * 10 + [2.0] * 30 + [10.0] * 50:
        try:
            return action()
        except RedisError:
            log.warning("retrying %s", what, extra={"job_id": job_id})
            time.sleep(delay)
    return action()


def run_attempt(
    store: Store, settings: Settings, job_id: str, attempt: int, worker: str, dispatch: Dispatch
) -> str:
    """Returns what happened: skipped, succeeded, failed, cancelled, requeued or lease_lost."""
    token_var = current_job_id.set(job_id)
    try:
        try:
            token = store.claim(
                job_id,
                attempt,
                worker,
                settings.lease_seconds,
                running_limit=settings.max_running_jobs_per_tenant,
            )
        except TenantAtLimit:
            # Stays queued; offered again shortly, leaving this worker free for other tenants.
            # The receipt outlives the countdown, so the reaper does not ring meanwhile; if this
            # send fails, the receipt expires and the reaper re-sends the job.
            store.note_receipt(
                job_id, attempt, worker, TENANT_LIMIT_RETRY_SECONDS + 2 * settings.lease_seconds
            )
            dispatch(job_id, attempt, countdown=TENANT_LIMIT_RETRY_SECONDS)
            return "deferred"
        if token is None:
            log.info(
                "delivery skipped (stale, duplicate, cancelled or finished)",
                extra={"job_id": job_id},
            )
            return "skipped"
        with LeaseKeeper(store, job_id, token, settings.lease_seconds) as lease:
            return _run_claimed(store, settings, job_id, attempt, worker, token, lease, dispatch)
    finally:
        current_job_id.reset(token_var)


def _run_claimed(
    store: Store,
    settings: Settings,
    job_id: str,
    attempt: int,
    worker: str,
    token: str,
    lease: LeaseKeeper,
    dispatch: Dispatch,
) -> str:
    from worker.batch import run_batch_prediction
    from worker.pipeline.run import PipelineOptions, run_pipeline

    record = store.get_record(job_id)
    assert record is not None
    trial = record.spec.trial if record.spec is not None else None
    reporter = RedisReporter(store, job_id, worker, lease, settings, trial)
    reporter.event(
        "status",
        f"job running on {worker} (attempt {attempt})",
        status="running",
        attempt=attempt,
        worker=worker,
    )
    options = PipelineOptions.from_settings(settings)
    storage = settings.storage_dir
    try:
        if record.batch is not None:
            batch = run_batch_prediction(record.batch, job_dir(storage, job_id), reporter)
            metrics: dict[str, Any] = {"final": batch, "warnings": []}
        else:
            assert record.spec is not None
            metrics = run_pipeline(
                record.spec,
                attempt_output_dir(storage, job_id, attempt),
                checkpoint_dir(storage, job_id),
                reporter,
                options,
            )
            try:
                pack_artifact(
                    attempt_output_dir(storage, job_id, attempt),
                    job_dir(storage, job_id) / ARTIFACT_NAME,
                    attempt,
                    guard=lease.verify,
                )
            except OSError as exc:
                raise StorageError(f"could not pack the trained model: {exc}") from exc
            remove_other_attempts(storage, job_id, attempt)
    except LeaseLost:
        return "lease_lost"
    except JobCancelled:
        return _finish(store, job_id, token, JobStatus.cancelled)
    except JobInterrupted:
        return _hand_back(
            store, settings, job_id, token, "the worker shut down", dispatch, graceful=True
        )
    except JobError as exc:
        if exc.retryable and attempt < settings.max_attempts:
            return _hand_back(store, settings, job_id, token, exc.message, dispatch)
        return _finish(
            store, job_id, token, JobStatus.failed, ErrorInfo(code=exc.code, message=exc.message)
        )
    except Exception as exc:
        log.exception("job failed unexpectedly", extra={"job_id": job_id})
        message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        return _finish(
            store,
            job_id,
            token,
            JobStatus.failed,
            ErrorInfo(code="internal_error", message=message[:1000]),
        )
    return _finish(
        store,
        job_id,
        token,
        JobStatus.succeeded,
        metrics=metrics["final"],
        warnings=metrics.get("warnings", []),
        has_artifact=True,
    )


def _finish(
    store: Store,
    job_id: str,
    token: str,
    status: JobStatus,
    error: ErrorInfo | None = None,
    *,
    metrics: dict[str, float] | None = None,
    warnings: list[str] | None = None,
    has_artifact: bool = False,
) -> str:
    try:
        record = _until_written(
            lambda: store.finish(
                job_id,
                token,
                status,
                error=error,
                metrics=metrics,
                warnings=warnings,
                has_artifact=has_artifact,
            ),
            "the job's final status",
            job_id,
        )
    except TransitionRefused as exc:
        log.warning("final status not written: %s", exc, extra={"job_id": job_id})
        return "lease_lost"
    return record.status.value


def _hand_back(
    store: Store,
    settings: Settings,
    job_id: str,
    token: str,
    reason: str,
    dispatch: Dispatch,
    *,
    graceful: bool = False,
) -> str:
    requeued = _until_written(
        lambda: store.requeue(
            job_id,
            token=token,
            reason=reason,
            max_attempts=settings.max_attempts,
            graceful=graceful,
        ),
        "the hand-back",
        job_id,
    )
    if requeued is None:
        return "not_requeued"
    dispatch(job_id, requeued.attempt)  # rings and records it (app.core.lifecycle.ring)
    return "requeued"
