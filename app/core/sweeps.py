"""A sweep's life: trials asked of an Optuna study, each run as an ordinary job on the queue.

The study lives in Redis (Optuna's journal storage), so whichever process moves the sweep on
(the API when it is created, a worker when one of its trials ends, any worker's reaper every
few seconds) sees the same history. `advance` is that one step, under a per-sweep Redis lock:
tell the study how the trials that ended did, start new trials while fewer than
`max_concurrent` are unfinished and the budget allows, and end the sweep when every trial has
ended. Nothing is lost if a process dies half way: a trial is recorded in the sweep before its
job is stored (the next pass stores a job that is missing), and a job that ended is told to the
study until the sweep records that it was.

A trial is a job like any other (status, events, checkpoints, resume after a lost worker,
cancel); a worker's trial reports each evaluation to the study and stops early when Optuna's
median pruner says the trial cannot catch up.
"""

from __future__ import annotations

import contextlib
import logging
import math
import shutil
import warnings
from collections.abc import Mapping
from functools import lru_cache
from typing import Any, Literal

import optuna
from celery import Celery
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalRedisBackend
from optuna.trial import TrialState
from redis.exceptions import LockError

from app.core.layout import sweep_dir
from app.core.lifecycle import ring
from app.core.schemas import (
    INTEGER_HYPERPARAMETERS,
    MINIMISED_METRICS,
    ErrorInfo,
    Hyperparameters,
    JobStatus,
    SearchDimension,
    Sweep,
    SweepCreate,
    SweepStatus,
    Trial,
    TrialRef,
)
from app.core.settings import Settings
from app.core.store import JobRecord, Store, SweepRecord, TrialRecord, new_id, now

log = logging.getLogger("finetune.sweeps")
optuna.logging.set_verbosity(optuna.logging.WARNING)

STUDY_PREFIX = "ft:optuna:"
LOCK_SECONDS = 120.0
PRUNE_WARMUP_TRIALS = 2  # finished trials before the pruner compares anything
STEP_SCALE = 100  # an evaluation's study step: its epoch x 100 (equal across batch sizes)
NONE = "none"  # class_weight's "no weights" among a search's values


@lru_cache(maxsize=4)
def study_storage(redis_url: str) -> JournalStorage:
    """Optuna's journal of every study, in the service's Redis (marked experimental by Optuna
    since 3.1; its log format is what Optuna's file journal uses)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return JournalStorage(JournalRedisBackend(redis_url, prefix=STUDY_PREFIX))


def distributions(search: Mapping[Any, SearchDimension]) -> dict[str, BaseDistribution]:
    """Optuna's distribution for each searched hyperparameter."""
    found: dict[str, BaseDistribution] = {}
    for name, dim in search.items():
        if dim.values is not None:
            found[name] = CategoricalDistribution(dim.values)
        elif name in INTEGER_HYPERPARAMETERS:
            assert dim.low is not None and dim.high is not None
            found[name] = IntDistribution(int(dim.low), int(dim.high), log=dim.log)
        else:
            assert dim.low is not None and dim.high is not None
            found[name] = FloatDistribution(dim.low, dim.high, log=dim.log)
    return found


def grid_size(search: Mapping[Any, SearchDimension]) -> int:
    return math.prod(len(dim.values or ()) for dim in search.values())


def sampler(request: SweepCreate, asked: int) -> optuna.samplers.BaseSampler:
    """A fresh sampler per pass, seeded by the sweep's seed and how many trials were asked
    before: the same sweep asks for the same trials whichever process moves it on."""
    seed = request.seed + asked
    if request.method == "grid":
        space: dict[str, list[Any]] = {
            name: list(dim.values or ()) for name, dim in request.search.items()
        }
        return optuna.samplers.GridSampler(space, seed=request.seed)
    if request.method == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = max(2, request.max_trials // 3)  # random draws before the model of the space
    return optuna.samplers.TPESampler(seed=seed, n_startup_trials=startup)


def pruner() -> optuna.pruners.BasePruner:
    return optuna.pruners.MedianPruner(n_startup_trials=PRUNE_WARMUP_TRIALS, n_warmup_steps=0)


def direction_of(metric: str) -> Literal["maximize", "minimize"]:
    return "minimize" if metric in MINIMISED_METRICS else "maximize"


def create_study(record: SweepRecord, settings: Settings) -> None:
    optuna.create_study(
        study_name=record.id,
        storage=study_storage(settings.redis_url),
        direction=record.direction,
        load_if_exists=True,
    )


def _study(record: SweepRecord, settings: Settings) -> optuna.Study:
    return optuna.load_study(
        study_name=record.id,
        storage=study_storage(settings.redis_url),
        sampler=sampler(record.request, len(record.trials)),
        pruner=pruner(),
    )


def trial_hyperparameters(record: SweepRecord, params: dict[str, Any]) -> Hyperparameters:
    values = record.base.hyperparameters.model_dump()
    for name, value in params.items():
        values[name] = None if name == "class_weight" and value == NONE else value
    return Hyperparameters.model_validate(values)


# -- moving a sweep on ------------------------------------------------------------------------


def advance(store: Store, celery: Celery, settings: Settings, sweep_id: str) -> None:
    """One step of the sweep's life (see the module's docstring); safe to call any time, from
    any process, as often as wanted."""
    lock = store.r.lock(store.sweep_lock_key(sweep_id), timeout=LOCK_SECONDS, blocking_timeout=5)
    if not lock.acquire():
        return  # another process is moving it on; the reapers come back
    try:
        _advance(store, celery, settings, sweep_id)
    finally:
        try:
            lock.release()
        except LockError:
            log.warning("a sweep step outlived its lock", extra={"job_id": sweep_id})


def _advance(store: Store, celery: Celery, settings: Settings, sweep_id: str) -> None:
    record = store.get_sweep_record(sweep_id)
    if record is None or record.status not in (SweepStatus.running, SweepStatus.cancelling):
        return
    study: optuna.Study | None = None
    unfinished: list[TrialRecord] = []
    for trial in record.trials:
        if trial.told:
            continue
        job = store.get_record(trial.job_id)
        if job is None:  # recorded, then the process died before storing the job
            _store_trial_job(store, celery, settings, record, trial)
            unfinished.append(trial)
            continue
        if not job.status.terminal:
            unfinished.append(trial)
            continue
        study = study or _study(record, settings)
        _tell(study, record, trial, job)
        store.put_sweep(record)
    if record.cancel_requested:
        for trial in unfinished:
            # Finished meanwhile, or gone: the next pass tells it.
            with contextlib.suppress(Exception):
                store.request_cancel(record.tenant, trial.job_id)
        if not unfinished:
            _end(store, record, SweepStatus.cancelled)
        return
    while (
        len(unfinished) < record.request.max_concurrent and len(record.trials) < record.max_trials
    ):
        study = study or _study(record, settings)
        asked = study.ask(distributions(record.request.search))
        trial = TrialRecord(
            number=asked.number,
            optuna_trial_id=asked._trial_id,
            job_id=new_id("job"),
            params=dict(asked.params),
            created_at=now(),
        )
        record.trials.append(trial)
        unfinished.append(trial)
        store.put_sweep(record)  # first: a crash now leaves a trial the next pass stores
        _store_trial_job(store, celery, settings, record, trial)
    if not unfinished:
        _end(store, record, SweepStatus.succeeded)


def _store_trial_job(
    store: Store, celery: Celery, settings: Settings, record: SweepRecord, trial: TrialRecord
) -> None:
    hp = trial_hyperparameters(record, trial.params)
    metadata = {**record.job_request.metadata, "sweep_id": record.id, "trial": str(trial.number)}
    spec = record.base.model_copy(
        update={
            "hyperparameters": hp,
            "metadata": metadata,
            "trial": TrialRef(
                sweep_id=record.id,
                number=trial.number,
                optuna_trial_id=trial.optuna_trial_id,
                metric=record.metric,
                prune=record.request.prune,
            ),
        }
    )
    request = record.job_request.model_copy(update={"hyperparameters": hp, "metadata": metadata})
    job = JobRecord(
        id=trial.job_id,
        tenant=record.tenant,
        status=JobStatus.queued,
        request=request,
        spec=spec,
        created_at=trial.created_at,
    )
    params = ", ".join(f"{k} {v}" for k, v in trial.params.items())
    stored = store.create_job(job, None, [])
    store.add_event(trial.job_id, "stage", f"trial {trial.number} of sweep {record.id}: {params}")
    try:
        ring(store, celery, settings.queue_name, stored.id, stored.attempt, patient=False)
    except Exception:
        log.warning("could not send a trial's message; the reaper will", extra={"job_id": job.id})


def _tell(study: optuna.Study, record: SweepRecord, trial: TrialRecord, job: JobRecord) -> None:
    """The study learns how an ended trial did; the sweep records that it did."""
    value = job.metrics.get(record.metric)
    pruned = bool(job.metrics.get("pruned"))
    usable = job.status == JobStatus.succeeded and value is not None and math.isfinite(value)
    try:
        if usable and not pruned:
            study.tell(trial.number, value)
        elif usable:
            study.tell(trial.number, state=TrialState.PRUNED)
        else:
            study.tell(trial.number, state=TrialState.FAIL)
    except (ValueError, RuntimeError) as exc:  # told before the sweep recorded it
        log.info("trial already told: %s", exc, extra={"job_id": record.id})
    trial.told = True
    trial.status = job.status
    trial.value = value if usable else None
    trial.pruned = pruned
    trial.finished_at = job.finished_at
    if job.status == JobStatus.succeeded and not usable:
        trial.error = ErrorInfo(
            code="no_metric",
            message=f"the trial's job reported no {record.metric}",
        )
    else:
        trial.error = job.error


def _end(store: Store, record: SweepRecord, status: SweepStatus) -> None:
    best = best_trial(record)
    record.best_number = best.number if best else None
    if status == SweepStatus.succeeded and best is None:
        status = SweepStatus.failed
        errors = [t.error.message for t in record.trials if t.error]
        record.error = ErrorInfo(
            code="no_trial_finished",
            message=f"none of the {len(record.trials)} trials finished with a "
            f"{record.metric}" + (f"; the first error: {errors[0]}" if errors else ""),
        )
    record.status = status
    record.finished_at = now()
    store.put_sweep(record)


def best_trial(record: SweepRecord) -> TrialRecord | None:
    """The best finished, unpruned trial; the earlier one among equals."""
    done = [t for t in record.trials if t.value is not None and not t.pruned]
    if not done:
        return None
    sign = -1.0 if record.direction == "maximize" else 1.0
    return min(done, key=lambda t: (sign * (t.value or 0.0), t.number))


def request_cancel(store: Store, record: SweepRecord) -> SweepRecord:
    if record.status == SweepStatus.running:
        record.cancel_requested = True
        record.status = SweepStatus.cancelling
        store.put_sweep(record)
    return record


# -- the worker's side: pruning ---------------------------------------------------------------


def should_prune(settings: Settings, ref: TrialRef, epoch: float, value: float) -> bool:
    """Report one evaluation of a trial to its study; whether the trial should stop (always
    False when the sweep does not prune, or the value is not a number)."""
    if not math.isfinite(value):
        return False
    try:
        study = optuna.load_study(
            study_name=ref.sweep_id, storage=study_storage(settings.redis_url), pruner=pruner()
        )
        trial = optuna.trial.Trial(study, ref.optuna_trial_id)
        trial.report(value, round(epoch * STEP_SCALE))
        return ref.prune and bool(trial.should_prune())
    except (KeyError, ValueError, RuntimeError) as exc:  # the study or trial is gone or ended
        log.info("could not report to the sweep: %s", exc)
        return False


# -- the public view --------------------------------------------------------------------------


def public_sweep(store: Store, record: SweepRecord) -> Sweep:
    trials = []
    for t in record.trials:
        status, finished, error = t.status, t.finished_at, t.error
        if not t.told:
            job = store.get_record(t.job_id)
            if job is not None:
                status, finished, error = job.status, job.finished_at, job.error
        trials.append(
            Trial(
                number=t.number,
                job_id=t.job_id,
                status=status,
                params=t.params,
                value=t.value,
                pruned=t.pruned,
                error=error,
                created_at=t.created_at,
                finished_at=finished,
            )
        )
    best = next((t for t in trials if t.number == record.best_number), None)
    if best is None and record.status in (SweepStatus.running, SweepStatus.cancelling):
        leader = best_trial(record)  # the best so far
        best = next((t for t in trials if leader and t.number == leader.number), None)
    return Sweep(
        id=record.id,
        status=record.status,
        method=record.request.method,
        metric=record.metric,
        direction=record.direction,
        max_trials=record.max_trials,
        max_concurrent=record.request.max_concurrent,
        search=dict(record.request.search),
        model=record.job_request.model,
        task=record.job_request.task,
        trials=trials,
        best_trial=best,
        metadata=record.request.metadata,
        error=record.error,
        created_at=record.created_at,
        finished_at=record.finished_at,
    )


def forget(store: Store, settings: Settings, sweep_id: str) -> None:
    """A finished sweep's record, study and folder (retention)."""
    record = store.get_sweep_record(sweep_id)
    with contextlib.suppress(KeyError):
        optuna.delete_study(study_name=sweep_id, storage=study_storage(settings.redis_url))
    shutil.rmtree(sweep_dir(settings.storage_dir, sweep_id), ignore_errors=True)
    store.forget_sweep(sweep_id, record.tenant if record else "")
