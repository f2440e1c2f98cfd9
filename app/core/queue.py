"""The Celery app as the API sees it: configuration plus sending the task by name.

The worker builds its app from the same function, so both sides agree on serializer, queue
and acknowledgement semantics; the API never imports the worker (or TensorFlow).
"""

from __future__ import annotations

from functools import lru_cache

from celery import Celery

from app.core.settings import Settings, get_settings

RUN_JOB_TASK = "finetune.run_job"
PREDICT_TASK = "finetune.predict"


def make_celery(settings: Settings) -> Celery:
    celery = Celery("finetune", broker=settings.redis_url)
    celery.conf.update(
        task_serializer="json",
        accept_content=["json"],  # never pickle: a message must not be able to run code
        task_ignore_result=True,  # results live in the job store, not a result backend
        task_default_queue=settings.queue_name,
        # Hour-long tasks: acknowledge after the run, re-deliver if the worker dies.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        worker_concurrency=1,
        worker_max_tasks_per_child=settings.worker_max_jobs_per_process,
        # A new pool process imports TensorFlow and transformers before it says it is up: 3-5 s
        # on an idle machine, over 10 s on a busy one. Celery's default (4 s) kills such a child
        # and starts another that fares no better, forever (seen under test load); a child that
        # really hangs is still replaced, after a minute.
        worker_proc_alive_timeout=60.0,
        # Must stay off: a Redis blip would otherwise abort training in progress.
        worker_cancel_long_running_tasks_on_connection_loss=False,
        broker_connection_retry_on_startup=True,
        broker_connection_max_retries=None,
        # An hour on purpose: a message a worker took and lost is re-sent by the reaper within
        # two leases (receipts, worker/reaper.py), a lost running job within one (leases); a
        # shorter timeout would only re-deliver running jobs' messages, dropped as duplicates.
        broker_transport_options={"visibility_timeout": 3600},
        worker_hijack_root_logger=False,
        worker_send_task_events=False,
    )
    return celery


@lru_cache
def get_celery() -> Celery:
    return make_celery(get_settings())


def dispatch(
    celery: Celery,
    queue: str,
    job_id: str,
    attempt: int,
    countdown: float | None = None,
    *,
    patient: bool = True,
) -> None:
    """Send the job's message. Workers are `patient` (about 30 s of retries through a Redis
    restart); the API is not: its job record is already stored, and the reaper sends a job that
    was never dispatched."""
    celery.send_task(
        RUN_JOB_TASK,
        args=[job_id, attempt],
        queue=queue,
        countdown=countdown,
        retry=True,
        retry_policy={
            "max_retries": 20 if patient else 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 2.0,
        },
    )


def send_prediction(
    celery: Celery,
    queue: str,
    request_id: str,
    job_id: str,
    attempt: int,
    inputs: list[dict[str, str | None]],
    timeout: float,
) -> None:
    """Ask a prediction worker; the answer comes back under `request_id` (the store's reply).
    The message expires with the caller's patience: a worker never computes an answer nobody
    waits for any more."""
    celery.send_task(
        PREDICT_TASK,
        args=[request_id, job_id, attempt, inputs],
        queue=queue,
        expires=timeout,
        # Logs show this instead of the arguments: users' texts stay out of the worker's log.
        argsrepr=repr([request_id, job_id, attempt, f"<{len(inputs)} inputs>"]),
        retry=True,
        retry_policy={"max_retries": 2, "interval_start": 0.1, "interval_step": 0.2},
    )
