"""What a sweep may search and how a trial's values become a job: pure Python, no services."""

from __future__ import annotations

import pytest
from optuna.distributions import IntDistribution
from pydantic import ValidationError

from app.core.schemas import Hyperparameters, JobCreate, JobSpec, SweepCreate, SweepStatus
from app.core.store import SweepRecord, now
from app.core.sweeps import distributions, trial_hyperparameters


def sweep_record(request: SweepCreate) -> SweepRecord:
    return SweepRecord(
        id="sweep_" + "2" * 32,
        tenant="alice",
        status=SweepStatus.running,
        request=request,
        job_request=request.job,
        base=JobSpec(
            model="tiny", training_file="/dev/null", hyperparameters=request.job.hyperparameters
        ),
        metric="accuracy",
        direction="maximize",
        max_trials=4,
        created_at=now(),
    )


def test_max_steps_is_searched_as_an_integer_and_becomes_the_trials_length() -> None:
    job = JobCreate(model="tiny", training_file="file_" + "0" * 32, text_column="sentence")
    request = SweepCreate(job=job, search={"max_steps": {"low": 100, "high": 400}})
    assert distributions(request.search) == {"max_steps": IntDistribution(100, 400)}
    hp = trial_hyperparameters(sweep_record(request), {"max_steps": 250})
    assert hp.max_steps == 250 and hp.epochs == "auto"  # the job's defaults stay
    assert hp == Hyperparameters(max_steps=250)


def test_every_searchable_name_at_once_is_allowed() -> None:
    job = JobCreate(model="tiny", training_file="file_" + "0" * 32, text_column="sentence")
    names = [
        "learning_rate", "epochs", "batch_size", "warmup_ratio", "weight_decay",
        "lr_scheduler", "max_length", "class_weight", "seed", "max_steps",
    ]  # fmt: skip
    search = {name: {"values": [1]} for name in names}
    assert len(SweepCreate(job=job, search=search).search) == 10
    with pytest.raises(ValidationError, match=r"search\.steps"):
        SweepCreate(job=job, search={"steps": {"values": [1]}})
