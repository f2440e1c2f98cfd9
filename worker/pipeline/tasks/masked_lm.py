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

from app.core.schemas import EvaluationReport, Hyperparameters, JobSpec
from worker.errors import InvalidInput
from worker.pipeline.batching import BucketCollator, Collator
from worker.pipeline.data import LABELS, LabelInfo
from worker.pipeline.report import round6
from worker.pipeline.tasks.base import TaskType, evaluation_function
from worker.pipeline.tasks.sequence import tokenize_texts

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
        loss = outputs.loss_sum / max(outputs.masked, 1)
        return {
            "loss": loss,
            "perplexity": math.exp(min(loss, 50.0)),
            "accuracy": outputs.correct / max(outputs.masked, 1),
        }

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
