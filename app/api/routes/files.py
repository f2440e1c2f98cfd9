"""Dataset uploads: streamed to disk under a size limit, checked, then listed (never before)."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query, Request
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from app.api.datacheck import ReportRequest, file_report
from app.api.datafiles import STORED_SUFFIX, DataFileProblem, Limits, format_for, inspect_file
from app.api.deps import SettingsDep, StoreDep, TenantDep
from app.api.errors import ApiError, error_responses, invalid, not_found
from app.api.limits import UploadTooLarge
from app.core.catalog import UnknownModel, resolve_model
from app.core.layout import is_valid_id
from app.core.schemas import DataReport, FileList, FileObject, TaskName
from app.core.store import FileRecord, new_id, now

MULTIPART_OVERHEAD = 64 * 1024
CHUNK = 1 << 20


def file_path(files_dir: Path, file_id: str, fmt: str) -> Path:
    return files_dir / f"{file_id}{STORED_SUFFIX[fmt]}"  # type: ignore[index]


def build_router() -> APIRouter:
    router = APIRouter(
        prefix="/v1/files", tags=["files"], responses=error_responses(401, 404, 413, 422)
    )

    @router.post(
        "",
        status_code=201,
        response_model=FileObject,
        summary="Upload a CSV, JSON Lines or Parquet dataset (multipart field 'file')",
        # The body is streamed to disk by hand (to enforce the size limit while reading), so
        # FastAPI cannot derive it: declared here for the docs and for generated clients.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {
                    "multipart/form-data": {
                        "schema": {
                            "type": "object",
                            "title": "FileUpload",
                            "required": ["file"],
                            "properties": {
                                "file": {
                                    "type": "string",
                                    "format": "binary",
                                    "description": "the dataset; its name's suffix (.csv, "
                                    ".jsonl, .parquet) says its format",
                                }
                            },
                        }
                    }
                },
            }
        },
    )
    async def upload_file(
        request: Request, tenant: TenantDep, settings: SettingsDep, store: StoreDep
    ) -> FileObject:
        limit = settings.max_upload_bytes  # the whole body is capped by BodyLimitMiddleware
        try:
            form = await request.form(max_files=1, max_fields=4)
        except UploadTooLarge:
            raise  # answered 413 by the middleware
        except Exception as exc:
            raise invalid(f"could not read the multipart body: {exc}", "file") from exc
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise invalid("send the dataset as multipart form field 'file'", "file")
        filename = Path(upload.filename or "").name
        try:
            fmt = format_for(filename)
        except DataFileProblem as exc:
            raise invalid(str(exc), "file") from exc
        file_id = new_id("file")
        settings.files_dir.mkdir(parents=True, exist_ok=True)
        final = file_path(settings.files_dir, file_id, fmt)
        partial = final.with_name(f".{final.name}.partial")
        size = 0
        try:
            with partial.open("wb") as out:
                while chunk := await upload.read(CHUNK):
                    size += len(chunk)
                    if size > limit:
                        raise _too_large(limit)
                    out.write(chunk)
            try:
                limits = Limits(settings.max_rows, settings.max_columns, settings.max_decoded_bytes)
                inspection = await run_in_threadpool(inspect_file, partial, fmt, limits)
            except DataFileProblem as exc:
                raise ApiError(422, "invalid_file", f"'{filename}': {exc}", "file") from exc
            partial.replace(final)
        finally:
            with contextlib.suppress(FileNotFoundError):
                partial.unlink()
        public = FileObject(
            id=file_id,
            filename=filename,
            bytes=size,
            format=fmt,
            rows=inspection.rows,
            columns=inspection.columns,
            created_at=now(),
        )
        record = FileRecord(public=public, tenant=tenant, path=str(final), dtypes=inspection.dtypes)
        await run_in_threadpool(store.put_file, record)  # never block the event loop on Redis
        return public

    @router.get("", response_model=FileList)
    def list_files(tenant: TenantDep, store: StoreDep) -> FileList:
        return FileList(data=[r.public for r in store.list_files(tenant)])

    @router.get("/{file_id}", response_model=FileObject)
    def get_file(file_id: str, tenant: TenantDep, store: StoreDep) -> FileObject:
        record = store.get_file(tenant, file_id) if is_valid_id(file_id, "file") else None
        if record is None:
            raise not_found("file", file_id)
        return record.public

    @router.get("/{file_id}/report", response_model=DataReport)
    def get_report(
        file_id: str,
        tenant: TenantDep,
        store: StoreDep,
        settings: SettingsDep,
        text_column: Annotated[str | None, Query(max_length=256)] = None,
        label_column: Annotated[str | None, Query(max_length=256)] = None,
        text_pair_column: Annotated[str | None, Query(max_length=256)] = None,
        model: Annotated[
            str | None, Query(max_length=200, description="token lengths in this model's tokens")
        ] = None,
        max_length: Annotated[int, Query(ge=8, le=512)] = 128,
        task: Annotated[
            TaskName, Query(description="read the label column as this task's jobs read it")
        ] = "sequence_classification",
        label_delimiter: Annotated[str, Query(min_length=1, max_length=8)] = ",",
    ) -> DataReport:
        """The data report: labels, empty texts, duplicates, conflicting labels, labels that
        differ only by case, and with `model` token lengths and truncation. Columns default
        to the usual names (text/sentence, label; tokens, ner_tags). With `task`, the label
        column is read as that task's jobs read it: label sets (multi-label, with
        `label_delimiter` in CSV), word and tag lists with their IOB2 checks and entity
        counts (token classification), or no labels at all (masked LM)."""
        record = store.get_file(tenant, file_id) if is_valid_id(file_id, "file") else None
        if record is None:
            raise not_found("file", file_id)
        names = record.public.columns
        tagged = task == "token_classification"
        text_names = TOKEN_TEXT_NAMES if tagged else TEXT_NAMES
        label_names = TAG_NAMES if tagged else LABEL_NAMES
        request = ReportRequest(
            text_column=text_column or guess_column(names, text_names) or names[0],
            pair_column=text_pair_column,
            label_column=None
            if task == "masked_lm"
            else label_column or guess_column(names, label_names) or names[-1],
            max_length=max_length,
            task=task,
            label_delimiter=label_delimiter,
        )
        for param, column in (
            ("text_column", request.text_column),
            ("label_column", request.label_column),
            ("text_pair_column", request.pair_column),
        ):
            if column is not None and column not in names:
                raise invalid(
                    f"'{record.public.filename}' has no column '{column}'; its columns are "
                    f"{', '.join(names)}",
                    param,
                )
        if request.text_column == request.label_column:
            raise invalid("text_column and label_column must differ", "label_column")
        if model is not None:
            try:
                ref = resolve_model(model, settings.models_dir, settings.allow_hub)
            except UnknownModel as exc:
                raise invalid(str(exc), "model") from exc
            folder = Path(ref.location) if ref.source == "local" else None
            request = replace(request, model_name=model, model_folder=folder)
        try:
            report, _ = file_report(
                Path(record.path),
                record.public.format,
                record.public.id,
                record.public.filename,
                record.public.rows,
                request,
                settings.data_report_max_rows,
            )
        except DataFileProblem as exc:
            raise invalid(str(exc), None) from exc
        return report

    @router.delete("/{file_id}", response_model=FileObject)
    def delete_file(file_id: str, tenant: TenantDep, store: StoreDep) -> FileObject:
        record = store.delete_file(tenant, file_id) if is_valid_id(file_id, "file") else None
        if record is None:
            raise not_found("file", file_id)
        # Jobs keep their own copy of the path; a queued job that needs it fails readably.
        Path(record.path).unlink(missing_ok=True)
        for cached in Path(record.path).parent.glob(f".{Path(record.path).name}.report-*"):
            cached.unlink(missing_ok=True)
        return record.public

    return router


TEXT_NAMES = ("text", "sentence", "review", "content")
LABEL_NAMES = ("label", "labels", "sentiment", "class", "category")
TOKEN_TEXT_NAMES = ("tokens", "words")
TAG_NAMES = ("ner_tags", "tags", "labels", "label")


def guess_column(columns: list[str], names: tuple[str, ...]) -> str | None:
    return next((c for c in columns if c.lower() in names), None)


def _too_large(limit: int) -> ApiError:
    return ApiError(
        413, "file_too_large", f"the upload is larger than the limit of {limit} bytes", "file"
    )
