"""What the data report reads from a label column, per task.

The data report (`app/api/datacheck.py`) counts, finds duplicates and conflicts, and warns the
same way for every task; what a row's label *is* differs: one class or a number (sequence
classification), a set of labels (multi-label), a tag per word (token classification), or
nothing (masked LM). `label_view` turns a column into a key per row (rows with equal text and
key are duplicates, equal text and different keys conflict), the counts the report shows, and
the task's own problems and warnings, with rows named.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from app.core.labels import LabelProblem, label_set
from app.core.tags import TagProblem, check_iob2, entity_type

KEY_JOIN = "\x1e"  # between the labels of a set in a row's key
ROWS_NAMED = 10
NO_LABEL_WARNING = 0.25  # share of multi-label rows without a label worth a word


@dataclass
class LabelView:
    keys: list[str]  # per row: what duplicates and conflicts compare
    counts: Counter[str] = field(default_factory=Counter)  # per class, label or entity type
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    rows_without_labels: int | None = None


def _named(rows: list[int]) -> str:
    shown = ", ".join(str(r + 1) for r in rows[:ROWS_NAMED])
    return shown + (f" and {len(rows) - ROWS_NAMED} more" if len(rows) > ROWS_NAMED else "")


def label_set_view(
    labels: list[object], label_column: str, delimiter: str, delimited: bool
) -> LabelView:
    """Multi-label: each row's set (a list, or delimited text where empty means none;
    `delimited`: the column holds text, where an empty cell reads as missing)."""
    view = LabelView(keys=[])
    unreadable: list[int] = []
    empty: list[int] = []
    for index, value in enumerate(labels):
        try:
            found = label_set("" if value is None and delimited else value, delimiter)
        except LabelProblem:
            unreadable.append(index)
            view.keys.append("")
            continue
        names = sorted({str(v) for v in found})
        if not names:
            empty.append(index)
        view.counts.update(names)
        view.keys.append(KEY_JOIN.join(names))
    if unreadable:
        view.problems.append(
            f"rows {_named(unreadable)}: '{label_column}' holds no label set (a list of labels, "
            "or in CSV text split by label_delimiter; an empty list means no label)"
        )
    view.rows_without_labels = len(empty)
    if labels and len(empty) / len(labels) >= NO_LABEL_WARNING:
        view.warnings.append(
            f"{len(empty)} rows ({len(empty) / len(labels):.0%}) have no label (e.g. rows "
            f"{_named(empty[:3])}): the model learns to answer none for texts like them; "
            "check that the label column and label_delimiter are right"
        )
    return view


def tag_view(words: list[list[str] | None], labels: list[object], label_column: str) -> LabelView:
    """Token classification: a tag per word; counts are entities per type (IOB2 spans)."""
    view = LabelView(keys=[])
    not_lists: list[int] = []
    unequal: list[int] = []
    broken: list[int] = []
    not_iob2: list[int] = []
    for index, (row_words, tags) in enumerate(zip(words, labels, strict=True)):
        if not isinstance(tags, list) or row_words is None:
            not_lists.append(index)
            view.keys.append("")
            continue
        view.keys.append(" ".join(str(t) for t in tags))
        if len(tags) != len(row_words):
            unequal.append(index)
            continue
        if not all(isinstance(t, str) for t in tags):
            continue  # integer ids: the job's label_names name them; nothing to check here
        try:
            verdict = check_iob2([str(t) for t in tags])
        except TagProblem:
            not_iob2.append(index)
            continue
        if verdict.broken_at is not None:
            broken.append(index)
        for tag in verdict.repaired:
            kind = entity_type(tag)
            if kind is not None and tag.startswith("B-"):
                view.counts[kind] += 1
    if not_lists:
        view.problems.append(
            f"rows {_named(not_lists)}: token classification needs a list of words and a list "
            f"of tags ('{label_column}') per row"
        )
    if unequal:
        view.problems.append(
            f"rows {_named(unequal)}: the number of tags differs from the number of words; "
            "every word needs exactly one tag"
        )
    if not_iob2:
        view.problems.append(
            f"rows {_named(not_iob2)}: tags that are not IOB2 (O, B-TYPE or I-TYPE)"
        )
    if broken:
        view.warnings.append(
            f"{len(broken)} rows break IOB2 (rows {_named(broken)}: an I-X that follows neither "
            "B-X nor I-X); a job refuses them unless invalid_tags is 'repair'"
        )
    if labels and not view.counts and not not_lists and not unequal:
        view.problems.append("the tags name no entity (only O): there is nothing to learn")
    return view
