"""The `finetune` client commands against the running service, as a user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import KEYS
from tests.support.harness import ROOT, Service

FINETUNE = str(Path(sys.executable).parent / "finetune")


def run(service: Service, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**service.env, "FINETUNE_URL": service.url, "FINETUNE_API_KEY": KEYS["alice"]}
    result = subprocess.run(
        [FINETUNE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_submit_watch_inspect_download(service: Service, data_dir: Path, tmp_path: Path) -> None:
    watched = run(
        service,
        "submit",
        "--model",
        "tiny",
        "--train",
        str(data_dir / "train.csv"),
        "--text-column",
        "sentence",
        "--label-column",
        "label",
        "--epochs",
        "2",
        "--learning-rate",
        "0.005",
        "--watch",
    )
    assert "uploaded train.csv as file_" in watched.stderr
    job_id = watched.stdout.split()[0]
    assert job_id.startswith("job_")
    assert "succeeded" in watched.stderr and "validation at step" in watched.stderr

    status = json.loads(run(service, "status", job_id, "--json").stdout)
    assert status["status"] == "succeeded" and status["progress"]["percent"] == 100
    listed = json.loads(run(service, "list", "--json", "--limit", "100").stdout)
    assert job_id in {j["id"] for j in listed["data"]}
    events = run(service, "events", job_id).stdout
    assert "job queued" in events and "job succeeded" in events
    run(service, "download", job_id, "--output", str(tmp_path / "dl"))
    assert (tmp_path / "dl" / "model" / "config.json").is_file()
    assert (tmp_path / "dl" / "model" / "metrics.json").is_file()


def test_errors_are_one_clear_line(service: Service, data_dir: Path) -> None:
    result = run(
        service,
        "submit",
        "--model",
        "no-such-model",
        "--train",
        str(data_dir / "train.csv"),
        "--text-column",
        "sentence",
        check=False,
    )
    assert result.returncode == 1
    assert "error: unknown model 'no-such-model'" in result.stderr and "(model)" in result.stderr
    assert "Traceback" not in result.stderr
    result = run(service, "status", "job_" + "0" * 32, check=False)
    assert result.returncode == 1 and "no job with id" in result.stderr
    result = run(service, "status", "x", "--url", "http://127.0.0.1:9", check=False)
    assert result.returncode == 1 and "cannot reach" in result.stderr


def test_watch_exit_code_follows_the_outcome(service: Service, data_dir: Path) -> None:
    submitted = run(
        service,
        "submit",
        "--model",
        "tiny",
        "--train",
        str(data_dir / "train.csv"),
        "--text-column",
        "sentence",
        "--label-column",
        "label",
        "--epochs",
        "30",
    )
    job_id = submitted.stdout.split()[0]
    assert run(service, "cancel", job_id).stdout.split()[1] in ("cancelled", "cancelling")
    assert run(service, "watch", job_id, check=False).returncode == 3
