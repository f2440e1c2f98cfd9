"""Load on one API process with a worker attached, on loopback only; stops by itself.

1. Status polling: GET /v1/jobs/{id} at a fixed offered rate (open loop: latency counts from
   the moment a request was due, so a slow server cannot hide its queueing), for --seconds.
2. A burst of --burst job submissions at once; then every acknowledged job must be stored and
   queued (none lost). The burst's jobs are cancelled afterwards, so nothing trains for long.

    .venv/bin/python -m bench.load [--rate 1000] [--seconds 15] [--repeat 3] [--burst 500]
        [--appendfsync always|everysec]

Set-up and accounting go through `finetune.Client`; the load itself is raw asynchronous httpx,
since an open-loop generator needs many requests in flight from one process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from app.core.schemas import JobStatus
from finetune import Client, FinetuneError, NotFound
from tests.support.factories import build_tiny_bert, sentiment_rows, write_csv
from tests.support.harness import (
    RedisServer,
    Service,
    exit_cleanly_on_sigterm,
    free_port,
    service_env,
)
from tests.support.jobs import tiny_job_body

DEBUG = False


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def poll(url: str, path: str, rate: float, seconds: float, connections: int) -> dict:
    """Open loop: request i is due at start + i/rate; `connections` keep-alive connections take
    the next due request as soon as they are free. Raw asyncio streams, because a Python HTTP
    client library costs more CPU per request than the server under test."""
    parsed = httpx.URL(url)
    request = (f"GET {path} HTTP/1.1\r\nHost: {parsed.host}\r\n\r\n").encode()
    total = int(rate * seconds)
    latencies: list[float] = []
    slow: list[tuple[float, float]] = []
    errors = 0
    next_index = 0
    start = time.perf_counter() + 0.2

    async def connection() -> None:
        nonlocal next_index, errors
        reader, writer = await asyncio.open_connection(parsed.host, parsed.port)
        try:
            while next_index < total:
                index = next_index
                next_index += 1
                due = start + index / rate
                delay = due - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                writer.write(request)
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                await reader.readexactly(length)
                if not status_line.startswith(b"HTTP/1.1 200"):
                    errors += 1
                latencies.append(time.perf_counter() - due)
                if DEBUG and latencies[-1] > 0.02:
                    slow.append((round(due - start, 3), round(latencies[-1] * 1000, 1)))
        except (OSError, asyncio.IncompleteReadError):
            errors += total - next_index
        finally:
            writer.close()

    await asyncio.gather(*(connection() for _ in range(connections)))
    elapsed = time.perf_counter() - start
    if DEBUG:
        buckets = {}
        for due, _ in slow:
            buckets[int(due)] = buckets.get(int(due), 0) + 1
        print("slow requests per second of the run:", buckets)
    return {
        "requests": len(latencies),
        "elapsed": elapsed,
        "throughput": len(latencies) / elapsed,
        "p50_ms": 1000 * statistics.median(latencies),
        "p99_ms": 1000 * percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
        "errors": errors,
    }


async def burst(url: str, body: dict[str, Any], count: int) -> tuple[list[str], int, float]:
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=60) as client:
        started = time.perf_counter()
        responses = await asyncio.gather(
            *(client.post("/v1/jobs", json=body) for _ in range(count)), return_exceptions=True
        )
        elapsed = time.perf_counter() - started
    ids = [
        r.json()["id"] for r in responses if isinstance(r, httpx.Response) and r.status_code == 201
    ]
    return ids, count - len(ids), elapsed


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=float, default=1000)
    parser.add_argument("--seconds", type=float, default=15)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--burst", type=int, default=500)
    parser.add_argument("--repeat", type=int, default=3, help="polling runs (median reported)")
    parser.add_argument(
        "--appendfsync",
        choices=["always", "everysec"],
        default="always",
        help="Redis' fsync policy: always = an answered write is on disk (the default)",
    )
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        build_tiny_bert(root / "models" / "tiny")
        data = write_csv(root / "train.csv", ["sentence", "label"], sentiment_rows(200))
        redis_server = RedisServer(
            free_port(), root / "redis", appendfsync=args.appendfsync
        ).start()
        env = service_env(
            redis_server.url,
            root / "storage",
            root / "models",
            FINETUNE_MAX_QUEUED_JOBS_PER_TENANT=str(args.burst * 2),
        )
        service = Service(env, free_port(), root / "logs")
        try:
            service.start_api()
            service.start_worker("bench")
            client = Client(service.url, "")
            body = tiny_job_body(client.upload(data).id, hyperparameters={"epochs": 1})
            job = client.submit(body)
            # A finished job with history to poll.
            client.wait(job.id, until={JobStatus.succeeded}, timeout=300, interval=0.2)
            asyncio.run(poll(service.url, f"/v1/jobs/{job.id}", 200, 2, 8))  # warm-up
            print(
                f"status polling, offered {args.rate:.0f} req/s for {args.seconds:.0f} s, "
                f"{args.connections} connections, no training running"
            )
            runs = []
            for run in range(1, args.repeat + 1):
                result = asyncio.run(
                    poll(
                        service.url,
                        f"/v1/jobs/{job.id}",
                        args.rate,
                        args.seconds,
                        args.connections,
                    )
                )
                runs.append(result)
                print(
                    f"  run {run}: throughput {result['throughput']:.0f} req/s  p50 "
                    f"{result['p50_ms']:.2f} ms  p99 {result['p99_ms']:.2f} ms  max "
                    f"{result['max_ms']:.1f} ms  errors {result['errors']} of "
                    f"{result['requests']}"
                )
            print(
                f"  median of {len(runs)}: throughput "
                f"{statistics.median(r['throughput'] for r in runs):.0f} req/s  p50 "
                f"{statistics.median(r['p50_ms'] for r in runs):.2f} ms  p99 "
                f"{statistics.median(r['p99_ms'] for r in runs):.2f} ms  errors "
                f"{sum(r['errors'] for r in runs)}"
            )

            ids, failed, elapsed = asyncio.run(burst(service.url, body, args.burst))
            statuses: dict[str, int] = {}
            for job_id in ids:
                try:
                    status = str(client.job(job_id).status)
                except NotFound:
                    status = "missing"
                statuses[status] = statuses.get(status, 0) + 1
            stored = len(ids) - statuses.get("missing", 0)
            print(
                f"submission burst of {args.burst}: {len(ids)} accepted, {failed} refused or "
                f"failed, in {elapsed:.1f} s ({len(ids) / elapsed:.0f} jobs/s); stored "
                f"{stored}, by status {statuses}; lost {len(ids) - stored}"
            )
            for job_id in ids:
                with contextlib.suppress(FinetuneError):
                    client.cancel(job_id)
        finally:
            service.stop()
            redis_server.stop()


if __name__ == "__main__":
    main()
