"""A progress bar reporter for `finetune train` (no service, no Redis)."""

from __future__ import annotations

import threading
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from app.core.schemas import Evaluation
from app.core.schemas import Progress as JobProgress
from worker.reporter import StopSignal


class ConsoleReporter:
    """`stop` set (by the CLI's Ctrl-C handler) stops training at the next step, checkpointed
    at that exact position, so the same command resumes where it stopped."""

    def __init__(
        self, console: Console, enabled: bool = True, stop: threading.Event | None = None
    ) -> None:
        self.console = console
        self.stop = stop or threading.Event()
        self.bar = Progress(
            TextColumn("[bold]epoch {task.fields[epoch]}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("{task.fields[speed]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
        )
        self.task: Any = None

    def __enter__(self) -> ConsoleReporter:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)  # type: ignore[arg-type]

    def event(self, type: str, message: str, **data: Any) -> None:
        self.console.print(f"[dim]{type}[/dim] {message}")
        if "total_steps" in data and self.task is None:
            self.task = self.bar.add_task(
                "train", total=data["total_steps"], epoch="-", loss="-", speed=""
            )
        if data.get("resumed") and self.task is not None:
            self.bar.update(self.task, completed=data.get("step", 0))

    def progress(self, progress: JobProgress) -> None:
        if self.task is None:
            self.task = self.bar.add_task(
                "train", total=progress.total_steps, epoch="-", loss="-", speed=""
            )
        speed = f"{progress.tokens_per_second:,.0f} tok/s" if progress.tokens_per_second else ""
        self.bar.update(
            self.task,
            completed=progress.step,
            total=progress.total_steps,
            epoch=f"{progress.epoch}/{progress.epochs}",
            loss=f"{progress.loss:.4f}" if progress.loss is not None else "-",
            speed=speed,
        )

    def evaluation(self, record: Evaluation) -> None:
        self.console.print(f"[green]validation[/green] step {record.step}: {record.summary()}")

    def stop_requested(self) -> StopSignal:
        return "interrupt" if self.stop.is_set() else None

    def should_prune(self, record: Evaluation) -> bool:
        """`finetune train` runs one job, never a sweep's trial."""
        return False

    def assert_owner(self) -> None:
        """`finetune train` owns its output folder alone."""
