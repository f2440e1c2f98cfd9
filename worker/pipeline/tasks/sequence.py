"""Sequence classification (one label per text or text pair) and regression (a float label).

The task the service started with: `TFAutoModelForSequenceClassification` with its own loss
(softmax cross-entropy, or mean squared error when `num_labels` is 1).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import tensorflow as tf
from datasets import ClassLabel, Dataset
from scipy.special import softmax
from transformers import (
    PreTrainedTokenizerBase,
    TFAutoModelForSequenceClassification,
    TFPreTrainedModel,
)

from app.core.labels import LabelProblem, check_regression_targets, class_names, task_for_dtype
from app.core.schemas import BatchSpec, EvaluationReport, Hyperparameters, JobSpec
from worker.errors import InvalidInput
from worker.pipeline.batching import BucketCollator, Collator
from worker.pipeline.data import LABELS, LENGTH, LabelInfo, column_array
from worker.pipeline.metrics import classification_metrics, regression_metrics
from worker.pipeline.quality import majority_class
from worker.pipeline.report import classification_report, regression_report
from worker.pipeline.tasks.base import BatchChunk, TaskType

EMPTY_TEXT = "empty text: no prediction"


class SequenceClassification(TaskType):
    name = "sequence_classification"
    model_class = TFAutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"

    def infer_labels(self, train: Dataset, spec: JobSpec, max_labels: int) -> LabelInfo:
        column = spec.label_column
        feature = train.features[column]
        values = list(train[column])
        for row, value in enumerate(values, start=1):
            if value is None or (isinstance(value, float) and math.isnan(value)):
                raise InvalidInput(f"training data row {row}: the label is missing")
        try:
            if isinstance(feature, ClassLabel):
                return LabelInfo("classification", list(feature.names))
            task = task_for_dtype(getattr(feature, "dtype", "string"))
            if task == "regression":
                check_regression_targets(values)
                return LabelInfo("regression")
            return LabelInfo("classification", class_names(values, max_labels))
        except LabelProblem as exc:
            raise InvalidInput(f"training data, column '{column}': {exc}") from exc

    def encode_labels(
        self, ds: Dataset, spec: JobSpec, labels: LabelInfo, split: str
    ) -> tuple[Dataset, list[str]]:
        """Add the `labels` column (class ids, or float targets for regression)."""
        column = spec.label_column
        values = list(ds[column])
        if labels.task == "regression":
            try:
                check_regression_targets(values)
            except LabelProblem as exc:
                raise InvalidInput(f"{split} data, column '{column}': {exc}") from exc
            targets: list[Any] = [float(v) for v in values]
        elif isinstance(ds.features[column], ClassLabel):
            targets = values
        else:
            ids = labels.label2id
            targets = []
            for row, value in enumerate(values, start=1):
                label_id = ids.get(str(value)) if value is not None else None
                if label_id is None:
                    raise InvalidInput(
                        f"{split} data row {row}: label {value!r} is not one of the training "
                        f"labels ({', '.join(labels.names[:20])})"
                    )
                targets.append(label_id)
        if LABELS in ds.column_names:
            ds = ds.remove_columns(LABELS)
        return ds.add_column(LABELS, targets), []

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> Dataset:
        return tokenize_texts(
            ds,
            tokenizer,
            spec.text_column,
            spec.text_pair_column,
            spec.hyperparameters.max_length,
        )

    def label_summary(self, train: Dataset, labels: LabelInfo) -> dict[str, Any]:
        values = column_array(train, LABELS)
        if labels.task == "regression":
            return {"mean": float(values.astype(np.float64).mean())}
        counts = np.bincount(values.astype(np.int64), minlength=labels.num_labels)
        return {"counts": {labels.names[i]: int(c) for i, c in enumerate(counts)}}

    def model_options(self, labels: LabelInfo) -> dict[str, Any]:
        problem = "regression" if labels.task == "regression" else "single_label_classification"
        return {**super().model_options(labels), "problem_type": problem}

    def compile_options(self, labels: LabelInfo) -> dict[str, Any]:
        return {"metrics": ["accuracy"]} if labels.task == "classification" else {}

    def build_step_variables(self, model: TFPreTrainedModel, labels: LabelInfo) -> None:
        super().build_step_variables(model, labels)
        if labels.task == "classification":
            model.compiled_metrics.update_state(
                tf.zeros([1], tf.int64), tf.zeros([1, labels.num_labels])
            )

    def collator(
        self,
        tokenizer: PreTrainedTokenizerBase,
        buckets: np.ndarray,
        hp: Hyperparameters,
        epoch: int | None,
    ) -> Collator:
        return BucketCollator(tokenizer, buckets)

    def metrics(self, outputs: Any, rows: Dataset, labels: LabelInfo) -> dict[str, float]:
        targets = column_array(rows, LABELS)
        if labels.task == "classification":
            return classification_metrics(outputs, targets)
        return regression_metrics(outputs, targets)

    def report(
        self,
        outputs: Any,
        rows: Dataset,
        labels: LabelInfo,
        train: Dataset,
        before: dict[str, float] | None = None,
    ) -> EvaluationReport:
        targets = column_array(rows, LABELS)
        train_labels = column_array(train, LABELS)
        if labels.task == "classification":
            return classification_report(
                outputs, targets, labels.names, majority_class(train_labels)
            )
        return regression_report(outputs, targets, float(train_labels.mean()))

    def predict(self, served: Any, inputs: list[dict[str, str | None]]) -> list[dict[str, Any]]:
        return predict_texts(self.answer, served, inputs)

    def answer(self, served: Any, output: np.ndarray, length: int) -> dict[str, Any]:
        """One row's prediction as the API answers it."""
        common = {"tokens": length, "truncated": length > served.max_length}
        if served.task == "regression":
            return {"value": float(output[0]), **common}
        probabilities = softmax(output)
        best = int(probabilities.argmax())
        return {
            "label": served.names[best],
            "score": float(probabilities[best]),
            "scores": {name: float(p) for name, p in zip(served.names, probabilities, strict=True)},
            **common,
        }

    # -- batch predictions ----------------------------------------------------------------------

    def batch_chunk(
        self, served: Any, rows: list[dict[str, Any]], spec: BatchSpec, evaluate: bool
    ) -> BatchChunk:
        answers, outputs, usable = text_answers(self.answer, served, rows, spec)
        record = None
        if evaluate:
            assert spec.label_column is not None
            record = {
                "outputs": [outputs[i][0].tolist() for i in usable],
                "truth": [rows[i][spec.label_column] for i in usable],
            }
        return BatchChunk(answers, [None if a else EMPTY_TEXT for a in answers], record)

    def batch_csv_header(self, served: Any) -> list[str]:
        if served.task == "regression":
            return ["predicted_value", "tokens", "truncated", "error"]
        scores = [f"score_{name}" for name in served.names]
        return ["predicted_label", "score", *scores, "tokens", "truncated", "error"]

    def batch_csv_values(self, served: Any, answer: dict[str, Any] | None) -> list[Any]:
        if answer is None:
            return [""] * (len(self.batch_csv_header(served)) - 1)
        if served.task == "regression":
            return [answer["value"], answer["tokens"], answer["truncated"]]
        scores = [round(answer["scores"][name], 6) for name in served.names]
        return [
            answer["label"],
            round(answer["score"], 6),
            *scores,
            answer["tokens"],
            answer["truncated"],
        ]

    def batch_report(self, served: Any, records: list[Any]) -> EvaluationReport:
        """Scored against the job's training labels: the majority class (or mean) of its
        training data is the baseline."""
        outputs = np.asarray([o for r in records for o in r["outputs"]], dtype=np.float64).reshape(
            -1, len(served.names)
        )
        truth = [t for r in records for t in r["truth"]]
        summary = served.job.get("training_labels", {})
        if served.task == "regression":
            try:
                targets = np.asarray(truth, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InvalidInput(
                    f"the label column holds values that are not numbers: {exc}"
                ) from exc
            mean = float(summary.get("mean", targets.mean() if len(targets) else 0.0))
            return regression_report(outputs[:, 0], targets, mean)
        index = {name: i for i, name in enumerate(served.names)}
        unknown = sorted({str(v) for v in truth} - set(index))
        if unknown:
            raise InvalidInput(
                f"labels {', '.join(unknown[:10])} are not among the model's "
                f"({', '.join(served.names[:20])})"
            )
        targets = np.asarray([index[str(v)] for v in truth], dtype=np.int64)
        counts = summary.get("counts") or {}
        majority = (
            index[max(counts, key=lambda k: counts[k])]
            if counts
            else int(np.bincount(targets, minlength=len(served.names)).argmax())
        )
        return classification_report(outputs, targets, served.names, majority)


def text_answers(
    answer: Callable[[Any, np.ndarray, int], dict[str, Any]],
    served: Any,
    rows: list[dict[str, Any]],
    spec: BatchSpec,
) -> tuple[list[dict[str, Any] | None], dict[int, tuple[np.ndarray, int]], list[int]]:
    """Each row's answer from its whole-text outputs (None: no text), the outputs and the
    indices of the rows that had a text."""
    outputs, usable = text_outputs(served, rows, spec)
    answers: list[dict[str, Any] | None] = [None] * len(rows)
    for i, (output, length) in outputs.items():
        answers[i] = answer(served, output, length)
    return answers, outputs, usable


def text_outputs(
    served: Any, rows: list[dict[str, Any]], spec: BatchSpec
) -> tuple[dict[int, tuple[np.ndarray, int]], list[int]]:
    """The whole-text outputs (and token lengths) of the rows that have a text (and a pair,
    when the job takes pairs): {row index: (outputs, tokens)}, and those indices in order."""
    usable = [
        i
        for i, row in enumerate(rows)
        if isinstance(row.get(spec.text_column), str)
        and row[spec.text_column].strip()
        and (spec.text_pair_column is None or isinstance(row.get(spec.text_pair_column), str))
    ]
    if not usable:
        return {}, usable
    texts = [rows[i][spec.text_column] for i in usable]
    pairs = [rows[i][spec.text_pair_column] for i in usable] if spec.text_pair_column else None
    found, lengths = served.outputs(texts, pairs)
    return {i: (found[k], lengths[k]) for k, i in enumerate(usable)}, usable


def tokenize_texts(
    ds: Dataset,
    tokenizer: PreTrainedTokenizerBase,
    text_column: str,
    text_pair_column: str | None,
    max_length: int,
) -> Dataset:
    """`dataset.map(batched=True)` over texts (or pairs), truncating; padding is left to the
    batches. Keeps the `labels` column."""

    def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
        pairs = batch[text_pair_column] if text_pair_column else None
        encoded = tokenizer(batch[text_column], pairs, truncation=True, max_length=max_length)
        encoded[LENGTH] = [len(ids) for ids in encoded["input_ids"]]
        return dict(encoded)

    return ds.map(
        encode,
        batched=True,
        remove_columns=[c for c in ds.column_names if c != LABELS],
        desc="tokenizing",
    )


def predict_texts(
    answer: Callable[[Any, np.ndarray, int], dict[str, Any]],
    served: Any,
    inputs: list[dict[str, str | None]],
) -> list[dict[str, Any]]:
    """One answer per input from the model's outputs for the whole text (or pair). Inputs with
    and without a second text are encoded separately (a tokenizer takes pairs for all rows or
    for none)."""
    answers: list[dict[str, Any] | None] = [None] * len(inputs)
    for paired in (False, True):
        rows = [i for i, x in enumerate(inputs) if (x.get("text_pair") is not None) == paired]
        if not rows:
            continue
        texts = [str(inputs[i]["text"]) for i in rows]
        pairs = [str(inputs[i]["text_pair"]) for i in rows] if paired else None
        outputs, lengths = served.outputs(texts, pairs)
        for row, output, length in zip(rows, outputs, lengths, strict=True):
            answers[row] = answer(served, output, length)
    return [a for a in answers if a is not None]
