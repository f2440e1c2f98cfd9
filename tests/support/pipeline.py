"""Running the training pipeline in the test process: a reporter that records (and can stop or
crash a run), job specs with fast settings, and the saved weights to compare runs by."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

import worker  # noqa: F401  (Keras 2 before TensorFlow)
from app.core.schemas import Evaluation, Hyperparameters, JobSpec
from worker.pipeline.run import PipelineOptions, run_pipeline
from worker.reporter import LogReporter, StopSignal

FAST = {
    # Fixed values where jobs default to "auto": these tests are about the pipeline, and count
    # its steps (3 epochs of 25 steps on the 400 rows); tests of "auto" ask for it.
    "epochs": 3,
    "batch_size": 16,
    "lr_scheduler": "constant",
    "class_weight": None,
    "learning_rate": 5e-3,
    "checkpoint_every_steps": 5,
    "log_every_steps": 1,
    "steps_per_execution": 1,  # exact step positions; tests with more say so
}


class Recorder(LogReporter):
    """Keeps everything reported; can ask to stop, or crash, at a given step."""

    def __init__(
        self,
        stop_at: int | None = None,
        signal: StopSignal = "cancel",
        crash_at: int | None = None,
        crash_evaluating_at: int | None = None,
    ) -> None:
        super().__init__()
        self.events: list[tuple[str, str, dict[str, Any]]] = []
        self.steps: list[int] = []
        self.evaluations: list[Evaluation] = []
        self.stop_at, self.signal, self.crash_at = stop_at, signal, crash_at
        self.crash_evaluating_at = crash_evaluating_at

    def event(self, type: str, message: str, **data: Any) -> None:
        self.events.append((type, message, data))

    def progress(self, progress: Any) -> None:
        self.steps.append(progress.step)
        if self.crash_at is not None and progress.step >= self.crash_at:
            raise RuntimeError(f"simulated crash at step {progress.step}")

    def evaluation(self, record: Evaluation) -> None:
        if self.crash_evaluating_at is not None and record.step >= self.crash_evaluating_at:
            raise RuntimeError(f"simulated crash evaluating step {record.step}")
        self.evaluations.append(record)

    def stop_requested(self) -> StopSignal:
        if self.stop_at is not None and self.steps and self.steps[-1] >= self.stop_at:
            return self.signal
        return None


JOB_FIELDS = (
    "text_column",
    "text_pair_column",
    "label_column",
    "model",
    "task",
    "label_delimiter",
    "label_names",
    "invalid_tags",
    "base_model_path",
    "base_job_id",
)


def spec_for(train: Path, validation: Path | None = None, **overrides: Any) -> JobSpec:
    """A job on local files: job fields by name, everything else a hyperparameter."""
    fields = {k: overrides.pop(k) for k in JOB_FIELDS if k in overrides}
    return JobSpec(
        **{"model": "tiny", "text_column": "sentence", "label_column": "label", **fields},
        training_file=str(train),
        validation_file=str(validation) if validation else None,
        hyperparameters=Hyperparameters(**{**FAST, **overrides}),
    )


def train(spec: JobSpec, out: Path, models_dir: Path, reporter: Any = None) -> dict[str, Any]:
    return run_pipeline(
        spec,
        out / "model",
        out / "checkpoints",
        reporter or Recorder(),
        PipelineOptions(models_dir=models_dir),
    )


def final_weights(folder: Path) -> dict[str, np.ndarray]:
    import h5py

    weights: dict[str, np.ndarray] = {}
    with h5py.File(folder / "tf_model.h5") as handle:
        handle.visititems(
            lambda name, obj: (
                weights.__setitem__(name, obj[()]) if isinstance(obj, h5py.Dataset) else None
            )
        )
    return weights


def assert_same_weights(first: Path, second: Path, exact: bool = False) -> None:
    """Two saved models hold the same weights: bit for bit (`exact`: a warm start's against a
    cold one's), or to float32 round-off (a resumed run's, which re-reads restored state)."""
    a, b = final_weights(first), final_weights(second)
    assert a.keys() == b.keys()
    for name in a:
        if exact:
            np.testing.assert_array_equal(b[name], a[name], err_msg=name)
        else:
            np.testing.assert_allclose(b[name], a[name], rtol=1e-5, atol=1e-6, err_msg=name)
