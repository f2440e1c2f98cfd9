"""Batch predictions and evaluations for the tasks beyond sequence classification, through the
service on real workers: a file judged by a job's model gives the scores the job reported for
the same rows, its output rows answer as online predictions do, and what cannot be judged is
refused at submit."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import pytest

from app.core.schemas import JobStatus
from finetune import Client, Invalid
from finetune.client import Job
from tests.support.factories import entity_rows, topic_rows, write_csv, write_jsonl

DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
# float32 whatever the machine: the batch's scores are compared with the job's own.
QUICK = {"epochs": 3, "learning_rate": 0.005, "checkpoint_every_steps": 50, "precision": "float32"}


def train(client: Client, body: dict[str, Any]) -> Job:
    job = client.submit({**body, "hyperparameters": {**QUICK, **body.get("hyperparameters", {})}})
    done = client.wait(job.id, until=DONE, timeout=300, interval=0.3)
    assert done.status == "succeeded", done.error
    return done


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def entity_files(alice: Client, tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    folder = tmp_path_factory.mktemp("entities")
    train_file = alice.upload(write_jsonl(folder / "train.jsonl", entity_rows(400, seed=21)))
    validation = alice.upload(write_jsonl(folder / "val.jsonl", entity_rows(60, seed=31)))
    return train_file.id, validation.id


@pytest.fixture(scope="module")
def tagger(alice: Client, entity_files: tuple[str, str]) -> Job:
    train_id, validation_id = entity_files
    return train(
        alice,
        {
            "model": "tiny-entities",
            "task": "token_classification",
            "training_file": train_id,
            "validation_file": validation_id,
            "text_column": "tokens",
            "label_column": "ner_tags",
        },
    )


def test_token_classification_evaluation_equals_the_jobs_report(
    alice: Client, tagger: Job, entity_files: tuple[str, str], tmp_path: Path
) -> None:
    _, validation_id = entity_files
    evaluation = alice.evaluate(tagger.id, validation_id)
    assert evaluation.label_column == "ner_tags"
    done = alice.wait_batch(evaluation.id, timeout=120, interval=0.2)
    assert done.status == "succeeded", done.error
    report = alice.batch_report(evaluation.id)
    own = alice.report(tagger.id)
    assert report.task == "token_classification" and report.rows == own.rows == 60
    # The same words scored the same way (first sub-token, words without one are O).
    for metric in ("precision", "recall", "f1", "accuracy"):
        assert report.metrics[metric] == pytest.approx(own.metrics[metric], abs=0.01), metric
    assert report.metrics["f1"] > 0.7 and report.baseline["f1"] == 0.0
    assert [c.label for c in report.per_class] == ["LOC", "ORG", "PER"]

    rows = entity_rows(60, seed=31)
    output = lines(alice.download_predictions(evaluation.id, tmp_path / "out.jsonl"))
    assert [r["tokens"] for r in output] == [r["tokens"] for r in rows]
    for row in output:
        prediction = row["prediction"]
        assert len(prediction["tags"]) == len(row["tokens"])
        for entity in prediction["entities"]:  # word spans that name the words they cover
            words = row["tokens"][entity["start_word"] : entity["end_word"]]
            assert entity["text"] == " ".join(words)
            assert prediction["tags"][entity["start_word"]] == "B-" + entity["entity"]


def test_token_classification_batch_of_texts_answers_as_online(
    predictor: None, alice: Client, tagger: Job, tmp_path: Path
) -> None:
    texts = ["then Mary met ACME in Paris .", "New York is where Tom Smith lives ."]
    rows = [{"sentence": text} for text in texts] + [{"sentence": ""}]
    uploaded = alice.upload(write_jsonl(tmp_path / "texts.jsonl", rows))
    batch = alice.batch_predict(tagger.id, uploaded.id, text_column="sentence")
    done = alice.wait_batch(batch.id, timeout=120, interval=0.2)
    assert done.status == "succeeded", done.error
    assert (done.rows, done.rows_failed) == (3, 1)
    output = lines(alice.download_predictions(batch.id, tmp_path / "out.jsonl"))
    online = alice.predict(tagger.id, texts)
    for row, answer in zip(output, online, strict=False):
        assert answer.entities is not None
        expected = [(e.entity, e.text, e.start, e.end) for e in answer.entities]
        got = [
            (e["entity"], e["text"], e["start"], e["end"]) for e in row["prediction"]["entities"]
        ]
        assert got == expected
    assert output[2]["prediction"] is None and "no text" in output[2]["error"]

    csv_file = alice.upload(write_csv(tmp_path / "t.csv", ["tokens", "ner_tags"], [("a", "O")]))
    with pytest.raises(Invalid, match="upload JSON Lines or Parquet") as caught:
        alice.evaluate(tagger.id, csv_file.id)
    assert caught.value.param == "file_id"


def test_multi_label_evaluation_uses_the_models_thresholds(alice: Client, tmp_path: Path) -> None:
    train_file = alice.upload(write_jsonl(tmp_path / "train.jsonl", topic_rows(400, seed=3)))
    rows = topic_rows(80, seed=4)
    validation = alice.upload(write_jsonl(tmp_path / "val.jsonl", rows))
    job = train(
        alice,
        {
            "model": "tiny",
            "task": "multi_label_classification",
            "training_file": train_file.id,
            "validation_file": validation.id,
            "label_column": "labels",
            "hyperparameters": {"epochs": 6},
        },
    )
    own = alice.report(job.id)
    evaluation = alice.evaluate(job.id, validation.id)
    done = alice.wait_batch(evaluation.id, timeout=120, interval=0.2)
    assert done.status == "succeeded", done.error
    report = alice.batch_report(evaluation.id)
    assert report.task == "multi_label_classification" and report.threshold == own.threshold
    assert report.label_thresholds == own.label_thresholds
    cutoffs = own.label_thresholds
    assert cutoffs is not None and set(cutoffs) == {"film", "negative", "positive"}
    for metric in ("f1_macro", "f1_micro", "exact_match"):
        assert report.metrics[metric] == pytest.approx(own.metrics[metric], abs=0.01), metric
    assert report.baseline == own.baseline
    assert report.metrics["f1_macro"] > report.baseline["f1_macro"] + 0.2

    # Every output row: the labels whose score reaches that label's threshold.
    output = lines(alice.download_predictions(evaluation.id, tmp_path / "out.jsonl"))
    assert len(output) == len(rows)
    for row in output:
        prediction = row["prediction"]
        chosen = [k for k, p in prediction["scores"].items() if p >= cutoffs[k]]
        assert sorted(prediction["labels"]) == sorted(chosen)

    # CSV: the delimited set and a score column per label.
    table = [(r["text"], ",".join(r["labels"])) for r in rows[:10]]
    uploaded = alice.upload(write_csv(tmp_path / "val.csv", ["text", "labels"], table))
    batch = alice.batch_predict(job.id, uploaded.id)
    assert alice.wait_batch(batch.id, timeout=120, interval=0.2).status == "succeeded"
    written = list(csv.DictReader(alice.download_predictions(batch.id, tmp_path / "o.csv").open()))
    assert [r["predicted_labels"] for r in written] == [
        ",".join(r["prediction"]["labels"]) for r in output[:10]
    ]
    assert {"score_film", "score_negative", "score_positive"} <= set(written[0])

    odd = alice.upload(write_jsonl(tmp_path / "odd.jsonl", [{"text": "x", "labels": ["odd"]}]))
    with pytest.raises(Invalid, match="odd") as caught:
        alice.evaluate(job.id, odd.id)
    assert caught.value.param == "label_column"


def test_masked_lm_evaluation_is_perplexity_beside_the_pretrained_models(
    alice: Client, tmp_path: Path
) -> None:
    texts = [(r["text"],) for r in topic_rows(300, seed=5)]
    uploaded = alice.upload(write_csv(tmp_path / "texts.csv", ["sentence"], texts))
    job = train(
        alice,
        {"model": "tiny", "task": "masked_lm", "training_file": uploaded.id,
         "text_column": "sentence"},
    )  # fmt: skip
    held_out = [(r["text"],) for r in topic_rows(60, seed=6)]
    scored = alice.upload(write_csv(tmp_path / "held.csv", ["sentence"], held_out))
    results = []
    for _ in range(2):
        evaluation = alice.evaluate(job.id, scored.id)
        assert evaluation.label_column is None
        done = alice.wait_batch(evaluation.id, timeout=120, interval=0.2)
        assert done.status == "succeeded", done.error
        results.append(alice.batch_report(evaluation.id))
    first, second = results
    assert first.task == "masked_lm" and first.rows == 60
    # The same masks each time, and the adapted model beats the one it started from.
    assert first.metrics == second.metrics
    assert first.metrics["perplexity"] < first.baseline["perplexity"]

    masked = alice.upload(
        write_csv(tmp_path / "masked.csv", ["sentence"], [("a [MASK] film",), ("no mask here",)])
    )
    batch = alice.batch_predict(job.id, masked.id)
    assert alice.wait_batch(batch.id, timeout=120, interval=0.2).status == "succeeded"
    written = list(csv.DictReader(alice.download_predictions(batch.id, tmp_path / "o.csv").open()))
    fills = [json.loads(r["fills"]) for r in written]
    assert len(fills[0]) == 1 and len(fills[0][0]) == 5 and fills[1] == []
    with pytest.raises(Invalid, match="takes no label column") as caught:
        alice.evaluate(job.id, scored.id, label_column="sentence")
    assert caught.value.param == "label_column"
