"""GET /metrics in Prometheus format: job statistics from Redis (the same for every API
replica and fed by every worker) and this API process's request latency by route."""

from __future__ import annotations

import hmac
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Header, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.core.settings import get_settings
from app.core.store import DURATION_BUCKETS, QUEUE_BUCKETS, Store

registry = CollectorRegistry()
REQUEST_SECONDS = Histogram(
    "finetune_api_request_seconds",
    "API request latency by route",
    ["method", "route", "status"],
    registry=registry,
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0),
)


class JobCollector:
    def __init__(self, store: Store, queue_name: str, storage_dir: Path, per_job: bool) -> None:
        self.store, self.queue_name, self.per_job = store, queue_name, per_job
        self.storage_dir = storage_dir

    def collect(self) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("finetune_jobs", "Jobs by status", labels=["status"])
        for status, count in self.store.status_counts().items():
            jobs.add_metric([status], count)
        yield jobs
        yield GaugeMetricFamily(
            "finetune_queue_length",
            "Messages waiting in the job queue",
            value=self.store.r.llen(self.queue_name),
        )
        yield GaugeMetricFamily(
            "finetune_webhooks_pending",
            "Terminal states whose webhook is not delivered yet (the outbox)",
            value=self.store.outbox_length(),
        )
        disk = GaugeMetricFamily(
            "finetune_storage_bytes",
            "The storage folder's file system: used and free bytes",
            labels=["kind"],
        )
        usage = shutil.disk_usage(self.storage_dir)
        disk.add_metric(["used"], usage.used)
        disk.add_metric(["free"], usage.free)
        yield disk
        speed = GaugeMetricFamily(
            "finetune_training_tokens_per_second",
            "Real tokens per second of running jobs",
            labels=["job_id"],
        )
        if self.per_job:  # job ids are tenants' business: the operator's key only
            for job_id, value in self.store.running_throughput().items():
                speed.add_metric([job_id], value)
            yield speed
        for name, buckets, help_text in (
            ("duration_seconds", DURATION_BUCKETS, "Time from start to end of finished jobs"),
            ("queue_seconds", QUEUE_BUCKETS, "Time from submission to start"),
        ):
            cumulative, total = self.store.histogram(name, buckets)
            yield HistogramMetricFamily(
                f"finetune_job_{name}", help_text, buckets=cumulative, sum_value=total
            )


def build_router() -> APIRouter:
    router = APIRouter()

    @router.get("/metrics", include_in_schema=False)
    def metrics(authorization: Annotated[str | None, Header()] = None) -> Response:
        from app.api.deps import get_store

        settings = get_settings()
        presented = (authorization or "").removeprefix("Bearer ").strip().encode()
        operator = bool(settings.operator_key) and hmac.compare_digest(
            presented, settings.operator_key.encode()
        )
        collector_registry = CollectorRegistry()
        collector_registry.register(
            JobCollector(get_store(), settings.queue_name, settings.storage_dir, operator)
        )
        body = generate_latest(registry) + generate_latest(collector_registry)
        return Response(body, media_type=CONTENT_TYPE_LATEST)

    return router


class RequestTimer:
    """Pure ASGI (no BaseHTTPMiddleware overhead on the hot status path)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(scope["method"], template, str(status)).observe(
                time.perf_counter() - started
            )
