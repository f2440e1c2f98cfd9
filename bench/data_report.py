"""How long the data report of a real file takes, through the HTTP API (the path users take).

Uploads CoLA's training file (8,551 rows) to its own Redis and API (loopback only) and asks for
its report with all-MiniLM-L6-v2's tokenizer: the first call computes it (the one that counts:
an upload is reported once), later calls of the same report are read back from beside the
file. Each of --runs rounds uploads the file again, so every "computed" time is a cold one.

    .venv/bin/python -m bench.data_report [--runs 5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from bench.data import add_data_dir_option, data_set
from finetune import Client
from tests.support.harness import RedisServer, Service, free_port, service_env

TARGET_SECONDS = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    add_data_dir_option(parser)
    args = parser.parse_args()
    cola = data_set(args.data_dir, "cola") / "train.csv"
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        redis_server = RedisServer(free_port(), root / "redis").start()
        service = Service(
            service_env(redis_server.url, root / "storage", root / "models"),
            free_port(),
            root / "logs",
        )
        computed, cached = [], []
        try:
            service.start_api()
            client = Client(service.url, "")
            for _ in range(args.runs):
                file_id = client.upload(cola).id
                for times in (computed, cached):
                    started = time.perf_counter()
                    report = client.file_report(file_id, model="all-MiniLM-L6-v2")
                    times.append(time.perf_counter() - started)
        finally:
            service.stop()
            redis_server.stop()
    assert report.token_lengths is not None
    print(
        f"CoLA train: {report.rows} rows, labels {report.label_counts}, "
        f"{report.duplicate_texts} repeated rows, {report.conflicting_texts} conflicting "
        f"texts, tokens p50 {report.token_lengths.p50} p95 {report.token_lengths.p95} max "
        f"{report.token_lengths.max}"
    )
    print(f"\n| report via HTTP ({args.runs} runs) | median | max | target | ratio to target |")
    print("|---|---|---|---|---|")
    for name, times in (("computed (new upload)", computed), ("read back", cached)):
        median = statistics.median(times)
        print(
            f"| {name} | {median:.3f} s | {max(times):.3f} s | {TARGET_SECONDS:.1f} s | "
            f"{median / TARGET_SECONDS:.2f} |"
        )


if __name__ == "__main__":
    main()
