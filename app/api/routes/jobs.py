"""Jobs: submit (everything checkable is checked before queueing), poll, cancel, download."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query
from fastapi.responses import FileResponse

from app.api.datacheck import ReportRequest, check_submission
from app.api.datafiles import DataFileProblem, scan_columns
from app.api.deps import ReaderDep, SettingsDep, StoreDep, TenantDep
from app.api.errors import ApiError, error_responses, invalid, not_found
from app.api.taskcheck import check_task_file
from app.core.catalog import ModelRef, UnknownModel, resolve_model
from app.core.layout import (
    REPORT_FILE,
    attempt_output_dir,
    checkpoint_dir,
    is_valid_id,
    job_dir,
    link_files,
    list_checkpoints,
)
from app.core.lifecycle import ring
from app.core.netguard import UnsafeTarget, check_url, parse_allowed
from app.core.queue import get_celery
from app.core.schemas import (
    CLASSIFICATION_METRICS,
    REGRESSION_METRICS,
    Checkpoint,
    EvaluationReport,
    EventList,
    HubDataset,
    Job,
    JobCreate,
    JobList,
    JobSpec,
    JobStatus,
)
from app.core.settings import Settings
from app.core.store import FileRecord, JobRecord, Store, TransitionRefused, new_id, now

log = logging.getLogger("finetune.api")
router = APIRouter(
    prefix="/v1/jobs", tags=["jobs"], responses=error_responses(400, 401, 404, 409, 422, 429)
)
ARTIFACT_NAME = "model.tar.gz"
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def artifact_url(job_id: str) -> str:
    return f"/v1/jobs/{job_id}/artifacts/{ARTIFACT_NAME}"


def _load(store: Store, tenant: str, job_id: str) -> JobRecord:
    record = store.get_job(tenant, job_id) if is_valid_id(job_id, "job") else None
    if record is None:
        raise not_found("job", job_id)
    return record


def _data_file(
    store: Store, settings: Settings, tenant: str, source: str | HubDataset, param: str
) -> FileRecord | None:
    if isinstance(source, HubDataset):
        if not settings.allow_hub:
            raise invalid("hub datasets need hub access (FINETUNE_ALLOW_HUB=true)", param)
        return None
    record = store.get_file(tenant, source) if is_valid_id(source, "file") else None
    if record is None or not Path(record.path).exists():
        raise invalid(f"no file with id '{source}'; upload it with POST /v1/files", param)
    return record


@dataclass
class Checked:
    """A submission that passed: its data files, and the data checks' warnings for its events."""

    train: FileRecord | None
    validation: FileRecord | None
    warnings: list[str]
    base: tuple[JobRecord, Path] | None  # the job whose model this one continues training
    regression: bool | None = None  # sequence tasks: whether the labels are numbers


def _base_job(
    model: str, tenant: str, store: Store, settings: Settings
) -> tuple[JobRecord, Path] | None:
    """A finished job of the caller's named as `model`, with its model folder; None when
    `model` is not a job id. Another tenant's job does not exist (404)."""
    if not is_valid_id(model, "job"):
        return None
    record = store.get_job(tenant, model)
    if record is None:
        raise not_found("job", model)
    folder = attempt_output_dir(settings.storage_dir, model, record.attempt)
    if record.status != JobStatus.succeeded or not (folder / "config.json").is_file():
        raise invalid(
            f"job '{model}' is {record.status}: a job's model can be trained further once the "
            "job succeeded",
            "model",
        )
    return record, folder


def validate_request(body: JobCreate, tenant: str, store: Store, settings: Settings) -> Checked:
    """Everything that can be known before a worker sees the job; 422 naming the field."""
    base = _base_job(body.model, tenant, store, settings)
    if base is not None:
        ref = ModelRef(body.model, "local", str(base[1]))
    else:
        try:
            ref = resolve_model(body.model, settings.models_dir, settings.allow_hub)
        except UnknownModel as exc:
            raise invalid(str(exc), "model") from exc
    if body.webhook_url is not None:
        try:
            check_url(body.webhook_url, parse_allowed(settings.webhook_allowed_hosts))
        except UnsafeTarget as exc:
            raise invalid(f"webhook_url: {exc}", "webhook_url") from exc
    train = _data_file(store, settings, tenant, body.training_file, "training_file")
    validation = (
        _data_file(store, settings, tenant, body.validation_file, "validation_file")
        if body.validation_file is not None
        else None
    )
    columns = {"text_column": body.text_column}
    if body.task != "masked_lm":
        columns["label_column"] = body.label_column
    if body.text_pair_column:
        columns["text_pair_column"] = body.text_pair_column
    for record, which in ((train, "training_file"), (validation, "validation_file")):
        if record is None:
            continue
        for param, column in columns.items():
            if column not in record.public.columns:
                raise invalid(
                    f"{which} '{record.public.filename}' has no column '{column}'; its columns "
                    f"are {', '.join(record.public.columns)}",
                    param,
                )
    if body.task != "sequence_classification":
        return Checked(train, validation, _check_task(body, train, validation, settings), base)
    text_columns = {k: v for k, v in columns.items() if k != "label_column"}
    classes: list[str] | None = None
    if train is not None:
        classes, _ = _scan(train, text_columns, body.label_column, settings, None)
        weights = body.hyperparameters.class_weight
        if weights not in (None, "auto") and classes is None:
            raise invalid(
                "class_weight applies to classification; this label column holds numbers "
                "(regression)",
                "hyperparameters.class_weight",
            )
        if isinstance(weights, dict) and classes is not None:
            unknown = sorted(set(weights) - set(classes))
            if unknown:
                raise invalid(
                    f"class_weight names labels {', '.join(unknown[:10])} that are not in the "
                    f"training file; its labels are {', '.join(classes[:20])}",
                    "hyperparameters.class_weight",
                )
        metric = body.hyperparameters.early_stopping_metric
        allowed = REGRESSION_METRICS if classes is None else CLASSIFICATION_METRICS
        if metric not in allowed:
            task = "regression" if classes is None else "classification"
            raise invalid(
                f"early_stopping_metric '{metric}' does not apply to {task}; use one of "
                f"{', '.join(allowed)}",
                "hyperparameters.early_stopping_metric",
            )
    if validation is not None and classes is not None:
        _, seen = _scan(validation, text_columns, body.label_column, settings, "validation_file")
        unknown = sorted(seen - set(classes))
        if unknown:
            raise invalid(
                f"validation labels {', '.join(unknown[:10])} do not occur in the training file",
                "validation_file",
            )
    folder = Path(ref.location) if ref.source == "local" else None
    warnings = check_data(body, train, validation, folder, settings)
    regression = None if train is None else classes is None
    return Checked(train, validation, warnings, base, regression)


def _check_task(
    body: JobCreate,
    train: FileRecord | None,
    validation: FileRecord | None,
    settings: Settings,
) -> list[str]:
    """The checks of the other tasks (`app/api/taskcheck.py`); their warnings."""
    warnings: list[str] = []
    known: list[str] | None = None
    for record, which in ((train, "training_file"), (validation, "validation_file")):
        if record is None:
            continue
        try:
            labels, found = check_task_file(
                body,
                Path(record.path),
                record.public.format,
                settings.max_labels,
                known if which == "validation_file" else None,
            )
        except DataFileProblem as exc:
            raise invalid(f"{which} '{record.public.filename}': {exc}", exc.param or which) from exc
        known = labels if which == "training_file" else known
        warnings += [f"{which} '{record.public.filename}': {w}" for w in found]
    return warnings


def check_data(
    body: JobCreate,
    train: FileRecord | None,
    validation: FileRecord | None,
    model_folder: Path | None,
    settings: Settings,
) -> list[str]:
    """The data checks with the job's model and max_length: problems answer 422 naming the
    rows; warnings are returned for the job's events."""
    request = ReportRequest(
        text_column=body.text_column,
        pair_column=body.text_pair_column,
        label_column=body.label_column,
        model_name=body.model,
        model_folder=model_folder,
        max_length=body.hyperparameters.max_length,
    )
    try:
        return check_submission(train, validation, request, settings.data_report_max_rows)
    except DataFileProblem as exc:
        raise invalid(str(exc), exc.param) from exc


def _scan(
    record: FileRecord,
    text_columns: dict[str, str],
    label_column: str,
    settings: Settings,
    param: str | None,
) -> tuple[list[str] | None, set[str]]:
    """A data file's shape and labels, in one read; its problems answer 422 naming `param` (or
    the column's own field)."""
    try:
        return scan_columns(
            Path(record.path),
            record.public.format,
            text_columns,
            label_column,
            settings.max_labels,
            training=param is None,
        )
    except DataFileProblem as exc:
        raise invalid(str(exc), param or exc.param) from exc


def _snapshot(
    record: FileRecord | None, source: str | HubDataset, target: Path
) -> str | HubDataset:
    """The job keeps its own link to the data, so deleting the upload cannot break it."""
    if record is None:
        return source
    link_files([Path(record.path)], target)
    return str(target / Path(record.path).name)


def _snapshot_folder(folder: Path, target: Path) -> Path:
    """The job's own links to a previous job's model files (see `link_files`)."""
    link_files(sorted(folder.iterdir()), target / "base_model")
    return target / "base_model"


@router.post("", status_code=201, response_model=Job)
def create_job(
    body: JobCreate,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
) -> Job:
    """A plain `def`: FastAPI runs it in its thread pool, so the blocking store and the data
    checks never hold up the event loop (and a Redis outage answers 503 within a second)."""
    if idempotency_key:
        existing = store.find_idempotent(tenant, idempotency_key)
        if existing is not None:
            return store.public_job(existing, artifact_url)
    checked = validate_request(body, tenant, store, settings)
    counts = store.count_active(tenant)
    if counts[JobStatus.queued] >= settings.max_queued_jobs_per_tenant:
        raise ApiError(
            429,
            "too_many_jobs",
            f"{counts[JobStatus.queued]} jobs are already queued (limit "
            f"{settings.max_queued_jobs_per_tenant}); retry when some have started",
            None,
            headers={"Retry-After": "30"},
        )
    job_id = new_id("job")
    spec = build_spec(body, checked, job_dir(settings.storage_dir, job_id))
    record = JobRecord(
        id=job_id,
        tenant=tenant,
        status=JobStatus.queued,
        request=body,
        spec=spec,
        created_at=now(),
    )
    stored = store.create_job(record, idempotency_key, checked.warnings)
    if stored.id == job_id:
        # The stored record is the acknowledgement; the message only rings the bell, after the
        # answer. Should it fail, the reaper sends it (a job stored but never dispatched).
        background.add_task(ring_doorbell, store, settings.queue_name, job_id, stored.attempt)
    return store.public_job(stored, artifact_url)


def build_spec(body: JobCreate, checked: Checked, folder: Path) -> JobSpec:
    """The spec a worker runs: the request with its own links (in `folder`) to its data and
    to the model of the job it continues, so deleting an upload cannot break it."""
    return JobSpec.model_validate(
        {
            **body.model_dump(),
            "training_file": _snapshot(checked.train, body.training_file, folder / "data"),
            "validation_file": _snapshot(checked.validation, body.validation_file, folder / "data")
            if body.validation_file is not None
            else None,
            **(
                {
                    "base_model_path": str(_snapshot_folder(checked.base[1], folder)),
                    "base_job_id": checked.base[0].id,
                }
                if checked.base is not None
                else {}
            ),
        },
        strict=False,
    )


def ring_doorbell(store: Store, queue: str, job_id: str, attempt: int) -> None:
    try:
        ring(store, get_celery(), queue, job_id, attempt, patient=False)
    except Exception:
        log.warning("could not send the job's message; the reaper will", extra={"job_id": job_id})


@router.get("", response_model=JobList)
def list_jobs(
    tenant: TenantDep,
    store: StoreDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> JobList:
    records, has_more = store.list_jobs(tenant, limit=limit, after=after, status=status)
    return JobList(data=[store.public_job(r, artifact_url) for r in records], has_more=has_more)


@router.get("/{job_id}", response_model=Job)
async def get_job(job_id: str, tenant: TenantDep, reader: ReaderDep) -> Job:
    valid = is_valid_id(job_id, "job")
    job = await reader.job_view(tenant, job_id, artifact_url) if valid else None
    if job is None:
        raise not_found("job", job_id)
    return job


@router.post("/{job_id}/cancel", response_model=Job)
def cancel_job(job_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep) -> Job:
    record = _load(store, tenant, job_id)
    try:
        record = store.request_cancel(tenant, job_id)
    except TransitionRefused as exc:
        raise ApiError(409, "job_finished", f"cannot cancel: {exc}", None) from exc
    return store.public_job(record, artifact_url)


@router.get("/{job_id}/events", response_model=EventList)
def job_events(
    job_id: str,
    tenant: TenantDep,
    store: StoreDep,
    after: Annotated[str | None, Query(pattern=r"^\d{1,19}-\d{1,19}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    _load(store, tenant, job_id)
    events, has_more = store.events(job_id, after, limit)
    return EventList(data=events, has_more=has_more)


@router.get("/{job_id}/checkpoints", response_model=list[Checkpoint])
def job_checkpoints(
    job_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> list[Checkpoint]:
    _load(store, tenant, job_id)
    return [
        Checkpoint(
            name=c["name"],
            epoch=c.get("epoch", 0),
            step=c.get("step_in_epoch", 0),
            global_step=c.get("global_step", 0),
            created_at=datetime.fromtimestamp(c.get("saved_at", 0), UTC),
        )
        for c in list_checkpoints(checkpoint_dir(settings.storage_dir, job_id))
    ]


@router.get("/{job_id}/report", response_model=EvaluationReport)
def job_report(
    job_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> EvaluationReport:
    """The evaluation report on the job's validation data, written when it succeeds."""
    record = _load(store, tenant, job_id)
    path = attempt_output_dir(settings.storage_dir, job_id, record.attempt) / REPORT_FILE
    if record.status != JobStatus.succeeded or not path.is_file():
        raise ApiError(
            404,
            "report_not_ready",
            f"job '{job_id}' is {record.status}: its report is written when it succeeds",
            None,
        )
    return EvaluationReport.model_validate_json(path.read_bytes())


@router.get(
    "/{job_id}/artifacts/{name}",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the trained model folder as a gzipped tar archive",
            # Served as application/gzip; generated clients know octet-stream as "bytes".
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("application/gzip", "application/octet-stream")
            },
        }
    },
)
def download_artifact(
    job_id: str, name: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> FileResponse:
    record = _load(store, tenant, job_id)
    path = job_dir(settings.storage_dir, job_id) / ARTIFACT_NAME
    if name != ARTIFACT_NAME or not record.has_artifact or not path.is_file():
        raise not_found("artifact", name)
    return FileResponse(path, media_type="application/gzip", filename=f"{job_id}.tar.gz")
