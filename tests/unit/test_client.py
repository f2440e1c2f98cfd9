"""The client's retry and error rules, against a scripted HTTP server on loopback.

The end-to-end behaviour (every endpoint against the real service) is covered by the
integration tests, which all go through this client."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from finetune import Client, Invalid, NotFound, RateLimited, ServiceUnreachable, Unavailable
from tests.support.harness import free_port

JOB = {
    "id": "job_" + "a" * 32,
    "status": "queued",
    "model": "tiny",
    "training_file": "file_" + "b" * 32,
    "text_column": "text",
    "label_column": "label",
    "hyperparameters": {},
    "created_at": "2026-01-01T00:00:00Z",
}


class Scripted:
    """Answers each request with the next (status, headers, body) of its script."""

    def __init__(self, script: list[tuple[int, dict[str, str], Any]]) -> None:
        self.script = list(script)
        self.requests: list[tuple[str, str, dict[str, str], float]] = []
        scripted = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                scripted.requests.append(
                    (self.command, self.path, dict(self.headers), time.monotonic())
                )
                status, headers, body = scripted.script.pop(0)
                payload = json.dumps(body).encode()
                self.send_response(status)
                for name, value in {"Content-Type": "application/json", **headers}.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST = _answer

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def scripted() -> Iterator[list[Scripted]]:
    made: list[Scripted] = []
    yield made
    for server in made:
        server.server.shutdown()


def serve(made: list[Scripted], *script: tuple[int, dict[str, str], Any]) -> Scripted:
    server = Scripted(list(script))
    made.append(server)
    return server


def error(code: str, message: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "param": param}}


def test_503_and_429_are_retried_honouring_retry_after(scripted: list[Scripted]) -> None:
    server = serve(
        scripted,
        (503, {"Retry-After": "1"}, error("unavailable", "redis down")),
        (429, {"Retry-After": "0"}, error("too_many_jobs", "slow down")),
        (201, {}, JOB),
    )
    client = Client(server.url, "key", retries=3, backoff=0.01)
    job = client.submit(model="tiny", training_file=JOB["training_file"])
    assert job.id == JOB["id"] and job.status == "queued"
    times = [t for *_, t in server.requests]
    assert len(times) == 3
    assert times[1] - times[0] >= 0.95  # waited as Retry-After asked, not the 0.01 s backoff
    assert server.requests[0][2]["Authorization"] == "Bearer key"


def test_errors_are_typed_with_the_apis_code_message_and_param(scripted: list[Scripted]) -> None:
    server = serve(
        scripted,
        (422, {}, error("invalid_request", "hyperparameters.epochs: too big", "epochs")),
        (404, {}, error("not_found", "no job with id 'x'")),
        (503, {}, error("unavailable", "down")),
        (503, {}, error("unavailable", "still down")),
        (429, {"Retry-After": "0"}, error("too_many_jobs", "limit")),
    )
    client = Client(server.url, "", retries=1, backoff=0.01)
    with pytest.raises(Invalid) as invalid:
        client.submit(model="tiny")
    assert (invalid.value.status, invalid.value.code, invalid.value.param) == (
        422,
        "invalid_request",
        "epochs",
    )
    assert str(invalid.value) == "hyperparameters.epochs: too big (epochs)"
    with pytest.raises(NotFound, match="no job with id"):
        client.job("x")  # 404 is final: not retried
    with pytest.raises(Unavailable, match="still down"):
        client.job("y")  # retried once, then the last answer
    with pytest.raises(RateLimited):
        Client(server.url, "", retries=0).jobs()
    assert len(server.requests) == 5


def test_unreachable_service_is_retried_then_reported() -> None:
    started = time.monotonic()
    client = Client(f"http://127.0.0.1:{free_port()}", "", retries=2, backoff=0.05)
    with pytest.raises(ServiceUnreachable, match="cannot reach"):
        client.jobs()
    assert time.monotonic() - started >= 0.05  # it did wait between attempts
