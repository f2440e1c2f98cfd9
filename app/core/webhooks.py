"""Per-job webhooks on terminal states: HMAC-SHA256 signed, retried with backoff, from an
outbox that survives any process.

Every terminal transition of a job with a webhook adds one entry to the outbox (a Redis stream)
in the same transaction as the transition itself (`Store._transition`), whoever made it: the
worker that held the lease, the API cancelling a queued job, the reaper giving up on one. Sender
threads in every worker's main process (never in the recycled pool process) take entries
through a consumer group, deliver them, then acknowledge and delete them; an entry a sender held
when it died is taken over after RECLAIM_AFTER_SECONDS. So each terminal state is announced once;
only a sender dying between the receiver's answer and the acknowledgement can repeat it, with
the same `X-Finetune-Delivery` id, which receivers can use to drop the repeat.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
from typing import Any

import httpx

from app.core.netguard import UnsafeTarget, check_url, parse_allowed
from app.core.settings import Settings, get_settings
from app.core.store import JobRecord, Store
from app.core.store.transitions import webhook_url

log = logging.getLogger("finetune.webhooks")
SIGNATURE_HEADER = "X-Finetune-Signature"
DELIVERY_HEADER = "X-Finetune-Delivery"
DELAYS_SECONDS = (1.0, 2.0, 4.0, 8.0, 16.0)
TIMEOUT_SECONDS = 10.0
# Longer than one delivery can take (all attempts time out: 6 x 10 s + 31 s of waits).
RECLAIM_AFTER_SECONDS = 120.0


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def payload(record: JobRecord) -> dict[str, Any]:
    kind = "job" if record.kind == "fine_tune" else "batch_prediction"
    if record.request is not None:
        model = record.request.model
    else:
        model = record.batch_request.job_id if record.batch_request else ""
    return {
        "type": f"{kind}.{record.status.value}",
        kind: {
            "id": record.id,
            "status": record.status.value,
            "model": model,
            "metrics": record.metrics,
            "error": record.error.model_dump() if record.error else None,
            "finished_at": record.finished_at.isoformat() if record.finished_at else None,
        },
        "sent_at": time.time(),
    }


def deliver(
    url: str,
    body: dict[str, Any],
    secret: str,
    delivery_id: str,
    delays: tuple[float, ...] = DELAYS_SECONDS,
) -> bool:
    """POST until a 2xx answer (4xx other than 408/429 ends it: retrying will not help)."""
    raw = json.dumps(body, sort_keys=True).encode()
    headers = {
        "Content-Type": "application/json",
        "X-Finetune-Event": body["type"],
        DELIVERY_HEADER: delivery_id,
    }
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
            response = httpx.post(url, content=raw, headers=headers, timeout=TIMEOUT_SECONDS)
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


def send_once(store: Store, settings: Settings, sender: str, block_ms: int = 1000) -> bool:
    """Take one outbox entry (if any within `block_ms`), deliver it, remove it. Returns whether
    there was one."""
    taken = store.outbox_take(sender, block_ms, int(RECLAIM_AFTER_SECONDS * 1000))
    if taken is None:
        return False
    entry_id, job_id, _status = taken
    record = store.get_record(job_id)
    url = webhook_url(record) if record is not None else None
    if record is not None and url:
        delivered = deliver(url, payload(record), settings.webhook_secret, f"{job_id}:{entry_id}")
        log.info("webhook %s", "delivered" if delivered else "given up", extra={"job_id": job_id})
    store.outbox_done(entry_id)
    return True


def send_forever(store: Store, settings: Settings, sender: str) -> None:
    """A sender thread's loop (worker main process); rides out Redis outages."""
    while True:
        try:
            send_once(store, settings, sender)
        except Exception:
            log.exception("webhook sender pass failed")
            time.sleep(1.0)
