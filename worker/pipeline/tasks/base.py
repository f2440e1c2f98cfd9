"""What differs between tasks, behind one interface, so the pipeline stays one path.

The pipeline (`worker/pipeline/run.py`) loads data, tokenizes it, batches it through
`prepare_tf_dataset`, compiles, fits, evaluates and saves the same way for every task; a task
module says how its labels are read and checked, which model class and loss it trains, how a
batch is collated, how validation outputs become metrics and a report, and how a prediction is
answered. A new task is one new module registered in `worker/pipeline/tasks/__init__.py`.
"""

from __future__ import annotations

import json
import weakref
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import tensorflow as tf
import tf_keras
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TFPreTrainedModel

from app.core.schemas import BatchSpec, EvaluationReport, Hyperparameters, JobSpec
from worker.errors import InvalidInput
from worker.pipeline.batching import Collator
from worker.pipeline.data import LabelInfo


@dataclass
class BatchChunk:
    """One chunk of a batch prediction's rows, answered: each row's answer (None when the row
    could not be predicted) or its error, and, when the file is being evaluated, what the
    report needs of these rows (JSON; one line of the batch's outputs file)."""

    answers: list[dict[str, Any] | None]
    errors: list[str | None]
    record: Any = None


class TaskType(ABC):
    """One task's part of the pipeline. Instances hold no state: one per task, shared."""

    name: ClassVar[str]  # the job's `task`
    # The transformers auto class that builds this task's model from a pretrained encoder.
    model_class: ClassVar[Any]
    # A fine-tuned model whose architecture ends with this has a head this task can keep.
    head_suffix: ClassVar[str]
    # The baseline is the model before training (measured on validation before step 1).
    baseline_before_training: ClassVar[bool] = False

    # -- data ---------------------------------------------------------------------------------

    def text_columns(self, spec: JobSpec) -> list[str]:
        return [spec.text_column] + ([spec.text_pair_column] if spec.text_pair_column else [])

    def label_columns(self, spec: JobSpec) -> list[str]:
        return [spec.label_column]

    def check_columns(self, ds: Dataset, spec: JobSpec, split: str) -> None:
        """The columns exist and the text columns hold text (task-specific checks follow)."""
        wanted = self.text_columns(spec) + self.label_columns(spec)
        missing = [c for c in wanted if c not in ds.column_names]
        if missing:
            raise InvalidInput(
                f"{split} data has no column {', '.join(repr(c) for c in missing)}; "
                f"its columns are {', '.join(ds.column_names)}"
            )
        if len(ds) == 0:
            raise InvalidInput(f"{split} data has no rows")
        for column in self.text_columns(spec):
            for row, value in enumerate(ds[column], start=1):
                self.check_text(value, split, row, column)

    def check_text(self, value: Any, split: str, row: int, column: str) -> None:
        if value is None:
            raise InvalidInput(f"{split} data row {row}: text column '{column}' is empty")
        if not isinstance(value, str):
            raise InvalidInput(
                f"{split} data row {row}: text column '{column}' holds "
                f"{type(value).__name__}, not text"
            )

    @abstractmethod
    def infer_labels(self, train: Dataset, spec: JobSpec, max_labels: int) -> LabelInfo:
        """The label set, from the training data."""

    @abstractmethod
    def encode_labels(
        self, ds: Dataset, spec: JobSpec, labels: LabelInfo, split: str
    ) -> tuple[Dataset, list[str]]:
        """The rows with their targets as ids (before tokenization), and warnings for the
        user (e.g. tag sequences repaired)."""

    @abstractmethod
    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> Dataset:
        """Model inputs, the `labels` the model trains on (if any) and `length` per row."""

    def label_summary(self, train: Dataset, labels: LabelInfo) -> dict[str, Any]:
        """What job.json records of the training labels (the trivial baselines of later
        evaluations)."""
        return {}

    # -- the model ----------------------------------------------------------------------------

    def model_options(self, labels: LabelInfo) -> dict[str, Any]:
        """Keyword arguments of `from_pretrained` for this task's head."""
        return {
            "num_labels": labels.num_labels,
            "id2label": labels.id2label,
            "label2id": labels.label2id,
        }

    def compile_options(self, labels: LabelInfo) -> dict[str, Any]:
        """`compile` arguments besides the optimizer. No loss: the model's own task loss."""
        return {}

    def output_layer(self, model: TFPreTrainedModel) -> Any:
        """The head's last dense layer, one output per label: `classifier` in BERT and
        DistilBERT, `classifier.out_proj` in RoBERTa. None for a head without one (an
        architecture whose head is built otherwise)."""
        encoder = getattr(model, model.base_model_prefix)
        units = model.config.num_labels
        found = [
            m
            for layer in model.layers
            if layer is not encoder
            for m in (layer, *layer.submodules)
            if isinstance(m, tf_keras.layers.Dense) and m.units == units and m.use_bias
        ]
        return found[-1] if found else None

    def start_head(self, model: TFPreTrainedModel, train: Dataset, labels: LabelInfo) -> None:
        """Adjust a freshly initialised head to the training data before the first step (a
        head carried over from a previous job with the same labels is left alone). Most
        tasks start from the initialiser's head as it is."""
        return None

    def build_step_variables(self, model: TFPreTrainedModel, labels: LabelInfo) -> None:
        """Create the loss (and metric) totals now, so the first train step is traced once."""
        model.compiled_loss(tf.zeros([1]), tf.zeros([1]))

    @abstractmethod
    def collator(
        self,
        tokenizer: PreTrainedTokenizerBase,
        buckets: np.ndarray,
        hp: Hyperparameters,
        epoch: int | None,
    ) -> Collator:
        """Pads a batch to its length bucket (and whatever else the task's batches need).
        `epoch` None: the validation batches."""

    # -- evaluation ---------------------------------------------------------------------------

    def validation_outputs(self, model: TFPreTrainedModel, batches: tf.data.Dataset) -> Any:
        """The model's outputs over the validation batches (rows in `batches`' order)."""
        outputs = model.predict(batches, verbose=0)
        return np.asarray(outputs["logits"], dtype=np.float32)

    @abstractmethod
    def metrics(self, outputs: Any, rows: Dataset, labels: LabelInfo) -> dict[str, float]:
        """Validation metrics; `rows` are the validation rows in the outputs' order."""

    @abstractmethod
    def report(
        self,
        outputs: Any,
        rows: Dataset,
        labels: LabelInfo,
        train: Dataset,
        before: dict[str, float] | None = None,
    ) -> EvaluationReport:
        """The evaluation report of the final model, with the task's trivial baseline
        (`before`: the model's scores before training, for tasks measured that way)."""

    def finish(self, model: TFPreTrainedModel, report: EvaluationReport) -> dict[str, Any]:
        """Last changes to the model before it is saved; returns what job.json adds."""
        return {}

    # -- predictions --------------------------------------------------------------------------

    @abstractmethod
    def predict(self, served: Any, inputs: list[dict[str, str | None]]) -> list[dict[str, Any]]:
        """One answer per input, in order (`served` is a `worker.serving.LoadedModel`)."""

    # -- batch predictions and evaluations (`worker/batch.py` owns the file and its resume) ----

    @abstractmethod
    def batch_chunk(
        self, served: Any, rows: list[dict[str, Any]], spec: BatchSpec, evaluate: bool
    ) -> BatchChunk:
        """Answers for a chunk of a file's rows (in order); with `evaluate`, the chunk's part
        of the report too. Raises InvalidInput for what makes the whole file unusable."""

    def batch_csv_header(self, served: Any) -> list[str]:
        """The columns a CSV output adds after the input's (the last one is `error`)."""
        return ["prediction", "tokens", "truncated", "error"]

    def batch_csv_values(self, served: Any, answer: dict[str, Any] | None) -> list[Any]:
        """One output row's added CSV values, in `batch_csv_header`'s order (without the
        error): structured answers as JSON text."""
        if answer is None:
            return ["", "", ""]
        rest = {k: v for k, v in answer.items() if k not in ("tokens", "truncated")}
        return [json.dumps(rest, ensure_ascii=False), answer["tokens"], answer["truncated"]]

    @abstractmethod
    def batch_report(self, served: Any, records: list[Any]) -> EvaluationReport:
        """The evaluation report of a whole file from its chunks' records, with the task's
        trivial baseline as the job's training data defines it (job.json)."""


_EVALUATION_FUNCTIONS: weakref.WeakKeyDictionary[Any, dict[str, Any]] = weakref.WeakKeyDictionary()


def evaluation_function(model: TFPreTrainedModel, name: str, build: Callable[[], Any]) -> Any:
    """One `tf.function` per model and purpose, built at the first evaluation and reused by
    the next: a new one each time would trace the model again at every evaluation."""
    kept = _EVALUATION_FUNCTIONS.setdefault(model, {})
    if name not in kept:
        kept[name] = build()
    return kept[name]
