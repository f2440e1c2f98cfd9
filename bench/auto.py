"""`"auto"` hyperparameters (the service's defaults since 2026-12-07) against the fixed values
they replaced (3 epochs, batch 16, 5e-5 held constant, no class weights), sequence
classification with
all-MiniLM-L6-v2, each run as a job runs in its own child process (see bench/tasks.py):

- cola:      full CoLA (validation MCC; the issue's target: >= 0.30),
- sst2:      full SST-2 (validation accuracy; target >= 0.90),
- sst2-300:  the first 300 SST-2 training rows (SST-2 validation accuracy; target >= 0.80),
- cola-300:  the first 300 CoLA training rows (CoLA validation MCC; no target: a small,
             imbalanced set on which a rule for small data must not answer one class),
- cola-2000: the first 2,000 CoLA training rows (CoLA validation MCC; no target: the middle
             sizes, where a rule of about 1,200 optimizer steps means 10 or more passes).

Small data sets swing by several points from one seed to the next, so `--seeds` runs each case
once per seed and prints the median beside every run.

    .venv/bin/python -m bench.auto                          # all three, auto and fixed
    .venv/bin/python -m bench.auto --only auto              # auto only
    .venv/bin/python -m bench.auto --cases sst2-300 --seeds 1,2,3 --only auto
    .venv/bin/python -m bench.auto --cases sst2-300 --seeds 1,2,3 --only fixed \
        --hyperparameters '{"epochs": 10, "learning_rate": 5e-5, "lr_scheduler": "linear"}'
    .venv/bin/python -m bench.auto --cases sst2-300 --seeds 1,2,3 --only auto \
        --variant per-epoch:eval_every=epoch      # "auto" beside "auto" with one lever moved

The last table puts each case's runs side by side: median score and seconds, and the seconds
as a ratio of the first run's (the baseline: "auto", or "fixed" with `--only fixed`).
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from bench.data import SHARED_DATA
from bench.tasks import head, job, run, table
from bench.train_throughput import parse_variant

AUTO = {
    "epochs": "auto",
    "batch_size": "auto",
    "learning_rate": "auto",
    "class_weight": "auto",
    "lr_scheduler": "auto",
    "eval_every": "auto",
}
# name: (data folder, training rows or None for all, headline metric)
CASES: dict[str, tuple[str, int | None, str]] = {
    "cola": ("cola", None, "matthews_correlation"),
    "sst2": ("sst2", None, "accuracy"),
    "sst2-300": ("sst2", 300, "accuracy"),
    "cola-300": ("cola", 300, "matthews_correlation"),
    "cola-2000": ("cola", 2000, "matthews_correlation"),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--only", choices=["auto", "fixed"], default=None)
    parser.add_argument(
        "--cases", default=",".join(CASES), help="comma-separated: " + ", ".join(CASES)
    )
    parser.add_argument("--seeds", default="42", help="comma-separated; the median is printed")
    parser.add_argument(
        "--hyperparameters",
        type=json.loads,
        default={},
        help="JSON object laid over every run's hyperparameters (e.g. to try another rule)",
    )
    parser.add_argument(
        "--variant",
        action="append",
        default=[],
        help='NAME:key=value,... a run of "auto" with these hyperparameters given (repeatable)',
    )
    args = parser.parse_args()
    kinds: dict[str, dict[str, Any]] = {"auto": AUTO, "fixed": {}}
    if args.only:
        kinds = {args.only: kinds[args.only]}
    for text in args.variant:
        name, overrides = parse_variant(text)
        kinds[name] = {**AUTO, **overrides}
    seeds = [int(s) for s in args.seeds.split(",")]
    rows: list[list[Any]] = []
    side_by_side: list[list[Any]] = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for name in args.cases.split(","):
            data, limit, metric = CASES[name]
            train = head(args.data_dir / data / "train.csv", limit, work / f"{data}-{limit}.csv")
            validation = args.data_dir / data / "validation.csv"
            baseline_seconds = None
            for kind, given in kinds.items():
                scores: list[float] = []
                seconds: list[float] = []
                for seed in seeds:
                    hyper = {**given, **args.hyperparameters}
                    spec = job(
                        "sequence_classification", train, validation, 3, text_column="sentence"
                    )
                    spec["hyperparameters"] = {**spec["hyperparameters"], **hyper, "seed": seed}
                    result = run(spec, work / f"{name}-{kind}-{seed}")
                    chosen = result.get("auto_chosen") or json.dumps(spec["hyperparameters"])
                    m = result["report"]["metrics"]
                    scores.append(m[metric])
                    seconds.append(result["wall_seconds"])
                    rows.append(
                        [
                            name,
                            kind,
                            seed,
                            chosen,
                            m[metric],
                            round(statistics.median(scores), 4),
                            m["accuracy"],
                            result["wall_seconds"],
                            result["fit_seconds"],
                        ]
                    )
                    table(
                        "so far",
                        [
                            "data",
                            "run",
                            "seed",
                            "hyperparameters",
                            metric,
                            "median",
                            "accuracy",
                            "s",
                            "in fit",
                        ],
                        rows[-1:],
                    )
                median_seconds = statistics.median(seconds)
                baseline_seconds = baseline_seconds or median_seconds
                side_by_side.append(
                    [
                        name,
                        kind,
                        round(statistics.median(scores), 4),
                        round(median_seconds, 1),
                        f"{median_seconds / baseline_seconds:.2f}x",
                    ]
                )
    table(
        "auto against the fixed values (validation; median: of this case's seeds so far)",
        [
            "data",
            "run",
            "seed",
            "hyperparameters",
            "headline",
            "median",
            "accuracy",
            "seconds",
            "in fit",
        ],
        rows,
    )
    table(
        "side by side (medians over the seeds; seconds against the case's first run)",
        ["data", "run", "headline", "seconds", "ratio"],
        side_by_side,
    )


if __name__ == "__main__":
    main()
