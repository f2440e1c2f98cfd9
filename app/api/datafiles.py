"""Reading uploaded datasets in the API (pyarrow, no TensorFlow): shape checks and labels.

Everything a worker would trip over later (not UTF-8, ragged rows, missing columns, unusable
labels) is found here and answered with a message that names the row or column.
"""

from __future__ import annotations

import codecs
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.json as pa_json
import pyarrow.parquet as pq

from app.core.labels import LabelProblem, check_regression_targets, class_names, task_for_dtype

Format = Literal["csv", "jsonl", "parquet"]
SUFFIXES: dict[str, Format] = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
}
STORED_SUFFIX: dict[Format, str] = {"csv": ".csv", "jsonl": ".jsonl", "parquet": ".parquet"}


class DataFileProblem(ValueError):
    """The file cannot be used as a dataset; the message says why and where."""


@dataclass(frozen=True)
class Inspection:
    rows: int
    columns: list[str]
    dtypes: dict[str, str]


def format_for(filename: str) -> Format:
    suffix = Path(filename).suffix.lower()
    if suffix not in SUFFIXES:
        raise DataFileProblem(
            f"'{filename}': unsupported file type '{suffix or '(none)'}'; "
            "upload .csv, .jsonl or .parquet"
        )
    return SUFFIXES[suffix]


def read_table(path: Path, fmt: Format, columns: list[str] | None = None) -> pa.Table:
    try:
        if fmt == "csv":
            return pa_csv.read_csv(
                path,
                read_options=pa_csv.ReadOptions(block_size=1 << 24),
                convert_options=pa_csv.ConvertOptions(include_columns=columns) if columns else None,
            )
        if fmt == "jsonl":
            table = pa_json.read_json(path, read_options=pa_json.ReadOptions(block_size=1 << 24))
            return table.select(columns) if columns else table
        return pq.read_table(path, columns=columns)
    except pa.ArrowInvalid as exc:
        raise DataFileProblem(_explain(str(exc), fmt)) from exc
    except (OSError, pa.ArrowException) as exc:
        raise DataFileProblem(f"could not read the file as {fmt}: {_first_line(str(exc))}") from exc


def inspect_file(path: Path, fmt: Format) -> Inspection:
    if path.stat().st_size == 0:
        raise DataFileProblem("the file is empty")
    if fmt == "csv":
        _check_utf8(path)
    table = read_table(path, fmt)
    if table.num_columns == 0:
        raise DataFileProblem("the file has no columns")
    names = table.column_names
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise DataFileProblem(f"duplicate column names: {', '.join(duplicated)}")
    if any(not name.strip() for name in names):
        raise DataFileProblem("a column has an empty name; every column needs a header")
    if table.num_rows == 0:
        raise DataFileProblem("the file has a header but no rows")
    return Inspection(
        rows=table.num_rows,
        columns=names,
        dtypes={f.name: str(f.type) for f in table.schema},
    )


def check_text_column(path: Path, fmt: Format, column: str, param: str) -> None:
    values = read_table(path, fmt, [column]).column(column)
    if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
        raise DataFileProblem(f"column '{column}' holds {values.type}, not text")
    if values.null_count:
        row = next(i for i, v in enumerate(values.to_pylist(), start=1) if v is None)
        raise DataFileProblem(f"row {row}: column '{column}' is empty")


def label_summary(path: Path, fmt: Format, column: str, max_labels: int) -> list[str] | None:
    """The class names (sorted, as the worker will number them), or None for regression."""
    values = read_table(path, fmt, [column]).column(column)
    dtype = str(values.type)
    as_list = values.to_pylist()
    try:
        if task_for_dtype(dtype) == "regression":
            check_regression_targets(as_list)
            return None
        if not (
            pa.types.is_integer(values.type)
            or pa.types.is_string(values.type)
            or pa.types.is_large_string(values.type)
            or pa.types.is_boolean(values.type)
        ):
            raise LabelProblem(f"labels of type {dtype} are not supported; use text or integers")
        return class_names(as_list, max_labels)
    except LabelProblem as exc:
        raise DataFileProblem(f"column '{column}': {exc}") from exc


def distinct_labels(path: Path, fmt: Format, column: str) -> set[str]:
    values = read_table(path, fmt, [column]).column(column).to_pylist()
    for row, value in enumerate(values, start=1):
        if value is None or (isinstance(value, float) and math.isnan(value)):
            raise DataFileProblem(f"row {row}: column '{column}': the label is missing")
    return {str(v) for v in values}


def _check_utf8(path: Path) -> None:
    decoder = codecs.getincrementaldecoder("utf-8")()
    consumed = 0
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            buffered = len(decoder.getstate()[0])
            try:
                decoder.decode(chunk)
            except UnicodeDecodeError as exc:
                offset = consumed - buffered + exc.start
                with path.open("rb") as again:
                    line = again.read(offset).count(b"\n") + 1
                raise DataFileProblem(
                    f"line {line}: the file is not UTF-8 text (bad byte at offset {offset}); "
                    "save it as UTF-8"
                ) from None
            consumed += len(chunk)
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        raise DataFileProblem("the file ends in the middle of a UTF-8 character") from None


def _explain(message: str, fmt: Format) -> str:
    text = _first_line(message)
    if fmt == "csv" and "Expected" in text and "columns" in text:
        return f"ragged CSV: {text}; every row needs the same number of fields as the header"
    if fmt == "parquet":
        return f"not a readable Parquet file: {text}"
    return f"could not read the file as {fmt}: {text}"


def _first_line(text: str) -> str:
    return (text.strip().splitlines() or ["unknown error"])[0][:500]
