"""The other tasks through the service: submit-time checks answer 422 naming the rows, a token
classification job trains on a real worker and its model answers entity spans online."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from app.core.schemas import JobStatus
from finetune import Client, Invalid
from tests.support.factories import entity_rows, sentiment_rows, write_csv, write_jsonl

DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
QUICK = {"epochs": 3, "learning_rate": 0.005, "checkpoint_every_steps": 50}


def token_body(training_file: str, **overrides: Any) -> dict[str, Any]:
    return {
        "model": "tiny-entities",
        "task": "token_classification",
        "training_file": training_file,
        "text_column": "tokens",
        "label_column": "ner_tags",
        **overrides,
        "hyperparameters": {**QUICK, **overrides.get("hyperparameters", {})},
    }


def test_token_classification_job_trains_and_predicts_spans(
    predictor: None, alice: Client, tmp_path: Path
) -> None:
    train = alice.upload(write_jsonl(tmp_path / "ner.jsonl", entity_rows(400, seed=21)))
    job = alice.submit(token_body(train.id))
    assert job.task == "token_classification"
    done = alice.wait(job.id, until=DONE, timeout=240, interval=0.3)
    assert done.status == "succeeded", done.error
    assert done.metrics["f1"] > 0.7 and done.metrics["baseline_f1"] == 0.0
    report = alice.report(job.id)
    assert report.task == "token_classification"
    assert [c.label for c in report.per_class] == ["LOC", "ORG", "PER"]
    [answer] = alice.predict(job.id, ["then Mary met ACME in Paris ."])
    assert answer.entities is not None
    spans = {(e.entity, e.text, e.start, e.end) for e in answer.entities}
    assert spans == {("PER", "Mary", 5, 9), ("ORG", "ACME", 14, 18), ("LOC", "Paris", 22, 27)}


def test_submit_checks_of_token_classification(alice: Client, tmp_path: Path) -> None:
    rows = entity_rows(30, seed=22)
    rows[4]["ner_tags"] = rows[4]["ner_tags"][1:]
    unequal = alice.upload(write_jsonl(tmp_path / "unequal.jsonl", rows))
    with pytest.raises(Invalid, match="rows 5: the number of tags differs") as caught:
        alice.submit(token_body(unequal.id))
    assert caught.value.param == "label_column"

    rows = entity_rows(30, seed=23)
    for index in (2, 9):
        rows[index]["ner_tags"] = ["I-" + t[2:] if t != "O" else t for t in rows[index]["ner_tags"]]
    iob1 = alice.upload(write_jsonl(tmp_path / "iob1.jsonl", rows))
    with pytest.raises(Invalid, match="rows 3, 10: tags break IOB2") as caught:
        alice.submit(token_body(iob1.id))
    assert caught.value.param == "invalid_tags"
    job = alice.submit(token_body(iob1.id, invalid_tags="repair", hyperparameters={"epochs": 1}))
    events = [e.message for e in alice.events(job.id) if e.type == "warning"]
    assert any("2 rows break IOB2 (3, 10)" in m for m in events)
    alice.cancel(job.id)

    texts = alice.upload(write_csv(tmp_path / "s.csv", ["sentence", "label"], sentiment_rows(20)))
    with pytest.raises(Invalid, match="must hold a list of words"):
        alice.submit(token_body(texts.id, text_column="sentence", label_column="label"))


def test_submit_checks_of_multi_label_and_masked_lm(alice: Client, tmp_path: Path) -> None:
    rows = [{"text": "a great film", "labels": ["positive", "film"]}] * 5 + [
        {"text": "awful", "labels": None}
    ]
    missing = alice.upload(write_jsonl(tmp_path / "missing.jsonl", rows))
    body = {
        "model": "tiny",
        "task": "multi_label_classification",
        "training_file": missing.id,
        "label_column": "labels",
    }
    with pytest.raises(Invalid, match="row 6, column 'labels': the label set is missing"):
        alice.submit(body)
    with pytest.raises(Invalid, match="class_weight applies to sequence_classification"):
        alice.submit({**body, "hyperparameters": {"class_weight": "balanced"}})
    with pytest.raises(Invalid, match="early_stopping_metric 'accuracy' does not apply"):
        alice.submit(
            {
                **body,
                "hyperparameters": {
                    "early_stopping_patience": 2,
                    "early_stopping_metric": "accuracy",
                },
            }
        )
    texts = alice.upload(write_csv(tmp_path / "t.csv", ["sentence"], [("a fine film",)] * 20))
    job = alice.submit(
        {"model": "tiny", "task": "masked_lm", "training_file": texts.id, "text_column": "sentence"}
    )
    assert job.task == "masked_lm"
    alice.cancel(job.id)


def test_data_report_reads_the_label_column_as_the_task_does(alice: Client, tmp_path: Path) -> None:
    rows = entity_rows(40, seed=24)
    rows[7]["ner_tags"] = rows[7]["ner_tags"][:-1]
    uploaded = alice.upload(write_jsonl(tmp_path / "ner.jsonl", rows))
    report = alice.file_report(uploaded.id, task="token_classification", model="tiny-entities")
    assert (report.task, report.text_column, report.label_column) == (
        "token_classification",
        "tokens",
        "ner_tags",
    )
    assert set(report.label_counts) <= {"PER", "LOC", "ORG"} and sum(report.label_counts.values())
    assert any("rows 8: the number of tags differs" in p for p in report.problems)
    assert report.token_lengths is not None

    sets = alice.upload(
        write_csv(tmp_path / "ml.csv", ["text", "labels"], [("a", "x;y"), ("b", "")])
    )
    report = alice.file_report(sets.id, task="multi_label_classification", label_delimiter=";")
    assert report.label_counts == {"x": 1, "y": 1} and report.rows_without_labels == 1
    with pytest.raises(Invalid):
        alice.file_report(sets.id, task="translation")
