"""Online predictions: `POST /v1/jobs/{id}/predictions` asks a prediction worker (the API never
imports TensorFlow) and waits, on the event loop, for its answer."""

from __future__ import annotations

import json
import secrets

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool

from app.api.deps import ReaderDep, SettingsDep, StoreDep, TenantDep
from app.api.errors import ApiError, error_responses, invalid, not_found
from app.core.layout import is_valid_id
from app.core.queue import get_celery, send_prediction
from app.core.schemas import JobStatus, Prediction, PredictionList, PredictionRequest

router = APIRouter(
    prefix="/v1/jobs",
    tags=["predictions"],
    responses=error_responses(400, 401, 404, 409, 422, 500, 503),
)


@router.post("/{job_id}/predictions", response_model=PredictionList)
async def predict(
    job_id: str,
    body: PredictionRequest,
    tenant: TenantDep,
    reader: ReaderDep,
    store: StoreDep,
    settings: SettingsDep,
) -> PredictionList:
    """Labels with every label's probability (regression: the value) for up to 64 inputs, from
    the job's trained model, as `from_pretrained` on its artifact would answer."""
    record = await reader.job_record(tenant, job_id) if is_valid_id(job_id, "job") else None
    if record is None:
        raise not_found("job", job_id)
    if record.status != JobStatus.succeeded or not record.has_artifact:
        raise ApiError(
            409,
            "job_not_ready",
            f"job '{job_id}' is {record.status}: predictions need a succeeded job",
            None,
        )
    assert record.spec is not None  # a job id names a fine-tuning job
    paired = record.spec.text_pair_column is not None
    for index, item in enumerate(body.inputs):
        if (item.text_pair is not None) != paired:
            said = (
                f"was trained on text pairs ('{record.spec.text_pair_column}'): give text_pair"
                if paired
                else "was trained on single texts: leave text_pair out"
            )
            raise invalid(f"the job {said}", f"inputs.{index}.text_pair")
    request_id = secrets.token_hex(16)
    timeout = settings.prediction_timeout_seconds
    await run_in_threadpool(
        send_prediction,
        get_celery(),
        settings.prediction_queue_name,
        request_id,
        job_id,
        record.attempt,
        [item.model_dump() for item in body.inputs],
        timeout,
    )
    raw = await reader.await_reply(request_id, timeout)
    if raw is None:
        running = await run_in_threadpool(store.live_workers, "predictor")
        reason = (
            "prediction workers are busy"
            if running
            else "no prediction worker is running (start one: finetune worker --predictions)"
        )
        raise ApiError(
            503,
            "no_prediction_worker" if not running else "prediction_timeout",
            f"no answer within {timeout:.0f} s: {reason}",
            None,
            headers={"Retry-After": "5"},
        )
    reply = json.loads(raw)
    if "error" in reply:
        raise ApiError(500, reply["error"]["code"], reply["error"]["message"], None)
    return PredictionList(job_id=job_id, data=[Prediction.model_validate(p) for p in reply["data"]])
