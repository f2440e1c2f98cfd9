"""The `finetune` client commands against the running service, as a user runs them."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from app.core.layout import list_checkpoints
from tests.conftest import KEYS
from tests.support.harness import ROOT, RedisServer, Service, free_port, service_env, wait_until

FINETUNE = str(Path(sys.executable).parent / "finetune")


def run(service: Service, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**service.env, "FINETUNE_URL": service.url, "FINETUNE_API_KEY": KEYS["alice"]}
    result = subprocess.run(
        [FINETUNE, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_submit_watch_inspect_download(
    service: Service, predictor: None, data_dir: Path, tmp_path: Path
) -> None:
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
        "--batch-size",
        "auto",
        "--lr-scheduler",
        "constant",
        "--class-weight",
        "none",
        "--watch",
    )
    assert "uploaded train.csv as file_" in watched.stderr
    job_id = watched.stdout.split()[0]
    assert job_id.startswith("job_")
    assert "succeeded" in watched.stderr and "validation at step" in watched.stderr

    status = json.loads(run(service, "status", job_id, "--json").stdout)
    assert status["status"] == "succeeded" and status["progress"]["percent"] == 100
    given = {k: status["hyperparameters"][k] for k in ("epochs", "batch_size", "learning_rate")}
    assert given == {"epochs": 2, "batch_size": "auto", "learning_rate": 0.005}
    assert status["hyperparameters"]["lr_scheduler"] == "constant"
    assert status["hyperparameters"]["class_weight"] is None  # "none" on the command line
    shown = run(service, "status", job_id).stdout
    assert "confusion matrix" in shown and "baseline" in shown and "ROC AUC" in shown
    (tmp_path / "texts.txt").write_text("a cold and boring plot\n\n")
    answers = run(
        service, "predict", job_id, "a warm and fun film", "--from", str(tmp_path / "texts.txt")
    )
    lines = answers.stdout.splitlines()
    assert len(lines) == 2 and lines[0].endswith("a warm and fun film")
    for line in lines:  # label, its probability, the text
        label, score = line.split()[:2]
        assert label in ("0", "1") and 0.5 <= float(score) <= 1.0
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
    result = run(
        service, "submit", "--model", "tiny", "--train", "file_x", "--epochs", "fast", check=False
    )
    assert result.returncode == 2 and "a number or 'auto', not 'fast'" in result.stderr
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


def test_train_from_another_folder_resumes_after_ctrl_c(
    service: Service, data_dir: Path, tmp_path: Path
) -> None:
    """`finetune train` as a user runs it, from a folder that is not the checkout: Ctrl-C stops
    it at a checkpoint, the same command finishes the job from there."""
    work = tmp_path / "elsewhere"
    work.mkdir()
    (work / "train.csv").write_text((data_dir / "train.csv").read_text())
    (work / "spec.json").write_text(
        json.dumps(
            {
                "model": "tiny",
                "training_file": "train.csv",
                "text_column": "sentence",
                "label_column": "label",
                "hyperparameters": {"epochs": 6, "batch_size": 4, "learning_rate": 0.005},
            }
        )
    )
    command = [FINETUNE, "train", "spec.json", "--output", "out", "--quiet"]
    env = {k: v for k, v in service.env.items() if k != "PYTHONPATH"}
    first = subprocess.Popen(
        command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        wait_until(lambda: (work / "out" / "checkpoints").is_dir(), 120, "training to start")
        time.sleep(1)
        first.send_signal(signal.SIGINT)
        out, err = first.communicate(timeout=120)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 130, out + err
    assert "run the same command again to resume" in err
    assert "Traceback" not in err and "cuInit" not in err and "absl" not in err  # quiet
    stopped_at = max(c["global_step"] for c in list_checkpoints(work / "out" / "checkpoints"))
    assert stopped_at > 0

    again = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stdout + again.stderr
    result = json.loads(again.stdout)
    assert result["resumed_from_step"] == stopped_at
    assert (work / "out" / "config.json").is_file()


def test_watch_exits_1_for_a_failed_job(service: Service, data_dir: Path, models_dir: Path) -> None:
    broken = models_dir / "broken-cli"
    broken.mkdir(exist_ok=True)
    for name in ("config.json", "vocab.txt", "tokenizer_config.json"):
        (broken / name).write_bytes((models_dir / "tiny" / name).read_bytes())
    (broken / "tf_model.h5").write_bytes(b"not an HDF5 file")
    submitted = run(
        service,
        "submit",
        "--model",
        "broken-cli",
        "--train",
        str(data_dir / "train.csv"),
        "--text-column",
        "sentence",
    )
    job_id = submitted.stdout.split()[0]
    watched = run(service, "watch", job_id, check=False)
    assert watched.returncode == 1, watched.stderr
    assert "model_not_found" in watched.stderr


def children(pid: int) -> dict[int, str]:
    """The direct child processes of `pid`, with their command lines."""
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, IndexError):
            continue
        if int(fields[1]) == pid:
            found[int(stat.parent.name)] = cmdline
    return found


def test_up_restarts_a_dead_worker_and_keeps_the_api_serving(
    redis_server: RedisServer, models_dir: Path, tmp_path: Path
) -> None:
    port = free_port()
    env = service_env(redis_server.url, tmp_path / "storage", models_dir)
    env.update(
        FINETUNE_PORT=str(port),
        FINETUNE_QUEUE_NAME="up-test",
        FINETUNE_PREDICTION_QUEUE_NAME="up-test-predictions",
    )
    log = tmp_path / "up.log"  # a file, not a pipe: nobody must block writing to it
    with log.open("w") as sink:
        up = subprocess.Popen([FINETUNE, "up"], env=env, stdout=sink, stderr=subprocess.STDOUT)
    try:

        def worker_pid() -> int | None:
            found = children(up.pid).items()
            return next((p for p, cmd in found if "celery" in cmd and "prefork" in cmd), None)

        first = wait_until(worker_pid, 60, "the worker")
        wait_until(
            lambda: any("solo" in cmd for cmd in children(up.pid).values()), 60, "the predictor"
        )
        wait_until(
            lambda: httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code < 600,
            60,
            "the API",
        )
        os.kill(first, signal.SIGKILL)
        # The API keeps answering while the worker is down and restarted.
        for _ in range(10):
            assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code in (
                200,
                503,
            )
            time.sleep(0.2)
        second = wait_until(lambda: (p := worker_pid()) and p != first and p, 60, "a new worker")
        assert up.poll() is None and second != first
    finally:
        up.send_signal(signal.SIGINT)
        up.wait(timeout=90)
    output = log.read_text()
    assert up.returncode == 0, output[-3000:]
    assert "worker-1 exited" in output and "restarting it" in output


def test_report_shows_findings_and_exits_1_on_problems(service: Service, tmp_path: Path) -> None:
    clean = tmp_path / "clean.csv"
    clean.write_text("sentence,label\n" + "".join(f"text {i},{i % 2}\n" for i in range(20)))
    shown = run(service, "report", str(clean), "--model", "tiny").stdout
    assert "20 rows" in shown and "no problems found" in shown and "tokens (tiny)" in shown
    variants = tmp_path / "variants.csv"
    variants.write_text("sentence,label\na,yes\nb,no\nc,Yes\nd,no\n")
    result = run(service, "report", str(variants), check=False)
    assert result.returncode == 1
    assert "problem:" in result.stdout and "'Yes' (rows 3)" in result.stdout


def test_evaluate_and_batch_predict(service: Service, data_dir: Path, tmp_path: Path) -> None:
    job_id = run(
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
        "1",
        "--watch",
    ).stdout.split()[0]
    shown = run(service, "evaluate", job_id, str(data_dir / "validation.csv")).stdout
    assert "evaluation on 60 rows" in shown and "confusion matrix" in shown
    saved = tmp_path / "scored.csv"
    said = run(
        service, "batch-predict", job_id, str(data_dir / "validation.csv"), "--output", str(saved)
    )
    assert "60 rows (0 failed)" in said.stdout
    assert saved.read_text().splitlines()[0].startswith("sentence,label,predicted_label,score")


def test_multi_label_job_from_the_command_line(
    service: Service, predictor: None, tmp_path: Path
) -> None:
    from tests.support.factories import topic_rows, write_csv

    rows = [(r["text"], ";".join(r["labels"])) for r in topic_rows(120, seed=31)]
    data = write_csv(tmp_path / "topics.csv", ["text", "labels"], rows)
    watched = run(
        service,
        "submit",
        "--model",
        "tiny",
        "--task",
        "multi_label_classification",
        "--train",
        str(data),
        "--label-column",
        "labels",
        "--label-delimiter",
        ";",
        "--epochs",
        "1",
        "--watch",
    )
    job_id = watched.stdout.split()[0]
    assert "succeeded" in watched.stderr
    shown = run(service, "status", job_id).stdout
    assert "decision threshold" in shown and "film" in shown and "f1_macro" in shown
    # The label set with each label's probability (what the model learned in one epoch is
    # tests/integration/test_tasks.py's business), then the text.
    answer = run(service, "predict", job_id, "a great film").stdout.strip()
    assert answer.endswith("a great film")
    said = answer[: -len("a great film")].strip()
    assert said == "-" or all(
        part.split()[0] in {"film", "negative", "positive"} for part in said.split(", ")
    )


def test_sweep_from_the_command_line(service: Service, data_dir: Path, tmp_path: Path) -> None:
    body = {
        "job": {
            "model": "tiny",
            "training_file": str(data_dir / "train.csv"),  # a local file: uploaded for you
            "validation_file": str(data_dir / "validation.csv"),
            "text_column": "sentence",
            "hyperparameters": {"epochs": 1, "learning_rate": 0.005},
        },
        "method": "grid",
        "search": {"batch_size": {"values": [8, 16]}},
        "metric": "accuracy",
    }
    (tmp_path / "sweep.json").write_text(json.dumps(body))
    result = run(service, "sweep", "start", str(tmp_path / "sweep.json"), "--wait")
    assert "best: trial" in result.stdout and "accuracy" in result.stdout
    sweep_id = result.stdout.split()[0]
    listed = run(service, "sweep", "list", "--json")
    assert json.loads(listed.stdout)["data"][0]["id"] == sweep_id
    shown = json.loads(run(service, "sweep", "status", sweep_id, "--json").stdout)
    assert [t["params"]["batch_size"] for t in shown["trials"]] in ([8, 16], [16, 8])
    assert shown["status"] == "succeeded" and shown["best_trial"]["value"] is not None
