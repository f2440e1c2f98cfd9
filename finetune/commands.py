"""`finetune` commands that talk to a running service, through `finetune.Client`.

API errors are shown as one line (the API's message and field), never a traceback; every read
command has `--json` for scripts.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)
from rich.table import Table

from app.core.schemas import MAX_PREDICTION_INPUTS, Event, Job, JobStatus, Prediction
from finetune.client import Client, FinetuneError
from finetune.render import print_data_report, print_evaluation

console = Console(stderr=True)
out = Console()


def auto_or(number: Callable[[str], Any]) -> Callable[[str], Any]:
    """Parse an option that takes a number or "auto", so the CLI can say what the API says;
    anything else is a usage error naming the option, before a request is sent."""

    def parse(value: str) -> Any:
        if value == "auto":
            return value
        try:
            return number(value)
        except ValueError:
            raise typer.BadParameter(f"a number or 'auto', not {value!r}") from None

    return parse


AutoCount = Annotated[
    str | None,
    typer.Option(help="a number, or 'auto' (the default)", parser=auto_or(int), metavar="N|auto"),
]
AutoRate = Annotated[
    str | None,
    typer.Option(help="a number, or 'auto' (the default)", parser=auto_or(float), metavar="X|auto"),
]
UrlOption = Annotated[str | None, typer.Option("--url", help="service URL (FINETUNE_URL)")]
KeyOption = Annotated[str | None, typer.Option("--api-key", help="API key (FINETUNE_API_KEY)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the raw JSON")]
EXIT_CODES = {JobStatus.succeeded: 0, JobStatus.failed: 1, JobStatus.cancelled: 3}
# What a job is doing before its first training step, from its latest stage event.
WATCHED_EVENTS = ("stage", "metric", "status", "error", "warning")


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


@contextmanager
def connect(url: str | None, api_key: str | None) -> Iterator[Client]:
    """A client whose errors end the command with one line. Few retries: a person waits."""
    try:
        with Client(url, api_key, retries=3) as client:
            yield client
    except FinetuneError as exc:
        fail(str(exc))


def show(data: BaseModel | list[Any], as_json: bool) -> bool:
    if as_json:
        if isinstance(data, BaseModel):
            out.print_json(data.model_dump_json())
        else:
            out.print_json(json.dumps([d.model_dump(mode="json") for d in data]))
    return as_json


def headline_metric(metrics: dict[str, float]) -> float | None:
    for name in ("matthews_correlation", "f1", "f1_macro", "perplexity", "accuracy", "pearson"):
        if name in metrics:
            return metrics[name]
    return None


def said_of(answer: Prediction) -> str:
    """One prediction as a short line, whatever the task."""
    if answer.value is not None:
        return f"{answer.value:.4f}"
    if answer.labels is not None:
        return ", ".join(f"{label} {answer.scores[label]:.3f}" for label in answer.labels) or "-"
    if answer.entities is not None:
        return "; ".join(f"{e.entity} '{e.text}' {e.score:.3f}" for e in answer.entities) or "-"
    if answer.fills is not None:
        return " | ".join(
            ", ".join(f"{f.token} {f.score:.3f}" for f in fill) for fill in answer.fills
        )
    return f"{answer.label}  {answer.score:.3f}" if answer.score is not None else str(answer.label)


def register(cli: typer.Typer) -> None:
    @cli.command()
    def upload(
        file: Path, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """Upload a CSV, JSON Lines or Parquet dataset."""
        if not file.is_file():
            fail(f"no such file: {file}")
        with connect(url, api_key) as client:
            data = client.upload(file)
        if not show(data, as_json):
            out.print(
                f"{data.id}  {data.filename}  {data.rows} rows  columns: {', '.join(data.columns)}"
            )

    @cli.command()
    def report(
        file: Annotated[str, typer.Argument(help="a local file (uploaded for you) or a file id")],
        text_column: str | None = None,
        label_column: str | None = None,
        text_pair_column: str | None = None,
        model: Annotated[str | None, typer.Option(help="count tokens with its tokenizer")] = None,
        max_length: int | None = None,
        task: Annotated[
            str | None,
            typer.Option(help="read the labels as this task's jobs do (see submit --task)"),
        ] = None,
        label_delimiter: Annotated[
            str | None, typer.Option(help="multi-label CSV: what separates a row's labels")
        ] = None,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """The data report of a dataset; exits 1 when it has problems a job would refuse."""
        with connect(url, api_key) as client:
            data = client.file_report(
                _file_id(client, file),
                text_column=text_column,
                label_column=label_column,
                text_pair_column=text_pair_column,
                model=model,
                max_length=max_length,
                task=task,
                label_delimiter=label_delimiter,
            )
        if not show(data, as_json):
            print_data_report(data, out)
        if data.problems:
            raise typer.Exit(1)

    @cli.command()
    def submit(
        model: Annotated[str, typer.Option(help="local model name or hub id")],
        train: Annotated[str, typer.Option(help="a local file (uploaded for you) or a file id")],
        validation: Annotated[str | None, typer.Option(help="file or file id")] = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        task: Annotated[
            str,
            typer.Option(
                help="sequence_classification, multi_label_classification, "
                "token_classification or masked_lm"
            ),
        ] = "sequence_classification",
        label_delimiter: Annotated[
            str | None, typer.Option(help="multi-label CSV: what separates a row's labels")
        ] = None,
        invalid_tags: Annotated[
            str | None, typer.Option(help="token classification: 'refuse' or 'repair' IOB2")
        ] = None,
        epochs: AutoCount = None,
        max_steps: Annotated[
            int | None, typer.Option(help="train exactly this many steps (overrides epochs)")
        ] = None,
        batch_size: AutoCount = None,
        learning_rate: AutoRate = None,
        lr_scheduler: Annotated[
            str | None, typer.Option(help="linear, cosine, constant or auto (the default)")
        ] = None,
        class_weight: Annotated[
            str | None,
            typer.Option(
                help="balanced, none (every row weighs 1) or auto (the default: balanced when "
                "the classes are imbalanced)"
            ),
        ] = None,
        max_length: int | None = None,
        seed: int | None = None,
        precision: str | None = None,
        watch: Annotated[bool, typer.Option("--watch", help="follow until it ends")] = False,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Submit a fine-tuning job."""
        hyper: dict[str, Any] = {
            k: v
            for k, v in {
                "epochs": epochs,
                "max_steps": max_steps,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "lr_scheduler": lr_scheduler,
                "max_length": max_length,
                "seed": seed,
                "precision": precision,
            }.items()
            if v is not None
        }
        if class_weight is not None:  # "none" is how a shell says JSON's null
            hyper["class_weight"] = None if class_weight.lower() == "none" else class_weight
        with connect(url, api_key) as client:
            body: dict[str, Any] = {
                "model": model,
                "task": task,
                "training_file": _file_id(client, train),
                "text_column": text_column,
                "label_column": label_column,
                "hyperparameters": hyper,
            }
            if label_delimiter is not None:
                body["label_delimiter"] = label_delimiter
            if invalid_tags is not None:
                body["invalid_tags"] = invalid_tags
            if validation:
                body["validation_file"] = _file_id(client, validation)
            if text_pair_column:
                body["text_pair_column"] = text_pair_column
            job = client.submit(body)
            if not show(job, as_json):
                out.print(f"{job.id}  {job.status}")
            if watch:
                raise typer.Exit(_watch(client, job.id))

    @cli.command("list")
    def list_jobs(
        status: JobStatus | None = None,
        limit: int = 20,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Jobs, newest first."""
        with connect(url, api_key) as client:
            page = client.jobs(status=status, limit=limit)
        if show(page, as_json):
            return
        table = Table("id", "status", "model", "progress", "created", "metric")
        for job in page.data:
            metric = headline_metric(job.metrics)
            table.add_row(
                job.id,
                job.status,
                job.model,
                f"{job.progress.percent:.0f}%",
                job.created_at.isoformat()[:19],
                f"{metric:.4f}" if metric is not None else "",
            )
        out.print(table)

    @cli.command()
    def status(
        job: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """One job: status and progress; once it succeeded, its evaluation report."""
        with connect(url, api_key) as client:
            data = client.job(job)
        if show(data, as_json):
            return
        p = data.progress
        out.print(
            f"{data.id}  {data.status}  {data.model}  epoch {p.epoch}/{p.epochs}  "
            f"step {p.step}/{p.total_steps} ({p.percent:.0f}%)"
        )
        if data.status == JobStatus.succeeded:
            with connect(url, api_key) as client:
                print_evaluation(client.report(job), out)
            return
        if data.metrics:
            out.print("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in data.metrics.items()))
        for warning in data.warnings:
            out.print(f"[yellow]warning:[/yellow] {warning}")
        if data.error:
            out.print(f"[red]error ({data.error.code}):[/red] {data.error.message}")

    @cli.command()
    def watch(job: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
        """Follow a job live; exits 0 succeeded, 1 failed, 3 cancelled."""
        with connect(url, api_key) as client:
            code = _watch(client, job)
        raise typer.Exit(code)

    @cli.command()
    def events(
        job: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """The job's event log."""
        with connect(url, api_key) as client:
            collected = client.events(job)
        if not show(collected, as_json):
            for event in collected:
                out.print(f"{event.time.isoformat()[11:19]}  {event.type:<8} {event.message}")

    @cli.command()
    def cancel(
        job: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """Cancel a queued or running job."""
        with connect(url, api_key) as client:
            data = client.cancel(job)
        if not show(data, as_json):
            out.print(f"{data.id}  {data.status}")

    @cli.command()
    def predict(
        job: str,
        texts: Annotated[list[str] | None, typer.Argument(help="texts to classify")] = None,
        from_file: Annotated[
            Path | None, typer.Option("--from", help="a file of texts, one per line")
        ] = None,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """The job's model on TEXTS (or --from FILE's lines): the label and its probability
        (multi-label: the label set; token classification: the entities; masked LM: the
        likeliest tokens for each mask)."""
        inputs = list(texts or [])
        if from_file is not None:
            lines = from_file.read_text(encoding="utf-8").splitlines()
            inputs += [line for line in lines if line.strip()]
        if not inputs:
            fail("give texts, or --from FILE")
        answers = []
        with connect(url, api_key) as client:
            for start in range(0, len(inputs), MAX_PREDICTION_INPUTS):
                answers += client.predict(job, inputs[start : start + MAX_PREDICTION_INPUTS])
        if as_json:
            out.print_json(json.dumps([a.model_dump() for a in answers]))
            return
        for text, answer in zip(inputs, answers, strict=True):
            cut = "  (truncated)" if answer.truncated else ""
            out.print(f"{said_of(answer)}{cut}\t{text}", highlight=False, markup=False)

    @cli.command()
    def evaluate(
        job: str,
        file: Annotated[str, typer.Argument(help="a labelled file (uploaded for you) or file id")],
        label_column: str | None = None,
        text_column: str | None = None,
        checkpoint: Annotated[
            str | None, typer.Option(help="a checkpoint name from the job's checkpoints")
        ] = None,
        output: Annotated[Path | None, typer.Option(help="also save the predictions here")] = None,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Judge a job's model (or checkpoint) on a labelled file: waits, prints the report."""
        with connect(url, api_key) as client:
            batch = client.evaluate(
                job,
                _file_id(client, file),
                label_column=label_column,
                text_column=text_column,
                checkpoint=checkpoint,
            )
            console.print(f"evaluation {batch.id} queued")
            done = client.wait_batch(batch.id, interval=0.5)
            if done.status != JobStatus.succeeded:
                fail(f"evaluation {done.status}: {done.error.message if done.error else ''}")
            report = client.batch_report(batch.id)
            if output is not None:
                client.download_predictions(batch.id, output)
                console.print(f"predictions in {output}")
        if not show(report, as_json):
            print_evaluation(report, out)

    @cli.command("batch-predict")
    def batch_predict(
        job: str,
        file: Annotated[str, typer.Argument(help="a file (uploaded for you) or file id")],
        output: Annotated[Path, typer.Option(help="where to save the predictions")],
        text_column: str | None = None,
        url: UrlOption = None,
        api_key: KeyOption = None,
    ) -> None:
        """Score a whole file with a job's model as a batch job; waits and saves the rows with
        their predictions."""
        with connect(url, api_key) as client:
            batch = client.batch_predict(job, _file_id(client, file), text_column=text_column)
            console.print(f"batch prediction {batch.id} queued")
            done = client.wait_batch(batch.id, interval=0.5)
            if done.status != JobStatus.succeeded:
                fail(f"batch {done.status}: {done.error.message if done.error else ''}")
            client.download_predictions(batch.id, output)
        out.print(f"{done.rows} rows ({done.rows_failed} failed) in {output}")

    @cli.command()
    def download(
        job: str,
        output: Annotated[Path | None, typer.Option(help="folder (default: ./JOB_ID)")] = None,
        url: UrlOption = None,
        api_key: KeyOption = None,
    ) -> None:
        """Download the trained model and unpack it."""
        columns = (
            TextColumn("downloading"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
        )
        with connect(url, api_key) as client, Progress(*columns, console=console) as bar:
            task = bar.add_task("download", total=None)
            folder = client.download(
                job,
                output or Path(job),
                on_bytes=lambda done, total: bar.update(task, completed=done, total=total),
            )
        out.print(f"model in {folder}")


def _file_id(client: Client, value: str) -> str:
    """A path that exists is uploaded; anything else is taken as a file id."""
    path = Path(value)
    if path.is_file():
        uploaded = client.upload(path)
        console.print(f"uploaded {path.name} as {uploaded.id}")
        return uploaded.id
    return value


def describe(job: Job, stage: str | None) -> str:
    """One line of what the job is doing: its stage until training reports, then numbers."""
    p = job.progress
    if job.status == JobStatus.queued:
        return "waiting for a worker"
    if p.total_steps == 0:
        return stage or "starting"
    metrics = ", ".join(
        f"{k} {v:.3f}"
        for k, v in job.metrics.items()
        if k != "loss" and not k.startswith("baseline_")
    )
    parts = [f"epoch {p.epoch}/{p.epochs} step {p.step}/{p.total_steps}"]
    if p.eta_seconds is not None:
        parts.append(f"eta {p.eta_seconds:.0f} s")
    if p.tokens_per_second:
        parts.append(f"{p.tokens_per_second:,.0f} tok/s")
    if p.loss is not None:
        parts.append(f"loss {p.loss:.4f}")
    if metrics:
        parts.append(metrics)
    return "  ".join(parts)


def _watch(client: Client, job_id: str) -> int:
    columns = (
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% {task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("job", total=100, state="queued", detail="")
        follow = _Follower(client, job_id, bar.console.print)

        def update(job: Job) -> None:
            follow.new_events()
            bar.update(
                task,
                completed=job.progress.percent,
                state=str(job.status),
                detail=describe(job, follow.stage),
            )

        job = client.wait(job_id, on_update=update)
    if job.error:
        console.print(f"[red]{job.error.code}:[/red] {job.error.message}")
    sys.stdout.flush()
    return EXIT_CODES.get(job.status, 1)


class _Follower:
    """Prints a job's new events as they come and remembers its latest stage."""

    def __init__(self, client: Client, job_id: str, say: Callable[[str], None]) -> None:
        self.client, self.job_id, self.say = client, job_id, say
        self.after: str | None = None
        self.stage: str | None = None

    def new_events(self) -> None:
        for event in self.client.iter_events(self.job_id, after=self.after):
            self.after = event.id
            self._show(event)

    def _show(self, event: Event) -> None:
        if event.type == "stage":
            self.stage = event.message
        if event.type in WATCHED_EVENTS:
            self.say(f"[dim]{event.type}[/dim] {event.message}")
