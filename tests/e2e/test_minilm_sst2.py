"""all-MiniLM-L6-v2 (the real pretrained model, offline) on real SST-2 sentences.

The data is a committed sample (tests/data/sst2, see its README), so this runs on any clone.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from app.core.catalog import packaged_model_folder

pytestmark = pytest.mark.slow
SST2 = Path(__file__).resolve().parents[1] / "data" / "sst2"


def labels(path: Path) -> list[int]:
    with path.open() as handle:
        return [int(row["label"]) for row in csv.DictReader(handle)]


def test_minilm_learns_sentiment_from_500_sentences(tmp_path: Path) -> None:
    import worker  # noqa: F401
    from app.core.schemas import Hyperparameters, JobSpec
    from worker.pipeline.run import PipelineOptions, run_pipeline
    from worker.reporter import LogReporter

    # Found as an installed package, with an empty models folder.
    assert packaged_model_folder("all-MiniLM-L6-v2") is not None, "make install installs it"
    held_out = labels(SST2 / "validation.csv")
    majority = max(held_out.count(0), held_out.count(1)) / len(held_out)
    spec = JobSpec(
        model="all-MiniLM-L6-v2",
        training_file=str(SST2 / "train.csv"),
        validation_file=str(SST2 / "validation.csv"),
        text_column="sentence",
        label_column="label",
        hyperparameters=Hyperparameters(epochs=3, learning_rate=1e-4, batch_size=16),
    )
    metrics = run_pipeline(
        spec,
        tmp_path / "model",
        tmp_path / "ckpt",
        LogReporter(),
        PipelineOptions(models_dir=tmp_path / "no-models"),
    )
    final = metrics["final"]
    print(f"MiniLM on 500 SST-2 rows: {final}, majority baseline accuracy {majority:.4f}")
    assert final["accuracy"] > majority + 0.15, (final, majority)
    assert final["matthews_correlation"] > 0.3, final
