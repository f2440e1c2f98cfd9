"""The Celery tasks, thin on purpose: a training attempt's logic is in worker/runner.py, a
prediction's in worker/serving.py."""

from __future__ import annotations

import logging
from typing import Any

from app.core.lifecycle import ring
from app.core.queue import PREDICT_TASK, RUN_JOB_TASK
from app.core.settings import get_settings
from app.core.store import Store, connect
from worker.celery_app import celery

log = logging.getLogger("finetune.worker")
_store: dict[str, Store] = {}
_server: dict[str, Any] = {}


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
    outcome = run_attempt(
        store,
        settings,
        job_id,
        attempt,
        worker_name,
        lambda jid, att, countdown=None: ring(
            store, celery, settings.queue_name, jid, att, countdown=countdown
        ),
    )
    if outcome in ("succeeded", "failed", "cancelled"):
        move_sweep_on(store, settings, job_id)
    return outcome


def move_sweep_on(store: Store, settings: Any, job_id: str) -> None:
    """A trial ended: its sweep starts the next one now (else the reapers do, seconds later)."""
    record = store.get_record(job_id)
    trial = record.spec.trial if record is not None and record.spec is not None else None
    if trial is None:
        return
    from app.core.sweeps import advance

    try:
        advance(store, celery, settings, trial.sweep_id)
    except Exception:
        log.exception("could not move the sweep on", extra={"job_id": trial.sweep_id})


@celery.task(name=PREDICT_TASK, acks_late=False)
def predict(
    request_id: str, job_id: str, attempt: int, inputs: list[dict[str, str | None]]
) -> None:
    """Acknowledged on receipt, unlike a training job: if this process dies, the caller's
    timeout answers, and a re-delivery an hour later would help nobody."""
    from worker.serving import ModelServer

    settings = get_settings()
    if "server" not in _server:
        _server["server"] = ModelServer(settings)
    reply = _server["server"].answer(job_id, attempt, inputs)
    get_store().put_reply(request_id, reply, ttl_seconds=settings.prediction_timeout_seconds)
