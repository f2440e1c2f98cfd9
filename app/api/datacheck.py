"""The data report: what a labelled file holds and what is wrong with it, before training.

Counts per label and the imbalance, empty texts, exact duplicates, the same text under
different labels, labels that differ only by case or surrounding spaces, and (with a model)
token-length percentiles and the share of rows `max_length` truncates, in the model's own
tokens: its `tokenizer.json` through the `tokenizers` library, so the API still never imports
TensorFlow or transformers. For a job's training/validation pair, also the validation rows
whose text is in the training file (they inflate validation scores).

`problems` make training pointless and refuse a job (422, rows named); `warnings` become the
job's events. Row numbers count data rows from 1 (a CSV's header is not a row).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

from tokenizers import Tokenizer

from app.api.datafiles import DataFileProblem, Format, iter_batches
from app.api.labelview import KEY_JOIN, LabelView, label_set_view, tag_view
from app.core.labels import task_for_dtype
from app.core.layout import write_atomically
from app.core.schemas import DataReport, LabelVariant, ReportTask, RowGroup, TokenLengths
from app.core.store import FileRecord

GROUPS_SHOWN = 10  # duplicate/conflict groups listed in a report
ROWS_SHOWN = 10  # row numbers listed per group
TEXT_SHOWN = 200  # characters of a text shown in a group
IMBALANCE_WARNING = 10.0
TRUNCATION_WARNING = 0.05
SEPARATOR = "\x1f"  # between a text and its pair in a row's key


@dataclass
class Columns:
    """The columns a report reads, at most `max_rows` of them. Token classification: `words`
    holds each row's words (None: not a list) and `texts` the words joined by spaces."""

    texts: list[str]
    pairs: list[str] | None
    labels: list[object]
    label_dtype: str
    words: list[list[str] | None] | None = None

    def keys(self) -> list[str]:
        if self.pairs is None:
            return self.texts
        return [t + SEPARATOR + p for t, p in zip(self.texts, self.pairs, strict=True)]


def read_columns(
    path: Path,
    fmt: Format,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    max_rows: int,
    task: str = "sequence_classification",
) -> Columns:
    wanted = list(dict.fromkeys([c for c in (text_column, pair_column, label_column) if c]))
    texts: list[str] = []
    pairs: list[str] | None = [] if pair_column else None
    words: list[list[str] | None] | None = [] if task == "token_classification" else None
    labels: list[object] = []
    dtype = ""
    for batch in iter_batches(path, fmt, wanted):
        take = min(batch.num_rows, max_rows - len(texts))
        batch = batch.slice(0, take)
        values = batch.column(text_column).to_pylist()
        if words is not None:
            listed = [
                v if isinstance(v, list) and all(isinstance(w, str) for w in v) else None
                for v in values
            ]
            words += listed
            texts += [" ".join(v) if v is not None else "" for v in listed]
        else:
            texts += [t if isinstance(t, str) else "" for t in values]
        if pairs is not None and pair_column:
            column = batch.column(pair_column).to_pylist()
            pairs += [t if isinstance(t, str) else "" for t in column]
        if label_column is not None:
            dtype = dtype or str(batch.column(label_column).type)
            labels += batch.column(label_column).to_pylist()
        if len(texts) >= max_rows:
            break
    return Columns(texts, pairs, labels, dtype, words)


@lru_cache(maxsize=8)
def _tokenizer(path: str, mtime_ns: int) -> Tokenizer:
    tokenizer = Tokenizer.from_file(path)
    tokenizer.no_truncation()
    tokenizer.no_padding()
    return tokenizer


def load_tokenizer(model_folder: Path) -> Tokenizer | None:
    """The model's fast tokenizer, or None when the folder has no `tokenizer.json`."""
    path = model_folder / "tokenizer.json"
    if not path.is_file():
        return None
    return _tokenizer(str(path), path.stat().st_mtime_ns)


def token_lengths(
    columns: Columns, tokenizer: Tokenizer, model: str, max_length: int
) -> TokenLengths:
    if columns.words is not None:
        encoded = tokenizer.encode_batch([w or [] for w in columns.words], is_pretokenized=True)
    elif columns.pairs is None:
        encoded = tokenizer.encode_batch(columns.texts)
    else:
        encoded = tokenizer.encode_batch(list(zip(columns.texts, columns.pairs, strict=True)))
    lengths = sorted(len(e.ids) for e in encoded)
    count = len(lengths)

    def rank(q: float) -> int:  # nearest rank
        return lengths[min(count - 1, max(0, round(q * count) - 1))] if count else 0

    truncated = sum(1 for n in lengths if n > max_length)
    return TokenLengths(
        model=model,
        max_length=max_length,
        p50=rank(0.5),
        p90=rank(0.9),
        p95=rank(0.95),
        p99=rank(0.99),
        max=lengths[-1] if lengths else 0,
        truncated_rows=truncated,
        truncated_share=round(truncated / count, 6) if count else 0.0,
    )


def _rows(indices: list[int]) -> list[int]:
    return [i + 1 for i in indices[:ROWS_SHOWN]]


def _shown(key: str) -> str:
    text = key.replace(SEPARATOR, " | ")
    return text if len(text) <= TEXT_SHOWN else text[: TEXT_SHOWN - 1] + "…"


def build_report(
    columns: Columns,
    *,
    file_id: str,
    filename: str,
    rows: int,
    text_column: str,
    pair_column: str | None,
    label_column: str | None,
    lengths: TokenLengths | None,
    validation: bool = False,
    job_task: str = "sequence_classification",
    label_delimiter: str = ",",
) -> DataReport:
    task: ReportTask
    view: LabelView | None = None
    if job_task == "sequence_classification":
        task = task_for_dtype(columns.label_dtype)
        labels = [str(v) for v in columns.labels]
    elif job_task == "multi_label_classification":
        task = "multi_label_classification"
        delimited = columns.label_dtype in ("string", "large_string")
        view = label_set_view(columns.labels, str(label_column), label_delimiter, delimited)
        labels = view.keys
    elif job_task == "token_classification":
        task = "token_classification"
        view = tag_view(columns.words or [], columns.labels, str(label_column))
        labels = view.keys
    else:
        task = "masked_lm"
        labels = [""] * len(columns.texts)
    keys = columns.keys()
    problems: list[str] = list(view.problems) if view else []
    warnings: list[str] = list(view.warnings) if view else []

    empty = [i for i, t in enumerate(columns.texts) if not t.strip()]
    if columns.texts and len(empty) == len(columns.texts):
        problems.append(f"every row's '{text_column}' is empty: there is nothing to learn from")
    elif empty:
        warnings.append(
            f"{len(empty)} rows have an empty '{text_column}' (rows "
            f"{', '.join(map(str, _rows(empty)))}); they teach the model nothing"
        )

    # Rows per text, only for texts seen more than once (one cheap count first).
    repeated = {k for k, n in Counter(keys).items() if n > 1}
    where: dict[str, list[int]] = defaultdict(list)
    for index, key in enumerate(keys):
        if key in repeated:
            where[key].append(index)
    duplicates: list[RowGroup] = []
    conflicts: list[RowGroup] = []
    duplicate_rows = conflicting = 0
    labelled = task not in ("regression", "masked_lm")
    for key, indices in where.items():
        seen = Counter(labels[i] for i in indices) if labelled else Counter()
        if labelled and len(seen) > 1:
            conflicting += 1
            if len(conflicts) < GROUPS_SHOWN:
                conflicts.append(
                    RowGroup(text=_shown(key), rows=_rows(indices), labels=_spelled(seen))
                )
        repeats = len(indices) - max(len(seen), 1)
        if repeats > 0:
            duplicate_rows += repeats
            if len(duplicates) < GROUPS_SHOWN:
                duplicates.append(
                    RowGroup(text=_shown(key), rows=_rows(indices), labels=_spelled(seen))
                )
    if duplicate_rows:
        warnings.append(
            f"{duplicate_rows} rows repeat an earlier row's text and label (e.g. rows "
            f"{', '.join(map(str, duplicates[0].rows))}): they count twice in training"
        )
    if conflicting:
        conflict = conflicts[0]
        warnings.append(
            f"{conflicting} texts appear with different labels (e.g. rows "
            f"{', '.join(map(str, conflict.rows))}: {' / '.join(conflict.labels)}); no model can "
            "get them all right: check the labelling"
        )

    label_counts: dict[str, int] = {}
    imbalance = None
    variants: list[list[LabelVariant]] = []
    if task == "classification" or view is not None:
        counts = Counter(labels) if view is None else view.counts
        label_counts = dict(counts.most_common())
        what = "entity types" if task == "token_classification" else "labels"
        if len(counts) >= 2:
            imbalance = round(max(counts.values()) / min(counts.values()), 4)
            if imbalance > IMBALANCE_WARNING:
                rare = min(counts, key=lambda k: counts[k])
                warnings.append(
                    f"the {what} are imbalanced: '{max(counts, key=lambda k: counts[k])}' has "
                    f"{imbalance:.0f}x the {'entities' if view and what != 'labels' else 'rows'} "
                    f"of '{rare}'; a model may learn to ignore the rare {what} (watch "
                    "per-class recall in the job's report)"
                )
        elif len(counts) == 1 and not validation and task == "classification":
            problems.append(
                f"'{label_column}' holds a single class ('{labels[0]}'): classification needs "
                "at least two"
            )
        if task == "classification":
            variants = _case_variants(
                [
                    (i, label)
                    for i, (raw, label) in enumerate(zip(columns.labels, labels, strict=True))
                    if isinstance(raw, str)
                ]
            )
        elif task == "multi_label_classification":
            variants = _case_variants(
                [(i, name) for i, key in enumerate(labels) for name in key.split(KEY_JOIN) if name]
            )
        for group in variants:
            spelled = ", ".join(f"'{v.label}' (rows {', '.join(map(str, v.rows))})" for v in group)
            problems.append(
                f"labels {spelled} differ only by case or surrounding spaces: the model would "
                "learn them as different classes; write each class one way"
            )

    if lengths is not None and lengths.truncated_share > TRUNCATION_WARNING:
        warnings.append(
            f"{lengths.truncated_rows} rows ({lengths.truncated_share:.0%}) are longer than "
            f"max_length {lengths.max_length} tokens and will be cut (95% of rows fit in "
            f"{lengths.p95}); raise max_length if their ends matter"
        )

    return DataReport(
        file_id=file_id,
        filename=filename,
        rows=rows,
        rows_checked=len(keys),
        text_column=text_column,
        text_pair_column=pair_column,
        label_column=label_column,
        task=task,
        label_counts=label_counts,
        rows_without_labels=view.rows_without_labels if view else None,
        imbalance_ratio=imbalance,
        empty_texts=len(empty),
        empty_text_rows=_rows(empty),
        duplicate_texts=duplicate_rows,
        duplicates=duplicates,
        conflicting_texts=conflicting,
        conflicts=conflicts,
        case_variants=variants,
        token_lengths=lengths,
        problems=problems,
        warnings=warnings,
    )


def _spelled(seen: Counter[str]) -> list[str]:
    """A group's label keys as the user wrote them (a label set joined by commas)."""
    return [key.replace(KEY_JOIN, ", ") or "(none)" for key in seen]


def _case_variants(occurrences: list[tuple[int, str]]) -> list[list[LabelVariant]]:
    """Text labels (row index, label) grouped by their case-folded, stripped spelling; groups
    of several spellings."""
    spellings: dict[str, dict[str, list[int]]] = defaultdict(dict)
    for index, label in occurrences:
        spellings[label.strip().casefold()].setdefault(label, []).append(index)
    return [
        [
            LabelVariant(label=label, count=len(indices), rows=_rows(indices))
            for label, indices in sorted(group.items(), key=lambda kv: -len(kv[1]))
        ]
        for group in spellings.values()
        if len(group) > 1
    ]


def overlap_warning(train: Columns, validation: Columns) -> tuple[str | None, bool]:
    """Validation rows whose text (and pair) is also in the training file: (a warning or None,
    whether every validation row is one)."""
    known = set(train.keys())
    shared = [i for i, key in enumerate(validation.keys()) if key in known]
    if not shared:
        return None, False
    every = len(shared) == len(validation.texts)
    return (
        f"{len(shared)} of {len(validation.texts)} validation rows (e.g. rows "
        f"{', '.join(map(str, _rows(shared)))}) have a text that is also in the training file: "
        "validation scores on them overstate how the model does on new text"
    ), every


def cache_key(*parts: object) -> str:
    return hashlib.sha256(json.dumps(parts, default=str).encode()).hexdigest()[:24]


@dataclass(frozen=True)
class ReportRequest:
    text_column: str
    pair_column: str | None
    label_column: str | None  # None: masked LM
    model_name: str | None = None
    model_folder: Path | None = None  # a local model's folder: token lengths need it
    max_length: int = 128
    validation: bool = False  # a validation file may hold a single class
    task: str = "sequence_classification"  # the job's task: how the label column is read
    label_delimiter: str = ","


def file_report(
    path: Path,
    fmt: Format,
    file_id: str,
    filename: str,
    rows: int,
    request: ReportRequest,
    max_rows: int,
) -> tuple[DataReport, Columns | None]:
    """The report (kept beside the upload, which never changes, for the next call with the
    same columns and model) and the columns, when they had to be read."""
    folder = request.model_folder
    tokenizer = load_tokenizer(folder) if folder is not None else None
    tokenizer_file = folder / "tokenizer.json" if folder is not None and tokenizer else None
    key = cache_key(
        request, max_rows, tokenizer_file.stat().st_mtime_ns if tokenizer_file else None
    )
    cached = path.with_name(f".{path.name}.report-{key}.json")
    if cached.is_file():
        try:
            return DataReport.model_validate_json(cached.read_bytes()), None
        except ValueError:
            pass  # written by another version: compute it again
    columns = read_columns(
        path,
        fmt,
        request.text_column,
        request.pair_column,
        request.label_column,
        max_rows,
        request.task,
    )
    lengths = None
    if tokenizer is not None:
        lengths = token_lengths(columns, tokenizer, request.model_name or "", request.max_length)
    report = build_report(
        columns,
        file_id=file_id,
        filename=filename,
        rows=rows,
        text_column=request.text_column,
        pair_column=request.pair_column,
        label_column=request.label_column,
        lengths=lengths,
        validation=request.validation,
        job_task=request.task,
        label_delimiter=request.label_delimiter,
    )
    with contextlib.suppress(OSError):  # a cache: the report stands without it
        write_atomically(cached, report.model_dump_json())
    return report, columns


def check_submission(
    train: FileRecord | None,
    validation: FileRecord | None,
    request: ReportRequest,
    max_rows: int,
) -> list[str]:
    """A job's files, each reported (cached) with the job's columns, model and max_length,
    then the pair for overlap. Raises DataFileProblem (with the file's request field) on a
    problem; returns the warnings, each saying which file it is about."""
    warnings: list[str] = []
    columns: dict[str, Columns] = {}
    files = {"training": (train, "training_file"), "validation": (validation, "validation_file")}
    for which, (record, param) in files.items():
        if record is None:
            continue
        try:
            report, read = file_report(
                Path(record.path),
                record.public.format,
                record.public.id,
                record.public.filename,
                record.public.rows,
                replace(request, validation=which == "validation"),
                max_rows,
            )
        except DataFileProblem as exc:
            raise DataFileProblem(str(exc), param) from exc
        if report.problems:
            raise DataFileProblem(f"{which} data: " + "; ".join(report.problems), param)
        warnings += [f"{which} data: {w}" for w in report.warnings]
        if read is not None:
            columns[which] = read
    if train is None or validation is None:
        return warnings
    for which, (record, _) in files.items():
        if which not in columns and record is not None:
            columns[which] = read_columns(
                Path(record.path),
                record.public.format,
                request.text_column,
                request.pair_column,
                request.label_column,
                max_rows,
            )
    overlap, every = overlap_warning(columns["training"], columns["validation"])
    if every:
        raise DataFileProblem(
            "every validation row's text is also in the training file: validation would only "
            "measure memory; use held-out rows",
            "validation_file",
        )
    return [*warnings, overlap] if overlap else warnings
