"""Loading the pretrained model and tokenizer: local folders, or hub ids when allowed.

`trust_remote_code` is never passed: only architectures that ship with transformers load.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from transformers import (
    AutoTokenizer,
    PreTrainedTokenizerBase,
    TFAutoModelForSequenceClassification,
    TFPreTrainedModel,
)

from app.catalog import ModelRef, UnknownModel, resolve_model
from worker.errors import ModelNotFound
from worker.pipeline.data import LabelInfo


def find_model(name: str, models_dir: Path, allow_hub: bool) -> ModelRef:
    try:
        return resolve_model(name, models_dir, allow_hub)
    except UnknownModel as exc:
        raise ModelNotFound(str(exc)) from exc


def load_tokenizer(ref: ModelRef) -> PreTrainedTokenizerBase:
    try:
        return AutoTokenizer.from_pretrained(ref.location, local_files_only=ref.source == "local")
    except Exception as exc:
        raise ModelNotFound(f"could not load the tokenizer of '{ref.name}': {exc}") from exc


def load_model(ref: ModelRef, labels: LabelInfo) -> TFPreTrainedModel:
    """A sequence-classification model with a fresh head sized for this job's labels."""
    try:
        return TFAutoModelForSequenceClassification.from_pretrained(
            ref.location,
            local_files_only=ref.source == "local",
            num_labels=labels.num_labels,
            id2label=labels.id2label,
            label2id=labels.label2id,
            problem_type=(
                "regression" if labels.task == "regression" else "single_label_classification"
            ),
            ignore_mismatched_sizes=True,
        )
    except ValueError as exc:
        raise ModelNotFound(
            f"'{ref.name}' cannot be used for sequence classification: {exc}"
        ) from exc
    except OSError as exc:
        raise ModelNotFound(f"could not load model '{ref.name}': {exc}") from exc


def model_flops_per_token(model: TFPreTrainedModel) -> float:
    """About 6 x the dense weights a token passes through, per trained token (forward and
    backward); embedding tables are lookups and cost no multiplications."""
    return 6.0 * sum(
        int(np.prod(w.shape)) for w in model.trainable_weights if "embeddings" not in w.name
    )
