"""Sweeps: one request that runs several trials of a job over a hyperparameter search, each an
ordinary job on the queue (`app/core/sweeps.py` moves them on)."""

from __future__ import annotations

import logging
from typing import Annotated, Any

from fastapi import APIRouter, BackgroundTasks, Query
from pydantic import ValidationError

from app.api.deps import SettingsDep, StoreDep, TenantDep
from app.api.errors import ApiError, error_responses, invalid, not_found
from app.api.routes.jobs import build_spec, validate_request
from app.core.layout import is_valid_id, sweep_dir
from app.core.queue import get_celery
from app.core.schemas import (
    CLASSIFICATION_METRICS,
    METRICS_BY_TASK,
    REGRESSION_METRICS,
    JobCreate,
    Sweep,
    SweepCreate,
    SweepList,
    SweepStatus,
)
from app.core.settings import Settings
from app.core.store import Store, SweepRecord, new_id, now
from app.core.sweeps import (
    NONE,
    advance,
    create_study,
    direction_of,
    grid_size,
    public_sweep,
    request_cancel,
)

log = logging.getLogger("finetune.api")
router = APIRouter(
    prefix="/v1/sweeps", tags=["sweeps"], responses=error_responses(400, 401, 404, 409, 422)
)
DEFAULT_METRICS = {
    "classification": "matthews_correlation",
    "regression": "pearson",
    "multi_label_classification": "f1_macro",
    "token_classification": "f1",
    "masked_lm": "perplexity",
}


def _check_search(body: SweepCreate) -> None:
    """Every candidate value makes a valid job (422 naming `search.NAME`)."""
    base = body.job.model_dump()
    for name, dim in body.search.items():
        param = f"search.{name}"
        if body.method == "grid" and dim.values is None:
            raise invalid("grid search takes a list of `values` for each hyperparameter", param)
        candidates = dim.values if dim.values is not None else [dim.low, dim.high]
        for value in candidates:
            given: Any = None if name == "class_weight" and value == NONE else value
            try:
                JobCreate.model_validate(
                    {**base, "hyperparameters": {**base["hyperparameters"], name: given}}
                )
            except ValidationError as exc:
                reason = exc.errors()[0]["msg"]
                raise invalid(
                    f"{name} {value!r} would not make a valid job: {reason}", param
                ) from exc


def _metric(body: SweepCreate, regression: bool | None) -> str:
    task = body.job.task
    allowed: tuple[str, ...]
    if task == "sequence_classification":
        kind = "regression" if regression else "classification"
        allowed = REGRESSION_METRICS if regression else CLASSIFICATION_METRICS
        if regression is None:  # hub data: not read at submit
            kind, allowed = "classification", ("loss",)
    else:
        kind, allowed = task, METRICS_BY_TASK[task]
    metric = body.metric or (DEFAULT_METRICS[kind] if regression is not None else "loss")
    if metric not in allowed:
        raise invalid(
            f"metric '{metric}' does not apply to {kind}; use one of {', '.join(allowed)}",
            "metric",
        )
    return metric


@router.post("", status_code=201, response_model=Sweep)
def create_sweep(
    body: SweepCreate,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> Sweep:
    """Check the job and every value of the search as a job would be checked; the first
    trials start at once (at most `max_concurrent` unfinished at any time)."""
    try:
        checked = validate_request(body.job, tenant, store, settings)
    except ApiError as exc:
        exc.param = f"job.{exc.param}" if exc.param else "job"
        raise
    _check_search(body)
    metric = _metric(body, checked.regression)
    max_trials = body.max_trials
    if body.method == "grid":
        max_trials = min(max_trials, grid_size(body.search))
    sweep_id = new_id("sweep")
    record = SweepRecord(
        id=sweep_id,
        tenant=tenant,
        status=SweepStatus.running,
        request=body,
        job_request=body.job,
        base=build_spec(body.job, checked, sweep_dir(settings.storage_dir, sweep_id)),
        metric=metric,
        direction=direction_of(metric),
        max_trials=max_trials,
        created_at=now(),
    )
    create_study(record, settings)
    store.put_sweep(record)
    background.add_task(_advance, store, settings, sweep_id)
    return public_sweep(store, record)


def _advance(store: Store, settings: Settings, sweep_id: str) -> None:
    try:
        advance(store, get_celery(), settings, sweep_id)
    except Exception:
        log.warning(
            "could not start the sweep's trials; the reaper will", extra={"job_id": sweep_id}
        )


def _load(store: Store, tenant: str, sweep_id: str) -> SweepRecord:
    record = store.get_sweep(tenant, sweep_id) if is_valid_id(sweep_id, "sweep") else None
    if record is None:
        raise not_found("sweep", sweep_id)
    return record


@router.get("", response_model=SweepList)
def list_sweeps(
    tenant: TenantDep,
    store: StoreDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> SweepList:
    records, has_more = store.list_sweeps(tenant, limit=limit, after=after)
    return SweepList(data=[public_sweep(store, r) for r in records], has_more=has_more)


@router.get("/{sweep_id}", response_model=Sweep)
def get_sweep(sweep_id: str, tenant: TenantDep, store: StoreDep) -> Sweep:
    return public_sweep(store, _load(store, tenant, sweep_id))


@router.post("/{sweep_id}/cancel", response_model=Sweep)
def cancel_sweep(
    sweep_id: str,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> Sweep:
    """No new trials; unfinished ones are cancelled (their checkpoints kept, as any job's)."""
    record = _load(store, tenant, sweep_id)
    if record.status not in (SweepStatus.running, SweepStatus.cancelling):
        raise ApiError(409, "sweep_finished", f"cannot cancel: the sweep is {record.status}")
    record = request_cancel(store, record)
    background.add_task(_advance, store, settings, sweep_id)
    return public_sweep(store, record)
