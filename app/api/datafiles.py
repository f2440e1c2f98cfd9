"""Reading uploaded datasets in the API (pyarrow, no TensorFlow): shape checks and labels.

Everything a worker would trip over later (not UTF-8, ragged rows, missing columns, unusable
labels) is found here and answered with a message that names the row or column.

Files are read as a stream of record batches, never whole, and against limits (rows, columns,
decoded bytes): a small file can decode to a huge table (a 1 MB Parquet file of run-length
encoded values can hold 10^8 rows), so Parquet is judged by its metadata before anything is
decoded, and CSV and JSON Lines are stopped at the first batch over a limit. A submission reads
each data file once, for all the columns it checks.
"""

from __future__ import annotations

import codecs
import io
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
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
    """The file cannot be used as a dataset; the message says why and where, and `param` the
    request field it is about, when it is about one."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


BLOCK_BYTES = 1 << 24  # CSV and JSON Lines are parsed in blocks of about this size


@dataclass(frozen=True)
class Limits:
    """What an uploaded dataset may hold (settings: FINETUNE_MAX_ROWS, _COLUMNS, _DECODED_BYTES)."""

    max_rows: int
    max_columns: int
    max_decoded_bytes: int


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


def iter_batches(
    path: Path, fmt: Format, columns: list[str] | None = None
) -> Iterator[pa.RecordBatch]:
    """The file as record batches of bounded size, never the whole table at once."""
    try:
        if fmt == "csv":
            reader = pa_csv.open_csv(
                path,
                read_options=pa_csv.ReadOptions(block_size=BLOCK_BYTES),
                convert_options=pa_csv.ConvertOptions(include_columns=columns) if columns else None,
            )
            empty = True
            for batch in reader:
                empty = False
                yield batch
            if empty:  # a header and no rows: still say what the columns are
                yield pa.RecordBatch.from_pylist([], schema=reader.schema)
        elif fmt == "jsonl":
            yield from _jsonl_batches(path, columns)
        else:
            yield from pq.ParquetFile(path).iter_batches(columns=columns, batch_size=65536)
    except pa.ArrowInvalid as exc:
        raise DataFileProblem(_explain(str(exc), fmt)) from exc
    except (OSError, pa.ArrowException) as exc:
        raise DataFileProblem(f"could not read the file as {fmt}: {_first_line(str(exc))}") from exc


def _jsonl_batches(path: Path, columns: list[str] | None) -> Iterator[pa.RecordBatch]:
    """pyarrow has no streaming JSON reader: parse whole lines, a block at a time."""
    schema: pa.Schema | None = None
    with path.open("rb") as handle:
        while True:
            block = handle.read(BLOCK_BYTES)
            if not block:
                return
            block += handle.readline()  # end on a line boundary
            options = pa_json.ParseOptions(explicit_schema=schema) if schema else None
            table = pa_json.read_json(io.BytesIO(block), parse_options=options)
            schema = schema or table.schema  # later blocks must agree with the first
            if columns:
                table = table.select(columns)
            yield from table.to_batches()


def inspect_file(path: Path, fmt: Format, limits: Limits) -> Inspection:
    if path.stat().st_size == 0:
        raise DataFileProblem("the file is empty")
    if fmt == "csv":
        _check_utf8(path)
    if fmt == "parquet":
        _check_parquet_metadata(path, limits)
    rows, schema = 0, None
    for batch in iter_batches(path, fmt):
        schema = schema or batch.schema
        if len(schema.names) > limits.max_columns:
            raise DataFileProblem(
                f"the file has {len(schema.names)} columns, more than the limit of "
                f"{limits.max_columns}"
            )
        rows += batch.num_rows
        if rows > limits.max_rows:
            raise DataFileProblem(
                f"the file has more than {limits.max_rows:,} rows (the limit); split it or "
                "sample it"
            )
    if schema is None or not schema.names:
        raise DataFileProblem("the file has no columns")
    names = schema.names
    if len(set(names)) != len(names):
        duplicated = sorted({n for n in names if names.count(n) > 1})
        raise DataFileProblem(f"duplicate column names: {', '.join(duplicated)}")
    if any(not name.strip() for name in names):
        raise DataFileProblem("a column has an empty name; every column needs a header")
    if rows == 0:
        raise DataFileProblem("the file has a header but no rows")
    return Inspection(rows=rows, columns=names, dtypes={f.name: str(f.type) for f in schema})


def _check_parquet_metadata(path: Path, limits: Limits) -> None:
    """Rows, columns and decoded size from the footer: nothing is decompressed yet."""
    try:
        metadata = pq.ParquetFile(path).metadata
    except (OSError, pa.ArrowException) as exc:
        raise DataFileProblem(_explain(str(exc), "parquet")) from exc
    if metadata.num_columns > limits.max_columns:
        raise DataFileProblem(
            f"the file has {metadata.num_columns} columns, more than the limit of "
            f"{limits.max_columns}"
        )
    if metadata.num_rows > limits.max_rows:
        raise DataFileProblem(
            f"the file has {metadata.num_rows:,} rows, more than the limit of "
            f"{limits.max_rows:,}; split it or sample it"
        )
    decoded = sum(metadata.row_group(i).total_byte_size for i in range(metadata.num_row_groups))
    if decoded > limits.max_decoded_bytes:
        raise DataFileProblem(
            f"the file decodes to {decoded:,} bytes, more than the limit of "
            f"{limits.max_decoded_bytes:,}"
        )


def scan_columns(
    path: Path,
    fmt: Format,
    text_columns: dict[str, str],
    label_column: str,
    max_labels: int,
    *,
    training: bool = True,
) -> tuple[list[str] | None, set[str]]:
    """One pass over the columns a job uses: every text column holds text and no empty row;
    the labels are usable. Returns the class names (sorted, as the worker numbers them; None
    for regression) and the distinct labels as strings. `text_columns` maps the request field
    (named in errors) to the column."""
    wanted = list(dict.fromkeys([*text_columns.values(), label_column]))
    distinct: set[object] = set()
    offset, task = 0, None
    for batch in iter_batches(path, fmt, wanted):
        for param, column in text_columns.items():
            values = batch.column(column)
            if not (pa.types.is_string(values.type) or pa.types.is_large_string(values.type)):
                raise DataFileProblem(f"column '{column}' holds {values.type}, not text", param)
            if values.null_count:  # (empty strings are text; a data report will count them)
                row = offset + pc.is_null(values).to_pylist().index(True) + 1
                raise DataFileProblem(f"row {row}: column '{column}' is empty", param)
        labels = batch.column(label_column)
        dtype = str(labels.type)
        task = task or task_for_dtype(dtype)
        values_list = labels.to_pylist()
        try:
            if task == "regression":
                check_regression_targets(values_list, first_row=offset + 1)
            else:
                if not (
                    pa.types.is_integer(labels.type)
                    or pa.types.is_string(labels.type)
                    or pa.types.is_large_string(labels.type)
                    or pa.types.is_boolean(labels.type)
                ):
                    raise LabelProblem(
                        f"labels of type {dtype} are not supported; use text or integers"
                    )
                for row, value in enumerate(values_list, start=offset + 1):
                    if value is None:
                        raise LabelProblem(f"row {row}: the label is missing")
                distinct.update(values_list)
                if len(distinct) > max_labels:
                    raise LabelProblem(
                        f"more than {max_labels} distinct labels (the limit); is "
                        f"'{label_column}' really the label column?"
                    )
        except LabelProblem as exc:
            raise DataFileProblem(f"column '{label_column}': {exc}", "label_column") from exc
        offset += batch.num_rows
    if task == "regression":
        return None, set()
    if not training:  # a validation file may hold fewer classes than the training file
        return None, {str(v) for v in distinct}
    try:
        return class_names(distinct, max_labels), {str(v) for v in distinct}
    except LabelProblem as exc:
        raise DataFileProblem(f"column '{label_column}': {exc}", "label_column") from exc


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
