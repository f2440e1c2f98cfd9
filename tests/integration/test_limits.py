"""Per-tenant limits: queued jobs (429 at submission), running jobs (enforced at claim)."""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.schemas import Job, JobStatus
from finetune import Client, Invalid, RateLimited
from tests.support.harness import Service, running_service, wait_until
from tests.support.jobs import upload_and_submit

KEYS = {"alice": "alice-key-123", "bob": "bob-key-456"}
JOB = {"epochs": 3, "batch_size": 4, "learning_rate": 0.005, "log_every_steps": 5}
DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}


def overlap(a: Job, b: Job) -> bool:
    """Whether two finished jobs were running at the same time (from their recorded times)."""
    assert a.started_at and a.finished_at and b.started_at and b.finished_at
    return a.started_at < b.finished_at and b.started_at < a.finished_at


def test_queued_and_running_limits(tmp_path: Path, models_dir: Path, data_dir: Path) -> None:
    with running_service(
        tmp_path,
        models_dir,
        ",".join(f"{t}:{k}" for t, k in KEYS.items()),
        FINETUNE_MAX_QUEUED_JOBS_PER_TENANT="2",
        FINETUNE_MAX_RUNNING_JOBS_PER_TENANT="1",
    ) as (_, svc):
        # No retries: the 429 is what this test looks at.
        alice = Client(svc.url, KEYS["alice"], retries=0)
        bob = Client(svc.url, KEYS["bob"], retries=0)
        train = data_dir / "train.csv"

        # No worker yet: everything stays queued.
        alice_jobs = [upload_and_submit(alice, train, hyperparameters=JOB) for _ in range(2)]
        with pytest.raises(RateLimited) as refused:
            upload_and_submit(alice, train, hyperparameters=JOB)
        assert refused.value.code == "too_many_jobs"
        assert int(refused.value.headers["retry-after"]) > 0
        bob_job = upload_and_submit(bob, train, hyperparameters=JOB)  # not held back by alice

        # Both workers come up together, so the second takes alice's second job while her
        # first runs (and defers it), instead of after it has finished.
        svc.start_worker("w1", wait=False)
        svc.start_worker("w2", wait=False)
        wait_until(lambda: len(svc.worker_names()) >= 2, 90, "both workers")
        alice_done = [alice.wait(j.id, until=DONE, timeout=240, interval=0.2) for j in alice_jobs]
        bob_done = bob.wait(bob_job.id, until=DONE, timeout=240, interval=0.2)
        assert [j.status for j in [*alice_done, bob_done]] == ["succeeded"] * 3
        # Her limit is one: her two jobs never ran at the same time, although two workers were
        # free; the second worker served bob meanwhile instead.
        assert not overlap(*alice_done), [(j.started_at, j.finished_at) for j in alice_done]
        assert any(overlap(bob_done, j) for j in alice_done)
        # Whether a worker met her second job while the first ran (and deferred it) depends on
        # which worker took which message: the deferral itself is tested directly in
        # test_lifecycle (run_attempt at the limit, and its failed send rung again).


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def send_raw(port: int, head: bytes, chunks: Iterator[bytes], budget: float = 30) -> bytes:
    """Send a request by hand (headers, then body chunks until the server answers or closes),
    and return the start of its answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=budget) as sock:
        sock.sendall(head)
        for chunk in chunks:
            if select.select([sock], [], [], 0)[0]:
                break  # the server has answered (or closed)
            try:
                sock.sendall(chunk)
            except OSError:  # closed by the server after answering
                break
        answer = b""
        while not _complete(answer):  # the body may come in a later segment than the head
            try:
                data = sock.recv(65536)
            except OSError:
                break
            if not data:
                break
            answer += data
        return answer


def _complete(answer: bytes) -> bool:
    """The head has arrived, and as much body as its Content-Length announces."""
    head, found, body = answer.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return len(body) >= int(value.strip())
    return True


def test_huge_bodies_are_refused_before_reading_or_authentication(
    service: Service,
) -> None:
    """1 GB announced, and an endless chunked body: 413 at once, without a key, and the API
    does not grow (measured on its process)."""
    assert service.api is not None
    before = rss_kb(service.api.pid)
    port = int(service.url.rsplit(":", 1)[1])
    head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Content-Length: 1073741824\r\n\r\n"
    )
    started = time.monotonic()
    answer = send_raw(port, head, iter([b"{" + b" " * 65535] * 16384))
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"request_too_large" in answer
    assert time.monotonic() - started < 5
    chunked_head = (
        b"POST /v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    piece = b" " * 65536
    chunk = b"%x\r\n" % len(piece) + piece + b"\r\n"
    answer = send_raw(port, chunked_head, iter([chunk] * 16384))  # up to 1 GB
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    grown_mb = (rss_kb(service.api.pid) - before) / 1024
    print(f"API RSS grew {grown_mb:.1f} MB")
    assert grown_mb < 20


def test_a_parquet_bomb_is_refused_and_the_api_stays_small(
    service: Service, alice: Client, tmp_path: Path
) -> None:
    """Under 2 MB uploaded, 10^8 rows decoded: refused from the file's footer."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = tmp_path / "bomb.parquet"
    chunk = pa.table({"sentence": pa.array(["x"] * 1_000_000), "label": pa.array([1] * 1_000_000)})
    with pq.ParquetWriter(path, chunk.schema, compression="zstd") as writer:
        for _ in range(100):
            writer.write_table(chunk)
    assert service.api is not None
    before = rss_kb(service.api.pid)
    with pytest.raises(Invalid, match=r"100,000,000 rows, more than the limit") as refused:
        alice.upload(path)
    assert refused.value.param == "file"
    grown_mb = (rss_kb(service.api.pid) - before) / 1024
    print(f"API RSS grew {grown_mb:.1f} MB for a {path.stat().st_size / 1e6:.1f} MB bomb")
    assert grown_mb < 30
