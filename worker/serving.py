"""Online predictions from fine-tuned models, in prediction worker processes.

A prediction worker (`finetune worker --predictions`) consumes its own queue, so a long
training job never holds a request up. It keeps its most recently used models loaded (the
folder a job saved, as `from_pretrained` loads it) with their forward pass traced once per
input shape class, and answers every label's probability, as the job's `from_pretrained`
model would.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PreTrainedTokenizerBase,
    TFPreTrainedModel,
)

from app.core.layout import attempt_output_dir
from app.core.settings import Settings
from worker.cache import Lru
from worker.hardware import apply_precision
from worker.pipeline.tasks import TaskType, task_named

log = logging.getLogger("finetune.serving")
PAD_TO_MULTIPLE_OF = 16  # few distinct shapes, so few traces of the forward pass
BATCH_SIZE = 64


class PredictionFailed(Exception):
    """Said to the caller as the request's error."""


@dataclass
class LoadedModel:
    model: TFPreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    task: str  # job.json's: "classification", "regression", or the job's task
    task_type: TaskType
    names: list[str]
    max_length: int
    forward: Any  # tf.function: model inputs -> logits
    job: dict[str, Any]  # the job's job.json
    extras: dict[str, Any] = field(default_factory=dict)  # what a task keeps per model

    @classmethod
    def load(cls, folder: Path, checkpoint: Path | None = None) -> LoadedModel:
        """The model a job saved; with `checkpoint` (a training checkpoint's prefix), the
        weights it held at that step instead."""
        # float32 whatever a training job in this process set last: answers equal those of
        # `from_pretrained` on the downloaded model (bfloat16 moves scores by about 1e-3).
        apply_precision("float32")
        try:
            job = json.loads((folder / "job.json").read_text())
            task_type = task_named(job.get("task", "classification"))
            tokenizer = AutoTokenizer.from_pretrained(str(folder))
            if checkpoint is not None and not any(folder.glob("tf_model.*")):
                # A checkpoint of a job that saved no model: its config, then its weights.
                config = AutoConfig.from_pretrained(str(folder))
                model = task_type.model_class.from_config(config)
                model.build_in_name_scope()
            else:
                model = task_type.model_class.from_pretrained(str(folder))
            if checkpoint is not None:
                # Every weight of the model must come from the checkpoint (the optimizer's
                # slots and the data position in it are not needed).
                status = tf.train.Checkpoint(model=model).read(str(checkpoint))
                status.assert_existing_objects_matched().expect_partial()
        except (OSError, ValueError, AssertionError, tf.errors.OpError) as exc:
            raise PredictionFailed(f"could not load the job's model: {exc}") from exc
        names = [model.config.id2label[i] for i in range(model.config.num_labels)]
        accepted = set(model.input_signature)

        @tf.function(reduce_retracing=True)
        def forward(batch: dict[str, tf.Tensor]) -> tf.Tensor:
            return model(batch, training=False).logits

        def call(encoded: dict[str, np.ndarray]) -> np.ndarray:
            batch = {k: tf.constant(v) for k, v in encoded.items() if k in accepted}
            return np.asarray(forward(batch), dtype=np.float64)

        return cls(
            model=model,
            tokenizer=tokenizer,
            task=job.get("task", "classification"),
            task_type=task_type,
            names=names,
            max_length=int(job["hyperparameters"]["max_length"]),
            forward=call,
            job=job,
        )

    def outputs(
        self, texts: list[str], pairs: list[str] | None, batch_size: int = BATCH_SIZE
    ) -> tuple[np.ndarray, list[int]]:
        """The model's outputs for each row (logits; regression: the value) and each row's
        length in tokens before truncation, in the rows' order. Rows are run shortest first in
        batches padded to their own longest row: little padding, few distinct shapes."""
        lengths = [len(ids) for ids in self.tokenizer(texts, pairs, truncation=False)["input_ids"]]
        encoded = self.tokenizer(texts, pairs, truncation=True, max_length=self.max_length)
        order = np.argsort([len(ids) for ids in encoded["input_ids"]], kind="stable")
        results = np.zeros((len(texts), len(self.names)), dtype=np.float64)
        for start in range(0, len(order), batch_size):
            rows = order[start : start + batch_size]
            batch = self.tokenizer.pad(
                {key: [values[i] for i in rows] for key, values in encoded.items()},
                padding=True,
                pad_to_multiple_of=PAD_TO_MULTIPLE_OF,
                return_tensors="np",
            )
            results[rows] = self.forward(dict(batch))
        return results, lengths

    def answer(self, output: np.ndarray, length: int) -> dict[str, Any]:
        """One row's prediction from its whole-text outputs (sequence tasks)."""
        answer = getattr(self.task_type, "answer", None)
        if answer is None:
            raise PredictionFailed(f"{self.task} models answer whole texts only online")
        result: dict[str, Any] = answer(self, output, length)
        return result

    def predict(self, inputs: list[dict[str, str | None]]) -> list[dict[str, Any]]:
        """One answer per input, in order, as the job's task answers it."""
        return self.task_type.predict(self, inputs)


class ModelServer:
    """The models this process keeps loaded, most recently used first."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.loaded: Lru[str, LoadedModel] = Lru(settings.prediction_models_per_worker)

    def model(self, job_id: str, attempt: int) -> LoadedModel:
        folder = attempt_output_dir(self.settings.storage_dir, job_id, attempt)
        key = str(folder)
        found = self.loaded.get(key)
        if found is None:
            if not (folder / "metrics.json").is_file():
                raise PredictionFailed(f"job '{job_id}' has no trained model on this storage")
            found = LoadedModel.load(folder)
            self.loaded.put(key, found)
            log.info("loaded a model for predictions", extra={"job_id": job_id})
        return found

    def answer(self, job_id: str, attempt: int, inputs: list[dict[str, str | None]]) -> str:
        """The reply as JSON: {"data": [...]} or {"error": {"code", "message"}}."""
        try:
            return json.dumps({"data": self.model(job_id, attempt).predict(inputs)})
        except PredictionFailed as exc:
            return json.dumps({"error": {"code": "prediction_failed", "message": str(exc)}})
        except Exception as exc:  # never leave the caller waiting for its timeout
            log.exception("prediction failed", extra={"job_id": job_id})
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            return json.dumps({"error": {"code": "internal_error", "message": message[:500]}})
