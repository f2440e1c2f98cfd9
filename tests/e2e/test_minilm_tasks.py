"""all-MiniLM-L6-v2 (the real pretrained model, offline) on a few hundred rows of real data
for each task beyond sequence classification: each beats its trivial baseline.

The data are committed samples (tests/data, see its README), so this runs on any clone.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.support.factories import first_rows

pytestmark = pytest.mark.slow
DATA = Path(__file__).resolve().parents[1] / "data"


def run(tmp_path: Path, **fields: Any) -> dict[str, Any]:
    import worker  # noqa: F401
    from app.core.schemas import JobSpec
    from worker.pipeline.run import PipelineOptions, run_pipeline
    from worker.reporter import LogReporter

    paths_as_text = {k: str(v) if isinstance(v, Path) else v for k, v in fields.items()}
    spec = JobSpec.model_validate({"model": "all-MiniLM-L6-v2", **paths_as_text})
    return run_pipeline(
        spec,
        tmp_path / "model",
        tmp_path / "ckpt",
        LogReporter(),
        PipelineOptions(models_dir=tmp_path / "no-models"),
    )


def test_minilm_tags_conll_entities_from_250_sentences(tmp_path: Path) -> None:
    metrics = run(
        tmp_path,
        task="token_classification",
        training_file=first_rows(DATA / "conll2003" / "train.jsonl", 250, tmp_path / "train.jsonl"),
        validation_file=str(DATA / "conll2003" / "validation.jsonl"),
        text_column="tokens",
        label_column="ner_tags",
        # Batch 8 (96 steps) at 2e-4: F1 0.50-0.59 over seeds 42, 1-5 in float32, where batch 16
        # at 1e-4 (48 steps) gave 0.27-0.33 and failed the bar below on seed 42.
        hyperparameters={"epochs": 3, "learning_rate": 2e-4, "batch_size": 8},
    )
    report = metrics["report"]
    print(f"MiniLM on 250 CoNLL sentences: {report['metrics']}, baseline {report['baseline']}")
    assert report["baseline"]["f1"] == 0.0  # tagging every word O finds no entity
    assert report["metrics"]["f1"] > 0.3, report["metrics"]
    assert report["metrics"]["accuracy"] > report["baseline"]["accuracy"]
    assert {c["label"] for c in report["per_class"]} == {"LOC", "MISC", "ORG", "PER"}


def test_minilm_learns_emotions_from_300_goemotions_rows(tmp_path: Path) -> None:
    metrics = run(
        tmp_path,
        task="multi_label_classification",
        training_file=first_rows(
            DATA / "goemotions" / "train.jsonl", 300, tmp_path / "train.jsonl"
        ),
        validation_file=str(DATA / "goemotions" / "validation.jsonl"),
        label_column="labels",
        hyperparameters={"epochs": 3, "learning_rate": 1e-4},
    )
    report = metrics["report"]
    print(f"MiniLM on 300 GoEmotions rows: {report['metrics']}, baseline {report['baseline']}")
    assert report["baseline"]["f1_macro"] < 0.2  # the most frequent set: admiration alone
    assert report["metrics"]["f1_macro"] > report["baseline"]["f1_macro"] + 0.3
    assert report["metrics"]["f1_micro"] > report["baseline"]["f1_micro"] + 0.2
    assert report["warnings"] == []


def test_minilm_adapts_to_sst2_text(tmp_path: Path) -> None:
    """100 rows each way (the suite's time budget): the random masked-LM head learns fast."""
    metrics = run(
        tmp_path,
        task="masked_lm",
        training_file=first_rows(DATA / "sst2" / "train.csv", 100, tmp_path / "train.csv"),
        validation_file=first_rows(DATA / "sst2" / "validation.csv", 100, tmp_path / "valid.csv"),
        text_column="sentence",
        hyperparameters={"epochs": 1, "learning_rate": 1e-4},
    )
    before, after = metrics["report"]["baseline"], metrics["report"]["metrics"]
    print(f"MiniLM masked LM on 100 SST-2 sentences: before {before}, after {after}")
    assert after["perplexity"] < before["perplexity"]
    assert metrics["report"]["warnings"] == []
