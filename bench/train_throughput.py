"""Training throughput, side by side: the documented recipes against this project's pipeline.

One invocation runs, each in a fresh child process on the same data, model, epochs and batch
size (so peak RSS is each one's own and no run inherits another's warm caches):

- numpy:    the Hugging Face page's first recipe: tokenize everything padded to the longest
            row, `model.fit(dict(tokens), labels)`, Adam 3e-5.
- prepare:  its second recipe: `dataset.map(tokenize)`, `model.prepare_tf_dataset(shuffle=True)`
            (per-batch padding), Adam 3e-5. The baseline every ratio is against.
- pipeline: `worker.pipeline.run.run_pipeline`, exactly as a job runs, with learning rate 3e-5;
            `--variant NAME:key=value,...` adds runs with other hyperparameters (one lever each).

and, first, the float32 and bfloat16 matmul ceilings of this machine, so each run's share of the
hardware is known. Seconds are `model.fit` wall time (validation excluded everywhere); tokens are
counted from the batches that were really fed (real = attention mask, padded = batch shape).

    .venv/bin/python -m bench.train_throughput --quick            # 2,000 rows, 1 epoch
    .venv/bin/python -m bench.train_throughput --epochs 3         # full CoLA, the README table
    .venv/bin/python -m bench.train_throughput --quick --recipes pipeline \
        --variant fp32:precision=float32 --variant xla:jit_compile=true
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import worker  # noqa: F401  (the Keras 2 switch, before any child imports TensorFlow)
from app.core.catalog import resolve_model
from app.core.settings import get_settings
from bench.data import ROOT, add_data_dir_option, data_set

MODEL_NAME = "all-MiniLM-L6-v2"
LEARNING_RATE = 3e-5


# -- the child side: one run, one JSON line -----------------------------------------------------


def read_rows(path: Path) -> tuple[list[str], list[int]]:
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return [r["sentence"] for r in rows], [int(r["label"]) for r in rows]


def matthews(model: Any, tokenizer: Any, texts: list[str], labels: list[int]) -> float:
    import numpy as np
    from sklearn.metrics import matthews_corrcoef

    order = np.argsort([len(t) for t in texts], kind="stable")
    predicted = np.empty(len(texts), dtype=np.int64)
    for start in range(0, len(order), 64):
        index = order[start : start + 64]
        batch = tokenizer(
            [texts[i] for i in index],
            padding=True,
            truncation=True,
            max_length=128,
            return_tensors="np",
        )
        logits = model(dict(batch), training=False).logits
        predicted[index] = np.asarray(logits, dtype=np.float32).argmax(-1)
    return float(matthews_corrcoef(labels, predicted))


class TokenCounter:
    """Counts real and padded tokens of every batch tf.data hands to `fit`."""

    def __init__(self) -> None:
        import tensorflow as tf

        self.real = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.padded = tf.Variable(0, dtype=tf.int64, trainable=False)

    def wrap(self, dataset: Any) -> Any:
        import tensorflow as tf

        def count(features: Any, labels: Any) -> Any:
            mask = tf.cast(features["attention_mask"], tf.int64)
            self.real.assign_add(tf.reduce_sum(mask))
            self.padded.assign_add(tf.size(mask, out_type=tf.int64))
            return features, labels

        return dataset.map(count)


@dataclass(frozen=True)
class Setup:
    """What every run shares: the data, the model folder, epochs, batch size and seed."""

    train: Path
    val: Path
    models: Path
    epochs: int
    batch_size: int
    seed: int

    @classmethod
    def from_job(cls, job: dict[str, Any]) -> Setup:
        return cls(
            Path(job["train"]),
            Path(job["val"]),
            Path(job["models"]),
            job["epochs"],
            job["batch_size"],
            job["seed"],
        )


def child_recipe(name: str, setup: Setup) -> dict[str, Any]:
    import numpy as np
    import tensorflow as tf
    import tf_keras
    from datasets import Dataset
    from transformers import AutoTokenizer, TFAutoModelForSequenceClassification

    from worker.pipeline.model import model_flops_per_token

    tf_keras.utils.set_random_seed(setup.seed)
    location = Path(resolve_model(MODEL_NAME, setup.models, allow_hub=False).location)
    tokenizer = AutoTokenizer.from_pretrained(location)
    model = TFAutoModelForSequenceClassification.from_pretrained(location, num_labels=2)
    texts, labels = read_rows(setup.train)
    counter = TokenCounter()
    if name == "numpy":
        tokens = dict(
            tokenizer(texts, padding=True, truncation=True, max_length=128, return_tensors="np")
        )
        dataset = tf.data.Dataset.from_tensor_slices((tokens, np.array(labels)))
        # model.fit(dict, labels, batch_size=16) shuffles each epoch: the same here, counted.
        dataset = dataset.shuffle(len(labels), seed=setup.seed).batch(setup.batch_size)
        batches = counter.wrap(dataset)
        shapes = 1
    else:
        ds = Dataset.from_dict({"sentence": texts, "label": labels})
        ds = ds.map(
            lambda b: tokenizer(b["sentence"], truncation=True, max_length=128), batched=True
        )
        batches = model.prepare_tf_dataset(
            ds, batch_size=setup.batch_size, shuffle=True, tokenizer=tokenizer
        )
        shapes = len({int(f["input_ids"].shape[1]) for f, _ in batches})
        batches = counter.wrap(batches)
    model.compile(optimizer=tf_keras.optimizers.Adam(learning_rate=LEARNING_RATE))
    started, cpu_started = time.perf_counter(), time.process_time()
    model.fit(batches, epochs=setup.epochs, verbose=0)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    val_texts, val_labels = read_rows(setup.val)
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "real_tokens": int(counter.real.numpy()),
        "padded_tokens": int(counter.padded.numpy()),
        "mcc": matthews(model, tokenizer, val_texts, val_labels),
        "traces": int(model.train_function.experimental_get_tracing_count()),
        "shapes": shapes,
        "precision": "float32",
        "flops_per_token": model_flops_per_token(model),
        "checkpoints": 0,  # the recipes write none
        "checkpoint_seconds": 0.0,
    }


def child_pipeline(setup: Setup, overrides: dict[str, Any]) -> dict[str, Any]:
    from app.core.schemas import Hyperparameters, JobSpec
    from worker.pipeline.run import PipelineOptions, run_pipeline
    from worker.reporter import LogReporter

    hp = Hyperparameters.model_validate(
        {
            "epochs": setup.epochs,
            "batch_size": setup.batch_size,
            "learning_rate": LEARNING_RATE,
            # The recipe's schedule and loss, not the service's "auto" defaults: the same
            # settings side by side (a variant may change them).
            "lr_scheduler": "constant",
            "class_weight": None,
            "seed": setup.seed,
            **overrides,
        },
        strict=False,
    )
    spec = JobSpec(
        model=MODEL_NAME,
        training_file=str(setup.train),
        validation_file=str(setup.val),
        text_column="sentence",
        label_column="label",
        hyperparameters=hp,
    )
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(scratch)
        metrics = run_pipeline(
            spec,
            out / "model",
            out / "checkpoints",
            LogReporter(),
            PipelineOptions(models_dir=setup.models),
        )
        precision = json.loads((out / "model" / "job.json").read_text())["precision"]
    return {
        "seconds": metrics["fit_seconds"],
        "cpu_seconds": metrics["fit_cpu_seconds"],
        "real_tokens": metrics["real_tokens"],
        "padded_tokens": metrics["padded_tokens"],
        "mcc": metrics["final"]["matthews_correlation"],
        "traces": metrics["train_step_traces"],
        "shapes": metrics["batch_shapes"],
        "precision": precision,
        "flops_per_token": metrics["flops_per_token"],
        "pipeline_seconds": metrics["total_seconds"],
        # Written in `fit` (periodic) and between epochs.
        "checkpoints": metrics["checkpoints_written"],
        "checkpoint_seconds": metrics["checkpoint_seconds"],
    }


def child_ceiling() -> dict[str, Any]:
    """Best median GFLOP/s of square matmuls, float32 and bfloat16, on this machine now."""
    import tensorflow as tf

    result = {}
    for dtype in (tf.float32, tf.bfloat16):
        best = 0.0
        for n in (512, 1024, 2048):
            a = tf.cast(tf.random.normal([n, n]), dtype)
            b = tf.cast(tf.random.normal([n, n]), dtype)
            matmul = tf.function(tf.matmul)
            matmul(a, b).numpy()
            reps = max(3, int(1e10 / (2 * n**3)))
            times = []
            for _ in range(5):
                started = time.perf_counter()
                for _ in range(reps):
                    out = matmul(a, b)
                out.numpy()
                times.append((time.perf_counter() - started) / reps)
            best = max(best, 2 * n**3 / statistics.median(times) / 1e9)
        result[dtype.name] = best
    return result


def child_main(args: argparse.Namespace) -> None:
    job = json.loads(args.child)
    if job["kind"] == "ceiling":
        result = child_ceiling()
    elif job["kind"] == "pipeline":
        result = child_pipeline(Setup.from_job(job), job["overrides"])
    else:
        result = child_recipe(job["kind"], Setup.from_job(job))
    result["peak_rss_gb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2
    print("RESULT " + json.dumps(result), flush=True)


# -- the parent side: run the children, print the table ------------------------------------------


def run_child(job: dict[str, Any]) -> dict[str, Any]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "TOKENIZERS_PARALLELISM": "false"}
    started = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "bench.train_throughput", "--child", json.dumps(job)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            # The whole process (imports, loading, tokenizing, validation): the wall time a
            # user waits for a model, the figure "time to quality" compares.
            result["process_seconds"] = time.monotonic() - started
            return result
    sys.stderr.write(proc.stdout[-3000:] + proc.stderr[-5000:])
    raise SystemExit(f"{job['kind']} failed (exit {proc.returncode})")


def subset_csv(source: Path, target: Path, rows: int | None) -> Path:
    if rows is None:
        return source
    with source.open() as handle:
        lines = handle.readlines()
    target.write_text("".join(lines[: rows + 1]))
    return target


def parse_variant(text: str) -> tuple[str, dict[str, Any]]:
    name, _, assignments = text.partition(":")
    overrides: dict[str, Any] = {}
    for item in filter(None, assignments.split(",")):
        key, _, value = item.partition("=")
        try:
            overrides[key] = json.loads(value)  # numbers, true/false, null
        except json.JSONDecodeError:
            overrides[key] = value  # a bare string, e.g. precision=float32
    return name, overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--quick", action="store_true", help="2,000 training rows (else all)")
    parser.add_argument("--rows", type=int, help="training rows to use (overrides --quick)")
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each; medians printed")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--recipes", default="numpy,prepare,pipeline")
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help="an extra pipeline run: NAME:key=value,... (hyperparameters)",
    )
    parser.add_argument("--models-dir", type=Path, default=get_settings().models_dir)
    add_data_dir_option(parser)
    parser.add_argument("--json", type=Path, help="also write every run's numbers here")
    args = parser.parse_args()
    if args.child:
        child_main(args)
        return

    rows = args.rows if args.rows is not None else (2000 if args.quick else None)
    scratch = Path(tempfile.mkdtemp(prefix="bench-train-"))
    cola = data_set(args.data_dir, "cola")
    train_csv = subset_csv(cola / "train.csv", scratch / "train.csv", rows)
    common = {
        "train": str(train_csv),
        "val": str(cola / "validation.csv"),
        "models": str(args.models_dir),
        "epochs": args.epochs,
        "batch_size": args.batch_size,
        "seed": args.seed,
    }
    runs: list[tuple[str, dict[str, Any]]] = []
    for recipe in filter(None, args.recipes.split(",")):
        if recipe == "pipeline":
            runs.append(("pipeline", {**common, "kind": "pipeline", "overrides": {}}))
        else:
            runs.append((recipe, {**common, "kind": recipe}))
    for text in args.variant:
        name, overrides = parse_variant(text)
        runs.append((name, {**common, "kind": "pipeline", "overrides": overrides}))

    print(
        f"CoLA train rows: {rows or 'all'}, validation: all, epochs {args.epochs}, "
        f"batch {args.batch_size}, {args.repeat} run(s) each",
        flush=True,
    )
    ceiling = run_child({"kind": "ceiling"})
    print(
        f"matmul ceiling: float32 {ceiling['float32']:.0f} GFLOP/s, "
        f"bfloat16 {ceiling['bfloat16']:.0f} GFLOP/s",
        flush=True,
    )
    results: dict[str, list[dict[str, Any]]] = {name: [] for name, _ in runs}
    for _ in range(args.repeat):  # interleaved, so drift in the machine hits every run alike
        for name, job in runs:
            result = run_child(job)
            results[name].append(result)
            print(
                f"  {name}: {result['seconds']:.1f} s ({result['cpu_seconds']:.0f} s CPU), "
                f"whole process {result['process_seconds']:.1f} s, MCC {result['mcc']:.3f}",
                flush=True,
            )

    def median(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    base = (
        median("prepare", "real_tokens") / median("prepare", "seconds")
        if "prepare" in results
        else None
    )
    header = (
        f"{'run':<16}{'precision':>16}{'train s':>9}{'cpu s':>7}{'real tok':>10}{'padded':>10}"
        f"{'pad eff':>8}{'real tok/s':>11}{'vs prepare':>11}{'fp32 ceil':>10}"
        f"{'shapes':>7}{'traces':>7}{'val MCC':>8}{'RSS GB':>7}{'ckpts':>6}{'ckpt s':>7}"
    )
    print()
    print(header)
    print("-" * len(header))
    for name, _ in runs:
        seconds = median(name, "seconds")
        real, padded = median(name, "real_tokens"), median(name, "padded_tokens")
        rate = real / seconds
        ceiling_rate = ceiling["float32"] * 1e9 / median(name, "flops_per_token")
        ratio = f"{rate / base:.2f}x" if base else "-"
        print(
            f"{name:<16}{results[name][0]['precision']:>16}{seconds:>9.1f}"
            f"{median(name, 'cpu_seconds'):>7.0f}{real:>10.0f}"
            f"{padded:>10.0f}{real / padded:>8.2f}{rate:>11.0f}{ratio:>11}"
            f"{rate / ceiling_rate:>10.2f}{median(name, 'shapes'):>7.0f}"
            f"{median(name, 'traces'):>7.0f}{median(name, 'mcc'):>8.3f}"
            f"{max(r['peak_rss_gb'] for r in results[name]):>7.2f}"
            f"{median(name, 'checkpoints'):>6.0f}{median(name, 'checkpoint_seconds'):>7.1f}"
        )
    print("\ntrain s: model.fit wall time (median); cpu s: the process's CPU time over it, all")
    print("threads (steadier than wall time on a shared machine)")
    print("fp32 ceil: real tokens/s as a share of (float32 matmul ceiling / 6 x dense weights)")
    print("ckpts, ckpt s: checkpoints the pipeline wrote and the seconds writing them took")
    if args.json:
        args.json.write_text(json.dumps({"ceiling": ceiling, "runs": results}, indent=2))


if __name__ == "__main__":
    main()
