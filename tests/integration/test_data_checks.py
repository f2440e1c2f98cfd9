"""Data checks through the API: the file report, and what a submission refuses or warns of."""

from __future__ import annotations

from pathlib import Path

import pytest

from finetune import Client, Invalid
from tests.support.factories import sentiment_rows, write_csv
from tests.support.jobs import submit_tiny

HEADER = ["sentence", "label"]


def test_file_report_names_planted_rows(alice: Client, tmp_path: Path) -> None:
    rows = [(text, "positive" if label else "negative") for text, label in sentiment_rows(60)]
    rows[10] = rows[3]  # row 11 repeats row 4
    rows[20] = (rows[5][0], "negative" if rows[5][1] == "positive" else "positive")  # conflict
    rows[30] = (rows[30][0], rows[30][1].upper())  # a case variant at row 31
    uploaded = alice.upload(write_csv(tmp_path / "planted.csv", HEADER, rows))
    report = alice.file_report(uploaded.id, model="tiny", max_length=8)
    assert report.text_column == "sentence" and report.label_column == "label"
    assert report.rows == report.rows_checked == 60
    assert any(4 in g.rows and 11 in g.rows for g in report.duplicates)
    assert any(g.rows == [6, 21] for g in report.conflicts)
    variant = next(v for group in report.case_variants for v in group if v.label.isupper())
    assert variant.rows == [31]
    assert report.token_lengths is not None and report.token_lengths.truncated_rows > 0
    with pytest.raises(Invalid) as refused:
        submit_tiny(alice, uploaded.id)
    assert refused.value.param == "training_file" and "(rows 31)" in str(refused.value)


def test_submission_warnings_become_job_events(alice: Client, tmp_path: Path) -> None:
    rows = sentiment_rows(80, seed=3)
    train = alice.upload(write_csv(tmp_path / "train.csv", HEADER, rows + rows[:5]))
    validation = alice.upload(write_csv(tmp_path / "val.csv", HEADER, [*rows[:3], ("x y", 1)]))
    job = submit_tiny(alice, train.id, validation_file=validation.id)
    warnings = [e.message for e in alice.events(job.id) if e.type == "warning"]
    assert any("repeat an earlier row" in w and "rows 1, 81" in w for w in warnings), warnings
    assert any("3 of 4 validation rows" in w for w in warnings), warnings
    alice.cancel(job.id)

    every = alice.upload(write_csv(tmp_path / "all.csv", HEADER, rows[:4]))
    with pytest.raises(Invalid) as refused:
        submit_tiny(alice, train.id, validation_file=every.id)
    assert refused.value.param == "validation_file"
