"""create_app(): routers, error handlers and start-up checks."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from app.api import metrics
from app.api.errors import install_error_handlers
from app.api.limits import BodyLimitMiddleware
from app.api.routes import batches, files, health, jobs, predictions, sweeps
from app.core.logs import configure_logging
from app.core.settings import Settings, exposure_problem, get_settings

log = logging.getLogger("finetune.api")
STATIC_DIR = Path(__file__).resolve().parent / "static"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    problem = exposure_problem(settings)
    if problem:
        raise SystemExit(problem)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        configure_logging(settings.log_level)
        if not settings.tenants_by_key:
            log.warning("no FINETUNE_API_KEYS set: single-tenant mode, no authentication")
        settings.storage_dir.mkdir(parents=True, exist_ok=True)
        yield

    app = FastAPI(
        title="finetune-service",
        version="1",
        summary="Fine-tune Hugging Face models with TensorFlow/Keras",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(
        BodyLimitMiddleware,
        upload_path="/v1/files",
        upload_max_bytes=settings.max_upload_bytes + files.MULTIPART_OVERHEAD,
        max_bytes=settings.max_request_bytes,
    )
    app.include_router(files.build_router())
    app.include_router(jobs.router)
    app.include_router(predictions.router)
    app.include_router(batches.router)
    app.include_router(sweeps.router)
    app.include_router(health.router)
    app.include_router(metrics.build_router())
    app.add_middleware(metrics.RequestTimer)

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    return app
