"""Bounded chaos on loopback: submit tiny jobs while killing workers (SIGKILL, SIGTERM) and
restarting Redis at random moments; then account for every job the API acknowledged.

    .venv/bin/python bench/chaos.py [--minutes 10] [--workers 2] [--seed 1]

It stops by itself: after --minutes of chaos it lets the survivors drain (bounded), prints the
counts and exits non-zero if any job was duplicated or lost.
"""

from __future__ import annotations

import argparse
import random
import signal
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
import contextlib

from tests.factories import build_tiny_bert, sentiment_rows, write_csv
from tests.harness import (
    Client,
    RedisServer,
    Service,
    exit_cleanly_on_sigterm,
    free_port,
    service_env,
    wait_until,
)

TERMINAL = {"succeeded", "failed", "cancelled"}


@dataclass
class Report:
    faults: Counter[str] = field(default_factory=Counter)
    acknowledged: int = 0
    succeeded: int = 0
    failed: int = 0
    resumed: int = 0
    duplicated: int = 0
    lost: int = 0
    recoverable: int = 0
    problems: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        faults = ", ".join(f"{k} {v}" for k, v in sorted(self.faults.items())) or "none"
        return [
            f"faults injected: {sum(self.faults.values())} ({faults})",
            f"jobs acknowledged {self.acknowledged}, succeeded {self.succeeded}, failed "
            f"{self.failed}, resumed from a checkpoint {self.resumed}, still recoverable "
            f"{self.recoverable}",
            f"duplicated {self.duplicated} (must be 0), lost {self.lost} (must be 0)",
            *self.problems[:20],
        ]


def unfinished(client: Client) -> int:
    """Jobs waiting or running (keeps the queue about as long as the workers can serve)."""
    try:
        return sum(
            len(client.http.get("/v1/jobs", params={"status": s, "limit": 100}).json()["data"])
            for s in ("queued", "running")
        )
    except (httpx.HTTPError, KeyError, ValueError):
        return 1_000_000  # Redis is restarting: submit nothing this round


def submit(client: Client, body: dict, deadline: float) -> str | None:
    """A client that keeps its promise: retry with the same Idempotency-Key until answered."""
    key = str(uuid.uuid4())
    while time.monotonic() < deadline:
        try:
            response = client.submit(body, headers={"Idempotency-Key": key})
            if response.status_code == 201:
                return response.json()["id"]
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return None


def run_chaos(
    workdir: Path, seconds: float, workers: int = 2, seed: int = 1, drain_seconds: float = 300
) -> Report:
    rng = random.Random(seed)
    report = Report()
    build_tiny_bert(workdir / "models" / "tiny")
    data = write_csv(workdir / "train.csv", ["sentence", "label"], sentiment_rows(160, seed=seed))
    redis_server = RedisServer(free_port(), workdir / "redis").start()
    env = service_env(
        redis_server.url,
        workdir / "storage",
        workdir / "models",
        FINETUNE_MAX_ATTEMPTS="50",
        FINETUNE_LEASE_SECONDS="4",
    )
    service = Service(env, free_port(), workdir / "logs")
    client = Client(service.url)
    job_ids: list[str] = []
    try:
        service.start_api()
        pool = [service.start_worker(f"c{i}", wait=(i == 0)) for i in range(workers)]
        file_id = client.upload(data).json()["id"]
        body = {
            "model": "tiny",
            "training_file": file_id,
            "text_column": "sentence",
            "label_column": "label",
            "hyperparameters": {
                "epochs": 3,
                "batch_size": 4,
                "learning_rate": 0.005,
                "checkpoint_every_steps": 10,
                "log_every_steps": 5,
            },
        }
        end = time.monotonic() + seconds
        next_fault = time.monotonic() + rng.uniform(4, 10)
        counter = 0
        deck: list[str] = []
        while time.monotonic() < end:
            if unfinished(client) < 2 * workers:
                job_id = submit(client, body, time.monotonic() + 60)
                if job_id:
                    job_ids.append(job_id)
            if time.monotonic() >= next_fault:
                if not deck:  # every kind of fault in each round, in a random order
                    deck = ["worker SIGKILL", "worker SIGTERM", "redis restart"]
                    rng.shuffle(deck)
                fault = deck.pop()
                report.faults[fault] += 1
                if fault == "redis restart":
                    redis_server.stop(signal.SIGTERM)
                    time.sleep(rng.uniform(0.5, 2.0))
                    redis_server.start()
                else:
                    victim = pool.pop(rng.randrange(len(pool)))
                    sig = signal.SIGKILL if "KILL" in fault else signal.SIGTERM
                    service.stop_worker(victim, sig, timeout=90)
                    counter += 1
                    pool.append(service.start_worker(f"r{counter}", wait=False))
                next_fault = time.monotonic() + rng.uniform(5, 15)
            time.sleep(rng.uniform(0.5, 2.0))
        report.acknowledged = len(job_ids)

        def all_terminal() -> bool:
            return all(client.job(j)["status"] in TERMINAL for j in job_ids)

        with contextlib.suppress(TimeoutError):
            wait_until(all_terminal, drain_seconds, "every job to finish", interval=1)
        account(client, job_ids, Path(env["FINETUNE_STORAGE_DIR"]), report)
    finally:
        service.stop()
        redis_server.stop(signal.SIGKILL)
    return report


def account(client: Client, job_ids: list[str], storage: Path, report: Report) -> None:
    for job_id in job_ids:
        try:
            job = client.job(job_id)
        except httpx.HTTPStatusError:
            report.lost += 1
            report.problems.append(f"{job_id}: acknowledged but gone")
            continue
        events = client.events(job_id)
        terminal_events = [e for e in events if e["data"].get("status") in TERMINAL]
        artifacts = list((storage / "jobs" / job_id).glob("*.tar.gz"))
        if any(e["data"].get("resumed") for e in events):
            report.resumed += 1
        if len(terminal_events) > 1 or len(artifacts) > 1:
            report.duplicated += 1
            report.problems.append(
                f"{job_id}: {len(terminal_events)} terminal events, {len(artifacts)} artifacts"
            )
        if job["status"] == "succeeded":
            report.succeeded += 1
            if len(artifacts) != 1:
                report.problems.append(f"{job_id}: succeeded without its artifact")
                report.lost += 1
        elif job["status"] == "failed":
            report.failed += 1
            report.problems.append(f"{job_id}: failed: {job['error']}")
        elif job["status"] in ("queued", "running", "cancelling"):
            report.recoverable += 1  # still in the store and the queue: a worker will take it


def main() -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        report = run_chaos(Path(tmp), args.minutes * 60, args.workers, args.seed)
    print("\n".join(report.lines()))
    return 1 if report.duplicated or report.lost else 0


if __name__ == "__main__":
    sys.exit(main())
