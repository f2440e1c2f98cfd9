"""Loading the pretrained model and tokenizer: local folders, or hub ids when allowed.

`trust_remote_code` is never passed: only architectures that ship with transformers load.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras
from transformers import (
    AutoConfig,
    AutoTokenizer,
    PretrainedConfig,
    PreTrainedTokenizerBase,
    TFPreTrainedModel,
)

from app.core.catalog import ModelRef, UnknownModel, resolve_model
from worker import cache
from worker.errors import ModelNotFound
from worker.pipeline.data import LabelInfo
from worker.pipeline.tasks import TaskType


def fresh_tensorflow_state(seed: int) -> None:
    """Before building a model: Keras' global state cleared (layer names, memory of earlier
    models) and the seeds set (TensorFlow's, and Python's, which Keras' unseeded
    initialisers draw theirs from), so a new head's initial weights depend on the seed only.
    Both also drop TensorFlow's instantiated functions (`tf.random.set_seed` clears the
    eager context's caches), which cost the next call of a traced train step 1.4 s (MiniLM)
    as if new: so a warm start, which builds nothing, does neither."""
    tf_keras.backend.clear_session()
    tf_keras.utils.set_random_seed(seed)


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


def previous_architecture(ref: ModelRef) -> str | None:
    """The architecture a local model folder was saved as (`BertForMaskedLM`, ...)."""
    if ref.source != "local":
        return None
    try:
        config = AutoConfig.from_pretrained(ref.location, local_files_only=True)
    except (OSError, ValueError):
        return None
    return (config.architectures or [None])[0]


def previous_labels(ref: ModelRef, task: TaskType) -> list[str] | None:
    """The label names of a model that was itself fine-tuned for this task (a previous job's
    model): its head knows them. None for a model without such a head."""
    architecture = previous_architecture(ref)
    if architecture is None or not architecture.endswith(task.head_suffix):
        return None
    config = AutoConfig.from_pretrained(ref.location, local_files_only=True)
    return [str(config.id2label[i]) for i in range(config.num_labels)]


def reset_head(model: TFPreTrainedModel) -> None:
    """Initialise the classification head again (every dense layer outside the encoder), as a
    new head would be: the labels changed, so the previous head's weights mean other classes.
    Draws from TensorFlow's seeded generator, like any fresh head."""
    encoder = getattr(model, model.base_model_prefix)
    for layer in model.layers:
        if layer is encoder:
            continue
        for dense in (
            m for m in (layer, *layer.submodules) if isinstance(m, tf_keras.layers.Dense)
        ):
            dense.kernel.assign(dense.kernel_initializer(dense.kernel.shape))
            if dense.use_bias:
                dense.bias.assign(dense.bias_initializer(dense.bias.shape))


def load_model(ref: ModelRef, task: TaskType, labels: LabelInfo) -> TFPreTrainedModel:
    """The task's model with a head for this job's labels: fresh, or a previous job's own
    when it was trained for the same task and labels."""
    model = _from_pretrained(ref, task, labels)
    before = previous_labels(ref, task)
    if before is not None and labels.names and before != labels.names:
        reset_head(model)
    return model


def _from_pretrained(ref: ModelRef, task: TaskType, labels: LabelInfo) -> TFPreTrainedModel:
    try:
        return task.model_class.from_pretrained(
            ref.location,
            local_files_only=ref.source == "local",
            ignore_mismatched_sizes=True,
            **task.model_options(labels),
        )
    except ValueError as exc:
        raise ModelNotFound(
            f"'{ref.name}' cannot be used for {task.name}: {str(exc).splitlines()[0]}"
        ) from exc
    except OSError as exc:
        raise ModelNotFound(f"could not load model '{ref.name}': {exc}") from exc


def compute_output_in_float32(model: TFPreTrainedModel, task: TaskType) -> None:
    """Under mixed precision, the head's last layer computes in float32, as Keras advises:
    bfloat16 keeps 8 bits of mantissa, so a regression output near 2.5 moves in steps of
    0.016 and a tiny model's outputs collapsed to one value (pearson 0.0 on 1 seed in 9,
    MSE the labels' variance), and classification logits lose their small differences.
    The layer's weights are float32 anyway; only its matmul (hidden x labels) changes.
    Call before the train step is traced."""
    if tf_keras.mixed_precision.global_policy().compute_dtype == "float32":
        return
    layer = task.output_layer(model)
    if layer is not None:
        layer._set_dtype_policy("float32")  # Keras' own setter; no public one after build


def compute_activations_in_float32(model: TFPreTrainedModel) -> None:
    """Under bfloat16, the encoder's activation functions (GELU in BERT-like models) compute in
    float32 and hand bfloat16 back. TensorFlow's CPU kernels for erf, exp and the
    multiplications around them are vectorised for float32 but not for bfloat16, so MiniLM's
    GELU took a quarter of a train step (batch 32 x 16 tokens, AMX Xeon: 5.7 ms per layer,
    forward and backward, against 3.5 ms in float32; a whole step 178 ms against 163 ms). The
    function is the model's own (its config's `hidden_act`), only computed more precisely,
    and nothing saved changes. Left alone under float32 and float16 (GPUs have fast float16
    kernels). Call before the train step is traced."""
    if tf_keras.mixed_precision.global_policy().compute_dtype != "bfloat16":
        return
    from transformers.activations_tf import ACT2FN

    known = {id(function) for function in ACT2FN.values()}
    for layer in model._flatten_layers(include_self=True, recursive=True):
        if not type(layer).__module__.startswith("transformers."):
            continue  # Keras' own layers serialise their activation by name: left as built
        for name, value in list(vars(layer).items()):
            if callable(value) and id(value) in known:
                setattr(layer, name, in_float32(value))


def in_float32(function: Any) -> Any:
    """`function` computed in float32, its result in the input's dtype."""

    def wrapped(x: Any) -> Any:
        x = tf.convert_to_tensor(x)
        return tf.cast(function(tf.cast(x, tf.float32)), x.dtype)

    wrapped.computes_in_float32 = True  # type: ignore[attr-defined]
    return wrapped


def model_flops_per_token(model: TFPreTrainedModel) -> float:
    """About 6 x the dense weights a token passes through, per trained token (forward and
    backward); embedding tables are lookups and cost no multiplications."""
    return 6.0 * sum(
        int(np.prod(w.shape)) for w in model.trainable_weights if "embeddings" not in w.name
    )


@dataclass(frozen=True)
class LoadedModel:
    """A model as `from_pretrained` left it (before any training): what a warm worker keeps,
    and what every job starts from."""

    config: PretrainedConfig
    tokenizer: PreTrainedTokenizerBase
    weights: dict[str, np.ndarray]  # by name inside the model


def _inner_name(weight: Any) -> str:
    return weight.name.split("/", 1)[-1]  # without the model's own (counter-suffixed) scope


def load_pristine(
    ref: ModelRef, task: TaskType, labels: LabelInfo, seed: int
) -> tuple[LoadedModel, TFPreTrainedModel | None, bool]:
    """The job's starting point; the model when it had to be loaded now (None when this
    worker's cache had it); whether it came from the cache.

    Call after seeding: the new head is initialised from the seed, which is why the seed and
    the label set are part of the key; a hit gives exactly the weights a fresh load would.
    """
    cacheable = ref.source == "local" and cache.pretrained.enabled
    identity = cache.folder_identity(ref.location) if cacheable else None
    key = (
        ref.location,
        identity,
        seed,
        task.name,
        labels.task,
        tuple(sorted(labels.id2label.items())),
    )
    kept = cache.pretrained.get(key) if identity is not None else None
    if kept is not None:
        return kept, None, True
    fresh_tensorflow_state(seed)
    tokenizer = load_tokenizer(ref)
    model = load_model(ref, task, labels)
    weights = {_inner_name(w): w.numpy() for w in model.weights}
    pristine = LoadedModel(copy.deepcopy(model.config), tokenizer, weights)
    if identity is not None:
        cache.pretrained.put(key, pristine)
    return pristine, model, False


def build_model(task: TaskType, pristine: LoadedModel, seed: int) -> TFPreTrainedModel:
    """A new model holding the pristine weights (a cache hit: no files read)."""
    fresh_tensorflow_state(seed)
    model = task.model_class.from_config(copy.deepcopy(pristine.config))
    model.build_in_name_scope()
    assign_pristine(model, pristine)
    return model


def assign_pristine(model: TFPreTrainedModel, pristine: LoadedModel) -> None:
    """Give `model` (of the same shape) the pristine weights and config: the config too, as a
    finished job wrote its labels and decision threshold into its own."""
    by_name = {_inner_name(w): w for w in model.weights}
    missing = sorted(set(pristine.weights) - set(by_name))
    if missing:
        raise ValueError(f"the model has no weights named {', '.join(missing[:5])}")
    for name, value in pristine.weights.items():
        by_name[name].assign(value)
    model.config = copy.deepcopy(pristine.config)
