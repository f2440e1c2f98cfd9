"""The worker's Celery app: `celery -A worker.celery_app worker`.

TensorFlow is imported in each pool process at its start (never in the prefork parent: a
TensorFlow runtime inherited through fork makes `fit()` hang in the child).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from celery.signals import (
    task_received,
    worker_process_init,
    worker_ready,
    worker_shutting_down,
)

from app.core.logs import configure_logging
from app.core.queue import RUN_JOB_TASK, make_celery
from app.core.settings import get_settings
from app.core.store import Store, connect
from app.core.store.coordination import WorkerKind

settings = get_settings()
configure_logging(settings.log_level)
celery = make_celery(settings)
celery.conf.include = ["worker.tasks"]
log = logging.getLogger("finetune.worker")

WEBHOOK_SENDERS = 2  # in the main process: a slow receiver must not hold up the others
_hostname: dict[str, str] = {}
_stores: dict[str, Store] = {}


def _parent_store() -> Store:
    if "store" not in _stores:
        _stores["store"] = Store(connect(settings.redis_url))
    return _stores["store"]


@worker_process_init.connect
def _load_tensorflow(**_: Any) -> None:
    # The Keras 2 switch (worker/__init__) first, then transformers and datasets, so their
    # import is not on the first job's clock.
    from worker import cache
    from worker.quiet import start_tensorflow

    devices = start_tensorflow()
    cache.configure(settings.worker_cache_entries)
    from worker.pipeline import warm

    warm.configure(settings.worker_warm_models)
    log.info("pool process ready", extra={"data": {"gpus": devices}})


@worker_ready.connect
def _start_background(sender: Any = None, **_: Any) -> None:
    """Heartbeat (for /healthz) and the reaper, in the parent process."""
    from app.core.webhooks import send_forever
    from worker.reaper import reap_forever

    name = getattr(sender, "hostname", "worker")
    _hostname["name"] = name
    store = Store(connect(settings.redis_url))
    if _serves_predictions_only(sender):
        # A prediction worker: its own heartbeat (GET /healthz counts it apart); the reaper
        # and the webhook senders are the training workers' business.
        _start_heartbeat(store, name, "predictor")
        return
    try:
        store.clear_draining(name)
    except Exception:  # Redis down at start-up: the heartbeat and the reaper must start anyway
        log.warning("could not clear the draining flag")

    _start_heartbeat(store, name, "worker")
    for index in range(WEBHOOK_SENDERS):
        threading.Thread(
            target=send_forever,
            args=(store, settings, f"{name}-{index}"),
            name=f"webhooks-{index}",
            daemon=True,
        ).start()
    threading.Thread(
        target=reap_forever, args=(store, celery, settings), name="reaper", daemon=True
    ).start()


def _serves_predictions_only(sender: Any) -> bool:
    try:
        queues = set(sender.app.amqp.queues.consume_from or {})
    except AttributeError:
        return False
    return queues == {settings.prediction_queue_name}


def _start_heartbeat(store: Store, name: str, kind: WorkerKind) -> None:
    def heartbeat() -> None:
        while True:
            try:
                store.worker_heartbeat(name, ttl_seconds=15, kind=kind)
            except Exception:  # Redis down: keep trying, the worker itself rides it out
                log.warning("heartbeat failed")
            threading.Event().wait(5)

    threading.Thread(target=heartbeat, name="heartbeat", daemon=True).start()


@task_received.connect
def _note_receipt(request: Any = None, **_: Any) -> None:
    """In the parent, as a job's message arrives: see `Store.note_receipt`. The receipt lives
    two leases: time for the pool process to start and claim the job."""
    if getattr(request, "task_name", None) != RUN_JOB_TASK:  # not a prediction request
        return
    try:
        job_id, attempt = request.args[0], int(request.args[1])
        _parent_store().note_receipt(
            job_id, attempt, _hostname.get("name", "worker"), 2 * settings.lease_seconds
        )
    except Exception:  # never lose the message over this: the record still says "queued"
        log.warning("could not note the receipt of a job", exc_info=True)


@worker_shutting_down.connect
def _drain(**_: Any) -> None:
    """Tell this worker's running job to checkpoint and hand itself back to the queue."""
    name = _hostname.get("name")
    if name:
        try:
            Store(connect(settings.redis_url)).set_draining(name)
        except Exception:
            log.warning("could not mark the worker as draining")
