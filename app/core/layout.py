"""Where things live under the storage root, shared by the API and the workers.

Workers on other machines mount the same root, so paths are derived from ids, never stored.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any

ID_PATTERN = re.compile(r"^(file|job|batch|sweep)_[0-9a-f]{32}$")
CHECKPOINT_STATE_SUFFIX = ".state.json"
# Beside a job's checkpoints: config, tokenizer and labels, to make a model of any checkpoint.
CHECKPOINT_MODEL_DIR = "model"
# In every trained model folder; the API serves it (GET /v1/jobs/{id}/report).
REPORT_FILE = "report.json"


def is_valid_id(value: str, kind: str) -> bool:
    return bool(ID_PATTERN.match(value)) and value.startswith(kind + "_")


def job_dir(storage_dir: Path, job_id: str) -> Path:
    """A job's (or a batch prediction's) folder."""
    if not (is_valid_id(job_id, "job") or is_valid_id(job_id, "batch")):
        raise ValueError(f"not a job id: {job_id!r}")
    return storage_dir / "jobs" / job_id


def attempt_output_dir(storage_dir: Path, job_id: str, attempt: int) -> Path:
    """An attempt's trained model folder (save_pretrained output plus metrics.json and
    job.json). One per attempt: a worker that lost the job can never write into the folder of
    the attempt that replaced it."""
    return job_dir(storage_dir, job_id) / "attempts" / str(attempt) / "output"


# A batch prediction's output: CSV in, CSV out; JSON Lines (and Parquet) in, JSON Lines out.
BATCH_OUTPUT_NAMES = {
    "csv": "predictions.csv",
    "jsonl": "predictions.jsonl",
    "parquet": "predictions.jsonl",
}


def link_files(paths: list[Path], destination: Path) -> None:
    """Hard links (copies across file systems) of `paths` in `destination`: a job keeps its
    own links to what it reads, so deleting an upload or a job cannot pull them away."""
    destination.mkdir(parents=True, exist_ok=True)
    for path in paths:
        target = destination / path.name
        if path.is_file() and not target.exists():
            try:
                os.link(path, target)
            except OSError:
                shutil.copyfile(path, target)


def sweep_dir(storage_dir: Path, sweep_id: str) -> Path:
    """A sweep's folder: its own links to the data (and base model) every trial reads."""
    if not is_valid_id(sweep_id, "sweep"):
        raise ValueError(f"not a sweep id: {sweep_id!r}")
    return storage_dir / "sweeps" / sweep_id


def checkpoint_dir(storage_dir: Path, job_id: str) -> Path:
    return job_dir(storage_dir, job_id) / "checkpoints"


def list_checkpoints(directory: Path) -> list[dict[str, Any]]:
    """Checkpoints whose state file and data are both on disk, oldest first."""
    found = []
    for state_file in directory.glob("ckpt-*" + CHECKPOINT_STATE_SUFFIX):
        name = state_file.name.removesuffix(CHECKPOINT_STATE_SUFFIX)
        if not (directory / f"{name}.index").exists():
            continue
        try:
            state = json.loads(state_file.read_text())
        except (OSError, ValueError):
            continue
        found.append(
            {
                "name": name,
                **{
                    k: state[k]
                    for k in ("epoch", "step_in_epoch", "global_step", "saved_at")
                    if k in state
                },
            }
        )
    return sorted(found, key=lambda c: c.get("global_step", 0))


def fsync_file(path: Path) -> None:
    with path.open("rb") as handle:
        os.fsync(handle.fileno())


def fsync_dir(path: Path) -> None:
    """Make a rename in this folder durable (POSIX: the directory entry is its own write)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_atomically(path: Path, text: str) -> None:
    """Write to a temporary name of this process's own, flush it to disk, then rename: readers
    never see half a file, a crash never leaves one, and two writers never share a temporary."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with tmp.open("w") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        tmp.replace(path)
        fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
