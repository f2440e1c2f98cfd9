"""Sending a job on: the one place a job's Celery message is sent, and recorded as sent.

A job's life is split in two on purpose. Its transitions (queued, running, cancelling, and the
terminal ones) and the side effects that must happen exactly once with them (statistics, the
webhook outbox entry) are one Redis transaction each, in `app.core.store.transitions`. Ringing
the doorbell (the Celery message) cannot be part of such a transaction, so it is done here,
after the transition, by whoever made it: the API after a submission, a worker deferring a job
or handing it back, the reaper re-queuing or re-sending one. A ring that is lost is found again
by the reaper (a job stored but never sent, or whose message was taken and lost), and one too
many is harmless: claims are fenced.
"""

from __future__ import annotations

from celery import Celery

from app.core.queue import dispatch
from app.core.store import Store


def ring(
    store: Store,
    celery: Celery,
    queue: str,
    job_id: str,
    attempt: int,
    *,
    countdown: float | None = None,
    patient: bool = True,
) -> None:
    """Send attempt `attempt` of the job to the workers and record that it was sent."""
    dispatch(celery, queue, job_id, attempt, countdown=countdown, patient=patient)
    store.mark_dispatched(job_id, attempt)
