"""Warm starts: a worker process keeps the compiled models of its last jobs and reuses one for a
job whose model has the same shape and training setup, instead of building and tracing again.

A compiled model is the Keras model with its optimizer, its learning-rate schedule and the train
and predict steps Keras traced for them; tracing MiniLM's train step alone costs seconds. A job
that takes one resets it exactly: the job's pristine weights and config, a fresh optimizer
(`reset_optimizer`), the job's schedule (its numbers are variables the traced step reads),
and dropout seeded from the job's seed as every job's is (`seed_dropout`). A warm job therefore
trains to the same weights as a cold one with the same seed (tests/integration/
test_pipeline.py), only sooner.

What the traced step bakes in is the key: the model's configuration apart from names (label
names, paths, the decision thresholds), the task, the dtype policy, and the settings that change
the step itself (optimizer kind and weight decay, steps per execution, XLA). A model is taken
out of the store while its job runs and put back after the job succeeds, is cancelled or
diverges (the next job resets it anyway); after any other failure it is dropped. Sized by
FINETUNE_WORKER_WARM_MODELS (0 turns warm starts off).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from transformers import PretrainedConfig, TFPreTrainedModel

from app.core.schemas import Hyperparameters
from worker.cache import Lru
from worker.pipeline.model import LoadedModel, assign_pristine
from worker.pipeline.optimizer import TrainingSchedule, reset_optimizer
from worker.pipeline.tasks import TaskType

# Fields of a config that name things rather than shape the computation.
NAMING_FIELDS = frozenset(
    {
        "_name_or_path",
        "architectures",
        "id2label",
        "label2id",
        "decision_threshold",
        "decision_thresholds",
        "transformers_version",
        "torch_dtype",
    }
)


@dataclass
class CompiledModel:
    model: TFPreTrainedModel
    optimizer: Any  # the one given to compile (Keras may wrap it for loss scaling)
    schedule: TrainingSchedule


compiled_models: Lru[tuple[Any, ...], CompiledModel] = Lru(2)


def configure(entries: int) -> None:
    compiled_models.resize(entries)


def warm_key(
    config: PretrainedConfig, task: TaskType, hp: Hyperparameters, policy: str
) -> tuple[Any, ...]:
    shape = {k: v for k, v in config.to_dict().items() if k not in NAMING_FIELDS}
    shape["num_labels"] = config.num_labels
    return (
        task.name,
        type(config).__name__,
        json.dumps(shape, sort_keys=True, default=str),
        policy,
        hp.embedding_updates,
        hp.weight_decay,
        hp.steps_per_execution,
        hp.jit_compile,
    )


def take(key: tuple[Any, ...], pristine: LoadedModel) -> CompiledModel | None:
    """A kept compiled model for this key, reset to the job's start; None when there is none."""
    compiled = compiled_models.pop(key)
    if compiled is None:
        return None
    assign_pristine(compiled.model, pristine)
    reset_optimizer(compiled.model.optimizer, compiled.model.trainable_variables)
    return compiled


def keep(key: tuple[Any, ...], compiled: CompiledModel) -> None:
    compiled_models.put(key, compiled)
