"""Bounded chaos on loopback: submit tiny jobs while killing workers (SIGKILL, SIGTERM) and
restarting Redis at random moments; then account for every job the API acknowledged.

    .venv/bin/python -m bench.chaos [--minutes 10] [--workers 2] [--seed 1]

It stops by itself: after --minutes of chaos it lets the survivors drain (bounded), prints the
counts and exits non-zero if any job was duplicated, lost or still unfinished.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.support.chaos import run_chaos
from tests.support.harness import exit_cleanly_on_sigterm


def main() -> int:
    exit_cleanly_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--drain-minutes", type=float, default=5)
    parser.add_argument("--keep", type=Path, help="work in this folder and keep it (logs)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        workdir = args.keep or Path(tmp)
        report = run_chaos(
            workdir, args.minutes * 60, args.workers, args.seed, args.drain_minutes * 60
        )
    print("\n".join(report.lines()))
    return 1 if report.duplicated or report.lost or report.recoverable else 0


if __name__ == "__main__":
    sys.exit(main())
