"""A short chaos run: faults at random moments, then every acknowledged job is accounted for.
The full ten-minute run is `python -m bench.chaos`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.chaos import run_chaos


@pytest.mark.slow
def test_short_chaos_run_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    # Faults 4-9 s apart: five in 45 s where 5-15 s apart gave four in 60 s (suite budget).
    report = run_chaos(tmp_path, seconds=45, workers=2, seed=3, drain_seconds=180, fault_gap=(4, 9))
    print("\n".join(report.lines()))
    assert sum(report.faults.values()) >= 4 and report.faults["redis restart"] >= 1
    assert report.faults_on_running_jobs >= 1  # the faults hit work in progress
    assert report.acknowledged >= 4 and report.succeeded >= 1
    assert report.duplicated == 0 and report.lost == 0, report.problems
    assert report.failed == 0, report.problems  # faults must never turn into failed jobs
    assert report.recoverable == 0, report.problems  # everything drained
    # Bounded: every acknowledged job terminal within 3 minutes of the last fault.
    assert report.drain_seconds is not None and report.drain_seconds < 180, report.lines()
