"""`finetune` commands that talk to a running service over HTTP.

API errors are shown as one line (the API's message and field), never a traceback; every read
command has `--json` for scripts.
"""

from __future__ import annotations

import json
import sys
import tarfile
import time
from pathlib import Path
from typing import Annotated, Any, NoReturn

import httpx
import typer
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

from app.settings import get_settings

console = Console(stderr=True)
out = Console()

UrlOption = Annotated[str | None, typer.Option("--url", help="service URL (FINETUNE_URL)")]
KeyOption = Annotated[str | None, typer.Option("--api-key", help="API key (FINETUNE_API_KEY)")]
JsonOption = Annotated[bool, typer.Option("--json", help="print the raw JSON")]
TERMINAL = {"succeeded", "failed", "cancelled"}
EXIT_CODES = {"succeeded": 0, "failed": 1, "cancelled": 3}


def fail(message: str) -> NoReturn:
    console.print(f"[red]error:[/red] {message}")
    raise typer.Exit(1)


class Api:
    def __init__(self, url: str | None, key: str | None) -> None:
        settings = get_settings()
        self.base = (url or settings.url).rstrip("/")
        key = key or settings.api_key
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=self.base, headers=headers, timeout=60)

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            fail(f"cannot reach {self.base}: {exc}")
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
                where = f" ({error['param']})" if error.get("param") else ""
                fail(f"{error['message']}{where}")
            except (ValueError, KeyError, TypeError):
                fail(f"HTTP {response.status_code}: {response.text[:200]}")
        return response.json()


def show(data: Any, as_json: bool) -> bool:
    if as_json:
        out.print_json(json.dumps(data, default=str))
    return as_json


def register(cli: typer.Typer) -> None:
    @cli.command()
    def upload(
        file: Path, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """Upload a CSV, JSON Lines or Parquet dataset."""
        data = _upload(Api(url, api_key), file)
        if not show(data, as_json):
            out.print(
                f"{data['id']}  {data['filename']}  {data['rows']} rows  "
                f"columns: {', '.join(data['columns'])}"
            )

    @cli.command()
    def submit(
        model: Annotated[str, typer.Option(help="local model name or hub id")],
        train: Annotated[str, typer.Option(help="a local file (uploaded for you) or a file id")],
        validation: Annotated[str | None, typer.Option(help="file or file id")] = None,
        text_column: str = "text",
        text_pair_column: str | None = None,
        label_column: str = "label",
        epochs: int | None = None,
        batch_size: int | None = None,
        learning_rate: float | None = None,
        max_length: int | None = None,
        seed: int | None = None,
        precision: str | None = None,
        watch: Annotated[bool, typer.Option("--watch", help="follow until it ends")] = False,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Submit a fine-tuning job."""
        api = Api(url, api_key)
        hyper = {
            k: v
            for k, v in {
                "epochs": epochs,
                "batch_size": batch_size,
                "learning_rate": learning_rate,
                "max_length": max_length,
                "seed": seed,
                "precision": precision,
            }.items()
            if v is not None
        }
        body: dict[str, Any] = {
            "model": model,
            "training_file": _file_id(api, train),
            "text_column": text_column,
            "label_column": label_column,
            "hyperparameters": hyper,
        }
        if validation:
            body["validation_file"] = _file_id(api, validation)
        if text_pair_column:
            body["text_pair_column"] = text_pair_column
        job = api.call("POST", "/v1/jobs", json=body)
        if not show(job, as_json):
            out.print(f"{job['id']}  {job['status']}")
        if watch:
            raise typer.Exit(_watch(api, job["id"]))

    @cli.command("list")
    def list_jobs(
        status: str | None = None,
        limit: int = 20,
        url: UrlOption = None,
        api_key: KeyOption = None,
        as_json: JsonOption = False,
    ) -> None:
        """Jobs, newest first."""
        params: dict[str, Any] = {"limit": limit, **({"status": status} if status else {})}
        data = Api(url, api_key).call("GET", "/v1/jobs", params=params)
        if show(data, as_json):
            return
        table = Table("id", "status", "model", "progress", "created", "metric")
        for job in data["data"]:
            metric = job["metrics"].get("matthews_correlation", job["metrics"].get("mse"))
            table.add_row(
                job["id"],
                job["status"],
                job["model"],
                f"{job['progress']['percent']:.0f}%",
                job["created_at"][:19],
                f"{metric:.4f}" if metric is not None else "",
            )
        out.print(table)

    @cli.command()
    def status(
        job: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """One job: status, progress, metrics."""
        data = Api(url, api_key).call("GET", f"/v1/jobs/{job}")
        if show(data, as_json):
            return
        p = data["progress"]
        out.print(
            f"{data['id']}  {data['status']}  {data['model']}  epoch "
            f"{p['epoch']}/{p['epochs']}  step {p['step']}/{p['total_steps']} "
            f"({p['percent']:.0f}%)"
        )
        if data["metrics"]:
            out.print("metrics: " + ", ".join(f"{k} {v:.4f}" for k, v in data["metrics"].items()))
        if data["error"]:
            out.print(f"[red]error ({data['error']['code']}):[/red] {data['error']['message']}")

    @cli.command()
    def watch(job: str, url: UrlOption = None, api_key: KeyOption = None) -> None:
        """Follow a job live; exits 0 succeeded, 1 failed, 3 cancelled."""
        raise typer.Exit(_watch(Api(url, api_key), job))

    @cli.command()
    def events(
        job: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """The job's event log."""
        api = Api(url, api_key)
        collected: list[dict[str, Any]] = []
        after = None
        while True:
            page = api.call(
                "GET",
                f"/v1/jobs/{job}/events",
                params={"limit": 1000, **({"after": after} if after else {})},
            )
            collected += page["data"]
            if not page["has_more"]:
                break
            after = page["data"][-1]["id"]
        if not show(collected, as_json):
            for event in collected:
                out.print(f"{event['time'][11:19]}  {event['type']:<8} {event['message']}")

    @cli.command()
    def cancel(
        job: str, url: UrlOption = None, api_key: KeyOption = None, as_json: JsonOption = False
    ) -> None:
        """Cancel a queued or running job."""
        data = Api(url, api_key).call("POST", f"/v1/jobs/{job}/cancel")
        if not show(data, as_json):
            out.print(f"{data['id']}  {data['status']}")

    @cli.command()
    def download(
        job: str,
        output: Annotated[Path | None, typer.Option(help="folder (default: ./JOB_ID)")] = None,
        url: UrlOption = None,
        api_key: KeyOption = None,
    ) -> None:
        """Download the trained model and unpack it."""
        api = Api(url, api_key)
        data = api.call("GET", f"/v1/jobs/{job}")
        if not data["artifacts"]:
            fail(f"job {job} has no model to download (status {data['status']})")
        target = output or Path(job)
        target.mkdir(parents=True, exist_ok=True)
        archive = target / "model.tar.gz"
        with api.http.stream("GET", data["artifacts"]["model"]) as response:
            if response.status_code != 200:
                fail(f"download failed: HTTP {response.status_code}")
            total = int(response.headers.get("content-length", 0)) or None
            columns = (
                TextColumn("downloading"),
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
            )
            with Progress(*columns, console=console) as bar, archive.open("wb") as handle:
                task = bar.add_task("download", total=total)
                for chunk in response.iter_bytes(1 << 20):
                    handle.write(chunk)
                    bar.update(task, advance=len(chunk))
        with tarfile.open(archive) as tar:
            tar.extractall(target, filter="data")
        archive.unlink()
        out.print(f"model in {target / 'model'}")


def _upload(api: Api, file: Path) -> dict[str, Any]:
    if not file.is_file():
        fail(f"no such file: {file}")
    with file.open("rb") as handle:
        return api.call("POST", "/v1/files", files={"file": (file.name, handle)})


def _file_id(api: Api, value: str) -> str:
    """A path that exists is uploaded; anything else is taken as a file id."""
    path = Path(value)
    if path.is_file():
        uploaded = _upload(api, path)
        console.print(f"uploaded {path.name} as {uploaded['id']}")
        return uploaded["id"]
    return value


def _watch(api: Api, job_id: str) -> int:
    seen_events: str | None = None
    columns = (
        TextColumn("{task.fields[state]}"),
        BarColumn(),
        TextColumn("{task.percentage:>3.0f}% {task.fields[detail]}"),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        task = bar.add_task("job", total=100, state="queued", detail="")
        while True:
            job = api.call("GET", f"/v1/jobs/{job_id}")
            params: dict[str, Any] = {
                "limit": 200,
                **({"after": seen_events} if seen_events else {}),
            }
            page = api.call("GET", f"/v1/jobs/{job_id}/events", params=params)
            for event in page["data"]:
                if event["type"] in ("stage", "metric", "status", "error"):
                    bar.console.print(f"[dim]{event['type']}[/dim] {event['message']}")
                seen_events = event["id"]
            p = job["progress"]
            metrics = ", ".join(f"{k} {v:.3f}" for k, v in job["metrics"].items() if k != "loss")
            detail = (
                f"epoch {p['epoch']}/{p['epochs']} step {p['step']}/{p['total_steps']}"
                f"  eta {p['eta_seconds'] or '-'} s  {p['tokens_per_second'] or 0:.0f} "
                f"tok/s  loss {p['loss'] if p['loss'] is not None else '-'}  {metrics}"
            )
            bar.update(task, completed=p["percent"], state=job["status"], detail=detail)
            if job["status"] in TERMINAL:
                break
            time.sleep(1)
    if job["error"]:
        console.print(f"[red]{job['error']['code']}:[/red] {job['error']['message']}")
    sys.stdout.flush()
    return EXIT_CODES.get(job["status"], 1)
