"""The dashboard in headless Chromium (Debian's), against the running service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from app.core.schemas import JobStatus
from finetune import Client
from tests.conftest import ARTIFACTS, KEYS
from tests.support.harness import Service
from tests.support.jobs import submit_tiny

DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}

CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def page(service: Service) -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path="/usr/bin/chromium", headless=True, args=CHROMIUM_ARGS
        )
        context = browser.new_context(
            viewport={"width": 1280, "height": 1000}, accept_downloads=True
        )
        page = context.new_page()
        page.goto(service.url + "/")
        page.fill("#api-key", KEYS["alice"])
        page.click("#key-form button")
        yield page
        browser.close()


def test_dashboard_shows_a_finished_job_with_its_charts(
    page: Any, alice: Client, service: Service, predictor: None, data_dir: Path, tmp_path: Path
) -> None:
    started = time.monotonic()
    job = submit_tiny(alice, alice.upload(data_dir / "train.csv").id)
    assert alice.wait(job.id, until=DONE, timeout=180, interval=0.2).status == "succeeded"

    page.goto(f"{service.url}/#/jobs/{job.id}")
    page.wait_for_function(
        "() => document.getElementById('job-status')?.textContent === 'succeeded'"
    )
    page.wait_for_function("() => Chart.getChart('loss-chart').data.datasets[0]?.data.length > 5")
    points = page.evaluate("() => Chart.getChart('loss-chart').data.datasets[0].data.length")
    metrics = page.evaluate("() => Chart.getChart('metric-chart').data.datasets.map(d => d.label)")
    assert points >= 10 and "accuracy" in metrics
    assert page.is_disabled("#cancel") and not page.is_disabled("#download")
    assert "job succeeded" in page.inner_text("#events")
    # The report: the heat map holds the API's confusion matrix, the per-class table its labels.
    page.wait_for_selector("#report:not([hidden]) #confusion td")
    report = alice.report(job.id)
    shown = page.evaluate(
        "() => [...document.querySelectorAll('#confusion tbody tr')]"
        ".map(r => [...r.cells].slice(1).map(c => Number(c.textContent)))"
    )
    assert shown == report.confusion_matrix
    assert page.locator("#per-class tbody tr").count() == len(report.labels)
    assert page.locator("#thresholds tbody tr").count() == 9
    # Try the model: the answer is the API's own.
    page.fill("#try-text", "a warm and fun film")
    page.click("#try-form button")
    page.wait_for_selector("#try-result tbody tr")
    (answer,) = alice.predict(job.id, ["a warm and fun film"])
    first = page.inner_text("#try-result tbody tr:first-child td:first-child")
    assert first == answer.label
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-job.png"), full_page=True)

    with page.expect_download() as download_info:
        page.click("#download")
    saved = tmp_path / "model.tar.gz"
    download_info.value.save_as(saved)
    assert saved.stat().st_size > 10_000
    print(f"browser test (train, render, download) took {time.monotonic() - started:.1f} s")


def test_dashboard_cancel_button_and_job_list(
    page: Any, alice: Client, service: Service, data_dir: Path
) -> None:
    job = submit_tiny(
        alice, alice.upload(data_dir / "train.csv").id, hyperparameters={"epochs": 60}
    )
    page.goto(f"{service.url}/#/jobs/{job.id}")
    page.wait_for_selector("#cancel:not([disabled])")
    page.click("#cancel")
    page.wait_for_function(
        "() => ['cancelling', 'cancelled'].includes("
        "document.getElementById('job-status')?.textContent)"
    )
    assert alice.wait(job.id, until=DONE, timeout=60, interval=0.2).status == "cancelled"

    page.goto(service.url + "/#/")
    page.wait_for_selector(f"a[href='#/jobs/{job.id}']")
    assert "cancelled" in page.inner_text("#jobs")
    page.screenshot(path=str(ARTIFACTS / "dashboard-list.png"), full_page=True)


def test_dashboard_upload_form_submits_a_job(
    page: Any, alice: Client, service: Service, data_dir: Path
) -> None:
    page.goto(service.url + "/#/")
    page.set_input_files("#file", str(data_dir / "train.csv"))
    page.wait_for_selector("#submit:not([disabled])")
    page.wait_for_function(
        "() => document.getElementById('data-report')?.textContent.includes('400 rows')"
    )
    assert "tokens median" in page.inner_text("#data-report")
    assert page.input_value("#text-column") == "sentence"
    assert page.input_value("#label-column") == "label"
    page.select_option("#model", "tiny")
    # The API's defaults: "auto", which the worker resolves from the data set.
    assert [page.input_value(f) for f in ("#epochs", "#lr", "#batch")] == ["auto"] * 3
    page.fill("#lr", "fast")
    page.click("#submit")
    page.wait_for_function(
        "() => (document.getElementById('form-error')?.textContent ?? '') !== ''"
    )
    assert page.inner_text("#form-error") == 'Learning rate: a number, or "auto"'
    page.fill("#lr", "0.005")
    page.fill("#max-steps", "30")  # overrides the "auto" epochs
    page.click("#submit")
    page.wait_for_url("**/#/jobs/job_*")
    job_id = page.url.rsplit("/", 1)[1]
    done = alice.wait(job_id, until=DONE, timeout=180, interval=0.2)
    assert done.status == "succeeded" and done.progress.total_steps == 30
    hp = done.hyperparameters
    assert (hp.epochs, hp.batch_size, hp.learning_rate, hp.max_steps) == ("auto", "auto", 0.005, 30)
    # The job page names what "auto" became.
    page.wait_for_function(
        "() => document.getElementById('events')?.textContent.includes('auto hyperparameters')"
    )
    assert "batch_size 16" in page.inner_text("#events")
    shown = page.evaluate(
        "() => Object.fromEntries([...document.querySelectorAll('#hyper tr')]"
        ".map(r => [r.cells[0].textContent, r.cells[1].textContent]))"
    )
    assert (shown["batch_size"], shown["epochs"], shown["max_steps"]) == (
        "auto: 16",
        "auto: 2",
        "30",
    )
    assert shown["learning_rate"] == "0.005"


def test_list_and_charts_refresh_themselves(
    page: Any, alice: Client, service: Service, data_dir: Path
) -> None:
    """No reload: a job submitted elsewhere appears in the open list, and the open job page's
    loss chart grows while the job trains."""
    page.goto(service.url + "/#/")
    page.wait_for_selector("#jobs")
    file_id = alice.upload(data_dir / "train.csv").id
    job = submit_tiny(
        alice, file_id, hyperparameters={"epochs": 6, "batch_size": 4, "log_every_steps": 2}
    )
    page.wait_for_selector(f"a[href='#/jobs/{job.id}']", timeout=20_000)

    page.click(f"a[href='#/jobs/{job.id}']")
    page.wait_for_function(
        "() => document.getElementById('job-status')?.textContent === 'running'", timeout=60_000
    )
    page.wait_for_function(
        "() => (Chart.getChart('loss-chart')?.data.datasets[0]?.data.length ?? 0) > 0",
        timeout=60_000,
    )
    first = page.evaluate("() => Chart.getChart('loss-chart').data.datasets[0].data.length")
    page.wait_for_function(
        f"() => Chart.getChart('loss-chart').data.datasets[0].data.length > {first}",
        timeout=60_000,
    )
    alice.cancel(job.id)
    alice.wait(job.id, until=DONE, timeout=60, interval=0.2)


def test_dashboard_compares_a_sweeps_trials(
    page: Any, alice: Client, service: Service, data_dir: Path
) -> None:
    train = alice.upload(data_dir / "train.csv").id
    validation = alice.upload(data_dir / "validation.csv").id
    job = {
        "model": "tiny",
        "training_file": train,
        "validation_file": validation,
        "text_column": "sentence",
        "hyperparameters": {"epochs": 2, "learning_rate": 0.005},
    }
    sweep = alice.create_sweep(
        job=job, method="grid", search={"batch_size": {"values": [8, 32]}}, metric="accuracy"
    )
    done = alice.wait_sweep(sweep.id, timeout=300, interval=0.5)
    assert done.status == "succeeded" and done.best_trial is not None

    page.goto(f"{service.url}/#/")
    page.wait_for_selector(f"#sweeps a[href='#/sweeps/{sweep.id}']")
    page.goto(f"{service.url}/#/sweeps/{sweep.id}")
    page.wait_for_function(
        "() => document.getElementById('sweep-status')?.textContent === 'succeeded'"
    )
    # One line per trial, each with its two evaluations (one per epoch), in the API's values.
    page.wait_for_function(
        "() => { const sets = Chart.getChart('sweep-chart').data.datasets;"
        " return sets.length === 2 && sets.every(d => d.data.length === 2); }"
    )
    lines = page.evaluate(
        "() => Chart.getChart('sweep-chart').data.datasets.map(d => [d.label, d.data.at(-1).y])"
    )
    assert len(lines) == 2
    for trial in done.trials:
        label, last = next(line for line in lines if line[0].startswith(f"trial {trial.number}:"))
        assert f"batch_size {trial.params['batch_size']}" in label
        assert last == alice.job(trial.job_id).history[-1].metrics["accuracy"]
    assert page.locator("#trials tbody tr").count() == 2
    assert "★" in page.inner_text("#trials")
    page.screenshot(path=str(ARTIFACTS / "dashboard-sweep.png"), full_page=True)
