"""Per-tenant limits: queued jobs (429 at submission), running jobs (enforced at claim)."""

from __future__ import annotations

import signal
import time
from pathlib import Path

from tests.harness import Client, RedisServer, Service, free_port, service_env

KEYS = {"alice": "alice-key-123", "bob": "bob-key-456"}
JOB = {"epochs": 3, "batch_size": 4, "learning_rate": 0.005, "log_every_steps": 5}


def test_queued_and_running_limits(tmp_path: Path, models_dir: Path, data_dir: Path) -> None:
    redis_server = RedisServer(free_port(), tmp_path / "redis").start()
    env = service_env(
        redis_server.url,
        tmp_path / "storage",
        models_dir,
        ",".join(f"{t}:{k}" for t, k in KEYS.items()),
        FINETUNE_MAX_QUEUED_JOBS_PER_TENANT="2",
        FINETUNE_MAX_RUNNING_JOBS_PER_TENANT="1",
    )
    svc = Service(env, free_port(), tmp_path / "logs")
    try:
        svc.start_api()
        alice, bob = Client(svc.url, KEYS["alice"]), Client(svc.url, KEYS["bob"])

        def submit(client: Client) -> tuple[int, dict]:
            file_id = client.upload(data_dir / "train.csv").json()["id"]
            response = client.submit(
                {
                    "model": "tiny",
                    "training_file": file_id,
                    "text_column": "sentence",
                    "label_column": "label",
                    "hyperparameters": JOB,
                }
            )
            return response.status_code, response.json() | dict(response.headers)

        # No worker yet: everything stays queued.
        assert submit(alice)[0] == 201 and submit(alice)[0] == 201
        status, body = submit(alice)
        assert status == 429 and body["error"]["code"] == "too_many_jobs"
        assert int(body["retry-after"]) > 0
        assert submit(bob)[0] == 201  # another tenant is not held back

        svc.start_worker("w1", wait=False)
        svc.start_worker("w2")
        alice_ids = [j["id"] for j in alice.http.get("/v1/jobs").json()["data"]]
        bob_id = bob.http.get("/v1/jobs").json()["data"][0]["id"]
        saw_alice_beside_bob = False
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            alice_states = [alice.job(i)["status"] for i in alice_ids]
            bob_state = bob.job(bob_id)["status"]
            assert alice_states.count("running") <= 1, alice_states  # her limit is one
            saw_alice_beside_bob |= "running" in alice_states and bob_state == "running"
            if all(s == "succeeded" for s in [*alice_states, bob_state]):
                break
            time.sleep(0.2)
        else:
            raise AssertionError(f"jobs did not finish: {alice_states}, {bob_state}")
        assert saw_alice_beside_bob  # the second worker served bob, not alice's second job
        logs = "".join(p.read_text() for p in svc.log_dir.glob("worker-*.log"))
        assert "'deferred'" in logs
    finally:
        svc.stop()
        redis_server.stop(signal.SIGKILL)
