"""A webhook receiver on loopback for tests (never any other address)."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from tests.support.harness import free_port


def subject_id(body: bytes) -> str:
    """The id of the job (or batch prediction) a delivery is about."""
    event = json.loads(body)
    return str((event.get("job") or event.get("batch_prediction"))["id"])


class Receiver:
    """Answers 500 to the first delivery of each job (to exercise the retry), then 200."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, dict[str, str], bytes]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                job_id = subject_id(body)
                first = not any(subject_id(b) == job_id for _, _, b in receiver.calls)
                status = 500 if first else 200
                receiver.calls.append((status, dict(self.headers), body))
                self.send_response(status)
                self.end_headers()

            def log_message(self, *_: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
