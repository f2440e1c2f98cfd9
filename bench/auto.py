"""`"auto"` hyperparameters against the defaults, sequence classification with
all-MiniLM-L6-v2, each run as a job runs in its own child process (see bench/tasks.py):

- full CoLA (validation MCC; the issue's target: >= 0.30),
- full SST-2 (validation accuracy; target >= 0.90),
- the first 300 SST-2 training rows (SST-2 validation accuracy; target >= 0.80).

    .venv/bin/python -m bench.auto                 # all three, auto and defaults side by side
    .venv/bin/python -m bench.auto --only auto     # auto only
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

from bench.data import SHARED_DATA
from bench.tasks import head, job, run, table

AUTO = {
    "epochs": "auto",
    "batch_size": "auto",
    "learning_rate": "auto",
    "class_weight": "auto",
    "lr_scheduler": "auto",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=SHARED_DATA)
    parser.add_argument("--only", choices=["auto", "defaults"], default=None)
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["auto", "defaults"]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        cases = [
            ("CoLA", "cola", None, "matthews_correlation"),
            ("SST-2", "sst2", None, "accuracy"),
            ("SST-2, 300 rows", "sst2", 300, "accuracy"),
        ]
        for name, data, limit, metric in cases:
            train = head(args.data_dir / data / "train.csv", limit, work / f"{data}-{limit}.csv")
            validation = args.data_dir / data / "validation.csv"
            for kind in kinds:
                hyper = AUTO if kind == "auto" else {}
                spec = job("sequence_classification", train, validation, 3, text_column="sentence")
                spec["hyperparameters"] = hyper
                result = run(spec, work / f"{data}-{limit}-{kind}")
                chosen = result.get("auto_chosen") or {}
                m = result["report"]["metrics"]
                rows.append(
                    [
                        name,
                        kind,
                        chosen or "epochs 3, batch 16, 5e-05",
                        m[metric],
                        m["accuracy"],
                        result["wall_seconds"],
                    ]
                )
                table(
                    "so far", ["data", "run", "hyperparameters", metric, "accuracy", "s"], rows[-1:]
                )
    table(
        "auto against the defaults (validation)",
        ["data", "run", "hyperparameters", "headline", "accuracy", "seconds"],
        rows,
    )


if __name__ == "__main__":
    main()
