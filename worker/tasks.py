"""The one Celery task: thin on purpose; the attempt's logic is in worker/runner.py."""

from __future__ import annotations

from typing import Any

from app.core.lifecycle import ring
from app.core.queue import RUN_JOB_TASK
from app.core.settings import get_settings
from app.core.store import Store, connect
from worker.celery_app import celery

_store: dict[str, Store] = {}


def get_store() -> Store:
    if "store" not in _store:
        _store["store"] = Store(connect(get_settings().redis_url))
    return _store["store"]


@celery.task(name=RUN_JOB_TASK, bind=True)
def run_job(self: Any, job_id: str, attempt: int) -> str:
    from worker.runner import run_attempt

    settings = get_settings()
    store = get_store()
    worker_name = self.request.hostname or "worker"
    return run_attempt(
        store,
        settings,
        job_id,
        attempt,
        worker_name,
        lambda jid, att, countdown=None: ring(
            store, celery, settings.queue_name, jid, att, countdown=countdown
        ),
    )
