"""Multi-label classification: each text has a set of labels (possibly empty).

One sigmoid output per label, trained with binary cross-entropy (transformers' TF models have
no multi-label loss, so the loss is given to `compile`; the saved config says
`problem_type: multi_label_classification`, so PyTorch `from_pretrained` users get the same
loss). A label is predicted when its probability reaches a decision threshold chosen on
validation (the one with the best macro F1), saved in the model's config as
`decision_threshold` and used by its predictions.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from datasets import ClassLabel, Dataset, Sequence
from scipy.special import expit
from sklearn.metrics import accuracy_score, f1_score, precision_recall_fscore_support
from transformers import (
    PreTrainedTokenizerBase,
    TFAutoModelForSequenceClassification,
    TFPreTrainedModel,
)

from app.core.labels import LabelProblem, class_names, label_set
from app.core.schemas import (
    BatchSpec,
    ClassScores,
    EvaluationReport,
    Hyperparameters,
    JobSpec,
)
from worker.errors import InvalidInput
from worker.pipeline.batching import BucketCollator, Collator
from worker.pipeline.data import LABELS, LabelInfo, column_array
from worker.pipeline.report import round6
from worker.pipeline.tasks.base import BatchChunk, TaskType
from worker.pipeline.tasks.sequence import EMPTY_TEXT, predict_texts, text_answers, tokenize_texts

THRESHOLDS = tuple(round(0.05 * i, 2) for i in range(1, 20))
DEFAULT_THRESHOLD = 0.5
MIN_LABEL_SUPPORT = 20  # validation rows of a label for a threshold of its own
F1_MARGIN = 0.01  # "no better than the baseline"


def multi_label_loss(targets: tf.Tensor, logits: tf.Tensor) -> tf.Tensor:
    """Binary cross-entropy per label from logits, averaged over the labels of a row; in
    float32 whatever the compute precision (bfloat16 sigmoids lose the small probabilities
    that rare labels live on)."""
    return tf.reduce_mean(
        tf.nn.sigmoid_cross_entropy_with_logits(
            labels=tf.cast(targets, tf.float32), logits=tf.cast(logits, tf.float32)
        ),
        axis=-1,
    )


class FloatTargets:
    """Pads like `BucketCollator`; multi-hot targets as float32."""

    def __init__(self, pad: BucketCollator) -> None:
        self.pad = pad

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad(features)
        if LABELS in batch:
            batch[LABELS] = np.asarray(batch[LABELS], dtype=np.float32)
        return batch


class MultiLabelClassification(TaskType):
    name = "multi_label_classification"
    model_class = TFAutoModelForSequenceClassification
    head_suffix = "ForSequenceClassification"

    def _sets(self, ds: Dataset, spec: JobSpec, split: str) -> list[list[str]]:
        column = spec.label_column
        feature = ds.features[column]
        names = None
        if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel):
            names = feature.feature.names
        sets = []
        delimited = _is_text(feature)
        for row, value in enumerate(ds[column], start=1):
            try:
                labels = label_set(
                    "" if value is None and delimited else value, spec.label_delimiter
                )
            except LabelProblem as exc:
                raise InvalidInput(f"{split} data row {row}, column '{column}': {exc}") from exc
            if names is not None:
                labels = [names[int(str(v))] for v in labels]
            sets.append([str(v) for v in labels])
        return sets

    def infer_labels(self, train: Dataset, spec: JobSpec, max_labels: int) -> LabelInfo:
        column = spec.label_column
        flat: list[object] = []
        feature = train.features[column]
        delimited = _is_text(feature)
        for row, value in enumerate(train[column], start=1):
            try:
                flat.extend(
                    label_set("" if value is None and delimited else value, spec.label_delimiter)
                )
            except LabelProblem as exc:
                raise InvalidInput(f"training data row {row}, column '{column}': {exc}") from exc
        if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel):
            return LabelInfo("multi_label_classification", list(feature.feature.names))
        try:
            return LabelInfo("multi_label_classification", class_names(flat, max_labels))
        except LabelProblem as exc:
            raise InvalidInput(f"training data, column '{column}': {exc}") from exc

    def encode_labels(
        self, ds: Dataset, spec: JobSpec, labels: LabelInfo, split: str
    ) -> tuple[Dataset, list[str]]:
        """Multi-hot targets: one 0/1 per label, in the label ids' order."""
        ids = labels.label2id
        targets = []
        for row, names in enumerate(self._sets(ds, spec, split), start=1):
            hot = [0.0] * labels.num_labels
            for name in names:
                if name not in ids:
                    raise InvalidInput(
                        f"{split} data row {row}: label {name!r} is not one of the training "
                        f"labels ({', '.join(labels.names[:20])})"
                    )
                hot[ids[name]] = 1.0
            targets.append(hot)
        if LABELS in ds.column_names:
            ds = ds.remove_columns(LABELS)
        return ds.add_column(LABELS, targets), []

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> Dataset:
        return tokenize_texts(
            ds, tokenizer, spec.text_column, spec.text_pair_column, spec.hyperparameters.max_length
        )

    def label_summary(self, train: Dataset, labels: LabelInfo) -> dict[str, Any]:
        hot = np.asarray(column_array(train, LABELS), dtype=np.int64)
        sets = Counter(tuple(np.flatnonzero(row).tolist()) for row in hot)
        common, rows = sets.most_common(1)[0]
        return {
            "counts": {name: int(c) for name, c in zip(labels.names, hot.sum(axis=0), strict=True)},
            "most_frequent_set": [labels.names[i] for i in common],
            "most_frequent_set_rows": rows,
            "rows": len(hot),
        }

    def model_options(self, labels: LabelInfo) -> dict[str, Any]:
        return {**super().model_options(labels), "problem_type": "multi_label_classification"}

    def compile_options(self, labels: LabelInfo) -> dict[str, Any]:
        return {"loss": multi_label_loss}

    def start_head(self, model: TFPreTrainedModel, train: Dataset, labels: LabelInfo) -> None:
        """Each label's output bias at the log-odds of its frequency in the training data, so
        the untrained model already answers each label's base rate instead of 0.5 for all.
        With a zero bias the first steps spend the encoder's gradient on pushing every output
        down; rare labels (a few hundred of 43,000 rows in GoEmotions) then stay below any
        threshold for long (the prior initialisation of Lin et al., "Focal Loss", 2017)."""
        hot = np.asarray(column_array(train, LABELS), dtype=np.float64)
        rate = (hot.sum(axis=0) + 0.5) / (len(hot) + 1.0)
        output = self.output_layer(model)
        if output is None:
            raise InvalidInput(
                f"{type(model).__name__} has no output layer of {labels.num_labels} units"
            )
        output.bias.assign(np.log(rate / (1.0 - rate)).astype(np.float32))

    def build_step_variables(self, model: TFPreTrainedModel, labels: LabelInfo) -> None:
        shape = [1, labels.num_labels]
        model.compiled_loss(tf.zeros(shape), tf.zeros(shape))

    def collator(
        self,
        tokenizer: PreTrainedTokenizerBase,
        buckets: np.ndarray,
        hp: Hyperparameters,
        epoch: int | None,
    ) -> Collator:
        return FloatTargets(BucketCollator(tokenizer, buckets))

    def metrics(self, outputs: Any, rows: Dataset, labels: LabelInfo) -> dict[str, float]:
        targets = np.asarray(column_array(rows, LABELS), dtype=np.float64)
        return scores(np.asarray(outputs, dtype=np.float64), targets, DEFAULT_THRESHOLD)

    def report(
        self,
        outputs: Any,
        rows: Dataset,
        labels: LabelInfo,
        train: Dataset,
        before: dict[str, float] | None = None,
    ) -> EvaluationReport:
        train_hot = np.asarray(column_array(train, LABELS), dtype=np.int64)
        common = Counter(tuple(row.tolist()) for row in train_hot).most_common(1)[0][0]
        return label_set_report(
            np.asarray(outputs, dtype=np.float64),
            np.asarray(column_array(rows, LABELS), dtype=np.int64),
            labels.names,
            np.asarray(common, dtype=np.int64),
            decision=None,
        )

    def finish(self, model: TFPreTrainedModel, report: EvaluationReport) -> dict[str, Any]:
        """The thresholds go into the saved config, beside `problem_type`: the shared one and
        each label's."""
        model.config.decision_threshold = report.threshold
        model.config.decision_thresholds = report.label_thresholds
        return {
            "decision_threshold": report.threshold,
            "decision_thresholds": report.label_thresholds,
        }

    def predict(self, served: Any, inputs: list[dict[str, str | None]]) -> list[dict[str, Any]]:
        return predict_texts(self.answer, served, inputs)

    def answer(self, served: Any, output: np.ndarray, length: int) -> dict[str, Any]:
        decision = saved_decision(served.model.config, served.names)
        probabilities = expit(np.asarray(output, dtype=np.float64))
        chosen = [
            name
            for name, p, t in zip(served.names, probabilities, decision.cutoffs, strict=True)
            if p >= t
        ]
        return {
            "labels": chosen,
            "threshold": decision.shared,
            "label_thresholds": decision.by_label(served.names),
            "scores": {name: float(p) for name, p in zip(served.names, probabilities, strict=True)},
            "tokens": length,
            "truncated": length > served.max_length,
        }

    # -- batch predictions ----------------------------------------------------------------------

    def batch_chunk(
        self, served: Any, rows: list[dict[str, Any]], spec: BatchSpec, evaluate: bool
    ) -> BatchChunk:
        answers, outputs, usable = text_answers(self.answer, served, rows, spec)
        record = None
        if evaluate:
            assert spec.label_column is not None
            delimiter = served.job.get("spec", {}).get("label_delimiter", ",")
            truth = []
            for i in usable:
                value = rows[i][spec.label_column]
                try:
                    found = label_set("" if value is None else value, delimiter)
                except LabelProblem as exc:
                    raise InvalidInput(f"column '{spec.label_column}': {exc}") from exc
                truth.append([str(v) for v in found])
            record = {"outputs": [outputs[i][0].tolist() for i in usable], "truth": truth}
        return BatchChunk(answers, [None if a else EMPTY_TEXT for a in answers], record)

    def batch_csv_header(self, served: Any) -> list[str]:
        scores = [f"score_{name}" for name in served.names]
        return ["predicted_labels", *scores, "tokens", "truncated", "error"]

    def batch_csv_values(self, served: Any, answer: dict[str, Any] | None) -> list[Any]:
        if answer is None:
            return [""] * (len(served.names) + 3)
        delimiter = served.job.get("spec", {}).get("label_delimiter", ",")
        scores = [round(answer["scores"][name], 6) for name in served.names]
        return [
            delimiter.join(answer["labels"]),
            *scores,
            answer["tokens"],
            answer["truncated"],
        ]

    def batch_report(self, served: Any, records: list[Any]) -> EvaluationReport:
        """At the model's own threshold (choosing one on the file being judged would flatter
        the model); the table of thresholds shows what others would give."""
        names = list(served.names)
        index = {name: i for i, name in enumerate(names)}
        outputs = np.asarray([o for r in records for o in r["outputs"]], dtype=np.float64).reshape(
            -1, len(names)
        )
        targets = np.zeros(outputs.shape, dtype=np.int64)
        for row, found in enumerate(t for r in records for t in r["truth"]):
            unknown = [v for v in found if v not in index]
            if unknown:
                raise InvalidInput(
                    f"label {unknown[0]!r} is not among the model's ({', '.join(names[:20])})"
                )
            targets[row, [index[v] for v in found]] = 1
        common = np.zeros(len(names), dtype=np.int64)
        for name in served.job.get("training_labels", {}).get("most_frequent_set", []):
            common[index[name]] = 1
        decision = saved_decision(served.model.config, names)
        return label_set_report(outputs, targets, names, common, decision=decision)


@dataclass(frozen=True)
class Decision:
    """When a label is predicted: its probability reaches its own cutoff. `cutoffs` holds one
    per label (all equal to `shared` for a model with one threshold)."""

    shared: float
    cutoffs: np.ndarray
    per_label: bool

    def by_label(self, names: list[str]) -> dict[str, float] | None:
        if not self.per_label:
            return None
        return {name: float(t) for name, t in zip(names, self.cutoffs, strict=True)}


def saved_decision(config: Any, names: list[str]) -> Decision:
    """The thresholds a model was saved with (0.5 for a model saved without any)."""
    shared = float(getattr(config, "decision_threshold", None) or DEFAULT_THRESHOLD)
    by_label = getattr(config, "decision_thresholds", None) or {}
    cutoffs = np.asarray([float(by_label.get(name, shared)) for name in names])
    return Decision(shared, cutoffs, bool(by_label))


def choose_decision(
    logits: np.ndarray, targets: np.ndarray, table: list[dict[str, float]]
) -> Decision:
    """The shared threshold with the best macro F1 (the nearest 0.5 among equals), then for
    each label with at least `MIN_LABEL_SUPPORT` positive rows the threshold with its own best
    F1 (the nearest the shared one among equals). A label's F1 depends on its threshold only,
    so this is the macro-F1 optimum over `THRESHOLDS`; labels with fewer rows keep the shared
    threshold, whose choice rests on every label's rows."""
    best = max(table, key=lambda r: (r["f1_macro"], -abs(r["threshold"] - 0.5)))
    shared = float(best["threshold"])
    probabilities = expit(logits)
    truth = targets.astype(bool)
    cutoffs = np.full(targets.shape[1], shared)
    for j in range(targets.shape[1]):
        if truth[:, j].sum() < MIN_LABEL_SUPPORT:
            continue
        f1s = [
            (f1_score(truth[:, j], probabilities[:, j] >= t, zero_division=0), -abs(t - shared), t)
            for t in THRESHOLDS
        ]
        cutoffs[j] = max(f1s)[2]
    return Decision(shared, cutoffs, True)


def label_set_report(
    logits: np.ndarray,
    targets: np.ndarray,
    names: list[str],
    common: np.ndarray,
    decision: Decision | None,
) -> EvaluationReport:
    """Scores at `decision` (None: choose it here, `choose_decision`), the table over every
    shared threshold, per-label scores, and the baseline of always answering `common` (the
    training set's most frequent label set, multi-hot)."""
    table = [
        {"threshold": t, **{k: round6(v) for k, v in scores(logits, targets, t).items()}}
        for t in THRESHOLDS
    ]
    if decision is None:
        decision = choose_decision(logits, targets, table)
    threshold = decision.shared
    metrics = {k: round6(v) for k, v in scores(logits, targets, decision.cutoffs).items()}
    chosen = expit(logits) >= decision.cutoffs
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, chosen, average=None, zero_division=0, labels=list(range(len(names)))
    )
    per_label = [
        ClassScores(
            label=name,
            precision=round6(precision[i]),
            recall=round6(recall[i]),
            f1=round6(f1[i]),
            support=int(support[i]),
        )
        for i, name in enumerate(names)
    ]
    baseline = most_frequent_set_scores(common, targets)
    warnings = []
    if not chosen.any():
        warnings.append(
            f"the model predicts no label for any of the {len(targets)} rows at its "
            f"thresholds: it has learned nothing yet; try more epochs or a higher learning_rate"
        )
    elif metrics["f1_macro"] <= baseline["f1_macro"] + F1_MARGIN:
        warnings.append(
            f"the model does no better than always answering the training set's most "
            f"frequent label set: macro F1 {metrics['f1_macro']:.3f} against "
            f"{baseline['f1_macro']:.3f}; try more epochs or a higher learning_rate"
        )
    return EvaluationReport(
        task="multi_label_classification",
        rows=len(targets),
        metrics=metrics,
        baseline=baseline,
        labels=names,
        per_class=per_label,
        predicted_classes=int(chosen.any(axis=0).sum()),
        threshold=threshold,
        label_thresholds=decision.by_label(names),
        thresholds=table,
        warnings=warnings,
    )


def _is_text(feature: Any) -> bool:
    """A text column of delimited labels (CSV), where an empty cell means no label."""
    return getattr(feature, "dtype", None) in ("string", "large_string")


def scores(
    logits: np.ndarray, targets: np.ndarray, threshold: float | np.ndarray
) -> dict[str, float]:
    """Loss (binary cross-entropy), micro and macro F1 and exact-match accuracy at a
    threshold on each label's probability (one for all, or one per label)."""
    probabilities = expit(logits)
    eps = 1e-12
    loss = -np.mean(
        targets * np.log(probabilities + eps) + (1 - targets) * np.log(1 - probabilities + eps)
    )
    chosen = probabilities >= threshold
    truth = targets.astype(bool)
    return {
        "loss": float(loss),
        "f1_micro": float(f1_score(truth, chosen, average="micro", zero_division=0)),
        "f1_macro": float(f1_score(truth, chosen, average="macro", zero_division=0)),
        "exact_match": float(accuracy_score(truth, chosen)),
    }


def most_frequent_set_scores(common: np.ndarray, targets: np.ndarray) -> dict[str, float]:
    """Scores of always answering `common` (multi-hot; the training set's most frequent
    label set)."""
    constant = np.tile(np.asarray(common, dtype=bool), (len(targets), 1))
    truth = targets.astype(bool)
    return {
        "f1_micro": round6(f1_score(truth, constant, average="micro", zero_division=0)),
        "f1_macro": round6(f1_score(truth, constant, average="macro", zero_division=0)),
        "exact_match": round6(accuracy_score(truth, constant)),
    }
