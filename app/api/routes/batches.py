"""Batch predictions and evaluations: a job's model over a whole uploaded file, run as a job of
its own on the training workers (status, progress, cancel, retries, resume after a crash).

`POST /v1/jobs/{id}/evaluations` is a batch prediction with a label column: the same output
file, plus the evaluation report the job wrote for its own validation data.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, BackgroundTasks, Header, Query
from fastapi.responses import FileResponse

from app.api.datafiles import DataFileProblem, scan_columns
from app.api.deps import SettingsDep, StoreDep, TenantDep
from app.api.errors import ApiError, error_responses, invalid, not_found
from app.api.taskcheck import check_label_sets
from app.core.layout import (
    BATCH_OUTPUT_NAMES,
    CHECKPOINT_MODEL_DIR,
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
    BatchPrediction,
    BatchPredictionCreate,
    BatchPredictionList,
    BatchSpec,
    EvaluationCreate,
    EvaluationReport,
    EventList,
    JobStatus,
)
from app.core.settings import Settings
from app.core.store import JobRecord, Store, TransitionRefused, new_id, now

log = logging.getLogger("finetune.api")
router = APIRouter(
    tags=["batch predictions"], responses=error_responses(400, 401, 404, 409, 422, 429)
)
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=255)]


def _url(batch_id: str, what: str) -> str:
    return f"/v1/batch_predictions/{batch_id}/{what}"


def _view(store: Store, record: JobRecord) -> BatchPrediction:
    return store.public_batch(record, _url)


def _load(store: Store, tenant: str, batch_id: str) -> JobRecord:
    record = store.get_job(tenant, batch_id) if is_valid_id(batch_id, "batch") else None
    if record is None or record.kind != "batch_prediction":
        raise not_found("batch prediction", batch_id)
    return record


def create_batch(
    body: BatchPredictionCreate,
    tenant: str,
    store: Store,
    settings: Settings,
    evaluation: bool = False,
) -> JobRecord:
    """Checks everything knowable now (422/404 naming the field); links what the batch reads
    (model, checkpoint, data) into its own folder; returns the record to store. `evaluation`:
    judge the file even without a label column (masked-LM models: perplexity)."""
    source = store.get_job(tenant, body.job_id)
    if source is None or source.spec is None:
        raise not_found("job", body.job_id)
    task = source.spec.task
    if task == "masked_lm" and body.label_column is not None:
        raise invalid(
            f"job '{source.id}' is a masked_lm job: its model is judged by perplexity on the "
            "file's text and takes no label column (POST /v1/jobs/{id}/evaluations)",
            "label_column",
        )
    model_folder = attempt_output_dir(settings.storage_dir, source.id, source.attempt)
    if source.status != JobStatus.succeeded or not (model_folder / "config.json").is_file():
        # Not a finished model; a checkpoint of it can still be used (what makes a model of
        # one is written beside the checkpoints when training starts).
        model_folder = checkpoint_dir(settings.storage_dir, source.id) / CHECKPOINT_MODEL_DIR
        if body.checkpoint is None or not (model_folder / "config.json").is_file():
            raise invalid(
                f"job '{source.id}' is {source.status}: its model can be used once it "
                "succeeded, or one of its checkpoints (`checkpoint`) once it has some",
                "job_id" if body.checkpoint is None else "checkpoint",
            )
    if body.webhook_url is not None:
        try:
            check_url(body.webhook_url, parse_allowed(settings.webhook_allowed_hosts))
        except UnsafeTarget as exc:
            raise invalid(f"webhook_url: {exc}", "webhook_url") from exc
    file = store.get_file(tenant, body.input_file) if is_valid_id(body.input_file, "file") else None
    if file is None or not Path(file.path).exists():
        raise invalid(
            f"no file with id '{body.input_file}'; upload it with POST /v1/files", "input_file"
        )
    text = body.text_column or source.spec.text_column
    pair = body.text_pair_column or source.spec.text_pair_column
    columns = {"text_column": text, "text_pair_column": pair, "label_column": body.label_column}
    for param, column in columns.items():
        if column is not None and column not in file.public.columns:
            raise invalid(
                f"'{file.public.filename}' has no column '{column}'; its columns are "
                f"{', '.join(file.public.columns)}",
                param,
            )
    if task == "token_classification" and body.label_column is not None:
        if file.public.format == "csv":
            raise invalid(
                "evaluating a token_classification model needs a list of words and a list of "
                "tags per row: upload JSON Lines or Parquet (a CSV cell holds one text)",
                "input_file",
            )
    elif task == "multi_label_classification" and body.label_column is not None:
        _check_label_sets(
            file.path,
            file.public.format,
            text,
            body.label_column,
            source.spec.label_delimiter,
            model_folder,
            settings,
        )
    elif body.label_column is not None and task == "sequence_classification":
        _check_labels(
            file.path, file.public.format, text, body.label_column, model_folder, settings
        )
    batch_id = new_id("batch")
    folder = job_dir(settings.storage_dir, batch_id)
    checkpoint_path = None
    if body.checkpoint is not None:
        saved = checkpoint_dir(settings.storage_dir, source.id)
        names = [c["name"] for c in list_checkpoints(saved)]
        if body.checkpoint not in names:
            raise invalid(
                f"job '{source.id}' has no checkpoint '{body.checkpoint}'; it has "
                f"{', '.join(names) or 'none'} (GET /v1/jobs/{{id}}/checkpoints)",
                "checkpoint",
            )
        link_files(sorted(saved.glob(body.checkpoint + ".*")), folder / "checkpoint")
        checkpoint_path = str(folder / "checkpoint" / body.checkpoint)
    link_files(sorted(p for p in model_folder.iterdir() if p.is_file()), folder / "model")
    link_files([Path(file.path)], folder / "data")
    record = JobRecord(
        id=batch_id,
        tenant=tenant,
        status=JobStatus.queued,
        kind="batch_prediction",
        batch_request=body,
        batch=BatchSpec(
            job_id=source.id,
            model_path=str(folder / "model"),
            checkpoint_path=checkpoint_path,
            input_path=str(folder / "data" / Path(file.path).name),
            input_format=file.public.format,
            text_column=text,
            text_pair_column=pair,
            label_column=body.label_column,
            evaluate=evaluation or body.label_column is not None,
        ),
        created_at=now(),
    )
    return record


def _check_labels(
    path: str, fmt: str, text: str, label: str, model_folder: Path, settings: Settings
) -> None:
    """An evaluation file's labels must be ones the model knows."""
    try:
        known = json.loads((model_folder / "job.json").read_text())
    except (OSError, ValueError):
        return
    try:
        _, seen = scan_columns(
            Path(path),
            fmt,  # type: ignore[arg-type]
            {"text_column": text},
            label,
            settings.max_labels,
            training=False,
        )
    except DataFileProblem as exc:
        raise invalid(str(exc), exc.param) from exc
    if known.get("task") != "classification":
        return
    names = set(known.get("id2label", {}).values())
    unknown = sorted(seen - names)
    if unknown:
        raise invalid(
            f"labels {', '.join(unknown[:10])} are not among the model's "
            f"({', '.join(sorted(names)[:20])})",
            "label_column",
        )


def _check_label_sets(
    path: str,
    fmt: str,
    text: str,
    label: str,
    delimiter: str,
    model_folder: Path,
    settings: Settings,
) -> None:
    """A multi-label evaluation file's label sets must parse and name the model's labels."""
    try:
        known = json.loads((model_folder / "job.json").read_text())
    except (OSError, ValueError):
        return
    names = [known["id2label"][k] for k in sorted(known.get("id2label", {}), key=int)]
    try:
        check_label_sets(
            [text],
            label,
            delimiter,
            Path(path),
            fmt,  # type: ignore[arg-type]
            settings.max_labels,
            names,
        )
    except DataFileProblem as exc:
        param = "label_column" if exc.param == "validation_file" else exc.param
        raise invalid(str(exc).replace("the training file", "the model's labels"), param) from exc


def _submit(
    record: JobRecord,
    tenant: str,
    store: Store,
    settings: Settings,
    background: BackgroundTasks,
    idempotency_key: str | None,
) -> BatchPrediction:
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
    stored = store.create_job(record, idempotency_key)
    if stored.id == record.id:
        background.add_task(_ring, store, settings.queue_name, record.id, stored.attempt)
    return _view(store, stored)


def _ring(store: Store, queue: str, batch_id: str, attempt: int) -> None:
    try:
        ring(store, get_celery(), queue, batch_id, attempt, patient=False)
    except Exception:
        log.warning(
            "could not send the batch's message; the reaper will", extra={"job_id": batch_id}
        )


@router.post("/v1/batch_predictions", status_code=201, response_model=BatchPrediction)
def create_batch_prediction(
    body: BatchPredictionCreate,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
) -> BatchPrediction:
    """Score a whole uploaded file with a job's model (or one of its checkpoints); download
    the rows with their predictions from `output` once it succeeded."""
    if idempotency_key:
        existing = store.find_idempotent(tenant, idempotency_key, "batch_prediction")
        if existing is not None:
            return _view(store, existing)
    record = create_batch(body, tenant, store, settings)
    return _submit(record, tenant, store, settings, background, idempotency_key)


@router.post("/v1/jobs/{job_id}/evaluations", status_code=201, response_model=BatchPrediction)
def create_evaluation(
    job_id: str,
    body: EvaluationCreate,
    tenant: TenantDep,
    store: StoreDep,
    settings: SettingsDep,
    background: BackgroundTasks,
) -> BatchPrediction:
    """Judge the job's model (or a checkpoint) on a labelled file: a batch prediction whose
    `report` is the evaluation report; the label column defaults to the job's."""
    source = store.get_job(tenant, job_id) if is_valid_id(job_id, "job") else None
    if source is None or source.spec is None:
        raise not_found("job", job_id)
    judged_by_labels = source.spec.task != "masked_lm"
    request = BatchPredictionCreate(
        job_id=job_id,
        input_file=body.file_id,
        text_column=body.text_column,
        text_pair_column=body.text_pair_column,
        label_column=body.label_column or (source.spec.label_column if judged_by_labels else None),
        checkpoint=body.checkpoint,
    )
    try:
        record = create_batch(request, tenant, store, settings, evaluation=True)
    except ApiError as exc:
        if exc.param == "input_file":
            exc.param = "file_id"
        raise
    return _submit(record, tenant, store, settings, background, None)


@router.get("/v1/batch_predictions", response_model=BatchPredictionList)
def list_batch_predictions(
    tenant: TenantDep,
    store: StoreDep,
    status: JobStatus | None = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: Annotated[str | None, Query(max_length=64)] = None,
) -> BatchPredictionList:
    records, has_more = store.list_jobs(
        tenant, limit=limit, after=after, status=status, kind="batch_prediction"
    )
    return BatchPredictionList(data=[_view(store, r) for r in records], has_more=has_more)


@router.get("/v1/batch_predictions/{batch_id}", response_model=BatchPrediction)
def get_batch_prediction(batch_id: str, tenant: TenantDep, store: StoreDep) -> BatchPrediction:
    return _view(store, _load(store, tenant, batch_id))


@router.post("/v1/batch_predictions/{batch_id}/cancel", response_model=BatchPrediction)
def cancel_batch_prediction(batch_id: str, tenant: TenantDep, store: StoreDep) -> BatchPrediction:
    _load(store, tenant, batch_id)
    try:
        record = store.request_cancel(tenant, batch_id)
    except TransitionRefused as exc:
        raise ApiError(409, "job_finished", f"cannot cancel: {exc}", None) from exc
    return _view(store, record)


@router.get("/v1/batch_predictions/{batch_id}/events", response_model=EventList)
def batch_events(
    batch_id: str,
    tenant: TenantDep,
    store: StoreDep,
    after: Annotated[str | None, Query(pattern=r"^\d{1,19}-\d{1,19}$")] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> EventList:
    _load(store, tenant, batch_id)
    events, has_more = store.events(batch_id, after, limit)
    return EventList(data=events, has_more=has_more)


@router.get(
    "/v1/batch_predictions/{batch_id}/output",
    response_class=FileResponse,
    responses={
        200: {
            "description": "the input rows with their predictions (CSV or JSON Lines)",
            "content": {
                media: {"schema": {"type": "string", "format": "binary"}}
                for media in ("text/csv", "application/x-ndjson")
            },
        }
    },
)
def download_batch_output(
    batch_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> FileResponse:
    record = _load(store, tenant, batch_id)
    assert record.batch is not None
    name = BATCH_OUTPUT_NAMES[record.batch.input_format]
    path = job_dir(settings.storage_dir, batch_id) / name
    if record.status != JobStatus.succeeded or not path.is_file():
        raise ApiError(
            404, "output_not_ready", f"batch '{batch_id}' is {record.status}: no output yet", None
        )
    media = "text/csv" if name.endswith(".csv") else "application/x-ndjson"
    return FileResponse(path, media_type=media, filename=f"{batch_id}-{name}")


@router.get("/v1/batch_predictions/{batch_id}/report", response_model=EvaluationReport)
def batch_report(
    batch_id: str, tenant: TenantDep, store: StoreDep, settings: SettingsDep
) -> EvaluationReport:
    record = _load(store, tenant, batch_id)
    path = job_dir(settings.storage_dir, batch_id) / REPORT_FILE
    if record.status != JobStatus.succeeded or not path.is_file():
        raise ApiError(
            404,
            "report_not_ready",
            f"batch '{batch_id}' is {record.status}: a report is written when an evaluation "
            "(a batch with a label column) succeeds",
            None,
        )
    return EvaluationReport.model_validate_json(path.read_bytes())
