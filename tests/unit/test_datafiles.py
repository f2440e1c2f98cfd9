"""Upload inspection against broken and hostile files (pyarrow, as the API runs it)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from app.api.datafiles import DataFileProblem, Limits, format_for, inspect_file, scan_columns

LIMITS = Limits(max_rows=1000, max_columns=10, max_decoded_bytes=10**7)


def label_summary(path: Path, fmt: str, column: str, max_labels: int) -> list[str] | None:
    return scan_columns(path, fmt, {"text_column": "sentence"}, column, max_labels)[0]  # type: ignore[arg-type]


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
    assert inspect_file(csv, "csv", LIMITS).rows == 2
    assert inspect_file(jsonl, "jsonl", LIMITS).columns == ["sentence", "label"]
    assert inspect_file(parquet, "parquet", LIMITS).dtypes["label"] == "double"
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
        inspect_file(path, format_for(name), LIMITS)


def test_truncated_parquet(tmp_path: Path) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"sentence": ["x"] * 100, "label": [1] * 100}), path)
    path.write_bytes(path.read_bytes()[:-40])
    with pytest.raises(DataFileProblem, match="Parquet"):
        inspect_file(path, "parquet", LIMITS)


def test_label_problems(tmp_path: Path) -> None:
    nan = write(tmp_path, "nan.csv", b"sentence,label\na,1\nb,\nc,0\n")
    with pytest.raises(DataFileProblem, match="row 2"):
        label_summary(nan, "csv", "label", 10)
    mixed = write(tmp_path, "mixed.jsonl", b'{"s": "a", "label": 1}\n{"s": "b", "label": "x"}\n')
    with pytest.raises(DataFileProblem):  # pyarrow refuses a column of mixed types
        inspect_file(mixed, "jsonl", LIMITS)


def test_unsupported_type() -> None:
    with pytest.raises(DataFileProblem, match=r"upload \.csv, \.jsonl or \.parquet"):
        format_for("model.exe")


def test_a_small_parquet_file_that_decodes_to_a_huge_table_is_refused_unread(
    tmp_path: Path,
) -> None:
    """10^8 rows of one repeated value: under 2 MB on disk. Refused from its footer, in well
    under a second and without decoding a row."""
    import resource
    import time

    path = tmp_path / "bomb.parquet"
    chunk = pa.table({"sentence": pa.array(["x"] * 1_000_000), "label": pa.array([1] * 1_000_000)})
    with pq.ParquetWriter(path, chunk.schema, compression="zstd") as writer:
        for _ in range(100):
            writer.write_table(chunk)
    assert path.stat().st_size < 2_000_000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.monotonic()
    limits = Limits(max_rows=5_000_000, max_columns=1000, max_decoded_bytes=4 * 1024**3)
    with pytest.raises(DataFileProblem, match="100,000,000 rows, more than the limit"):
        inspect_file(path, "parquet", limits)
    assert time.monotonic() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KB


def test_row_and_column_limits_stop_csv_and_jsonl_while_streaming(tmp_path: Path) -> None:
    many = write(tmp_path, "many.csv", b"sentence,label\n" + b"a,1\n" * 1001)
    with pytest.raises(DataFileProblem, match="more than 1,000 rows"):
        inspect_file(many, "csv", LIMITS)
    wide = write(
        tmp_path, "wide.jsonl", b"{" + b",".join(b'"c%d": 1' % i for i in range(11)) + b"}\n"
    )
    with pytest.raises(DataFileProblem, match="11 columns, more than the limit of 10"):
        inspect_file(wide, "jsonl", LIMITS)
    small = write(tmp_path, "ok.jsonl", b'{"sentence": "a", "label": 1}\n' * 1000)
    assert inspect_file(small, "jsonl", LIMITS).rows == 1000


def test_one_pass_finds_text_and_label_problems_with_their_rows(tmp_path: Path) -> None:
    broken = write(
        tmp_path,
        "b.jsonl",
        b"".join(b'{"sentence": "t %d", "label": %d}\n' % (i, i % 2) for i in range(5000))
        + b'{"sentence": null, "label": 1}\n',
    )
    with pytest.raises(DataFileProblem, match="row 5001: column 'sentence' is empty") as found:
        scan_columns(broken, "jsonl", {"text_column": "sentence"}, "label", 10)
    assert found.value.param == "text_column"
    classes, seen = scan_columns(
        write(tmp_path, "v.csv", b"sentence,label\na,1\nb,1\n"),
        "csv",
        {"text_column": "sentence"},
        "label",
        10,
        training=False,
    )
    assert classes is None and seen == {"1"}  # one class is fine in a validation file


def test_row_numbers_count_across_batches(tmp_path: Path) -> None:
    path = tmp_path / "long.parquet"
    texts = [f"t {i}" for i in range(70_000)] + [None]
    pq.write_table(pa.table({"sentence": texts, "label": [i % 2 for i in range(70_001)]}), path)
    with pytest.raises(DataFileProblem, match="row 70001: column 'sentence' is empty"):
        scan_columns(path, "parquet", {"text_column": "sentence"}, "label", 10)
