"""Multi-label classification, token classification and masked LM through the one pipeline,
with real TensorFlow on tiny random BERT models: training beats each task's trivial baseline,
a resumed run ends with exactly the weights of an uninterrupted one, the saved model loads
with plain `from_pretrained`, and predictions decode the way the task promises."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.factories import (
    entity_rows,
    sentiment_rows,
    topic_rows,
    write_csv,
    write_jsonl,
)
from tests.support.pipeline import Recorder, assert_same_weights, spec_for, train
from worker.errors import InvalidInput


def assert_resume_is_exact(spec: Any, models_dir: Path, tmp_path: Path, crash_at: int) -> None:
    train(spec, tmp_path / "straight", models_dir)
    with pytest.raises(RuntimeError, match="simulated crash"):
        train(spec, tmp_path / "resumed", models_dir, Recorder(crash_at=crash_at))
    metrics = train(spec, tmp_path / "resumed", models_dir)
    assert metrics["resumed_from_step"] is not None and metrics["resumed_from_step"] > 0
    assert_same_weights(tmp_path / "straight" / "model", tmp_path / "resumed" / "model")


def served(folder: Path) -> Any:
    from worker.serving import LoadedModel

    return LoadedModel.load(folder)


# -- multi-label --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def topics(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("topics")
    write_jsonl(folder / "train.jsonl", topic_rows(400, seed=1))
    write_jsonl(folder / "validation.jsonl", topic_rows(80, seed=2))
    return folder


def multi_label_spec(folder: Path, train_name: str = "train.jsonl", **overrides: Any) -> Any:
    return spec_for(
        folder / train_name,
        folder / "validation.jsonl",
        task="multi_label_classification",
        text_column="text",
        label_column="labels",
        **overrides,
    )


def test_multi_label_learns_saves_its_threshold_and_predicts_label_sets(
    models_dir: Path, topics: Path, tmp_path: Path
) -> None:
    from transformers import TFAutoModelForSequenceClassification

    metrics = train(multi_label_spec(topics, epochs=6), tmp_path, models_dir)
    final = metrics["final"]
    assert {"f1_micro", "f1_macro", "exact_match", "loss"} <= set(final)
    report = metrics["report"]
    assert report["task"] == "multi_label_classification"
    # A tiny random model learns one word feature after another: after 6 epochs one label
    # well and the others partly (which one first depends on the seed's dropout masks and on
    # the CPU: in bfloat16 on AMX, 4 epochs still gave every row every label, F1 macro 0.62,
    # against 0.75 in float32 and 0.88 after 6 epochs); the baseline answers the empty set.
    assert report["metrics"]["f1_macro"] > 0.7 > 0.1 > report["baseline"]["f1_macro"]
    assert [c["label"] for c in report["per_class"]] == ["film", "negative", "positive"]
    assert max(c["f1"] for c in report["per_class"]) > 0.95
    assert report["warnings"] == []
    threshold = report["threshold"]
    assert 0.0 < threshold < 1.0 and len(report["thresholds"]) == 19

    out = tmp_path / "model"
    config = json.loads((out / "config.json").read_text())
    assert config["problem_type"] == "multi_label_classification"
    assert config["decision_threshold"] == threshold
    assert json.loads((out / "job.json").read_text())["decision_threshold"] == threshold
    assert TFAutoModelForSequenceClassification.from_pretrained(out).config.num_labels == 3

    learned = max(report["per_class"], key=lambda c: c["f1"])["label"]
    marker = {"positive": "great", "negative": "awful", "film": "film"}[learned]
    model = served(out)
    answers = model.predict(
        [{"text": f"the plot was very {marker}"}, {"text": "the plot was very"}]
    )
    cutoffs = report["label_thresholds"]
    assert config["decision_thresholds"] == cutoffs
    assert set(cutoffs) == {"film", "negative", "positive"}  # each with 20+ validation rows
    for answer in answers:  # the labels are exactly those at or above their saved thresholds
        assert answer["threshold"] == threshold and answer["label_thresholds"] == cutoffs
        chosen = sorted(k for k, p in answer["scores"].items() if p >= cutoffs[k])
        assert sorted(answer["labels"]) == chosen
    assert learned in answers[0]["labels"] and learned not in answers[1]["labels"]


def test_multi_label_from_csv_with_a_delimiter(models_dir: Path, tmp_path: Path) -> None:
    rows = [(r["text"], "|".join(r["labels"])) for r in topic_rows(200, seed=3)]
    csv = write_csv(tmp_path / "topics.csv", ["text", "labels"], rows)
    spec = spec_for(
        csv,
        task="multi_label_classification",
        text_column="text",
        label_column="labels",
        label_delimiter="|",
    )
    metrics = train(spec, tmp_path, models_dir)
    assert metrics["report"]["labels"] == ["film", "negative", "positive"]


def test_multi_label_resume_is_exact(models_dir: Path, topics: Path, tmp_path: Path) -> None:
    write_jsonl(topics / "small.jsonl", topic_rows(160, seed=7))  # 10 steps an epoch
    spec = multi_label_spec(topics, "small.jsonl", epochs=2)
    assert_resume_is_exact(spec, models_dir, tmp_path, crash_at=13)


# -- token classification -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def entities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("entities")
    write_jsonl(folder / "train.jsonl", entity_rows(400, seed=1))
    write_jsonl(folder / "validation.jsonl", entity_rows(80, seed=2))
    return folder


def token_spec(folder: Path, train_name: str = "train.jsonl", **overrides: Any) -> Any:
    return spec_for(
        folder / train_name,
        folder / "validation.jsonl",
        model="tiny-entities",
        task="token_classification",
        text_column="tokens",
        label_column="ner_tags",
        **overrides,
    )


def test_token_classification_learns_entities_and_predicts_spans(
    models_dir: Path, entities: Path, tmp_path: Path
) -> None:
    from transformers import TFAutoModelForTokenClassification

    metrics = train(token_spec(entities, epochs=4), tmp_path, models_dir)
    report = metrics["report"]
    assert report["task"] == "token_classification"
    assert report["labels"] == ["LOC", "ORG", "PER"]
    assert report["metrics"]["f1"] > 0.8 and report["baseline"]["f1"] == 0.0
    assert 0.5 < report["baseline"]["accuracy"] < report["metrics"]["accuracy"]
    assert all(c["support"] > 0 for c in report["per_class"])
    out = tmp_path / "model"
    model = TFAutoModelForTokenClassification.from_pretrained(out)
    assert model.config.id2label[0] == "B-LOC"

    text = "john smith visited  New York and ACME ."
    [answer] = served(out).predict([{"text": text}])
    found = {(e["entity"], e["text"]) for e in answer["entities"]}
    assert found == {("PER", "john smith"), ("LOC", "New York"), ("ORG", "ACME")}
    for entity in answer["entities"]:  # offsets index the text as sent
        assert text[entity["start"] : entity["end"]] == entity["text"]
        assert 0 < entity["score"] <= 1


def test_token_classification_resume_is_exact(
    models_dir: Path, entities: Path, tmp_path: Path
) -> None:
    write_jsonl(entities / "small.jsonl", entity_rows(160, seed=7))  # 10 steps an epoch
    spec = token_spec(entities, "small.jsonl", epochs=2)
    assert_resume_is_exact(spec, models_dir, tmp_path, crash_at=13)


def test_invalid_iob2_is_refused_or_repaired_as_the_job_asks(
    models_dir: Path, entities: Path, tmp_path: Path
) -> None:
    rows = entity_rows(200, seed=4)
    tags = rows[6]["ner_tags"]
    first = next(i for i, t in enumerate(tags) if t.startswith("B-"))
    tags[first] = "I-" + tags[first][2:]  # an entity starting with I-, as in IOB1
    write_jsonl(entities / "iob1.jsonl", rows)
    with pytest.raises(InvalidInput, match=f"training data row 7, word {first + 1}: .*not valid"):
        train(token_spec(entities, "iob1.jsonl"), tmp_path / "refused", models_dir)
    reporter = Recorder()
    train(
        token_spec(entities, "iob1.jsonl", invalid_tags="repair"),
        tmp_path / "ok",
        models_dir,
        reporter,
    )
    warnings = [m for kind, m, _ in reporter.events if kind == "warning"]
    assert any("1 rows broke IOB2" in m for m in warnings)


def test_unequal_words_and_tags_fail_readably(
    models_dir: Path, entities: Path, tmp_path: Path
) -> None:
    rows = entity_rows(20, seed=5)
    rows[2]["ner_tags"] = rows[2]["ner_tags"][:-1]
    write_jsonl(entities / "short.jsonl", rows)
    with pytest.raises(InvalidInput, match=r"row 3: .* words but .* tags"):
        train(token_spec(entities, "short.jsonl"), tmp_path, models_dir)


def test_integer_tags_named_by_label_names(
    models_dir: Path, entities: Path, tmp_path: Path
) -> None:
    names = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG"]
    rows = [
        {"tokens": r["tokens"], "ner_tags": [names.index(t) for t in r["ner_tags"]]}
        for r in entity_rows(100, seed=6)
    ]
    write_jsonl(entities / "ids.jsonl", rows)
    with pytest.raises(InvalidInput, match="label_names"):
        train(token_spec(entities, "ids.jsonl"), tmp_path / "unnamed", models_dir)
    metrics = train(token_spec(entities, "ids.jsonl", label_names=names), tmp_path, models_dir)
    assert metrics["report"]["labels"] == ["LOC", "ORG", "PER"]


# -- masked LM ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def sentences(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("sentences")
    write_csv(folder / "train.csv", ["sentence", "label"], sentiment_rows(400, seed=11))
    write_csv(folder / "validation.csv", ["sentence", "label"], sentiment_rows(80, seed=12))
    return folder


def mlm_spec(folder: Path, train_name: str = "train.csv", **overrides: Any) -> Any:
    return spec_for(folder / train_name, folder / "validation.csv", task="masked_lm", **overrides)


def test_masked_lm_lowers_perplexity_and_is_a_base_for_classification(
    models_dir: Path, sentences: Path, tmp_path: Path
) -> None:
    reporter = Recorder()
    spec = mlm_spec(sentences, epochs=3, learning_rate=1e-3)
    metrics = train(spec, tmp_path / "mlm", models_dir, reporter)
    report = metrics["report"]
    assert report["task"] == "masked_lm"
    before = report["baseline"]["perplexity"]
    assert before > 20  # a random model over a ~50-token vocabulary
    # The rows' filler words are drawn uniformly from 18, so about 18 is the floor.
    assert metrics["final"]["perplexity"] < 0.75 * before
    assert metrics["final"]["baseline_perplexity"] == before
    assert any("before training: validation" in m for _, m, _ in reporter.events)

    out = tmp_path / "mlm" / "model"
    [answer] = served(out).predict([{"text": "the movie was [MASK] ."}])
    assert len(answer["fills"]) == 1 and len(answer["fills"][0]) == 5

    classify = spec_for(
        sentences / "train.csv",
        sentences / "validation.csv",
        model="mlm-job",
        base_model_path=str(out),
        base_job_id="job_0123",
        epochs=3,
        lr_scheduler="linear",  # a tiny model at the tests' 5e-3 needs the decay to settle
    )
    reporter = Recorder()
    result = train(classify, tmp_path / "classify", models_dir, reporter)
    assert any(
        "BertForMaskedLM): its encoder is kept, the classification head starts fresh" in m
        for _, m, _ in reporter.events
    )
    assert result["final"]["accuracy"] > 0.8


def test_masked_lm_resume_is_exact(models_dir: Path, sentences: Path, tmp_path: Path) -> None:
    """The masks are drawn from (seed, epoch, the batch's tokens): a resumed run masks its
    batches as the uninterrupted run did."""
    write_csv(sentences / "small.csv", ["sentence", "label"], sentiment_rows(160, seed=13))
    spec = mlm_spec(sentences, "small.csv", epochs=2)
    assert_resume_is_exact(spec, models_dir, tmp_path, crash_at=13)


def test_multi_label_head_starts_at_each_labels_base_rate(models_dir: Path) -> None:
    """Before the first step, each label's output bias is the log-odds of its training
    frequency, so the untrained model answers each label's base rate (not 0.5 for all)."""
    from datasets import Dataset
    from scipy.special import expit

    from app.core.catalog import ModelRef
    from worker.pipeline.data import LABELS, LabelInfo
    from worker.pipeline.model import load_model
    from worker.pipeline.tasks import task_named

    task = task_named("multi_label_classification")
    labels = LabelInfo("multi_label_classification", ["common", "rare", "never"])
    ref = ModelRef(name="tiny", source="local", location=str(models_dir / "tiny"))
    model = load_model(ref, task, labels)
    hot = [[1.0, 0.0, 0.0]] * 74 + [[1.0, 1.0, 0.0]] * 25
    task.start_head(model, Dataset.from_dict({LABELS: hot}), labels)
    rates = expit(task.output_layer(model).bias.numpy())
    # (count + 0.5) / (rows + 1): smoothed, so a label never seen is rare, not impossible.
    np.testing.assert_allclose(rates, [99.5 / 100, 25.5 / 100, 0.5 / 100], rtol=1e-5)
