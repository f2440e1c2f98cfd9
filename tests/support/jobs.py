"""The small jobs most tests submit: one body, one place."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from app.core.schemas import Job
from finetune import Client

# Two quick epochs of the tiny model on the synthetic sentiment rows.
QUICK = {"epochs": 2, "learning_rate": 0.005, "log_every_steps": 2, "checkpoint_every_steps": 5}


def tiny_job_body(training_file: str, **overrides: Any) -> dict[str, Any]:
    """A POST /v1/jobs body for the tiny model; `hyperparameters` overrides merge into QUICK."""
    return {
        "model": "tiny",
        "training_file": training_file,
        "text_column": "sentence",
        "label_column": "label",
        **overrides,
        "hyperparameters": {**QUICK, **overrides.get("hyperparameters", {})},
    }


def submit_tiny(client: Client, training_file: str, **overrides: Any) -> Job:
    return client.submit(tiny_job_body(training_file, **overrides))


def upload_and_submit(client: Client, data_file: Path, **overrides: Any) -> Job:
    return submit_tiny(client, client.upload(data_file).id, **overrides)
