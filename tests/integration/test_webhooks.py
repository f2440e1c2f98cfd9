"""Webhooks on terminal states, delivered to a local HTTP server: signed, retried."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.core.schemas import JobStatus
from app.core.store import Store, connect
from finetune import Client, Invalid
from tests.conftest import WEBHOOK_SECRET
from tests.support.harness import running_service, wait_until
from tests.support.jobs import submit_tiny
from tests.support.webhooks import Receiver


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    hook = Receiver()
    yield hook
    hook.server.shutdown()


def test_webhook_is_signed_retried_and_sent_once(
    alice: Client, data_dir: Path, receiver: Receiver
) -> None:
    file_id = alice.upload(data_dir / "train.csv").id
    job = submit_tiny(alice, file_id, webhook_url=receiver.url, hyperparameters={"epochs": 1})
    alice.wait(job.id, until={JobStatus.succeeded}, timeout=180, interval=0.2)
    wait_until(lambda: any(status == 200 for status, _, _ in receiver.calls), 30, "delivery")
    # Absence needs a window: longer than the next retry delays (1, 2, 4 s) would be.
    time.sleep(5)
    calls = [c for c in receiver.calls if json.loads(c[2])["job"]["id"] == job.id]
    assert [status for status, _, _ in calls] == [500, 200]  # retried once, then never again
    _, headers, body = calls[-1]
    expected = "sha256=" + hmac.new(WEBHOOK_SECRET.encode(), body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(headers["X-Finetune-Signature"], expected)
    assert headers["X-Finetune-Delivery"].startswith(job.id + ":")  # the same id on each try
    assert calls[0][1]["X-Finetune-Delivery"] == headers["X-Finetune-Delivery"]
    event = json.loads(body)
    assert event["type"] == "job.succeeded" and event["job"]["metrics"]["accuracy"] > 0


def test_webhook_for_a_cancelled_queued_job(
    alice: Client, data_dir: Path, receiver: Receiver
) -> None:
    file_id = alice.upload(data_dir / "train.csv").id
    blocker = submit_tiny(alice, file_id, hyperparameters={"epochs": 40})
    queued = submit_tiny(alice, file_id, webhook_url=receiver.url)
    alice.cancel(queued.id)
    alice.cancel(blocker.id)
    wait_until(lambda: any(s == 200 for s, _, _ in receiver.calls), 30, "delivery")
    assert json.loads(receiver.calls[-1][2])["type"] == "job.cancelled"


@pytest.mark.parametrize("target", ["http://[::1]:9/hook", "http://127.0.0.2:9/hook"])
def test_webhooks_to_loopback_are_refused_at_submit(
    alice: Client, data_dir: Path, target: str
) -> None:
    """Only loopback targets are ever submitted here (never another address): the service
    under test allows 127.0.0.1 alone, so each of these must be refused before queueing.
    (Without an allow-list, 127.0.0.1 and localhost are refused too: see test_faults.)"""
    file_id = alice.upload(data_dir / "train.csv").id
    before = {j.id for j in alice.jobs(limit=100).data}
    with pytest.raises(Invalid) as refused:
        submit_tiny(alice, file_id, webhook_url=target)
    assert refused.value.param == "webhook_url"
    assert "not a public address" in refused.value.message
    assert {j.id for j in alice.jobs(limit=100).data} == before


def test_webhook_waits_in_the_outbox_until_a_worker_can_send_it(
    tmp_path: Path, models_dir: Path, data_dir: Path, receiver: Receiver
) -> None:
    """A queued job cancelled while no worker runs: its terminal state is written, and its
    webhook with it, by the API; it is sent (once) when a worker comes up, not lost."""
    with running_service(tmp_path, models_dir, FINETUNE_WEBHOOK_ALLOWED_HOSTS="127.0.0.1") as (
        redis_server,
        svc,
    ):
        client = Client(svc.url, "", retries=2, backoff=0.2)
        job = submit_tiny(
            client, client.upload(data_dir / "train.csv").id, webhook_url=receiver.url
        )
        assert client.cancel(job.id).status == "cancelled"
        assert Store(connect(redis_server.url)).outbox_length() == 1
        time.sleep(1)
        assert receiver.calls == []  # nobody to send it yet
        svc.start_worker("sender")
        wait_until(lambda: any(s == 200 for s, _, _ in receiver.calls), 60, "delivery")
        time.sleep(5)  # longer than the retry delays: nothing more may come
        mine = [c for c in receiver.calls if json.loads(c[2])["job"]["id"] == job.id]
        assert [status for status, _, _ in mine] == [500, 200]
        assert json.loads(mine[-1][2])["type"] == "job.cancelled"
        assert Store(connect(redis_server.url)).outbox_length() == 0


def test_batch_prediction_webhook_and_its_target_check(
    alice: Client, data_dir: Path, receiver: Receiver
) -> None:
    file_id = alice.upload(data_dir / "train.csv").id
    job = alice.wait(
        submit_tiny(alice, file_id, hyperparameters={"epochs": 1}).id, timeout=180, interval=0.2
    )
    scored = alice.upload(data_dir / "validation.csv").id
    with pytest.raises(Invalid) as refused:  # loopback, but not the allowed name
        alice.request(
            "POST",
            "/v1/batch_predictions",
            json={"job_id": job.id, "input_file": scored, "webhook_url": "http://[::1]:9/"},
        )
    assert refused.value.param == "webhook_url"
    response = alice.request(
        "POST",
        "/v1/batch_predictions",
        json={"job_id": job.id, "input_file": scored, "webhook_url": receiver.url},
    )
    batch_id = response.json()["id"]
    assert alice.wait_batch(batch_id, timeout=120, interval=0.2).status == "succeeded"

    def delivered() -> dict[str, object] | None:
        for status, _, body in receiver.calls:
            event = json.loads(body)
            if status == 200 and event.get("batch_prediction", {}).get("id") == batch_id:
                return event
        return None

    event = wait_until(delivered, 30, "the batch's webhook")
    assert event["type"] == "batch_prediction.succeeded"
    assert event["batch_prediction"]["model"] == job.id
