"""`make demo`: upload the example reviews, fine-tune all-MiniLM-L6-v2, watch, download, predict.

Talks to the running service at FINETUNE_URL (default http://127.0.0.1:8000); if nothing
answers there, it starts `finetune up` for the length of the demo.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from datetime import datetime
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
URL = os.environ.get("FINETUNE_URL", "http://127.0.0.1:8000")
KEY = os.environ.get("FINETUNE_API_KEY")


def healthy(client: httpx.Client) -> bool:
    try:
        return client.get("/healthz", timeout=2).json().get("workers", 0) > 0
    except (httpx.HTTPError, ValueError):
        return False


def main() -> int:
    client = httpx.Client(
        base_url=URL, timeout=60, headers={"Authorization": f"Bearer {KEY}"} if KEY else {}
    )
    service = None
    if not healthy(client):
        print(f"no service at {URL}: starting one (finetune up)")
        service = subprocess.Popen(
            [str(Path(sys.executable).parent / "finetune"), "up"], cwd=ROOT, start_new_session=True
        )
        deadline = time.monotonic() + 120
        while not healthy(client):
            if time.monotonic() > deadline or service.poll() is not None:
                print("the service did not start; see its output above")
                return 1
            time.sleep(0.5)
    try:
        return run_demo(client)
    finally:
        if service is not None:
            os.killpg(service.pid, signal.SIGINT)
            service.wait(timeout=60)


def run_demo(client: httpx.Client) -> int:
    with (ROOT / "examples" / "reviews.csv").open("rb") as handle:
        upload = client.post("/v1/files", files={"file": ("reviews.csv", handle)})
    upload.raise_for_status()
    file = upload.json()
    print(f"uploaded {file['filename']}: {file['rows']} rows, columns {file['columns']}")
    response = client.post(
        "/v1/jobs",
        json={
            "model": "all-MiniLM-L6-v2",
            "training_file": file["id"],
            "text_column": "text",
            "label_column": "sentiment",
            "hyperparameters": {"epochs": 2, "learning_rate": 1e-4, "batch_size": 16},
        },
    )
    if response.status_code != 201:
        print("submission refused:", response.json()["error"]["message"])
        return 1
    job = response.json()
    submitted = time.monotonic()
    print(f"submitted {job['id']} ({job['status']})")
    last = ""
    while job["status"] not in ("succeeded", "failed", "cancelled"):
        time.sleep(1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
        p = job["progress"]
        line = (
            f"  {job['status']:<10} epoch {p['epoch']}/{p['epochs']} step "
            f"{p['step']}/{p['total_steps']} ({p['percent']:.0f}%) loss {p['loss']} "
            f"{p['tokens_per_second'] or 0:.0f} tok/s eta {p['eta_seconds']} s"
        )
        if line != last:
            print(line)
            last = line
    print(f"job {job['status']} in {time.monotonic() - submitted:.1f} s")
    if job["status"] != "succeeded":
        print("error:", job["error"])
        return 1
    events = client.get(f"/v1/jobs/{job['id']}/events", params={"limit": 1000}).json()["data"]
    first_step = next((e for e in events if e["type"] == "progress"), None)
    if first_step:
        queued = datetime.fromisoformat(events[0]["time"])
        waited = (datetime.fromisoformat(first_step["time"]) - queued).total_seconds()
        print(f"submit to first reported training step: {waited:.1f} s")
    target = ROOT / "var" / "demo"
    target.mkdir(parents=True, exist_ok=True)
    archive = target / "model.tar.gz"
    with client.stream("GET", job["artifacts"]["model"]) as download:
        download.raise_for_status()
        with archive.open("wb") as out:
            for chunk in download.iter_bytes():
                out.write(chunk)
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    print(f"downloaded {archive.stat().st_size / 1e6:.1f} MB to {target / 'model'}")
    print("metrics:", json.dumps(job["metrics"]))
    predict(target / "model")
    return 0


def predict(folder: Path) -> None:
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    model = TFAutoModelForSequenceClassification.from_pretrained(folder)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    sentences = ["a wonderful, heartfelt film that i loved", "a boring mess that drags on"]
    logits = model(tokenizer(sentences, return_tensors="tf", padding=True)).logits.numpy()
    for sentence, row in zip(sentences, logits, strict=True):
        print(f"  {model.config.id2label[int(row.argmax())]:<9} <- {sentence!r}")


if __name__ == "__main__":
    sys.exit(main())
