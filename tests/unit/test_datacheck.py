"""The data report finds planted problems, with row numbers counted from 1."""

from __future__ import annotations

from pathlib import Path

from app.api.datacheck import ReportRequest, file_report, overlap_warning, read_columns
from tests.support.factories import write_csv, write_jsonl

LONG = "good " * 30
ROWS = [
    ("good film", "positive"),  # 1
    ("bad film", "negative"),  # 2
    ("good film", "positive"),  # 3: repeats row 1
    ("bad film", "positive"),  # 4: conflicts with row 2
    ("", "negative"),  # 5: empty
    ("fine film", "Positive "),  # 6: a spelling of "positive"
    (LONG, "negative"),  # 7: longer than max_length
    ("the plot", "negative"),  # 8
]


def report_for(path: Path, model_folder: Path | None = None, max_length: int = 16):
    request = ReportRequest(
        "sentence", None, "label", "tiny" if model_folder else None, model_folder, max_length
    )
    return file_report(path, "csv", "file_x", path.name, len(ROWS), request, 1000)


def test_planted_problems_are_found_with_their_rows(tmp_path: Path, models_dir: Path) -> None:
    from transformers import AutoTokenizer

    path = write_csv(tmp_path / "train.csv", ["sentence", "label"], ROWS)
    report, columns = report_for(path, models_dir / "tiny")
    assert columns is not None and report.rows_checked == 8
    assert report.label_counts == {"negative": 4, "positive": 3, "Positive ": 1}
    assert report.imbalance_ratio == 4.0
    assert (report.empty_texts, report.empty_text_rows) == (1, [5])
    assert report.duplicate_texts == 1
    assert [(g.text, g.rows) for g in report.duplicates] == [("good film", [1, 3])]
    assert report.conflicting_texts == 1
    (conflict,) = report.conflicts
    assert conflict.rows == [2, 4] and set(conflict.labels) == {"negative", "positive"}
    ((common, rare),) = report.case_variants
    assert (common.label, common.rows) == ("positive", [1, 3, 4])
    assert (rare.label, rare.rows) == ("Positive ", [6])
    assert any("differ only by case" in p and "(rows 6)" in p for p in report.problems)
    assert any("rows 1, 3" in w for w in report.warnings)

    tokenizer = AutoTokenizer.from_pretrained(models_dir / "tiny")
    lengths = sorted(len(tokenizer(text)["input_ids"]) for text, _ in ROWS)
    assert report.token_lengths is not None
    assert report.token_lengths.max == lengths[-1] == len(tokenizer(LONG)["input_ids"])
    assert report.token_lengths.truncated_rows == sum(n > 16 for n in lengths) == 1
    assert report.token_lengths.p50 == lengths[3]  # nearest rank of 8 values

    again, reread = report_for(path, models_dir / "tiny")
    assert again == report and reread is None  # kept beside the file
    assert report_for(path, models_dir / "tiny", max_length=64)[0].token_lengths.truncated_rows == 0


def test_a_clean_file_has_no_problems(tmp_path: Path) -> None:
    rows = [(f"text number {i}", "yes" if i % 2 else "no") for i in range(50)]
    report, _ = report_for(write_csv(tmp_path / "clean.csv", ["sentence", "label"], rows))
    assert report.problems == [] and report.warnings == []
    assert report.token_lengths is None  # no model named


def test_validation_rows_also_in_training_are_named(tmp_path: Path) -> None:
    train = write_csv(tmp_path / "t.csv", ["sentence", "label"], ROWS)
    validation = write_csv(
        tmp_path / "v.csv", ["sentence", "label"], [("new text", "negative"), ("bad film", "x")]
    )
    columns = [read_columns(p, "csv", "sentence", None, "label", 100) for p in (train, validation)]
    warning, every = overlap_warning(*columns)
    assert warning is not None and "1 of 2 validation rows (e.g. rows 2)" in warning
    assert not every


def task_report(path: Path, fmt: str, task: str, label: str | None, text: str = "text", **kw):
    request = ReportRequest(text, None, label, task=task, **kw)
    report, _ = file_report(path, fmt, "file_x", path.name, 0, request, 1000)  # type: ignore[arg-type]
    return report


def test_multi_label_report_counts_each_label_and_compares_sets(tmp_path: Path) -> None:
    rows = [
        {"text": "great film", "labels": ["positive", "film"]},  # 1
        {"text": "great film", "labels": ["film", "positive"]},  # 2: the same set, reordered
        {"text": "awful", "labels": ["negative"]},  # 3
        {"text": "awful", "labels": []},  # 4: conflicts with row 3
        {"text": "a plot", "labels": ["Film"]},  # 5: a spelling of "film"
        {"text": "the end", "labels": []},  # 6
    ]
    report = task_report(
        write_jsonl(tmp_path / "ml.jsonl", rows), "jsonl", "multi_label_classification", "labels"
    )
    assert report.task == "multi_label_classification"
    assert report.label_counts == {"positive": 2, "film": 2, "negative": 1, "Film": 1}
    assert report.rows_without_labels == 2
    assert [(g.rows, g.labels) for g in report.duplicates] == [([1, 2], ["film, positive"])]
    assert [(g.rows, sorted(g.labels)) for g in report.conflicts] == [
        ([3, 4], ["(none)", "negative"])
    ]
    assert any("'Film'" in p and "'film'" in p for p in report.problems)
    assert any("2 rows (33%) have no label" in w for w in report.warnings)

    # CSV: delimited text, an empty cell means no label; a chosen delimiter.
    table = [("good", "a|b"), ("bad", ""), ("ok", "b")]
    path = write_csv(tmp_path / "ml.csv", ["text", "labels"], table)
    report = task_report(path, "csv", "multi_label_classification", "labels", label_delimiter="|")
    assert report.label_counts == {"b": 2, "a": 1} and report.rows_without_labels == 1
    assert report.problems == []


def test_token_report_counts_entities_and_names_broken_rows(
    tmp_path: Path, models_dir: Path
) -> None:
    rows = [
        {"tokens": ["Mary", "met", "John", "Smith"], "ner_tags": ["B-PER", "O", "B-PER", "I-PER"]},
        {"tokens": ["in", "New", "York"], "ner_tags": ["O", "I-LOC", "I-LOC"]},  # 2: IOB1
        {"tokens": ["ACME", "sued"], "ner_tags": ["B-ORG"]},  # 3: a tag short
        {"tokens": ["Mary", "met", "John", "Smith"], "ner_tags": ["B-PER", "O", "B-PER", "I-PER"]},
    ]
    path = write_jsonl(tmp_path / "ner.jsonl", rows)
    report = task_report(
        path,
        "jsonl",
        "token_classification",
        "ner_tags",
        text="tokens",
        model_name="tiny",
        model_folder=models_dir / "tiny",
    )
    assert report.task == "token_classification"
    assert report.label_counts == {"PER": 4, "LOC": 1}  # entities, the IOB1 one as repaired
    assert any("rows 3: the number of tags differs" in p for p in report.problems)
    assert any("1 rows break IOB2 (rows 2" in w for w in report.warnings)
    assert [g.rows for g in report.duplicates] == [[1, 4]]
    assert report.token_lengths is not None and report.token_lengths.max >= 6  # words + 2

    words_only = [{"tokens": ["O"], "ner_tags": ["O"]}] * 3
    report = task_report(
        write_jsonl(tmp_path / "o.jsonl", words_only), "jsonl", "token_classification",
        "ner_tags", text="tokens",
    )  # fmt: skip
    assert any("name no entity" in p for p in report.problems)


def test_masked_lm_report_has_no_labels(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "t.csv", ["text"], [("a film",), ("a film",), ("",)])
    report = task_report(path, "csv", "masked_lm", None)
    assert (report.task, report.label_column, report.label_counts) == ("masked_lm", None, {})
    assert report.duplicate_texts == 1 and report.empty_texts == 1
    assert report.conflicting_texts == 0 and report.problems == []
