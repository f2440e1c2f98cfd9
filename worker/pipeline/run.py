"""The whole recipe for one job: load -> tokenize -> batch -> compile -> fit -> save.

Used by the Celery task and by `finetune train`; knows nothing about either.
"""

from __future__ import annotations

import json
import random
import resource
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf
import tf_keras

from app.core.catalog import ModelRef
from app.core.layout import CHECKPOINT_MODEL_DIR, write_atomically
from app.core.schemas import HubDataset, JobSpec
from app.core.settings import Precision, Settings
from worker import cache
from worker.errors import JobCancelled, TrainingDiverged
from worker.hardware import apply_precision, resolve_precision
from worker.pipeline import warm
from worker.pipeline.auto import resolve_auto
from worker.pipeline.data import (
    LABELS,
    LENGTH,
    LabelInfo,
    LoadedData,
    column_array,
    file_fingerprint,
    load_splits,
)
from worker.pipeline.model import (
    build_model,
    compute_activations_in_float32,
    compute_output_in_float32,
    find_model,
    load_pristine,
    model_flops_per_token,
    previous_architecture,
    previous_labels,
)
from worker.pipeline.save import library_versions, save_outputs
from worker.pipeline.tasks import TaskType, task_named
from worker.pipeline.train import Trainer
from worker.reporter import Reporter
from worker.tensorboard import TensorBoardReporter


@dataclass(frozen=True)
class PipelineOptions:
    models_dir: Path
    allow_hub: bool = False
    max_labels: int = 1000
    cache_dir: Path | None = None
    default_precision: Precision = "auto"

    @classmethod
    def from_settings(cls, settings: Settings) -> PipelineOptions:
        return cls(
            models_dir=settings.models_dir,
            allow_hub=settings.allow_hub,
            max_labels=settings.max_labels,
            cache_dir=settings.cache_dir / "datasets",
            default_precision=settings.worker_precision,
        )


def seed_everything(seed: int) -> None:
    """Python and NumPy seeds, and Keras dropout drawn from tf.random.Generator objects whose
    state is a variable, so it is checkpointed and a resumed run draws the same masks (every
    job seeds them from its seed: `seed_dropout`). TensorFlow's own global seed is set only
    when a model is built (`worker.pipeline.model.fresh_tensorflow_state`)."""
    tf_keras.backend.experimental.enable_tf_random_generator()
    random.seed(seed)
    np.random.seed(seed)


def run_pipeline(
    spec: JobSpec,
    output_dir: Path,
    checkpoint_dir: Path,
    reporter: Reporter,
    options: PipelineOptions,
) -> dict[str, Any]:
    started = time.monotonic()
    reporter = TensorBoardReporter(reporter, output_dir / "tensorboard")
    try:
        return _run(spec, output_dir, checkpoint_dir, reporter, options, started)
    finally:
        reporter.close()


def _run(
    spec: JobSpec,
    output_dir: Path,
    checkpoint_dir: Path,
    reporter: Reporter,
    options: PipelineOptions,
    started: float,
) -> dict[str, Any]:
    hp = spec.hyperparameters
    task = task_named(spec.task)
    seed_everything(hp.seed)
    requested = hp.precision if hp.precision != "auto" else options.default_precision
    policy = resolve_precision(requested)
    apply_precision(policy)

    ref = (
        ModelRef(name=spec.model, source="local", location=spec.base_model_path)
        if spec.base_model_path
        else find_model(spec.model, options.models_dir, options.allow_hub)
    )
    reporter.event("stage", f"loading data for {ref.name}")
    t0 = time.monotonic()
    fingerprints = local_fingerprints(spec, ref) if cache.tokenized_data.enabled else None
    key = data_cache_key(spec, ref, options.max_labels, fingerprints) if fingerprints else None
    kept = cache.tokenized_data.get(key) if key is not None else None
    if kept is None:
        data = load_splits(
            spec,
            task,
            allow_hub=options.allow_hub,
            max_labels=options.max_labels,
            cache_dir=options.cache_dir,
            known_fingerprints=fingerprints,
        )
    else:
        data, train, validation = kept
    reporter.event(
        "stage",
        f"loaded {len(data.train)} training and {len(data.validation)} validation rows"
        + (" (held out from training)" if data.validation_held_out else "")
        + f" in {time.monotonic() - t0:.1f} s",
        task=data.labels.task,
        num_labels=data.labels.num_labels,
    )
    for warning in data.warnings:
        reporter.event("warning", warning)

    t0 = time.monotonic()
    lineage = continued_from(spec, ref, task, data.labels, reporter)
    pristine, loaded, model_cached = load_pristine(ref, task, data.labels, hp.seed)
    shape_key = warm.warm_key(pristine.config, task, hp, policy)
    compiled = warm.take(shape_key, pristine)
    if compiled is not None:
        model = compiled.model
    else:
        model = loaded if loaded is not None else build_model(task, pristine, hp.seed)
        compute_output_in_float32(model, task)
        compute_activations_in_float32(model)
    tokenizer = pristine.tokenizer
    reporter.event(
        "stage",
        f"loaded model {ref.name} ({policy}"
        + (", from this worker's cache" if model_cached else "")
        + (", with its train step already traced (warm start)" if compiled else "")
        + f") in {time.monotonic() - t0:.1f} s",
        warm_start=compiled is not None,
    )

    if kept is None:
        t0 = time.monotonic()
        train = task.tokenize(data.train, tokenizer, spec)
        validation = task.tokenize(data.validation, tokenizer, spec)
        if key is not None:
            cache.tokenized_data.put(key, (data, train, validation))
        reporter.event(
            "stage",
            f"tokenized {len(train) + len(validation)} rows in {time.monotonic() - t0:.1f} s",
        )
    else:
        reporter.event("stage", f"reused {len(train) + len(validation)} tokenized rows")

    if previous_labels(ref, task) != data.labels.names:
        task.start_head(model, train, data.labels)
    auto = resolve_auto(
        hp,
        len(train),
        column_array(train, LENGTH),
        class_counts(train, data.labels),
        getattr(model.config, "hidden_size", None),
        validation_rows=len(validation),
    )
    if auto.reasons:
        reporter.event("stage", f"auto hyperparameters: {auto.summary()}", auto=auto.reasons)
    hp = auto.hyperparameters
    trainer = Trainer(
        model,
        tokenizer,
        task,
        train,
        validation,
        data.labels,
        hp,
        reporter,
        checkpoint_dir,
        warm=compiled,
    )
    describe_checkpoints(checkpoint_dir, model, tokenizer, task, data, spec, reporter)
    before = trainer.before_training()
    reporter.event(
        "stage",
        f"training: {trainer.epochs} epochs of {trainer.steps_per_epoch} steps"
        + (f", {trainer.total_steps} steps in all (max_steps)" if hp.max_steps else ""),
        total_steps=trainer.total_steps,
    )
    if trainer.class_weight is not None:
        names = data.labels.names
        reporter.event(
            "stage",
            "class weights: "
            + ", ".join(f"{names[i]} {w:.3g}" for i, w in trainer.class_weight.items()),
            class_weight={names[i]: w for i, w in trainer.class_weight.items()},
        )
    try:
        result = trainer.run()
    except (JobCancelled, TrainingDiverged):
        warm.keep(shape_key, trainer.compiled)  # reset exactly by the next job that takes it
        raise
    final = dict(result.final_metrics)
    if result.pruned:
        final["pruned"] = 1.0
    report = task.report(
        trainer.validation_outputs(), trainer.eval_rows, data.labels, train, before
    )
    if report.task != "regression":
        final.update({f"baseline_{k}": v for k, v in report.baseline.items()})
    for warning in report.warnings:
        reporter.event("warning", warning)
    extras = task.finish(model, report)

    reporter.event("stage", "saving model")
    metrics = {
        "final": final,
        "warnings": report.warnings,
        "report": report.model_dump(mode="json"),  # also report.json, served by the API
        "evaluations": [e.model_dump() for e in result.state.evaluations],
        "best_step": result.state.best_step,
        "stopped_early": result.stopped_early,
        "restored_best_weights": result.restored_best,
        "train_seconds": round(result.seconds, 2),
        "fit_seconds": round(result.fit_seconds, 2),
        "fit_cpu_seconds": round(result.fit_cpu_seconds, 2),
        "checkpoints_written": result.checkpoints_written,
        "checkpoint_seconds": round(result.checkpoint_seconds, 2),
        "total_seconds": round(time.monotonic() - started, 2),
        "real_tokens": result.real_tokens,
        "padded_tokens": result.padded_tokens,
        "real_tokens_per_second": round(result.real_tokens / max(result.fit_seconds, 1e-9), 1),
        "batch_shapes": result.batch_shapes,
        "train_step_traces": result.train_step_traces,
        "flops_per_token": model_flops_per_token(model),
        # The process's high-water mark (earlier jobs in a reused worker process included).
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "global_step": result.state.global_step,
        "resumed_from_step": result.resumed_from_step,
    }
    job = {
        "spec": shareable_spec(spec),
        "hyperparameters": hp.model_dump(mode="json"),
        # What "auto" became, and why.
        "auto": auto.reasons,
        "seed": hp.seed,
        "model_source": {"name": ref.name, "source": ref.source, **lineage},
        "task": data.labels.task,
        "id2label": {str(k): v for k, v in data.labels.id2label.items()},
        # The trivial baselines of later evaluations (batch predictions with labels).
        "training_labels": task.label_summary(data.train, data.labels),
        **extras,
        "class_weight": (
            {data.labels.names[i]: w for i, w in trainer.class_weight.items()}
            if trainer.class_weight is not None
            else None
        ),
        "precision": policy,
        "devices": [d.name for d in tf.config.list_logical_devices()],
        "versions": library_versions(),
        "data": data.fingerprints,
    }
    history = {
        "epoch_train_loss": result.state.epoch_losses,
        "evaluations": [e.model_dump() for e in result.state.evaluations],
    }
    reporter.assert_owner()
    save_outputs(output_dir, model, tokenizer, metrics, job, history, report)
    reporter.event("stage", "saved model", metrics=final)
    warm.keep(shape_key, trainer.compiled)
    return metrics


def continued_from(
    spec: JobSpec, ref: ModelRef, task: TaskType, labels: LabelInfo, reporter: Reporter
) -> dict[str, Any]:
    """For a job whose model is a previous job's: say whether the task's head carries over
    (same task and labels) or starts fresh, and return the lineage `job.json` records (the
    previous job's own `model_source`, so a chain of jobs reads back to the pretrained model).
    """
    if spec.base_job_id is None:
        return {}
    before = previous_labels(ref, task)
    architecture = previous_architecture(ref) or "another architecture"
    head = "classification" if task.name == "sequence_classification" else task.name
    if before is None and task.name != "masked_lm" and labels.task != "regression":
        reporter.event(
            "stage",
            f"continuing from job {spec.base_job_id} ({architecture}): its encoder is kept, "
            f"the {head} head starts fresh",
        )
    elif before is None or not labels.names:
        reporter.event("stage", f"continuing from job {spec.base_job_id}")
    elif before == labels.names:
        reporter.event(
            "stage",
            f"continuing from job {spec.base_job_id} with its {head} head (same labels)",
        )
    else:
        reporter.event(
            "warning",
            f"the labels ({', '.join(labels.names[:10])}) differ from job {spec.base_job_id}'s "
            f"({', '.join(before[:10])}): its encoder is kept, the {head} head starts fresh",
        )
    previous: dict[str, Any] = {}
    try:
        recorded = json.loads((Path(ref.location) / "job.json").read_text())
        previous = recorded.get("model_source", {})
    except (OSError, ValueError):
        pass
    return {"source": "job", "job_id": spec.base_job_id, "previous": previous}


def describe_checkpoints(
    checkpoint_dir: Path,
    model: Any,
    tokenizer: Any,
    task: TaskType,
    data: LoadedData,
    spec: JobSpec,
    reporter: Reporter,
) -> None:
    """Beside the checkpoints, what turns one into a usable model (config, tokenizer, labels,
    max_length): any listed checkpoint can be evaluated or used for batch predictions, also of
    a job that was cancelled or failed before it saved a model."""
    folder = checkpoint_dir / CHECKPOINT_MODEL_DIR
    reporter.assert_owner()
    folder.mkdir(parents=True, exist_ok=True)
    model.config.save_pretrained(str(folder))
    tokenizer.save_pretrained(str(folder))
    described = {
        "task": data.labels.task,
        "hyperparameters": {"max_length": spec.hyperparameters.max_length},
        "id2label": {str(k): v for k, v in data.labels.id2label.items()},
        "training_labels": task.label_summary(data.train, data.labels),
    }
    write_atomically(folder / "job.json", json.dumps(described, indent=2))


def class_counts(train: Any, labels: LabelInfo) -> list[int] | None:
    """Rows per class (single-label classification), for "auto" epochs."""
    if labels.task != "classification":
        return None
    ids = column_array(train, LABELS).astype(np.int64)
    return [int(c) for c in np.bincount(ids, minlength=labels.num_labels)]


def shareable_spec(spec: JobSpec) -> dict[str, Any]:
    """The spec as the model's `job.json` records it: artifacts leave the server, so data files
    are named by file name only (their SHA-256 is under "data") and the webhook URL is left out.
    """
    recorded = spec.model_dump(mode="json", exclude={"webhook_url", "base_model_path"})
    for field in ("training_file", "validation_file"):
        if isinstance(recorded.get(field), str):
            recorded[field] = Path(recorded[field]).name
    return recorded


def local_fingerprints(spec: JobSpec, ref: ModelRef) -> dict[str, str] | None:
    """SHA-256 of the job's data files; None when a part has no local identity (hub data or
    model), or a file is missing (the uncached path then reports it properly)."""
    sources = {"training": spec.training_file, "validation": spec.validation_file}
    if ref.source != "local" or any(isinstance(s, HubDataset) for s in sources.values()):
        return None
    try:
        return {k: file_fingerprint(s) for k, s in sources.items() if s is not None}
    except OSError:
        return None


def data_cache_key(
    spec: JobSpec, ref: ModelRef, max_labels: int, fingerprints: dict[str, str]
) -> tuple[Any, ...]:
    """What the tokenized data depends on, by content."""
    hp = spec.hyperparameters
    held_out = (hp.validation_fraction, hp.seed) if spec.validation_file is None else None
    columns = (
        spec.task,
        spec.text_column,
        spec.text_pair_column,
        spec.label_column,
        spec.label_delimiter,
        tuple(spec.label_names or ()),
        spec.invalid_tags,
    )
    tokenizer = (ref.location, cache.folder_identity(ref.location))
    sources = (fingerprints.get("training"), fingerprints.get("validation"))
    return (*sources, columns, held_out, max_labels, tokenizer, hp.max_length)
