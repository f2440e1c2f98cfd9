"""Real processes for tests and benchmarks: redis-server, the API (uvicorn), Celery workers.

Everything listens on loopback, on free ports, and is stopped by the caller (or at exit).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from finetune.processes import api_command, worker_command

ROOT = Path(__file__).resolve().parents[2]


def exit_cleanly_on_sigterm() -> None:
    """Scripts that start services: turn SIGTERM (timeout, CI) into a normal exit so their
    `finally` blocks stop the processes they started instead of leaving orphans."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll with a deadline; never an unbounded loop."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the thing is not up yet
            last_error = exc
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what} ({last_error})")


@dataclass
class RedisServer:
    port: int
    data_dir: Path
    process: subprocess.Popen[bytes] | None = None
    appendfsync: str = "always"  # as docker-compose.yml: an answer is on disk (see README)

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes",
                "--appendfsync",
                self.appendfsync,
                "--dir",
                str(self.data_dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        import redis

        wait_until(lambda: redis.Redis(port=self.port).ping(), 10, "redis-server")
        return self

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(sig)
            self.process.wait(timeout=10)


@dataclass
class Service:
    """An API process and any number of worker processes sharing one Redis and storage root."""

    env: dict[str, str]
    port: int
    log_dir: Path
    api: subprocess.Popen[bytes] | None = None
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)
    predictors: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _spawn(self, args: list[str], log_name: str) -> subprocess.Popen[bytes]:
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = (self.log_dir / log_name).open("ab")
        return subprocess.Popen(
            args,
            cwd=ROOT,
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_api(self) -> None:
        self.api = self._spawn(
            api_command("127.0.0.1", self.port),
            "api.log",
        )
        wait_until(
            lambda: httpx.get(self.url + "/healthz", timeout=2).status_code < 600, 30, "the API"
        )

    def start_worker(self, name: str | None = None, wait: bool = True) -> subprocess.Popen[bytes]:
        name = name or f"w{len(self.workers) + 1}-{os.getpid()}"
        process = self._spawn(
            worker_command(name, self.env.get("FINETUNE_QUEUE_NAME", "finetune")),
            f"worker-{name}.log",
        )
        self.workers.append(process)
        if wait:
            # This worker's own heartbeat: another live worker must not satisfy the wait.
            wait_until(
                lambda: any(n.startswith(name + "@") for n in self.worker_names()),
                90,
                f"worker {name}'s heartbeat",
            )
        return process

    def start_predictor(self, name: str | None = None) -> subprocess.Popen[bytes]:
        """A prediction worker, once its heartbeat says it is up."""
        name = name or f"p{len(self.predictors) + 1}-{os.getpid()}"
        queue = self.env.get("FINETUNE_PREDICTION_QUEUE_NAME", "finetune-predictions")
        process = self._spawn(
            worker_command(name, queue, predictions=True), f"predictor-{name}.log"
        )
        self.predictors.append(process)
        from app.core.store import Store, connect

        store = Store(connect(self.env["FINETUNE_REDIS_URL"]))
        wait_until(
            lambda: any(n.startswith(name + "@") for n in store.live_workers("predictor")),
            90,
            f"predictor {name}'s heartbeat",
        )
        return process

    def worker_names(self) -> list[str]:
        from app.core.store import Store, connect

        return Store(connect(self.env["FINETUNE_REDIS_URL"])).live_workers()

    def worker_count(self) -> int:
        return int(httpx.get(self.url + "/healthz", timeout=2).json().get("workers") or 0)

    def stop_worker(
        self, process: subprocess.Popen[bytes], sig: int = signal.SIGTERM, timeout: float = 60
    ) -> None:
        if process.poll() is None:
            if sig == signal.SIGKILL:
                os.killpg(process.pid, signal.SIGKILL)  # the pool child too, as on a lost node
            else:
                process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    def stop(self) -> None:
        for process in self.workers + self.predictors:
            self.stop_worker(process, signal.SIGKILL)
        if self.api and self.api.poll() is None:
            self.api.terminate()
            self.api.wait(timeout=10)


def service_env(
    redis_url: str, storage: Path, models: Path, api_keys: str = "", **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FINETUNE_")}
    env.update(
        FINETUNE_REDIS_URL=redis_url,
        FINETUNE_STORAGE_DIR=str(storage),
        FINETUNE_MODELS_DIR=str(models),
        FINETUNE_API_KEYS=api_keys,
        FINETUNE_LEASE_SECONDS="6",
        FINETUNE_REAPER_INTERVAL_SECONDS="1",
        PYTHONPATH=str(ROOT),
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def running_service(
    workdir: Path, models: Path, api_keys: str = "", **extra: str
) -> Iterator[tuple[RedisServer, Service]]:
    """A Redis and an API of their own (workers are started by the caller), stopped after."""
    redis_server = RedisServer(free_port(), workdir / "redis").start()
    service = Service(
        service_env(redis_server.url, workdir / "storage", models, api_keys, **extra),
        free_port(),
        workdir / "logs",
    )
    try:
        service.start_api()
        yield redis_server, service
    finally:
        service.stop()
        redis_server.stop(signal.SIGKILL)
