"""`finetune sweep ...`: start, follow, list and cancel sweeps, through `finetune.Client`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.table import Table

from app.core.schemas import Sweep, SweepStatus
from finetune.commands import (
    JsonOption,
    KeyOption,
    UrlOption,
    _file_id,
    connect,
    console,
    fail,
    out,
    show,
)

EXIT_CODES = {SweepStatus.succeeded: 0, SweepStatus.failed: 1, SweepStatus.cancelled: 3}


def print_sweep(sweep: Sweep) -> None:
    """The trials side by side, best first among the finished ones."""
    searched = list(sweep.search)
    out.print(
        f"{sweep.id}  {sweep.status}  {sweep.method} search, {len(sweep.trials)}/"
        f"{sweep.max_trials} trials, {sweep.max_concurrent} at once, "
        f"{sweep.direction} {sweep.metric}"
    )
    table = Table("trial", *searched, sweep.metric, "status", "job")
    best = sweep.best_trial.number if sweep.best_trial else None
    for trial in sweep.trials:
        value = "" if trial.value is None else f"{trial.value:.4f}"
        status = "pruned" if trial.pruned else str(trial.status)
        if trial.error and not trial.pruned:
            status += f": {trial.error.message[:60]}"
        mark = " *" if trial.number == best else ""
        table.add_row(
            f"{trial.number}{mark}",
            *(str(trial.params.get(name, "")) for name in searched),
            value,
            status,
            trial.job_id,
        )
    out.print(table)
    if sweep.best_trial is not None:
        out.print(
            f"best: trial {sweep.best_trial.number}, {sweep.metric} "
            f"{sweep.best_trial.value:.4f}, job {sweep.best_trial.job_id}"
        )
    if sweep.error is not None:
        out.print(f"[red]{sweep.error.message}[/red]", highlight=False)


def register(cli: typer.Typer) -> None:
    sweeps = typer.Typer(help="Hyperparameter sweeps: several trials of one job, compared.")
    cli.add_typer(sweeps, name="sweep")

    @sweeps.command("start")
    def start(
        body: Annotated[
            Path,
            typer.Argument(
                help="the sweep as JSON: {job: {...as submit...}, search: {name: {values: [...]}"
                " or {low, high, log}}, method, max_trials, max_concurrent, metric}; local "
                "files named as job.training_file / validation_file are uploaded for you"
            ),
        ],
        wait: Annotated[bool, typer.Option("--wait", help="follow until it ends")] = False,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Start a sweep."""
        try:
            request: dict[str, Any] = json.loads(body.read_text())
        except (OSError, ValueError) as exc:
            fail(f"{body}: {exc}")
        with connect(url, api_key) as client:
            job = dict(request.get("job") or {})
            for field in ("training_file", "validation_file"):
                if isinstance(job.get(field), str):
                    job[field] = _file_id(client, job[field])
            sweep = client.create_sweep({**request, "job": job})
            if not show(sweep, as_json):
                out.print(f"{sweep.id}  {sweep.status}")
            if wait:
                done = client.wait_sweep(
                    sweep.id,
                    interval=2.0,
                    on_update=lambda s: console.print(
                        f"{sum(t.status.terminal for t in s.trials)}/{s.max_trials} trials "
                        "finished",
                        end="\r",
                    ),
                )
                console.print()
                if not show(done, as_json):
                    print_sweep(done)
                raise typer.Exit(EXIT_CODES.get(done.status, 1))

    @sweeps.command("status")
    def status(
        sweep_id: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """One sweep: its trials side by side and the best."""
        with connect(url, api_key) as client:
            sweep = client.sweep(sweep_id)
        if not show(sweep, as_json):
            print_sweep(sweep)

    @sweeps.command("list")
    def list_sweeps(
        url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """Sweeps, newest first."""
        with connect(url, api_key) as client:
            page = client.sweeps()
        if show(page, as_json):
            return
        table = Table("id", "status", "trials", "metric", "best")
        for sweep in page.data:
            best = sweep.best_trial
            table.add_row(
                sweep.id,
                sweep.status,
                f"{len(sweep.trials)}/{sweep.max_trials}",
                sweep.metric,
                f"{best.value:.4f} ({best.job_id})" if best and best.value is not None else "",
            )
        out.print(table)

    @sweeps.command("cancel")
    def cancel(sweep_id: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
        """No new trials; unfinished trials are cancelled."""
        with connect(url, api_key) as client:
            sweep = client.cancel_sweep(sweep_id)
        out.print(f"{sweep.id}  {sweep.status}")
