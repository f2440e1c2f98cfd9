"""Stage 1: load the training and validation data with `datasets`; the job's task
(`worker.pipeline.tasks`) checks the columns and maps labels to ids."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import datasets
import numpy as np
from datasets import ClassLabel, Dataset

from app.core.labels import Task
from app.core.schemas import HubDataset, JobSpec
from worker.errors import DataNotFound, InvalidInput

FORMAT_BY_SUFFIX = {".csv": "csv", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
LABELS = "labels"  # the column transformers' TF models take their targets from
LENGTH = "length"  # real tokens per row: batching groups by it and progress counts it


def column_array(ds: Dataset, name: str) -> np.ndarray:
    """A column of numbers (or of equal-length lists of numbers) as one NumPy array, read
    from Arrow in one go. `np.asarray(ds[name])` iterates a lazy column row by row (datasets
    4): about 0.1 s per column of CoLA, which a warm start paid six times over."""
    return np.asarray(ds.select_columns([name]).with_format("numpy")[:][name])


@dataclass
class LabelInfo:
    task: Task
    names: list[str] = field(default_factory=list)  # id -> label, classification only

    @property
    def num_labels(self) -> int:
        return 1 if self.task == "regression" else len(self.names)

    @property
    def id2label(self) -> dict[int, str]:
        return dict(enumerate(self.names)) if self.names else {0: "LABEL_0"}

    @property
    def label2id(self) -> dict[str, int]:
        return {name: i for i, name in self.id2label.items()}


@dataclass
class LoadedData:
    train: Dataset
    validation: Dataset
    labels: LabelInfo
    validation_held_out: bool
    fingerprints: dict[str, Any]
    warnings: list[str] = field(default_factory=list)


class TaskData(Protocol):
    """The part of a task (`worker.pipeline.tasks`) that reads its labels."""

    def check_columns(self, ds: Dataset, spec: JobSpec, split: str) -> None: ...
    def infer_labels(self, train: Dataset, spec: JobSpec, max_labels: int) -> LabelInfo: ...
    def encode_labels(
        self, ds: Dataset, spec: JobSpec, labels: LabelInfo, split: str
    ) -> tuple[Dataset, list[str]]: ...


def load_source(
    source: str | HubDataset, *, allow_hub: bool, cache_dir: Path | None = None
) -> Dataset:
    """A file path (CSV, JSON Lines, Parquet) or a hub dataset, as one `datasets.Dataset`."""
    cache = str(cache_dir) if cache_dir else None
    if isinstance(source, HubDataset):
        if not allow_hub:
            raise DataNotFound(
                f"hub dataset '{source.dataset}' needs hub access (FINETUNE_ALLOW_HUB=true)"
            )
        try:
            loaded = datasets.load_dataset(
                source.dataset, source.config, split=source.split, cache_dir=cache
            )
        except Exception as exc:
            raise DataNotFound(f"could not load hub dataset '{source.dataset}': {exc}") from exc
        assert isinstance(loaded, Dataset)
        return loaded
    path = Path(source)
    if not path.is_file():
        raise DataNotFound(f"data file '{path.name}' does not exist")
    fmt = FORMAT_BY_SUFFIX.get(path.suffix.lower())
    if fmt is None:
        raise InvalidInput(f"'{path.name}': unsupported file type; use .csv, .jsonl or .parquet")
    try:
        loaded = datasets.load_dataset(fmt, data_files=str(path), split="train", cache_dir=cache)
    except Exception as exc:
        if "corresponds to no data" in str(exc):
            raise InvalidInput(f"'{path.name}' has no rows") from exc
        raise InvalidInput(f"could not read '{path.name}' as {fmt}: {_first_line(exc)}") from exc
    assert isinstance(loaded, Dataset)
    return loaded


def file_fingerprint(source: str | HubDataset) -> str:
    if isinstance(source, HubDataset):
        return f"hub:{source.dataset}:{source.config}:{source.split}"
    digest = hashlib.sha256()
    with open(source, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return "sha256:" + digest.hexdigest()


def load_splits(
    spec: JobSpec,
    task: TaskData,
    *,
    allow_hub: bool,
    max_labels: int,
    cache_dir: Path | None = None,
    known_fingerprints: dict[str, str] | None = None,
) -> LoadedData:
    """`known_fingerprints` ("training", "validation"): hashes the caller already computed."""
    hp = spec.hyperparameters
    known = known_fingerprints or {}
    train = load_source(spec.training_file, allow_hub=allow_hub, cache_dir=cache_dir)
    task.check_columns(train, spec, "training")
    labels = task.infer_labels(train, spec, max_labels)
    fingerprints: dict[str, Any] = {
        "training": known.get("training") or file_fingerprint(spec.training_file)
    }
    train, warnings = task.encode_labels(train, spec, labels, "training")

    if spec.validation_file is not None:
        validation = load_source(spec.validation_file, allow_hub=allow_hub, cache_dir=cache_dir)
        task.check_columns(validation, spec, "validation")
        validation, more = task.encode_labels(validation, spec, labels, "validation")
        warnings += more
        fingerprints["validation"] = known.get("validation") or file_fingerprint(
            spec.validation_file
        )
        held_out = False
    else:
        if len(train) < 2:
            raise InvalidInput("training data needs at least 2 rows to hold out a validation set")
        train, validation = _hold_out(train, labels, hp.validation_fraction, hp.seed)
        fingerprints["validation"] = {
            "held_out_from": "training",
            "fraction": hp.validation_fraction,
            "seed": hp.seed,
        }
        held_out = True
    fingerprints["rows"] = {"training": len(train), "validation": len(validation)}
    return LoadedData(train, validation, labels, held_out, fingerprints, warnings)


def _hold_out(
    ds: Dataset, labels: LabelInfo, fraction: float, seed: int
) -> tuple[Dataset, Dataset]:
    """A seeded split; stratified by class when every class has enough rows for it."""
    if labels.task == "classification":
        try:
            stratified = ds.cast_column(LABELS, ClassLabel(names=labels.names))
            parts = stratified.train_test_split(
                test_size=fraction, seed=seed, stratify_by_column=LABELS
            )
            return parts["train"], parts["test"]
        except ValueError:
            pass  # a class too small to stratify: fall back to a plain seeded split
    parts = ds.train_test_split(test_size=fraction, seed=seed)
    return parts["train"], parts["test"]


def _first_line(exc: Exception) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:500]
