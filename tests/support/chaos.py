"""Bounded chaos on loopback: submit tiny jobs while killing workers (SIGKILL, SIGTERM) and
restarting Redis at random moments; then account for every job the API acknowledged.

Used by the short chaos test and by `python -m bench.chaos` (the ten-minute run).
"""

from __future__ import annotations

import contextlib
import random
import signal
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from app.core.schemas import JobStatus
from app.core.store import Store, connect
from finetune import Client, FinetuneError, NotFound
from tests.support.factories import build_tiny_bert, sentiment_rows, write_csv
from tests.support.harness import RedisServer, Service, free_port, service_env, wait_until
from tests.support.jobs import tiny_job_body

TERMINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


@dataclass
class Report:
    faults: Counter[str] = field(default_factory=Counter)
    faults_on_running_jobs: int = 0  # worker faults whose victim held a running job
    drain_seconds: float | None = None  # from the last fault to the last job terminal
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
            f"faults injected: {sum(self.faults.values())} ({faults}); worker faults that hit "
            f"a running job: {self.faults_on_running_jobs}",
            f"jobs acknowledged {self.acknowledged}, succeeded {self.succeeded}, failed "
            f"{self.failed}, resumed from a checkpoint {self.resumed}, still recoverable "
            f"{self.recoverable}",
            f"duplicated {self.duplicated} (must be 0), lost {self.lost} (must be 0)",
            "drained in "
            + (f"{self.drain_seconds:.1f} s" if self.drain_seconds is not None else "(not drained)")
            + " after the last fault",
            *self.problems[:20],
        ]


def unfinished(client: Client) -> int:
    """Jobs waiting or running (keeps the queue about as long as the workers can serve)."""
    try:
        return sum(
            len(client.jobs(status=s, limit=100).data)
            for s in (JobStatus.queued, JobStatus.running)
        )
    except FinetuneError:
        return 1_000_000  # Redis is restarting: submit nothing this round


def submit(client: Client, body: dict[str, Any], deadline: float) -> str | None:
    """A client that keeps its promise: retry with the same Idempotency-Key until answered."""
    key = str(uuid.uuid4())
    while time.monotonic() < deadline:
        with contextlib.suppress(FinetuneError):
            return client.submit(body, idempotency_key=key).id
        time.sleep(0.5)
    return None


def holds_running_job(store: Store, worker_name: str, job_ids: list[str]) -> bool:
    """Whether the worker (by its name before '@') holds one of these jobs right now."""
    with contextlib.suppress(Exception):  # Redis restarting: count it as a miss
        for job_id in job_ids:
            record = store.get_record(job_id)
            if (
                record is not None
                and record.status == JobStatus.running
                and (record.worker or "").startswith(worker_name + "@")
            ):
                return True
    return False


def run_chaos(
    workdir: Path,
    seconds: float,
    workers: int = 2,
    seed: int = 1,
    drain_seconds: float = 300,
    fault_gap: tuple[float, float] = (5, 15),
) -> Report:
    """Faults (worker SIGKILL, worker SIGTERM, Redis restart) every `fault_gap` seconds (drawn
    uniformly) for `seconds` while jobs keep arriving, then a drain and an account."""
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
    client = Client(service.url, "", retries=0)
    store = Store(connect(redis_server.url))
    job_ids: list[str] = []
    last_fault = time.monotonic()
    try:
        service.start_api()
        names = [f"c{i}" for i in range(workers)]
        pool = [service.start_worker(name, wait=(i == 0)) for i, name in enumerate(names)]
        file_id = client.upload(data).id
        body = tiny_job_body(
            file_id,
            hyperparameters={
                "epochs": 3,
                "batch_size": 4,
                "checkpoint_every_steps": 10,
                "log_every_steps": 5,
            },
        )
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
                    index = rng.randrange(len(pool))
                    victim, victim_name = pool.pop(index), names.pop(index)
                    if holds_running_job(store, victim_name, job_ids):
                        report.faults_on_running_jobs += 1
                    sig = signal.SIGKILL if "KILL" in fault else signal.SIGTERM
                    service.stop_worker(victim, sig, timeout=90)
                    counter += 1
                    names.append(f"r{counter}")
                    pool.append(service.start_worker(names[-1], wait=False))
                last_fault = time.monotonic()
                next_fault = time.monotonic() + rng.uniform(*fault_gap)
            time.sleep(rng.uniform(0.5, 2.0))
        report.acknowledged = len(job_ids)

        def all_terminal() -> bool:
            return all(client.job(j).status in TERMINAL for j in job_ids)

        with contextlib.suppress(TimeoutError):
            wait_until(all_terminal, drain_seconds, "every job to finish", interval=1)
            report.drain_seconds = time.monotonic() - last_fault
        account(client, job_ids, Path(env["FINETUNE_STORAGE_DIR"]), report)
    finally:
        service.stop()
        redis_server.stop(signal.SIGKILL)
    return report


def account(client: Client, job_ids: list[str], storage: Path, report: Report) -> None:
    """Every acknowledged job: still known, finished at most once, with its artifact.

    "Finished twice" shows as a second terminal status event (every terminal transition writes
    one). Counting artifacts would prove nothing: the name is fixed, a second run overwrites."""
    for job_id in job_ids:
        try:
            job = client.job(job_id)
        except NotFound:
            report.lost += 1
            report.problems.append(f"{job_id}: acknowledged but gone")
            continue
        events = client.events(job_id)
        terminal_events = [e for e in events if e.data.get("status") in TERMINAL]
        if any(e.data.get("resumed") for e in events):
            report.resumed += 1
        if len(terminal_events) > 1:
            report.duplicated += 1
            report.problems.append(f"{job_id}: {len(terminal_events)} terminal events")
        artifact = storage / "jobs" / job_id / "model.tar.gz"
        if job.status == JobStatus.succeeded:
            report.succeeded += 1
            if not artifact.is_file():
                report.problems.append(f"{job_id}: succeeded without its artifact")
                report.lost += 1
        elif job.status == JobStatus.failed:
            report.failed += 1
            report.problems.append(f"{job_id}: failed: {job.error}")
        elif job.status in (JobStatus.queued, JobStatus.running, JobStatus.cancelling):
            report.recoverable += 1  # still in the store and the queue: a worker will take it
