"""Upload inspection against broken and hostile files (pyarrow, as the API runs it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.api.datafiles import DataFileProblem, format_for, inspect_file, label_summary


def write(tmp_path: Path, name: str, content: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content)
    return path


def test_reads_csv_jsonl_and_parquet(tmp_path: Path) -> None:
    csv = write(tmp_path, "a.csv", b"sentence,label\nhello,1\nbye,0\n")
    jsonl = write(
        tmp_path,
        "a.jsonl",
        b'{"sentence": "hi", "label": "pos"}\n{"sentence": "no", "label": "neg"}\n',
    )
    parquet = tmp_path / "a.parquet"
    pq.write_table(pa.table({"sentence": ["x", "y", "z"], "label": [0.5, 1.5, 2.0]}), parquet)
    assert inspect_file(csv, "csv").rows == 2
    assert inspect_file(jsonl, "jsonl").columns == ["sentence", "label"]
    assert inspect_file(parquet, "parquet").dtypes["label"] == "double"
    assert label_summary(csv, "csv", "label", 10) == ["0", "1"]
    assert label_summary(jsonl, "jsonl", "label", 10) == ["neg", "pos"]
    assert label_summary(parquet, "parquet", "label", 10) is None  # regression


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", b"", "the file is empty"),
        ("header.csv", b"sentence,label\n", "header but no rows"),
        ("latin1.csv", b"sentence,label\ncaf\xe9,1\n", "line 2: the file is not UTF-8"),
        ("ragged.csv", b"sentence,label\na,1\nb,0,extra\n", "ragged CSV"),
        ("dupes.csv", b"a,a\n1,2\n", "duplicate column names: a"),
        ("binary.parquet", b"\x00\x01garbage" * 10, "not a readable Parquet file"),
        ("bad.jsonl", b'{"a": 1}\n{"a": \n', "could not read the file as jsonl"),
    ],
)
def test_broken_files_say_what_is_wrong(
    tmp_path: Path, name: str, content: bytes, message: str
) -> None:
    path = write(tmp_path, name, content)
    with pytest.raises(DataFileProblem, match=message):
        inspect_file(path, format_for(name))


def test_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"sentence": ["x"] * 100, "label": [1] * 100}), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataFileProblem, match="Parquet"):
        inspect_file(path, "parquet")


def test_label_problems(tmp_path: Path) -> None:
    nan = write(tmp_path, "nan.csv", b"s,label\na,1\nb,\nc,0\n")
    with pytest.raises(DataFileProblem, match="row 2"):
        label_summary(nan, "csv", "label", 10)
    mixed = write(tmp_path, "mixed.jsonl", b'{"s": "a", "label": 1}\n{"s": "b", "label": "x"}\n')
    with pytest.raises(DataFileProblem):  # pyarrow refuses a column of mixed types
        inspect_file(mixed, "jsonl")


def test_unsupported_type() -> None:
    with pytest.raises(DataFileProblem, match=r"upload \.csv, \.jsonl or \.parquet"):
        format_for("model.exe")
