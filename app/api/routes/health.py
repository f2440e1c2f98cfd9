"""Reachability of the API, Redis and the workers."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from redis.exceptions import RedisError

from app.api.deps import SettingsDep, StoreDep, TenantDep
from app.api.errors import error_responses
from app.core.catalog import list_local_models
from app.core.schemas import ModelInfo

router = APIRouter(tags=["service"])


@router.get("/healthz", responses={503: {"description": "Redis unreachable"}})
def healthz(store: StoreDep) -> JSONResponse:
    body: dict[str, Any] = {"api": "ok"}
    try:
        store.ping()
        body["redis"] = "ok"
        workers = store.live_workers()
        body["workers"] = len(workers)
        body["prediction_workers"] = len(store.live_workers("predictor"))
    except RedisError as exc:
        body["redis"] = f"unreachable: {type(exc).__name__}"
        body["workers"] = body["prediction_workers"] = None
        return JSONResponse({"status": "degraded", **body}, status_code=503)
    body["status"] = "ok" if workers else "no_workers"
    return JSONResponse(body)


@router.get("/v1/models", response_model=list[ModelInfo], responses=error_responses(401))
def list_models(_: TenantDep, settings: SettingsDep) -> list[ModelInfo]:
    """Local models by name; with hub access on, any hub id may be used too."""
    return [ModelInfo(id=name, source="local") for name in list_local_models(settings.models_dir)]
