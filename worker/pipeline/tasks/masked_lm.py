"""Masked language modelling: adapt a model to a domain's text before classifying it.

Random masking as BERT was trained (15% of tokens: 80% become [MASK], 10% a random token, 10%
stay) by `DataCollatorForLanguageModeling`, through `prepare_tf_dataset`'s `collate_fn`. Its
random draws come from a generator seeded by the job's seed, the epoch and the batch's own
tokens, so a batch is masked the same way whenever it is collated: a resumed run sees exactly
the masks an uninterrupted one saw, and validation (masked with a fixed epoch) is scored on the
same masks at every evaluation. The result is a base model: a later classification or token
classification job names this job as its `model` and gets its encoder with a fresh head.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import tensorflow as tf
from datasets import Dataset
from transformers import (
    DataCollatorForLanguageModeling,
    PreTrainedTokenizerBase,
    TFAutoModelForMaskedLM,
    TFPreTrainedModel,
)

from app.core.catalog import UnknownModel, resolve_model
from app.core.schemas import BatchSpec, EvaluationReport, Hyperparameters, JobSpec
from app.core.settings import get_settings
from worker.errors import InvalidInput
from worker.pipeline.batching import BucketCollator, Collator
from worker.pipeline.data import LABELS, LabelInfo
from worker.pipeline.report import round6
from worker.pipeline.tasks.base import BatchChunk, TaskType, evaluation_function
from worker.pipeline.tasks.sequence import EMPTY_TEXT, tokenize_texts

VALIDATION_EPOCH = 2**31 - 1  # the masking seed's epoch part for validation batches
TOP_FILLS = 5


class MaskingCollator:
    """Pads to the batch's length bucket, then masks with a generator seeded by (seed, epoch,
    the batch's tokens)."""

    def __init__(
        self,
        tokenizer: PreTrainedTokenizerBase,
        buckets: np.ndarray,
        seed: int,
        epoch: int,
        probability: float,
    ) -> None:
        self.pad = BucketCollator(tokenizer, buckets)
        self.mask = DataCollatorForLanguageModeling(
            tokenizer, mlm_probability=probability, return_tensors="np"
        )
        self.seed, self.epoch = seed, epoch

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        batch = self.pad([{k: v for k, v in f.items() if k != LABELS} for f in features])
        input_ids = np.asarray(batch["input_ids"], dtype=np.int64)
        digest = zlib.crc32(input_ids.tobytes())
        self.mask.generator = np.random.default_rng([self.seed, self.epoch, digest])
        special = np.asarray(
            [
                self.mask.tokenizer.get_special_tokens_mask(row, already_has_special_tokens=True)
                for row in input_ids.tolist()
            ],
            dtype=bool,
        )
        masked, labels = self.mask.numpy_mask_tokens(input_ids.copy(), special)
        batch["input_ids"], batch[LABELS] = masked, labels
        return batch


@dataclass
class MaskedOutputs:
    loss_sum: float = 0.0
    masked: int = 0
    correct: int = 0


class MaskedLanguageModelling(TaskType):
    name = "masked_lm"
    model_class = TFAutoModelForMaskedLM
    head_suffix = "ForMaskedLM"
    baseline_before_training = True

    def label_columns(self, spec: JobSpec) -> list[str]:
        return []

    def infer_labels(self, train: Dataset, spec: JobSpec, max_labels: int) -> LabelInfo:
        return LabelInfo("masked_lm")

    def encode_labels(
        self, ds: Dataset, spec: JobSpec, labels: LabelInfo, split: str
    ) -> tuple[Dataset, list[str]]:
        return ds, []

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> Dataset:
        if tokenizer.mask_token is None:
            raise InvalidInput("masked_lm needs a model whose tokenizer has a mask token")
        return tokenize_texts(
            ds, tokenizer, spec.text_column, None, spec.hyperparameters.max_length
        )

    def model_options(self, labels: LabelInfo) -> dict[str, Any]:
        return {}

    def output_layer(self, model: TFPreTrainedModel) -> Any:
        """None: the vocabulary logits come from the input embeddings, tied."""
        return None

    def collator(
        self,
        tokenizer: PreTrainedTokenizerBase,
        buckets: np.ndarray,
        hp: Hyperparameters,
        epoch: int | None,
    ) -> Collator:
        epoch = VALIDATION_EPOCH if epoch is None else epoch
        return MaskingCollator(tokenizer, buckets, hp.seed, epoch, hp.mlm_probability)

    def validation_outputs(self, model: TFPreTrainedModel, batches: tf.data.Dataset) -> Any:
        """Cross-entropy summed over the masked tokens, in the graph: the vocabulary-wide
        logits of a batch never leave it."""

        def build() -> Any:
            @tf.function(reduce_retracing=True)
            def score(features: dict[str, tf.Tensor], targets: tf.Tensor) -> tuple[tf.Tensor, ...]:
                logits = tf.cast(model(features, training=False).logits, tf.float32)
                kept = targets != -100
                picked = tf.boolean_mask(logits, kept)
                truth = tf.boolean_mask(targets, kept)
                losses = tf.nn.sparse_softmax_cross_entropy_with_logits(truth, picked)
                right = tf.cast(
                    tf.argmax(picked, axis=-1, output_type=truth.dtype) == truth, tf.int64
                )
                return tf.reduce_sum(losses), tf.size(truth), tf.reduce_sum(right)

            return score

        score = evaluation_function(model, self.name, build)
        outputs = MaskedOutputs()
        for features, targets in batches:
            loss, count, right = score(features, targets)
            outputs.loss_sum += float(loss)
            outputs.masked += int(count)
            outputs.correct += int(right)
        return outputs

    def metrics(self, outputs: Any, rows: Dataset, labels: LabelInfo) -> dict[str, float]:
        return perplexity(outputs)

    def report(
        self,
        outputs: Any,
        rows: Dataset,
        labels: LabelInfo,
        train: Dataset,
        before: dict[str, float] | None = None,
    ) -> EvaluationReport:
        metrics = {k: round6(v) for k, v in self.metrics(outputs, rows, labels).items()}
        warnings = []
        if before is not None and metrics["perplexity"] >= before["perplexity"]:
            warnings.append(
                f"validation perplexity {metrics['perplexity']:.3f} is no better than the "
                f"model's before training ({before['perplexity']:.3f}): it has not adapted to "
                "this text; try more epochs or a different learning_rate"
            )
        return EvaluationReport(
            task="masked_lm",
            rows=len(rows),
            metrics=metrics,
            baseline=dict(before or {}),
            warnings=warnings,
        )

    def predict(self, served: Any, inputs: list[dict[str, str | None]]) -> list[dict[str, Any]]:
        """For each mask token in a text, the most likely tokens (fill-mask)."""
        tokenizer = served.tokenizer
        texts = [str(x["text"]) for x in inputs]
        lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
        answers = []
        for i, text in enumerate(texts):  # one at a time: vocabulary-wide logits are large
            encoded = tokenizer(
                [text],
                truncation=True,
                max_length=served.max_length,
                padding=True,
                pad_to_multiple_of=16,
                return_tensors="np",
            )
            logits = served.forward(dict(encoded))[0]
            fills = []
            for position in np.flatnonzero(encoded["input_ids"][0] == tokenizer.mask_token_id):
                row = logits[position]
                probabilities = np.exp(row - row.max())
                probabilities /= probabilities.sum()
                top = np.argsort(-probabilities)[:TOP_FILLS]
                fills.append(
                    [
                        {
                            "token": tokenizer.convert_ids_to_tokens(int(t)),
                            "score": float(probabilities[t]),
                        }
                        for t in top
                    ]
                )
            answers.append(
                {"fills": fills, "tokens": lengths[i], "truncated": lengths[i] > served.max_length}
            )
        return answers

    # -- batch predictions ----------------------------------------------------------------------

    def batch_chunk(
        self, served: Any, rows: list[dict[str, Any]], spec: BatchSpec, evaluate: bool
    ) -> BatchChunk:
        """Fills for the rows that hold a mask token; with `evaluate`, the masked-token loss
        over every row, masked as the job masked its validation rows (same seed and
        probability, masks fixed by each batch's tokens), so reruns give the same score."""
        column = spec.text_column
        tokenizer = served.tokenizer
        usable = [
            i
            for i, row in enumerate(rows)
            if isinstance(row.get(column), str) and row[column].strip()
        ]
        texts = [rows[i][column] for i in usable]
        answers: list[dict[str, Any] | None] = [None] * len(rows)
        if texts:
            lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
            masked = [k for k, text in enumerate(texts) if tokenizer.mask_token in text]
            found = self.predict(served, [{"text": texts[k]} for k in masked]) if masked else []
            fills = dict(zip(masked, found, strict=True))
            for k, i in enumerate(usable):
                answers[i] = fills.get(k) or {
                    "fills": [],
                    "tokens": lengths[k],
                    "truncated": lengths[k] > served.max_length,
                }
        record = None
        if evaluate:
            batches = self.masked_batches(served, texts)
            totals = self.validation_outputs(served.model, batches)
            record = {
                "rows": len(texts),
                "loss_sum": totals.loss_sum,
                "masked": totals.masked,
                "correct": totals.correct,
            }
            base = self.base_model(served)
            if base is not None:
                before = self.validation_outputs(base, batches)
                record["before"] = {"loss_sum": before.loss_sum, "correct": before.correct}
        return BatchChunk(answers, [None if a else EMPTY_TEXT for a in answers], record)

    def batch_csv_header(self, served: Any) -> list[str]:
        return ["fills", "tokens", "truncated", "error"]

    def batch_csv_values(self, served: Any, answer: dict[str, Any] | None) -> list[Any]:
        if answer is None:
            return ["", "", ""]
        fills = json.dumps(answer["fills"], ensure_ascii=False)
        return [fills, answer["tokens"], answer["truncated"]]

    def batch_report(self, served: Any, records: list[Any]) -> EvaluationReport:
        """Perplexity on the file, beside the pretrained model's on the same masks (when the
        job started from a model this server holds locally)."""
        masked = sum(r["masked"] for r in records)
        totals = MaskedOutputs(
            loss_sum=sum(r["loss_sum"] for r in records),
            masked=masked,
            correct=sum(r["correct"] for r in records),
        )
        metrics = {k: round6(v) for k, v in perplexity(totals).items()}
        baseline: dict[str, float] = {}
        if records and all("before" in r for r in records):
            before = MaskedOutputs(
                loss_sum=sum(r["before"]["loss_sum"] for r in records),
                masked=masked,
                correct=sum(r["before"]["correct"] for r in records),
            )
            baseline = {k: round6(v) for k, v in perplexity(before).items()}
        warnings = []
        if masked == 0:
            warnings.append("no token of the file was masked: it holds no text to score")
        elif baseline and metrics["perplexity"] >= baseline["perplexity"]:
            warnings.append(
                f"perplexity {metrics['perplexity']:.3f} on this file is no better than the "
                f"pretrained model's ({baseline['perplexity']:.3f}): the adaptation does not "
                "carry over to this text"
            )
        return EvaluationReport(
            task="masked_lm",
            rows=sum(r["rows"] for r in records),
            metrics=metrics,
            baseline=baseline,
            warnings=warnings,
        )

    def base_model(self, served: Any) -> TFPreTrainedModel | None:
        """The pretrained model the job started from, when this server holds it locally
        (loaded once per served model); None for hub models and chains of jobs."""
        if "base_model" not in served.extras:
            source = served.job.get("model_source", {})
            base = None
            if source.get("source") == "local":
                try:
                    ref = resolve_model(source["name"], get_settings().models_dir, False)
                    base = TFAutoModelForMaskedLM.from_pretrained(ref.location)
                except (UnknownModel, OSError, ValueError):
                    base = None
            served.extras["base_model"] = base
        found: TFPreTrainedModel | None = served.extras["base_model"]
        return found

    def masked_batches(
        self, served: Any, texts: list[str], batch_size: int = 32
    ) -> list[tuple[dict[str, tf.Tensor], tf.Tensor]]:
        """(inputs, targets) batches of similar length, masked as the job masked its
        validation rows (its seed and probability, the validation epoch)."""
        hp = served.job.get("hyperparameters", {})
        tokenizer = served.tokenizer
        encoded = tokenizer(texts, truncation=True, max_length=served.max_length)
        features = [{key: encoded[key][i] for key in encoded} for i in range(len(texts))]
        features.sort(key=lambda f: len(f["input_ids"]))
        buckets = np.arange(16, served.max_length + 16, 16)
        collate = MaskingCollator(
            tokenizer,
            buckets,
            int(hp.get("seed", 42)),
            VALIDATION_EPOCH,
            float(hp.get("mlm_probability", 0.15)),
        )
        accepted = set(served.model.input_signature)
        batches = []
        for start in range(0, len(features), batch_size):
            batch = collate(features[start : start + batch_size])
            targets = tf.constant(batch.pop(LABELS))
            inputs = {k: tf.constant(v) for k, v in batch.items() if k in accepted}
            batches.append((inputs, targets))
        return batches


def perplexity(outputs: MaskedOutputs) -> dict[str, float]:
    """Mean cross-entropy over the masked tokens, its exponential, and how often the top
    token was the masked one."""
    loss = outputs.loss_sum / max(outputs.masked, 1)
    return {
        "loss": loss,
        "perplexity": math.exp(min(loss, 50.0)),
        "accuracy": outputs.correct / max(outputs.masked, 1),
    }
