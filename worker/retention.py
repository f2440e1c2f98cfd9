"""Retention of finished jobs, applied by every worker's reaper now and then.

Without it nothing ever expires: checkpoints (hundreds of MB per job for real models), records,
events and artifacts pile up. Checkpoints are only needed to resume, so they go after
FINETUNE_RETAIN_CHECKPOINTS_DAYS (7 by default); with FINETUNE_RETAIN_JOBS_DAYS (off by
default) a whole finished job goes too: its record, events and history in Redis and its folder
(data snapshot, model, artifact), and so does a finished sweep (record, Optuna study, data
links); with FINETUNE_RETAIN_UPLOADS_DAYS (off by default), uploads (a job keeps its own link
to its data, so no job loses it). Worker caches are bounded by count
(FINETUNE_WORKER_CACHE_ENTRIES) and live in memory. Two workers doing the same pass at once is
harmless: every step is idempotent.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from app.core.layout import checkpoint_dir, job_dir
from app.core.settings import Settings
from app.core.store import Store
from app.core.sweeps import forget as forget_sweep

log = logging.getLogger("finetune.retention")
DAY = 24 * 3600.0


def apply_retention(store: Store, settings: Settings, now: float | None = None) -> dict[str, int]:
    """One pass; returns how many jobs lost their checkpoints and how many were removed."""
    now = time.time() if now is None else now
    done = {"checkpoints": 0, "jobs": 0, "sweeps": 0, "uploads": 0}
    if settings.retain_checkpoints_days > 0:
        cutoff = now - settings.retain_checkpoints_days * DAY
        for job_id in store.finished_before(cutoff, with_checkpoints=True):
            shutil.rmtree(checkpoint_dir(settings.storage_dir, job_id), ignore_errors=True)
            store.checkpoints_removed(job_id)
            done["checkpoints"] += 1
    if settings.retain_jobs_days > 0:
        cutoff = now - settings.retain_jobs_days * DAY
        for job_id in store.finished_before(cutoff, with_checkpoints=False):
            record = store.get_record(job_id)
            shutil.rmtree(job_dir(settings.storage_dir, job_id), ignore_errors=True)
            store.forget_job(job_id, record.tenant if record else "")
            done["jobs"] += 1
        for sweep_id in store.sweeps_finished_before(cutoff):
            forget_sweep(store, settings, sweep_id)
            done["sweeps"] += 1
    if settings.retain_uploads_days > 0:
        cutoff = now - settings.retain_uploads_days * DAY
        for upload in store.files_older_than(cutoff):
            Path(upload.path).unlink(missing_ok=True)
            store.delete_file(upload.tenant, upload.public.id)
            done["uploads"] += 1
    if any(done.values()):
        log.info("retention pass", extra={"data": done})
    return done
