"""Finds jobs whose worker vanished (lease expired), jobs whose message a worker took and then
lost (receipt expired without a claim), and jobs queued but never dispatched.

Kombu's Redis transport has no heartbeat: a SIGKILLed worker's task is re-delivered only after
the visibility timeout (an hour). The per-job lease and receipt expire within seconds instead,
and this loop re-queues or re-sends the job; a running job's new attempt resumes from its last
checkpoint. The job record is the truth and a message only a doorbell: a duplicate delivery is
harmless, as claims are fenced.
"""

from __future__ import annotations

import logging
import threading
import time

from celery import Celery

from app.core.lifecycle import ring
from app.core.schemas import JobStatus
from app.core.settings import Settings
from app.core.store import Store
from app.core.sweeps import advance
from worker.retention import apply_retention

log = logging.getLogger("finetune.reaper")
UNDISPATCHED_GRACE_SECONDS = 10.0


def reap_once(store: Store, celery: Celery, settings: Settings) -> int:
    """One pass; returns how many jobs it dispatched again. Running sweeps are moved on too
    (a trial that ended while no worker could start the next one)."""
    dispatched = 0
    for job_id in store.active_job_ids():
        try:
            dispatched += reap_job(store, celery, settings, job_id)
        except Exception:  # one unreadable record must not stop the reaper for every job
            log.exception("reaper: could not look after a job", extra={"job_id": job_id})
    for sweep_id in store.active_sweep_ids():
        try:
            advance(store, celery, settings, sweep_id)
        except Exception:
            log.exception("reaper: could not move a sweep on", extra={"job_id": sweep_id})
    return dispatched


def reap_job(store: Store, celery: Celery, settings: Settings, job_id: str) -> int:
    """Look after one active job; returns 1 when it was sent again."""
    record = store.get_record(job_id)
    if record is None:
        return 0
    if record.status in (JobStatus.running, JobStatus.cancelling):
        if store.lease_alive(job_id):
            return 0
        requeued = store.requeue(
            job_id,
            token=None,
            reason="the worker running it stopped responding (lease expired)",
            max_attempts=settings.max_attempts,
        )
        if requeued is None:
            return 0  # given up on (failed: its webhook is in the outbox) or not ours
        log.warning("re-queued job", extra={"job_id": job_id})
        ring(store, celery, settings.queue_name, job_id, requeued.attempt)
        return 1
    if record.status == JobStatus.queued and store.lost_message(job_id, record.attempt):
        # Taken off the queue by a worker that died (or stalled) before claiming it.
        log.warning("re-sending a job whose message was lost", extra={"job_id": job_id})
        store.forget_receipt(job_id)
        ring(store, celery, settings.queue_name, job_id, record.attempt)
        return 1
    if (
        record.status == JobStatus.queued
        and record.dispatched_attempt < record.attempt
        and time.time() - record.queued_at > UNDISPATCHED_GRACE_SECONDS
    ):
        log.warning("dispatching a job that was stored but never sent", extra={"job_id": job_id})
        ring(store, celery, settings.queue_name, job_id, record.attempt)
        return 1
    return 0


def reap_forever(store: Store, celery: Celery, settings: Settings) -> None:
    stop = threading.Event()
    next_retention = 0.0
    while not stop.wait(settings.reaper_interval_seconds):
        try:
            reap_once(store, celery, settings)
            if time.monotonic() >= next_retention:
                next_retention = time.monotonic() + settings.retention_interval_seconds
                apply_retention(store, settings)
        except Exception:
            log.exception("reaper pass failed")
