"""Sweeps through the service: trials are ordinary jobs on real workers, never more unfinished
at once than the cap, the best trial named and usable; a killed trial worker and a failed
trial do not fail the sweep; Optuna's pruner stops a trial behind the median."""

from __future__ import annotations

import signal
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from app.core.schemas import (
    Hyperparameters,
    JobCreate,
    JobSpec,
    SearchDimension,
    SweepCreate,
    SweepStatus,
    TrialRef,
)
from app.core.settings import Settings
from app.core.store import Store, SweepRecord, connect, now
from app.core.sweeps import create_study, should_prune
from finetune import Client, Invalid
from tests.support.harness import RedisServer, running_service, wait_until
from tests.support.jobs import tiny_job_body


def most_at_once(intervals: list[tuple[datetime, datetime]]) -> int:
    """The largest number of [start, end) intervals that overlap at one moment."""
    edges = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    running = peak = 0
    for _, step in edges:
        running += step
        peak = max(peak, running)
    return peak


def sweep_body(training_file: str, validation_file: str, **fields: Any) -> dict[str, Any]:
    return {
        "job": tiny_job_body(training_file, validation_file=validation_file),
        "metric": "matthews_correlation",
        **fields,
    }


def test_grid_sweep_runs_every_trial_within_its_cap_and_names_the_best(
    predictor: None, alice: Client, data_dir: Path
) -> None:
    train = alice.upload(data_dir / "train.csv").id
    validation = alice.upload(data_dir / "validation.csv").id
    body = sweep_body(
        train,
        validation,
        method="grid",
        search={"learning_rate": {"values": [0.005, 0.00001]}, "epochs": {"values": [1, 2]}},
        max_trials=10,  # more than the grid: capped at its 4 points
        max_concurrent=2,
        prune=False,
    )
    sweep = alice.create_sweep(body)
    assert sweep.status == "running" and sweep.max_trials == 4 and sweep.direction == "maximize"
    done = alice.wait_sweep(sweep.id, timeout=600, interval=0.5)
    assert done.status == "succeeded", done.error
    assert sorted((t.params["learning_rate"], t.params["epochs"]) for t in done.trials) == [
        (0.00001, 1),
        (0.00001, 2),
        (0.005, 1),
        (0.005, 2),
    ]
    assert all(t.status == "succeeded" and t.value is not None for t in done.trials)

    # Each trial is an ordinary job with the searched values and its own metrics.
    intervals = []
    for trial in done.trials:
        job = alice.job(trial.job_id)
        assert job.metrics["matthews_correlation"] == trial.value
        assert job.hyperparameters.learning_rate == trial.params["learning_rate"]
        assert job.metadata["sweep_id"] == sweep.id
        assert job.finished_at is not None
        intervals.append((job.created_at, job.finished_at))
    assert most_at_once(intervals) <= 2
    # Trials share the model's shape: a worker's later trials start from its compiled model.
    warm = [
        any(e.data.get("warm_start") for e in alice.events(t.job_id) if e.type == "stage")
        for t in done.trials
    ]
    assert any(warm), warm

    best = done.best_trial
    assert best is not None
    assert best.value == max(t.value for t in done.trials if t.value is not None)
    assert best.params["learning_rate"] == 0.005  # 1e-5 for an epoch or two learns nothing
    [answer] = alice.predict(best.job_id, ["a wonderful , moving film"])
    assert answer.label is not None
    assert alice.sweeps().data[0].id == sweep.id


def test_sweep_requests_are_checked_like_jobs(alice: Client, data_dir: Path) -> None:
    train = alice.upload(data_dir / "train.csv").id
    validation = alice.upload(data_dir / "validation.csv").id
    cases = [
        ({"method": "grid", "search": {"learning_rate": {"low": 1e-5, "high": 1e-3}}},
         "search.learning_rate", "grid search takes a list"),
        ({"search": {"learning_rate": {"values": [0.001, 5.0]}}},
         "search.learning_rate", "learning_rate 5.0 would not make a valid job"),
        ({"search": {"epochs": {"values": [1]}}, "metric": "f1"},
         "metric", "does not apply to classification"),
        ({"search": {"epochs": {"low": 3, "high": 1}}}, None, "`low` must be below `high`"),
    ]  # fmt: skip
    for fields, param, message in cases:
        with pytest.raises(Invalid, match=message) as caught:
            alice.create_sweep(sweep_body(train, validation, **fields))
        if param is not None:
            assert caught.value.param == param
    missing = sweep_body("file_" + "0" * 32, validation, search={"epochs": {"values": [1]}})
    with pytest.raises(Invalid) as caught:
        alice.create_sweep(missing)
    assert caught.value.param == "job.training_file"


def test_a_cancelled_sweep_cancels_its_unfinished_trials(alice: Client, data_dir: Path) -> None:
    train = alice.upload(data_dir / "train.csv").id
    validation = alice.upload(data_dir / "validation.csv").id
    body = sweep_body(
        train,
        validation,
        method="random",
        search={"learning_rate": {"low": 1e-4, "high": 1e-2, "log": True}},
        max_trials=5,
        job={**tiny_job_body(train, validation_file=validation), "hyperparameters": {"epochs": 30}},
    )
    sweep = alice.create_sweep(body)
    wait_until(lambda: len(alice.sweep(sweep.id).trials) == 1, 30, "a first trial")
    alice.cancel_sweep(sweep.id)
    done = alice.wait_sweep(sweep.id, timeout=120, interval=0.5)
    assert done.status == "cancelled" and len(done.trials) == 1
    assert done.trials[0].status == "cancelled"


def test_the_median_pruner_stops_a_trial_behind_earlier_ones(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """The worker's side of pruning against a real study in Redis: two trials finished with
    0.8 at epoch 1; a third at 0.1 is told to stop, one at 0.9 is not."""
    import optuna

    settings = Settings(redis_url=redis_server.url, storage_dir=tmp_path)
    store = Store(connect(redis_server.url))
    job = JobCreate(model="tiny", training_file="file_" + "0" * 32)
    request = SweepCreate(job=job, search={"learning_rate": SearchDimension(values=[0.1, 0.2])})
    record = SweepRecord(
        id="sweep_" + "1" * 32,
        tenant="alice",
        status=SweepStatus.running,
        request=request,
        job_request=job,
        base=JobSpec(model="tiny", training_file="/dev/null", hyperparameters=Hyperparameters()),
        metric="accuracy",
        direction="maximize",
        max_trials=4,
        created_at=now(),
    )
    create_study(record, settings)
    from app.core.sweeps import study_storage

    study = optuna.load_study(study_name=record.id, storage=study_storage(settings.redis_url))
    for _ in range(2):
        trial = study.ask()
        trial.report(0.8, 100)
        study.tell(trial, 0.8)
    refs = []
    for _ in range(2):
        trial = study.ask()
        refs.append(
            TrialRef(
                sweep_id=record.id,
                number=trial.number,
                optuna_trial_id=trial._trial_id,
                metric="accuracy",
                prune=True,
            )
        )
    assert should_prune(settings, refs[0], 1.0, 0.1) is True
    assert should_prune(settings, refs[1], 1.0, 0.9) is False
    unpruned = refs[0].model_copy(update={"prune": False})
    assert should_prune(settings, unpruned, 2.0, 0.1) is False  # reported, never stopped
    del store


@pytest.mark.slow
def test_sweep_survives_a_killed_trial_worker_and_a_failed_trial(
    tmp_path: Path, models_dir: Path, data_dir: Path
) -> None:
    """Three trials one at a time. Trial 0's worker is SIGKILLed once: the trial resumes on
    another worker and succeeds. Trial 1's workers are SIGKILLed twice: with two attempts
    allowed it fails. Trial 2 runs; the sweep succeeds with the best of trials 0 and 2."""
    with running_service(tmp_path, models_dir, FINETUNE_MAX_ATTEMPTS="2") as (_, svc):
        client = Client(svc.url, "", retries=2, backoff=0.2)
        train = client.upload(data_dir / "train.csv").id
        validation = client.upload(data_dir / "validation.csv").id
        job = tiny_job_body(
            train,
            validation_file=validation,
            hyperparameters={"epochs": 3, "batch_size": 4, "checkpoint_every_steps": 20},
        )
        sweep = client.create_sweep(
            job=job,
            method="grid",
            search={"learning_rate": {"values": [0.005, 0.004, 0.003]}},
            max_concurrent=1,
            prune=False,
            metric="accuracy",
        )

        def trial_job(number: int) -> str:
            wait_until(lambda: len(client.sweep(sweep.id).trials) > number, 60, f"trial {number}")
            return client.sweep(sweep.id).trials[number].job_id

        def trains_on(job_id: str, worker: str, reports: int = 4) -> None:
            """The job is running on `worker` and has reported progress there (progress
            carries over from an earlier attempt, so it alone says nothing)."""

            def seen() -> bool:
                events = client.events(job_id)
                start = next(
                    (
                        i
                        for i, e in enumerate(events)
                        if e.message.startswith(f"job running on {worker}")
                    ),
                    None,
                )
                return (
                    start is not None
                    and sum(e.type == "progress" for e in events[start:]) >= reports
                )

            wait_until(seen, 180, f"{job_id} training on {worker}", interval=0.2)

        first = trial_job(0)
        victim = svc.start_worker("victim-a")
        trains_on(first, "victim-a", reports=15)  # past the checkpoint at step 20
        svc.stop_worker(victim, signal.SIGKILL)
        rescuer = svc.start_worker("rescuer")  # resumes trial 0, then takes trial 1
        second = trial_job(1)
        trains_on(second, "rescuer")
        svc.stop_worker(rescuer, signal.SIGKILL)
        victim = svc.start_worker("victim-b")
        trains_on(second, "victim-b")
        svc.stop_worker(victim, signal.SIGKILL)
        svc.start_worker("finisher")  # its reaper gives trial 1 up; the sweep starts trial 2
        done = client.wait_sweep(sweep.id, timeout=300, interval=0.5)
        first_job = client.job(first)

    assert done.status == "succeeded", done.error
    assert [t.status for t in done.trials] == ["succeeded", "failed", "succeeded"]
    assert first_job.attempt == 2  # resumed after its worker was killed
    assert done.trials[1].error is not None and "gave up after 2 attempts" in (
        done.trials[1].error.message
    )
    values = [t.value for t in done.trials]
    assert values[1] is None and values[0] is not None and values[2] is not None
    assert done.best_trial is not None
    assert done.best_trial.number in (0, 2) and done.best_trial.value == max(values[0], values[2])
