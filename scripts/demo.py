"""`make demo`: upload the example reviews, fine-tune all-MiniLM-L6-v2, watch, download, predict.

Talks to the running service at FINETUNE_URL (default http://127.0.0.1:8000) through
`finetune.Client`; if nothing answers there, it starts `finetune up` for the length of the demo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from app.core.schemas import Job, JobStatus
from finetune import Client, FinetuneError
from finetune.commands import describe

ROOT = Path(__file__).resolve().parent.parent


def healthy(client: Client) -> bool:
    try:
        return (client.health().get("workers") or 0) > 0
    except (FinetuneError, ValueError):
        return False


def main() -> int:
    client = Client(retries=3)
    service = None
    if not healthy(client):
        print(f"no service at {client.url}: starting one (finetune up)")
        service = subprocess.Popen(
            [str(Path(sys.executable).parent / "finetune"), "up"],
            cwd=ROOT,
            start_new_session=True,
            stdout=subprocess.DEVNULL,  # its JSON logs; the demo prints what matters
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 120
        while not healthy(client):
            if time.monotonic() > deadline or service.poll() is not None:
                print("the service did not start; run `make run` to see why")
                return 1
            time.sleep(0.5)
    try:
        return run_demo(client)
    except FinetuneError as exc:
        print(f"error: {exc}")
        return 1
    finally:
        if service is not None:
            os.killpg(service.pid, signal.SIGINT)
            service.wait(timeout=60)


def run_demo(client: Client) -> int:
    file = client.upload(ROOT / "examples" / "reviews.csv")
    print(f"uploaded {file.filename}: {file.rows} rows, columns {file.columns}")
    job = client.submit(
        model="all-MiniLM-L6-v2",
        training_file=file.id,
        text_column="text",
        label_column="sentiment",
        hyperparameters={"epochs": 2, "learning_rate": 1e-4, "batch_size": 16},
    )
    submitted = time.monotonic()
    print(f"submitted {job.id} ({job.status})")
    stage: dict[str, str | None] = {"latest": None, "after": None}
    shown = {"line": ""}

    def report(current: Job) -> None:
        for event in client.iter_events(current.id, after=stage["after"]):
            stage["after"] = event.id
            if event.type == "stage":
                stage["latest"] = event.message
        line = f"  {current.status:<10} {describe(current, stage['latest'])}"
        if line != shown["line"]:
            print(line)
            shown["line"] = line

    job = client.wait(job.id, on_update=report)
    print(f"job {job.status} in {time.monotonic() - submitted:.1f} s")
    if job.status != JobStatus.succeeded:
        print("error:", job.error)
        return 1
    events = client.events(job.id)
    first_step = next((e for e in events if e.type == "progress"), None)
    if first_step:
        waited = (first_step.time - events[0].time).total_seconds()
        print(f"submit to first reported training step: {waited:.1f} s")
    report = client.report(job.id)
    print(
        f"validation ({report.rows} rows): "
        + ", ".join(
            f"{name} {value:.3f} (baseline {report.baseline[name]:.3f})"
            for name, value in report.metrics.items()
            if name in report.baseline
        )
    )
    for warning in report.warnings:
        print("warning:", warning)
    sentences = ["a wonderful, heartfelt film that i loved", "a boring mess that drags on"]
    if client.health().get("prediction_workers"):
        print("online predictions (POST /v1/jobs/{id}/predictions):")
        for sentence, answer in zip(sentences, client.predict(job.id, sentences), strict=True):
            print(f"  {answer.label:<9} {answer.score:.3f} <- {sentence!r}")
    folder = client.download(job.id, ROOT / "var" / "demo")
    print(f"downloaded the model to {folder}")
    print("metrics:", json.dumps(job.metrics))
    print("the downloaded model, with transformers:")
    predict(folder, sentences)
    return 0


def predict(folder: Path, sentences: list[str]) -> None:
    """The downloaded folder is a plain transformers model: load it and classify two reviews."""
    from worker.quiet import native_start_up_silenced  # also quiets transformers

    with native_start_up_silenced():
        from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

        model = TFAutoModelForSequenceClassification.from_pretrained(folder)
        tokenizer = AutoTokenizer.from_pretrained(folder)
    logits = model(tokenizer(sentences, return_tensors="tf", padding=True)).logits.numpy()
    for sentence, row in zip(sentences, logits, strict=True):
        print(f"  {model.config.id2label[int(row.argmax())]:<9} <- {sentence!r}")


if __name__ == "__main__":
    sys.exit(main())
