"""Job and file records, events, progress, leases and coordination in Redis, shared by the API
and the workers: one module per responsibility, one `Store` that has them all.

- base: keys, records, connections      - files: uploads      - jobs: records and reads
- events: progress, history, event log  - stats: operator statistics
- transitions: the state machine        - coordination: outbox, receipts, workers
- reader: the API's async status read      - sweeps: sweep records
"""

from __future__ import annotations

from app.core.store.base import (
    DURATION_BUCKETS,
    EVENTS_MAXLEN,
    HISTORY_MAX,
    PREFIX,
    QUEUE_BUCKETS,
    FileRecord,
    JobRecord,
    TenantAtLimit,
    TransitionRefused,
    connect,
    new_id,
    now,
)
from app.core.store.coordination import Coordination
from app.core.store.files import Files
from app.core.store.jobs import public_job
from app.core.store.reader import AsyncReader
from app.core.store.sweeps import SweepRecord, Sweeps, TrialRecord
from app.core.store.transitions import Transitions


class Store(Transitions, Files, Coordination, Sweeps):
    """Everything the API and the workers keep in Redis."""


__all__ = [
    "DURATION_BUCKETS",
    "EVENTS_MAXLEN",
    "HISTORY_MAX",
    "PREFIX",
    "QUEUE_BUCKETS",
    "AsyncReader",
    "FileRecord",
    "JobRecord",
    "Store",
    "SweepRecord",
    "TenantAtLimit",
    "TransitionRefused",
    "TrialRecord",
    "connect",
    "new_id",
    "now",
    "public_job",
]
