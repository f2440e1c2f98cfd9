"""Per-job webhooks on terminal states: HMAC-SHA256 signed, retried with backoff.

Sent by whoever made the terminal transition (the worker that held the lease, the API for a
cancelled queued job, the reaper for a job given up on), after that transition was written,
so each job's webhook fires once per terminal state.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
import time
from typing import Any

import httpx

from app.core.netguard import UnsafeTarget, check_url, parse_allowed
from app.core.settings import get_settings

log = logging.getLogger("finetune.webhooks")
SIGNATURE_HEADER = "X-Finetune-Signature"
DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0)


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(record: Any) -> dict[str, Any]:
    return {
        "type": f"job.{record.status.value}",
        "job": {
            "id": record.id,
            "status": record.status.value,
            "model": record.request.model,
            "metrics": record.metrics,
            "error": record.error.model_dump() if record.error else None,
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        },
        "sent_at": time.time(),
    }


def deliver(
    url: str, body: dict[str, Any], secret: str, delays: tuple[float, ...] = DELAYS_SECONDS
) -> bool:
    """POST until a 2xx answer (4xx other than 408/429 ends it: retrying will not help)."""
    raw = json.dumps(body, sort_keys=True).encode()
    headers = {"Content-Type": "application/json", "X-Finetune-Event": body["type"]}
    if secret:
        headers[SIGNATURE_HEADER] = sign(secret, raw)
    allow = parse_allowed(get_settings().webhook_allowed_hosts)
    for attempt, delay in enumerate((0.0, *delays), start=1):
        time.sleep(delay)
        try:
            check_url(url, allow)  # again now: the name may resolve elsewhere than at submit
        except UnsafeTarget as exc:
            log.warning("webhook not sent: %s", exc)
            return False
        try:
            response = httpx.post(url, content=raw, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            log.warning("webhook attempt %d failed: %s", attempt, exc)
            continue
        if response.is_success:
            return True
        if 400 <= response.status_code < 500 and response.status_code not in (408, 429):
            log.warning("webhook refused with HTTP %d; not retrying", response.status_code)
            return False
        log.warning("webhook attempt %d answered HTTP %d", attempt, response.status_code)
    return False


def notify(record: Any, secret: str) -> None:
    """Deliver in the background when the job asked for a webhook."""
    url = record.request.webhook_url
    if url and record.status.terminal:
        threading.Thread(
            target=deliver, args=(url, payload(record), secret), name="webhook", daemon=False
        ).start()
