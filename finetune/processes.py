"""The command lines of the service's processes, in one place: `finetune up`, `finetune serve`,
`finetune worker`, the test harness and the benchmarks all start them from here."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass


def api_command(host: str, port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "uvicorn",
        "app.api.main:create_app",
        "--factory",
        "--host",
        host,
        "--port",
        str(port),
        "--no-access-log",
    ]


def worker_command(
    name: str, queue: str, log_level: str = "INFO", *, predictions: bool = False
) -> list[str]:
    """One Celery worker process: one job at a time, TensorFlow only in its pool process.

    A prediction worker (`predictions`, consuming the prediction queue) runs its requests in
    the worker process itself (the solo pool): the models it keeps loaded live as long as it
    does, and a request never waits for a pool process."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "worker.celery_app",
        *([] if log_level.upper() == "DEBUG" else ["--quiet"]),  # no banner
        "worker",
        "--loglevel",
        log_level,
        "--concurrency",
        "1",
        "--pool",
        "solo" if predictions else "prefork",
        "-Q",
        queue,
        "--hostname",
        f"{name}@%h",
        "--without-gossip",
        "--without-mingle",
    ]


def redis_answers(url: str) -> bool:
    import redis

    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


class Supervisor:
    """Keeps a few processes running, as `finetune up` does for Redis, the API and a worker.

    A process that exits is started again after a backoff (1, 2, 4, ... up to 60 s; back to 1 s
    once it has run for a minute), and the others keep serving meanwhile: a crashed worker must
    not take the API down with it.
    """

    MAX_BACKOFF_SECONDS = 60.0
    HEALTHY_AFTER_SECONDS = 60.0

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say = say
        self.entries: list[_Entry] = []

    def add(self, name: str, command: list[str]) -> subprocess.Popen[bytes]:
        entry = _Entry(name, command)
        entry.start()
        self.entries.append(entry)
        assert entry.process is not None
        return entry.process

    def check(self) -> None:
        """Restart what has exited and is due; call this every fraction of a second."""
        now = time.monotonic()
        for entry in self.entries:
            process = entry.process
            if process is not None and process.poll() is not None:
                ran = now - entry.started_at
                entry.backoff = (
                    1.0
                    if ran > self.HEALTHY_AFTER_SECONDS
                    else min(entry.backoff * 2, self.MAX_BACKOFF_SECONDS)
                )
                entry.due = now + entry.backoff
                entry.process = None
                self.say(
                    f"{entry.name} exited with code {process.returncode}; restarting it in "
                    f"{entry.backoff:.0f} s"
                )
            elif process is None and now >= entry.due:
                entry.start()
                entry.restarts += 1

    def stop(self, timeout: float = 60) -> None:
        """SIGTERM to all (the last started first), then wait; SIGKILL what outlives `timeout`."""
        running = [e.process for e in reversed(self.entries) if e.process is not None]
        for process in running:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in running:
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()


@dataclass
class _Entry:
    name: str
    command: list[str]
    process: subprocess.Popen[bytes] | None = None
    started_at: float = 0.0
    backoff: float = 0.5  # doubled before the first restart: 1 s
    due: float = 0.0
    restarts: int = 0

    def start(self) -> None:
        self.process = subprocess.Popen(self.command)
        self.started_at = time.monotonic()
