"""The `finetune` command: run the service locally, or one job offline without it."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlparse

import typer
from rich.console import Console

from app.core.settings import get_settings
from finetune.commands import register as register_client_commands
from finetune.processes import Supervisor, api_command, redis_answers, worker_command
from finetune.sweep_commands import register as register_sweep_commands

cli = typer.Typer(help="Fine-tune Hugging Face models with TensorFlow/Keras.", no_args_is_help=True)
console = Console(stderr=True)


@cli.callback()
def main_options(
    verbose: Annotated[
        bool,
        typer.Option(
            "--verbose", "-v", help="show TensorFlow's, transformers' and Celery's own output"
        ),
    ] = False,
) -> None:
    """Quiet by default: only this service's own lines (FINETUNE_LOG_LEVEL=DEBUG = --verbose)."""
    if verbose:
        # Before anything reads the settings; processes started from here inherit it.
        os.environ["FINETUNE_LOG_LEVEL"] = "DEBUG"
        get_settings.cache_clear()


@cli.command()
def train(
    spec_file: Annotated[
        Path,
        typer.Argument(
            help="job spec JSON (the POST /v1/jobs body, with file paths instead of file ids)"
        ),
    ],
    output: Annotated[Path, typer.Option("--output", "-o", help="output model folder")],
    checkpoint_dir: Annotated[
        Path | None, typer.Option(help="where checkpoints go (default: OUTPUT/checkpoints)")
    ] = None,
    quiet: Annotated[bool, typer.Option(help="no progress bar")] = False,
) -> None:
    """Run one job in this process and write the trained model folder (resumes if stopped)."""
    from pydantic import ValidationError

    from app.core.schemas import JobSpec

    try:
        spec = JobSpec.model_validate_json(spec_file.read_text())
    except (OSError, ValidationError) as exc:
        console.print(f"[red]invalid spec {spec_file}:[/red] {exc}")
        raise typer.Exit(2) from exc
    spec = _resolve_relative_paths(spec, spec_file.parent)

    from worker.quiet import start_tensorflow  # the Keras 2 switch before TensorFlow loads

    start_tensorflow()
    from worker.errors import JobError, StopRequested
    from worker.pipeline.run import PipelineOptions, run_pipeline
    from worker.progress import ConsoleReporter

    options = PipelineOptions.from_settings(get_settings())
    stop = threading.Event()

    def on_interrupt(*_: Any) -> None:
        if stop.is_set():
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, from the last checkpoint
        stop.set()
        console.print("[yellow]stopping after this step (Ctrl-C again to abort at once)[/yellow]")

    signal.signal(signal.SIGINT, on_interrupt)
    with ConsoleReporter(console, enabled=not quiet, stop=stop) as reporter:
        try:
            metrics = run_pipeline(
                spec, output, checkpoint_dir or output / "checkpoints", reporter, options
            )
        except JobError as exc:
            console.print(f"[red]failed ({exc.code}):[/red] {exc.message}")
            raise typer.Exit(1) from exc
        except StopRequested as exc:
            console.print(f"[yellow]{exc}[/yellow]; run the same command again to resume")
            raise typer.Exit(130) from exc
    print(json.dumps({"output": str(output), **metrics}, indent=2))


def _resolve_relative_paths(spec: Any, base: Path) -> Any:
    updates = {}
    for field in ("training_file", "validation_file"):
        value = getattr(spec, field)
        if isinstance(value, str) and not Path(value).is_absolute() and not Path(value).exists():
            candidate = base / value
            if candidate.exists():
                updates[field] = str(candidate)
    return spec.model_copy(update=updates) if updates else spec


@cli.command()
def serve() -> None:
    """The HTTP API (uvicorn) on FINETUNE_HOST:FINETUNE_PORT."""
    settings = get_settings()
    command = api_command(settings.host, settings.port)
    os.execvp(command[0], command)


@cli.command("worker")
def run_worker(
    name: Annotated[str | None, typer.Option(help="unique worker name")] = None,
    predictions: Annotated[
        bool, typer.Option("--predictions", help="serve online predictions instead of training")
    ] = False,
) -> None:
    """One training worker (one per GPU: set CUDA_VISIBLE_DEVICES for each), or with
    --predictions one that answers POST /v1/jobs/{id}/predictions."""
    settings = get_settings()
    queue = settings.prediction_queue_name if predictions else settings.queue_name
    kind = "predictor" if predictions else "worker"
    command = worker_command(
        name or f"{kind}-{os.getpid()}", queue, settings.log_level, predictions=predictions
    )
    os.execvp(command[0], command)


@cli.command()
def up() -> None:
    """Redis (if none answers), the API, one training worker and one prediction worker, in the
    foreground, each restarted if it
    dies; Ctrl-C stops all."""
    settings = get_settings()
    supervisor = Supervisor(lambda line: console.print(f"[yellow]{line}[/yellow]"))
    if not redis_answers(settings.redis_url):
        parsed = urlparse(settings.redis_url)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            console.print(f"[red]Redis at {settings.redis_url} does not answer[/red]")
            raise typer.Exit(1)
        data_dir = settings.storage_dir.parent / "redis"
        data_dir.mkdir(parents=True, exist_ok=True)
        console.print(f"starting redis-server on port {parsed.port or 6379} (data in {data_dir})")
        supervisor.add(
            "redis-server",
            [
                "redis-server",
                "--port",
                str(parsed.port or 6379),
                "--bind",
                "127.0.0.1",
                "--appendonly",
                "yes",
                "--dir",
                str(data_dir.resolve()),
                "--save",
                "",
            ],
        )
        deadline = time.monotonic() + 10
        while not redis_answers(settings.redis_url):
            if time.monotonic() > deadline:
                console.print("[red]redis-server did not start[/red]")
                supervisor.stop()
                raise typer.Exit(1)
            time.sleep(0.1)
    supervisor.add("the API", api_command(settings.host, settings.port))
    supervisor.add("worker-1", worker_command("worker-1", settings.queue_name, settings.log_level))
    supervisor.add(
        "predictor-1",
        worker_command(
            "predictor-1", settings.prediction_queue_name, settings.log_level, predictions=True
        ),
    )
    console.print(f"API on http://{settings.host}:{settings.port} (docs at /docs); Ctrl-C stops")
    stop = threading.Event()
    # Explicit handlers: a shell that starts us in the background leaves SIGINT ignored.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        while not stop.wait(0.5):
            supervisor.check()
    finally:
        supervisor.stop()


register_client_commands(cli)
register_sweep_commands(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()
