"""Batch predictions: a job's model over a whole file, as a job of its own.

The file is read in chunks of rows, in order. After each chunk its output rows are appended
to a part file and flushed to disk, its outputs (logits) to a second one, and only then the
position (rows done, bytes of each file) is written atomically. A worker killed at any moment
resumes from the last recorded position, cutting the part files back to it first: every input
row appears in the output exactly once, in the input's order.

With a label column (or, for a masked-LM model, as an evaluation) the file is also judged: the
same evaluation report a job writes for its validation data, with the task's trivial baseline,
computed from what each chunk kept on disk for it (one JSON line per chunk). What a row's
answer and report record hold is the model's task's business (`TaskType.batch_chunk`).
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path
from typing import Any

from app.core.layout import BATCH_OUTPUT_NAMES, REPORT_FILE, fsync_dir, write_atomically
from app.core.schemas import BatchSpec, EvaluationReport, Progress
from worker.errors import InvalidInput, JobCancelled, JobInterrupted
from worker.pipeline.data import load_source
from worker.reporter import Reporter
from worker.serving import LoadedModel, PredictionFailed

CHUNK_ROWS = 1024
STATE_FILE = "batch_state.json"
PART_FILE = "predictions.part"
OUTPUTS_FILE = "outputs.jsonl"  # what each chunk's rows give the report, a line per chunk


def run_batch_prediction(spec: BatchSpec, folder: Path, reporter: Reporter) -> dict[str, Any]:
    """Returns the batch's metrics: rows, rows_failed and, with labels, the model's scores."""
    started = time.monotonic()
    reporter.event("stage", f"loading the model of job {spec.job_id}")
    try:
        loaded = LoadedModel.load(
            Path(spec.model_path), Path(spec.checkpoint_path) if spec.checkpoint_path else None
        )
    except PredictionFailed as exc:
        raise InvalidInput(str(exc)) from exc
    data = load_source(spec.input_path, allow_hub=False)
    total = len(data)
    final = folder / BATCH_OUTPUT_NAMES[spec.input_format]
    state = _read_state(folder)
    if final.exists() and state["rows"] >= total:
        # An earlier attempt wrote every row and published the file, then died before the
        # batch was marked done: nothing to predict again (and the part file is gone).
        reporter.event("stage", f"all {total} rows were predicted by an earlier attempt")
    else:
        state = _predict_rows(spec, folder, loaded, data, reporter)
        reporter.assert_owner()
        (folder / PART_FILE).replace(final)
        fsync_dir(folder)
    metrics: dict[str, Any] = {"rows": total, "rows_failed": state["failed"]}
    if spec.evaluate or spec.label_column is not None:
        if (folder / OUTPUTS_FILE).exists():
            records = [
                json.loads(line) for line in (folder / OUTPUTS_FILE).read_text().splitlines()
            ]
            report = loaded.task_type.batch_report(loaded, records)
            write_atomically(folder / REPORT_FILE, report.model_dump_json(indent=2))
        else:  # written by the attempt that also removed the outputs
            report = EvaluationReport.model_validate_json((folder / REPORT_FILE).read_bytes())
        metrics.update(report.metrics)
        for warning in report.warnings:
            reporter.event("warning", warning)
    (folder / OUTPUTS_FILE).unlink(missing_ok=True)
    reporter.event(
        "stage",
        f"predicted {total} rows ({state['failed']} failed) in {time.monotonic() - started:.1f} s",
    )
    return metrics


def _predict_rows(
    spec: BatchSpec, folder: Path, loaded: LoadedModel, data: Any, reporter: Reporter
) -> dict[str, int]:
    """Every row not yet done, chunk by chunk, each chunk durable before its position is."""
    total = len(data)
    state = _restore(folder)
    if state["rows"]:
        reporter.event("stage", f"resuming at row {state['rows'] + 1} of {total}")
    else:
        reporter.event("stage", f"predicting {total} rows")
    columns = data.column_names
    fmt = "csv" if spec.input_format == "csv" else "jsonl"
    seen_rows, seen_started = state["rows"], time.monotonic()
    with (folder / PART_FILE).open("ab") as part, (folder / OUTPUTS_FILE).open("ab") as raw:
        for start in range(state["rows"], total, CHUNK_ROWS):
            signal = reporter.stop_requested()
            if signal == "cancel":
                raise JobCancelled(state["rows"])
            if signal == "interrupt":
                raise JobInterrupted(state["rows"])
            chunk = data[start : start + CHUNK_ROWS]
            rows = [
                dict(zip(columns, values, strict=True))
                for values in zip(*chunk.values(), strict=True)
            ]
            if fmt == "csv" and start == 0:
                part.write(_csv_line([*columns, *loaded.task_type.batch_csv_header(loaded)]))
            failed = _predict_chunk(rows, spec, loaded, fmt, part, raw)
            part.flush()
            raw.flush()
            os.fsync(part.fileno())
            os.fsync(raw.fileno())
            reporter.assert_owner()
            state = {
                "rows": start + len(rows),
                "failed": state["failed"] + failed,
                "part_bytes": part.tell(),
                "outputs_bytes": raw.tell(),
            }
            write_atomically(folder / STATE_FILE, json.dumps(state))
            rate = (state["rows"] - seen_rows) / max(time.monotonic() - seen_started, 1e-9)
            reporter.progress(
                Progress(
                    step=state["rows"],
                    total_steps=total,
                    percent=round(100.0 * state["rows"] / max(total, 1), 2),
                    eta_seconds=round((total - state["rows"]) / rate, 1) if rate else None,
                    samples_per_second=round(rate, 1),
                    failed=state["failed"],
                )
            )
    return state


def _read_state(folder: Path) -> dict[str, int]:
    state = {"rows": 0, "failed": 0, "part_bytes": 0, "outputs_bytes": 0}
    path = folder / STATE_FILE
    if path.is_file():
        state.update(json.loads(path.read_text()))
    return state


def _restore(folder: Path) -> dict[str, int]:
    """The last recorded position, with the part files cut back to it (anything after it was
    written by an attempt that died before recording it)."""
    folder.mkdir(parents=True, exist_ok=True)
    state = _read_state(folder)
    for name, size in ((PART_FILE, state["part_bytes"]), (OUTPUTS_FILE, state["outputs_bytes"])):
        with (folder / name).open("ab") as handle:
            handle.truncate(size)
    return state


def _csv_line(values: list[Any]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerow(values)
    return buffer.getvalue().encode()


def _predict_chunk(
    rows: list[dict[str, Any]],
    spec: BatchSpec,
    loaded: LoadedModel,
    fmt: str,
    part: Any,
    raw: Any,
) -> int:
    """Writes one chunk's output rows and its report record; returns how many rows failed."""
    evaluate = spec.evaluate or spec.label_column is not None
    chunk = loaded.task_type.batch_chunk(loaded, rows, spec, evaluate)
    if evaluate:
        raw.write((json.dumps(chunk.record) + "\n").encode())
    for row, answer, error in zip(rows, chunk.answers, chunk.errors, strict=True):
        part.write(_output_row(row, answer, error, loaded, fmt))
    return sum(1 for answer in chunk.answers if answer is None)


def _output_row(
    row: dict[str, Any],
    answer: dict[str, Any] | None,
    error: str | None,
    loaded: LoadedModel,
    fmt: str,
) -> bytes:
    if fmt == "jsonl":
        record = {**row, "prediction": answer, "error": error}
        return (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
    values = loaded.task_type.batch_csv_values(loaded, answer)
    return _csv_line([*row.values(), *values, error or ""])
