"""Checks at submit for the tasks beyond sequence classification: what the worker would refuse,
found before the job is queued (422 naming the rows), and what it would repair (warnings).

Multi-label: the label column holds lists (JSON Lines, Parquet) or delimited text (CSV).
Token classification: word lists and tag lists of equal length per row, IOB2 tags (refused or
repaired as the job asks). Masked LM: text only. Reads the files with pyarrow in bounded
batches, as the sequence-classification checks do; never imports the training libraries.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from app.api.datafiles import DataFileProblem, Format, iter_batches
from app.core.labels import LabelProblem, class_names, label_set
from app.core.schemas import JobCreate
from app.core.tags import TagProblem, check_iob2, entity_types

MAX_ROWS_NAMED = 5


def _rows(path: Path, fmt: Format, columns: list[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    row = 0
    for batch in iter_batches(path, fmt, columns):
        values = {c: batch.column(c).to_pylist() for c in columns}
        for i in range(batch.num_rows):
            row += 1
            yield row, {c: values[c][i] for c in columns}


def _named(rows: list[int]) -> str:
    shown = ", ".join(str(r) for r in rows[:MAX_ROWS_NAMED])
    return shown + (f" and {len(rows) - MAX_ROWS_NAMED} more" if len(rows) > MAX_ROWS_NAMED else "")


def check_task_file(
    body: JobCreate,
    path: Path,
    fmt: Format,
    max_labels: int,
    known: list[str] | None,
) -> tuple[list[str], list[str]]:
    """One data file of a job whose task is not sequence classification. `known`: the
    training file's labels (for a validation file). Returns (labels, warnings); raises
    DataFileProblem (with the request field to name) for what the worker would refuse."""
    if body.task == "masked_lm":
        _check_texts(path, fmt, body.text_column)
        return [], []
    if body.task == "multi_label_classification":
        texts = [body.text_column] + ([body.text_pair_column] if body.text_pair_column else [])
        labels = check_label_sets(
            texts, body.label_column, body.label_delimiter, path, fmt, max_labels, known
        )
        return labels, []
    return _check_tags(body, path, fmt, max_labels, known)


def _check_texts(path: Path, fmt: Format, column: str) -> None:
    for row, values in _rows(path, fmt, [column]):
        if not isinstance(values[column], str):
            raise DataFileProblem(
                f"row {row}: column '{column}' holds {type(values[column]).__name__}, not text",
                "text_column",
            )


def check_label_sets(
    texts: list[str],
    label_column: str,
    delimiter: str,
    path: Path,
    fmt: Format,
    max_labels: int,
    known: list[str] | None,
) -> list[str]:
    """Every row's label set parses; returns the labels (`known`: they must be among them)."""
    seen: list[object] = []
    distinct: set[str] = set()
    for row, values in _rows(path, fmt, [*texts, label_column]):
        for column in texts:
            if not isinstance(values[column], str):
                raise DataFileProblem(f"row {row}: column '{column}' is not text", "text_column")
        try:
            labels = label_set(values[label_column], delimiter)
        except LabelProblem as exc:
            raise DataFileProblem(
                f"row {row}, column '{label_column}': {exc}", "label_column"
            ) from exc
        for label in labels:
            if str(label) not in distinct:
                distinct.add(str(label))
                seen.append(label)
        if len(distinct) > max_labels:
            raise DataFileProblem(
                f"more than {max_labels} distinct labels (the limit)", "label_column"
            )
    if known is not None:
        unknown = sorted(distinct - set(known))
        if unknown:
            raise DataFileProblem(
                f"labels {', '.join(unknown[:10])} do not occur in the training file",
                "validation_file",
            )
        return known
    try:
        return class_names(seen, max_labels)
    except LabelProblem as exc:
        raise DataFileProblem(f"column '{label_column}': {exc}", "label_column") from exc


def _check_tags(
    body: JobCreate, path: Path, fmt: Format, max_labels: int, known: list[str] | None
) -> tuple[list[str], list[str]]:
    words_column, tags_column = body.text_column, body.label_column
    names = body.label_names
    unequal: list[int] = []
    broken: list[int] = []
    tags_seen: set[str] = set()
    for row, values in _rows(path, fmt, [words_column, tags_column]):
        words, tags = values[words_column], values[tags_column]
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise DataFileProblem(
                f"row {row}: column '{words_column}' must hold a list of words for "
                "token_classification",
                "text_column",
            )
        if not isinstance(tags, list):
            raise DataFileProblem(
                f"row {row}: column '{tags_column}' must hold a list of tags", "label_column"
            )
        if len(words) != len(tags):
            unequal.append(row)
            continue
        as_names = []
        for tag in tags:
            if isinstance(tag, str):
                as_names.append(tag)
            elif isinstance(tag, int) and not isinstance(tag, bool):
                if names is None:
                    raise DataFileProblem(
                        f"row {row}: tags are integer ids; name them with label_names (the "
                        "tag of each id), or use tag strings",
                        "label_names",
                    )
                if not 0 <= tag < len(names):
                    raise DataFileProblem(
                        f"row {row}: tag id {tag} is not in label_names (ids 0-{len(names) - 1})",
                        "label_names",
                    )
                as_names.append(names[tag])
            else:
                raise DataFileProblem(f"row {row}: tag {tag!r} is not a tag", "label_column")
        try:
            verdict = check_iob2(as_names)
        except TagProblem as exc:
            raise DataFileProblem(f"row {row}: {exc}", "label_column") from exc
        if verdict.broken_at is not None:
            broken.append(row)
        tags_seen.update(verdict.repaired)
    if unequal:
        raise DataFileProblem(
            f"rows {_named(unequal)}: the number of tags differs from the number of words; "
            "every word needs exactly one tag",
            "label_column",
        )
    warnings = []
    if broken:
        if body.invalid_tags == "refuse":
            raise DataFileProblem(
                f"rows {_named(broken)}: tags break IOB2 (an I-X that follows neither B-X nor "
                "I-X); fix the data, or set invalid_tags to 'repair' to make such tags B-X",
                "invalid_tags",
            )
        warnings.append(
            f"{len(broken)} rows break IOB2 ({_named(broken)}); they will be repaired (those "
            "I- tags become B-)"
        )
    if known is not None:
        unknown = sorted(tags_seen - set(known))
        if unknown:
            raise DataFileProblem(
                f"tags {', '.join(unknown[:10])} do not occur in the training file",
                "validation_file",
            )
        return known, warnings
    if len(tags_seen) > max_labels:
        raise DataFileProblem(f"more than {max_labels} distinct tags (the limit)", "label_column")
    if not entity_types(sorted(tags_seen)):
        raise DataFileProblem("the tags name no entity (only O)", "label_column")
    return sorted(tags_seen), warnings
