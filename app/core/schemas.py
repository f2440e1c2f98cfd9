"""The job contract shared by the API and the worker (pure pydantic, no TensorFlow).

Request models are strict and forbid unknown fields: a typo or a smuggled option such as
`trust_remote_code` is rejected with the field named, never silently ignored.
"""

from __future__ import annotations

import math
import re
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    WithJsonSchema,
    model_validator,
)

from app.core.settings import Precision

CLASSIFICATION_METRICS = ("loss", "accuracy", "f1_macro", "matthews_correlation")
REGRESSION_METRICS = ("loss", "mse", "pearson")
MULTI_LABEL_METRICS = ("loss", "f1_micro", "f1_macro", "exact_match")
TOKEN_CLASSIFICATION_METRICS = ("loss", "precision", "recall", "f1", "accuracy")
MASKED_LM_METRICS = ("loss", "perplexity", "accuracy")
# Metrics where smaller is better; every other one is maximised.
MINIMISED_METRICS = frozenset({"loss", "mse", "perplexity"})
MetricName = Literal[
    "loss",
    "accuracy",
    "f1_macro",
    "matthews_correlation",
    "mse",
    "pearson",
    "f1_micro",
    "exact_match",
    "precision",
    "recall",
    "f1",
    "perplexity",
]
# What a job trains. Sequence classification covers regression too (a float label column).
TaskName = Literal[
    "sequence_classification", "multi_label_classification", "token_classification", "masked_lm"
]
# What a trained model answers (job.json's "task", the evaluation report's `task`).
ReportTask = Literal[
    "classification",
    "regression",
    "multi_label_classification",
    "token_classification",
    "masked_lm",
]
METRICS_BY_TASK: dict[str, tuple[str, ...]] = {
    "multi_label_classification": MULTI_LABEL_METRICS,
    "token_classification": TOKEN_CLASSIFICATION_METRICS,
    "masked_lm": MASKED_LM_METRICS,
}

ColumnName = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Metadata = dict[
    Annotated[str, StringConstraints(max_length=64)],
    Annotated[str, StringConstraints(max_length=512)],
]
WebhookUrl = Annotated[str, StringConstraints(pattern=r"^https?://[^\s]{1,2000}$")]
# A local model name: one path segment, no traversal; a hub id adds one "org/" prefix.
LOCAL_MODEL_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
HUB_MODEL_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
HUB_DATASET_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}(/[A-Za-z0-9][A-Za-z0-9._-]{0,95})?$"


class JobStatus(StrEnum):
    queued = "queued"
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled})


# "auto" as a one-value enum in the OpenAPI document, not a `const`: clients generated from it
# (openapi-python-client) try an enum and fall back to the number, but raise on a const.
Auto = Annotated[Literal["auto"], WithJsonSchema({"type": "string", "enum": ["auto"]})]


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class Hyperparameters(StrictModel):
    # "auto" by default (epochs, batch size, rate, schedule, class weights): measured with
    # MiniLM against the fixed values it replaced (3 epochs, batch 16, 5e-5 held constant, no
    # class weights), medians of three seeds: full CoLA MCC 0.315 against 0.256, full SST-2
    # accuracy 0.875 against 0.866; 300 SST-2 rows a tie, 0.754 against 0.748 over six seeds,
    # at 3.1x the time, but on harder small data the extra passes pay (2,000 CoLA rows: MCC
    # 0.144 against 0.094 for 3 passes, seeds 1-3). job.json says what it chose and why.
    epochs: Auto | Annotated[int, Field(ge=1, le=100)] = Field(
        default="auto",
        description="'auto': enough optimizer steps for small data sets, few epochs for large "
        "ones (job.json records the choice and why)",
    )
    batch_size: Auto | Annotated[int, Field(ge=1, le=1024)] = Field(
        default="auto", description="'auto': from the data set's size and token lengths"
    )
    learning_rate: Auto | Annotated[float, Field(gt=0, le=1.0)] = Field(
        default="auto", description="'auto': from the model's width (small models take more)"
    )
    max_steps: int | None = Field(
        default=None,
        ge=1,
        le=10_000_000,
        description="train exactly this many optimizer steps, the last pass over the data "
        "cut short where they end (overrides epochs; the schedule spans these steps); "
        "null: epochs decide",
    )
    max_length: int = Field(default=128, ge=8, le=512)
    warmup_ratio: float = Field(default=0.1, ge=0, lt=1)
    lr_scheduler: Literal["linear", "cosine", "constant", "auto"] = Field(
        # A decay to 0 halves a short run's learning (full CoLA, MiniLM, 3e-5, 1 epoch: MCC
        # 0.000 with linear decay, 0.109 constant; 3 epochs: 0.250 against 0.244), so "auto"
        # holds short runs constant and decays long ones.
        default="auto",
        description="after the warm-up: constant at the peak, or linear or cosine decay to 0; "
        "'auto': linear for runs of 1,200 optimizer steps or more, of 10 epochs or more, or "
        "with class weights, constant for other shorter ones",
    )
    weight_decay: float = Field(default=0.0, ge=0, le=1)
    class_weight: (
        Literal["balanced", "auto"]
        | dict[
            Annotated[str, StringConstraints(min_length=1, max_length=256)],
            Annotated[float, Field(gt=0, le=10_000)],
        ]
        | None
    ) = Field(
        default="auto",
        description="classification: weigh each class's rows in the loss (null: every row "
        "weighs 1); 'balanced' gives "
        "rows/(classes x class rows) (scikit-learn's definition), a mapping label -> weight "
        "sets them (labels left out weigh 1); 'auto': balanced when the most frequent class "
        "has 1.5x the rows of the rarest or more",
    )
    mlm_probability: float = Field(
        default=0.15,
        gt=0,
        lt=1,
        description="masked_lm: the share of tokens masked (80% [MASK], 10% random, 10% kept)",
    )
    seed: int = Field(default=42, ge=0, le=2**31 - 1)
    # One enum of both words, not a const and an enum: generated OpenAPI clients try a
    # const's parser alone and fail on the other word.
    eval_every: Literal["epoch", "auto"] | Annotated[int, Field(ge=1)] = Field(
        # A validation pass is not free: 300 SST-2 rows over 20 epochs spent 44 s of 100 s
        # validating 872 rows after every epoch (MiniLM), as long as the training steps.
        default="auto",
        description="'epoch', a number of training steps, or 'auto': every epoch, unless a "
        "run of more than 5 epochs has a validation set over 0.3x its training rows, which "
        "is then validated about 5 times (and at the end)",
    )
    early_stopping_patience: int | None = Field(
        default=None, ge=1, le=1000, description="evaluations without improvement; off if null"
    )
    early_stopping_metric: MetricName = "loss"
    checkpoint_every_steps: Auto | Annotated[int, Field(ge=1, le=10_000_000)] = Field(
        # A fixed 200 steps meant 8 periodic checkpoints in a 3-epoch CoLA run (MiniLM: 270 MB
        # each with Adam's slots, 0.6 to 2.5 s on the CPUs measured), more where steps are fast.
        default="auto",
        description="periodic checkpoints (besides the epoch ends where the run is validated): "
        "a number of training steps, or 'auto': once the time since the last checkpoint is "
        "at least 60 s and 50x what the last one took to write, so writing them costs at "
        "most about 2% of the run",
    )
    keep_checkpoints: int = Field(default=3, ge=1, le=50)
    validation_fraction: float = Field(
        default=0.1, gt=0, le=0.5, description="held out from training when no validation file"
    )
    precision: Precision = Field(
        default="auto",
        description="auto: mixed_float16 on a GPU, mixed_bfloat16 on a CPU with bfloat16 "
        "matrix instructions (AMX, AVX-512 BF16), else float32",
    )
    group_by_length: bool = Field(
        default=True, description="batch rows of similar length together (less padding)"
    )
    length_buckets: int = Field(
        default=16,
        ge=1,
        le=512,
        description="at most this many padded lengths (batch shapes), chosen to waste the "
        "fewest tokens",
    )
    pad_to_multiple_of: int = Field(
        default=1, ge=1, le=128, description="padded lengths are multiples of this (8 on GPUs)"
    )
    embedding_updates: Literal["lazy", "dense"] = Field(
        default="lazy",
        description="lazy: Adam updates only the embedding rows a batch used (much cheaper)",
    )
    steps_per_execution: int = Field(
        default=1, ge=1, le=1000, description="train steps per TensorFlow call"
    )
    jit_compile: bool = Field(
        default=False, description="XLA-compile the train step (compiles once per batch shape)"
    )
    log_every_steps: int = Field(default=10, ge=1, le=100_000)

    @model_validator(mode="after")
    def _consistent(self) -> Hyperparameters:
        if self.early_stopping_metric != "loss" and self.early_stopping_patience is None:
            raise ValueError("early_stopping_metric needs early_stopping_patience to be set")
        return self


class HubDataset(StrictModel):
    """A Hugging Face Hub dataset reference (needs FINETUNE_ALLOW_HUB and network)."""

    dataset: Annotated[str, StringConstraints(pattern=HUB_DATASET_ID)]
    config: Annotated[str, StringConstraints(min_length=1, max_length=128)] | None = None
    split: Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_.\[\]:%+-]{1,64}$")] = "train"


DataSource = Annotated[str, StringConstraints(min_length=1, max_length=4096)] | HubDataset


class JobCreate(StrictModel):
    """The body of POST /v1/jobs: data sources are file ids from /v1/files."""

    model: Annotated[str, StringConstraints(min_length=1, max_length=200)]
    training_file: DataSource
    validation_file: DataSource | None = None
    text_column: ColumnName = "text"
    text_pair_column: ColumnName | None = None
    label_column: ColumnName = "label"
    task: TaskName = Field(
        default="sequence_classification",
        description="sequence_classification: one label per text (numbers: regression); "
        "multi_label_classification: a set of labels per text; token_classification: a tag "
        "per word (text_column: word lists, label_column: IOB2 tag lists); masked_lm: "
        "domain adaptation on text alone (no label column)",
    )
    label_delimiter: Annotated[str, StringConstraints(min_length=1, max_length=8)] = Field(
        default=",",
        description="multi_label_classification, a text label column (CSV): what separates "
        "the labels of a row",
    )
    label_names: list[Annotated[str, StringConstraints(min_length=1, max_length=256)]] | None = (
        Field(
            default=None,
            max_length=1000,
            description="token_classification with integer tags: the tag name of each id",
        )
    )
    invalid_tags: Literal["refuse", "repair"] = Field(
        default="refuse",
        description="token_classification: tag sequences that break IOB2 (an I-X that does "
        "not follow B-X or I-X) are refused, or repaired (that I-X becomes B-X, as IOB1 data "
        "needs)",
    )
    hyperparameters: Hyperparameters = Field(default_factory=Hyperparameters)
    metadata: Metadata = Field(default_factory=dict, max_length=16)
    webhook_url: WebhookUrl | None = None

    @model_validator(mode="after")
    def _distinct_columns(self) -> JobCreate:
        named = [self.text_column]
        if self.task != "masked_lm":
            named.append(self.label_column)
        if self.text_pair_column is not None:
            named.append(self.text_pair_column)
        if len(set(named)) != len(named):
            raise ValueError("text_column, text_pair_column and label_column must be different")
        if self.text_pair_column is not None and self.task in ("token_classification", "masked_lm"):
            raise ValueError(f"text_pair_column does not apply to {self.task}")
        hp = self.hyperparameters
        if hp.class_weight not in (None, "auto") and self.task != "sequence_classification":
            raise ValueError("class_weight applies to sequence_classification only")
        allowed = METRICS_BY_TASK.get(self.task)
        if allowed is not None and hp.early_stopping_metric not in allowed:
            raise ValueError(
                f"early_stopping_metric '{hp.early_stopping_metric}' does not apply to "
                f"{self.task}; use one of {', '.join(allowed)}"
            )
        if self.validation_file is not None and self.validation_file == self.training_file:
            raise ValueError(
                "validation_file is the training file; omit it to hold out part of the training "
                "data, or upload a separate validation set"
            )
        return self


class TrialRef(BaseModel):
    """What a trial's worker needs of its sweep: where to report each evaluation (the Optuna
    study is named after the sweep) and whether to stop when the pruner says so."""

    sweep_id: str
    number: int
    optuna_trial_id: int
    metric: str
    prune: bool


class JobSpec(JobCreate):
    """What a worker (or `finetune train SPEC.json`) runs: the same fields as JobCreate, with
    data sources as file paths instead of file ids. When `model` names a finished job, its
    model folder (the job's own link to it) is `base_model_path`."""

    base_model_path: str | None = None
    base_job_id: str | None = None
    trial: TrialRef | None = None  # this job is a trial of a sweep


class Progress(BaseModel):
    epoch: int = 0
    epochs: int = 0
    step: int = 0
    total_steps: int = 0
    percent: float = 0.0
    eta_seconds: float | None = None
    tokens_per_second: float | None = None
    samples_per_second: float | None = None
    loss: float | None = None
    failed: int | None = Field(
        default=None, description="batch predictions: rows without a prediction (empty text)"
    )


class Evaluation(BaseModel):
    """One validation result: where in training it was taken, and each metric's value.

    On the wire it stays one flat object (`{"epoch", "step", "loss", "accuracy", ...}`), as the
    dashboard and `history.json` read it; `metrics` gives the values without the position, so
    no caller filters "epoch" and "step" out by hand."""

    model_config = ConfigDict(extra="allow")

    epoch: float
    step: int

    @classmethod
    def at(cls, epoch: float, step: int, metrics: dict[str, float]) -> Evaluation:
        return cls(epoch=epoch, step=step, **metrics)

    @property
    def metrics(self) -> dict[str, float]:
        """The finite values (JSON has no NaN: a value that was not a number reads as null)."""
        return {
            name: float(value)
            for name, value in (self.model_extra or {}).items()
            if isinstance(value, int | float) and math.isfinite(value)
        }

    def summary(self) -> str:
        return ", ".join(f"{name} {value:.4f}" for name, value in self.metrics.items())


class ClassScores(BaseModel):
    label: str
    precision: float
    recall: float
    f1: float
    support: int = Field(description="validation rows whose true label this is")


class ThresholdScores(BaseModel):
    """Two classes: the scores if the positive class were predicted when its probability
    reaches `threshold` (argmax is 0.5)."""

    threshold: float
    precision: float
    recall: float
    f1: float
    accuracy: float
    predicted_positive: int


class BinaryScores(BaseModel):
    positive_label: str
    roc_auc: float | None = Field(description="null when validation holds one class only")
    pr_auc: float | None = Field(description="average precision of the positive class")
    thresholds: list[ThresholdScores]


class EvaluationReport(BaseModel):
    """How good the model is on a labelled file: its scores beside the majority-class baseline
    (classification) or the training mean (regression), and for classification the confusion
    matrix and per-class scores. Written with every job (`report.json` in the model folder,
    `GET /v1/jobs/{id}/report`)."""

    object: Literal["evaluation_report"] = "evaluation_report"
    task: ReportTask
    rows: int
    metrics: dict[str, float]
    baseline: dict[str, float] = Field(
        description="classification: always answering the training set's most frequent class; "
        "regression: always answering the training mean; multi-label: always answering the "
        "training set's most frequent label set; token classification: tagging every word O; "
        "masked LM: the model before this job trained it"
    )
    labels: list[str] = Field(default_factory=list)
    confusion_matrix: list[list[int]] = Field(
        default_factory=list,
        description="rows: the true label, columns: the predicted label, both in `labels` order",
    )
    per_class: list[ClassScores] = Field(default_factory=list)
    predicted_classes: int | None = None
    binary: BinaryScores | None = None
    threshold: float | None = Field(
        default=None,
        description="multi-label: the shared decision threshold chosen on validation (best "
        "macro F1); labels without a threshold of their own use it",
    )
    label_thresholds: dict[str, float] | None = Field(
        default=None,
        description="multi-label: each label's decision threshold, chosen on validation for "
        "that label's F1 (labels with fewer than 20 positive validation rows keep the shared "
        "one); saved with the model and used by its predictions; `metrics` and `per_class` "
        "are taken at them",
    )
    thresholds: list[dict[str, float]] = Field(
        default_factory=list,
        description="multi-label: micro and macro F1 at each candidate threshold",
    )
    warnings: list[str] = Field(default_factory=list)


MAX_PREDICTION_INPUTS = 64
PredictionText = Annotated[str, StringConstraints(min_length=1, max_length=20_000)]


class PredictionInput(StrictModel):
    text: PredictionText
    text_pair: PredictionText | None = Field(
        default=None, description="the second text, for jobs trained with a text_pair_column"
    )


class PredictionRequest(StrictModel):
    inputs: list[PredictionInput] = Field(min_length=1, max_length=MAX_PREDICTION_INPUTS)


class Entity(BaseModel):
    """Token classification: one entity found in the text."""

    entity: str = Field(description="its type (the tag without B-/I-)")
    text: str
    start: int = Field(description="character offset in the input text")
    end: int = Field(description="character offset one past its end")
    score: float = Field(description="the mean probability of its words' tags")


class Fill(BaseModel):
    token: str
    score: float


class Prediction(BaseModel):
    labels: list[str] | None = Field(
        default=None,
        description="multi-label: the labels whose probability reaches the model's threshold",
    )
    threshold: float | None = Field(
        default=None, description="multi-label: the model's shared threshold"
    )
    label_thresholds: dict[str, float] | None = Field(
        default=None,
        description="multi-label: each label's threshold (a label is predicted when its "
        "probability reaches its own)",
    )
    entities: list[Entity] | None = Field(default=None, description="token classification")
    fills: list[list[Fill]] | None = Field(
        default=None,
        description="masked LM: for each mask token in the text, the most likely tokens",
    )
    label: str | None = Field(default=None, description="classification: the predicted label")
    score: float | None = Field(default=None, description="classification: its probability")
    scores: dict[str, float] = Field(
        default_factory=dict, description="classification: every label's probability"
    )
    value: float | None = Field(default=None, description="regression: the predicted value")
    tokens: int = Field(description="the input's length in tokens, before truncation")
    truncated: bool = Field(description="longer than the job's max_length: the end was cut")


class PredictionList(BaseModel):
    object: Literal["list"] = "list"
    job_id: str
    data: list[Prediction]


class RowGroup(BaseModel):
    """Rows that share a text: `rows` are data-row numbers counted from 1 (a CSV's header is
    not a row), the first few only."""

    text: str
    rows: list[int]
    labels: list[str] = Field(default_factory=list)


class LabelVariant(BaseModel):
    label: str
    count: int
    rows: list[int] = Field(description="the first rows holding this spelling")


class TokenLengths(BaseModel):
    """Lengths in the model's own tokens (special tokens included), before truncation."""

    model: str
    max_length: int
    p50: int
    p90: int
    p95: int
    p99: int
    max: int
    truncated_rows: int = Field(description="rows longer than max_length: their end is cut")
    truncated_share: float


class DataReport(BaseModel):
    """What a data file holds and what is wrong with it, before any training time is spent.
    `problems` make training pointless (a job is refused with them); `warnings` deserve a
    look. Row numbers count data rows from 1."""

    object: Literal["data_report"] = "data_report"
    file_id: str
    filename: str
    rows: int
    rows_checked: int = Field(description="less than `rows` when the file is over the limit")
    text_column: str
    text_pair_column: str | None = None
    label_column: str | None = Field(default=None, description="masked LM: none")
    task: ReportTask = Field(
        description="how the label column was read: the `task` asked for, with sequence "
        "classification reported as classification or regression (numbers)"
    )
    label_counts: dict[str, int] = Field(
        default_factory=dict,
        description="rows per class (classification), rows per label (multi-label), entities "
        "per type (token classification)",
    )
    rows_without_labels: int | None = Field(
        default=None, description="multi-label: rows whose label set is empty"
    )
    imbalance_ratio: float | None = Field(
        default=None, description="rows of the most frequent label per row of the rarest"
    )
    empty_texts: int
    empty_text_rows: list[int]
    duplicate_texts: int = Field(description="rows repeating an earlier row's text and label")
    duplicates: list[RowGroup]
    conflicting_texts: int = Field(description="distinct texts that appear with several labels")
    conflicts: list[RowGroup]
    case_variants: list[list[LabelVariant]] = Field(
        default_factory=list,
        description="labels that differ only by case or surrounding spaces: one class to the "
        "user, several to the model",
    )
    token_lengths: TokenLengths | None = None
    problems: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(default_factory=list)


CheckpointName = Annotated[str, StringConstraints(pattern=r"^ckpt-[0-9]{1,12}$")]


class BatchPredictionCreate(StrictModel):
    """The body of POST /v1/batch_predictions: a job's model over a whole uploaded file.
    Columns default to the job's own; with `label_column` the file is also evaluated (the
    same report as the job's own), which is what POST /v1/jobs/{id}/evaluations asks for."""

    job_id: Annotated[str, StringConstraints(pattern=r"^job_[0-9a-f]{32}$")]
    input_file: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    text_column: ColumnName | None = None
    text_pair_column: ColumnName | None = None
    label_column: ColumnName | None = None
    checkpoint: CheckpointName | None = Field(
        default=None, description="one of GET /v1/jobs/{id}/checkpoints; else the final model"
    )
    metadata: Metadata = Field(default_factory=dict, max_length=16)
    webhook_url: WebhookUrl | None = None


class EvaluationCreate(StrictModel):
    """The body of POST /v1/jobs/{id}/evaluations: a labelled file, judged by the job's model
    (or one of its checkpoints); columns default to the job's own."""

    file_id: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    text_column: ColumnName | None = None
    text_pair_column: ColumnName | None = None
    label_column: ColumnName | None = None
    checkpoint: CheckpointName | None = None


class BatchSpec(BaseModel):
    """What a worker runs for a batch prediction (paths, where the request has ids)."""

    job_id: str
    model_path: str  # the job's model folder
    checkpoint_path: str | None = None  # a checkpoint's prefix, restored over the model
    input_path: str
    input_format: Literal["csv", "jsonl", "parquet"]
    text_column: str
    text_pair_column: str | None = None
    label_column: str | None = None
    # Judge the file (write the evaluation report): set with a label column, and for models
    # that are judged without one (masked LM: perplexity).
    evaluate: bool = False


class BatchPrediction(BaseModel):
    """The public batch prediction object; `progress.step` counts rows done."""

    id: str
    object: Literal["batch_prediction"] = "batch_prediction"
    status: JobStatus
    job_id: str
    input_file: str
    text_column: str
    text_pair_column: str | None = None
    label_column: str | None = None
    checkpoint: str | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    progress: Progress = Field(default_factory=Progress)
    rows: int = Field(description="rows in the input file")
    rows_failed: int = 0
    metrics: dict[str, float] = Field(
        default_factory=dict, description="with a label column: the model's scores on the file"
    )
    error: ErrorInfo | None = None
    output: str | None = Field(
        default=None, description="where to download the predictions once succeeded"
    )
    report: str | None = Field(
        default=None, description="with a label column: where the evaluation report is"
    )


class BatchPredictionList(BaseModel):
    object: Literal["list"] = "list"
    data: list[BatchPrediction]
    has_more: bool


class ErrorInfo(BaseModel):
    code: str
    message: str


class Job(BaseModel):
    """The public job object."""

    id: str
    object: Literal["job"] = "job"
    status: JobStatus
    model: str
    training_file: str | HubDataset
    validation_file: str | HubDataset | None = None
    text_column: str
    text_pair_column: str | None = None
    label_column: str
    task: TaskName = "sequence_classification"
    hyperparameters: Hyperparameters
    metadata: dict[str, str] = Field(default_factory=dict)
    created_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    attempt: int = 0
    progress: Progress = Field(default_factory=Progress)
    metrics: dict[str, float] = Field(
        default_factory=dict,
        description="final validation scores; for classification also the majority-class "
        "baseline's (baseline_accuracy, baseline_f1_macro, baseline_matthews_correlation)",
    )
    warnings: list[str] = Field(
        default_factory=list,
        description="what the user should know about the result, e.g. a model that predicts a "
        "single class or does no better than the majority-class baseline",
    )
    history: list[Evaluation] = Field(default_factory=list)
    error: ErrorInfo | None = None
    artifacts: dict[str, str] = Field(default_factory=dict)


class JobList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Job]
    has_more: bool


class Event(BaseModel):
    id: str
    time: datetime
    type: Literal["status", "stage", "progress", "metric", "error", "checkpoint", "warning"]
    message: str
    data: dict[str, Any] = Field(default_factory=dict)


class EventList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Event]
    has_more: bool


class FileObject(BaseModel):
    id: str
    object: Literal["file"] = "file"
    filename: str
    bytes: int
    format: Literal["csv", "jsonl", "parquet"]
    rows: int
    columns: list[str]
    created_at: datetime


class FileList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FileObject]


class Checkpoint(BaseModel):
    name: str
    epoch: int
    step: int
    global_step: int
    created_at: datetime


class ModelInfo(BaseModel):
    id: str
    object: Literal["model"] = "model"
    source: Literal["local", "hub"]


class ErrorDetail(BaseModel):
    code: str
    message: str
    param: str | None = None


class ErrorResponse(BaseModel):
    error: ErrorDetail


# -- sweeps --------------------------------------------------------------------------------------

SearchableName = Literal[
    "learning_rate",
    "epochs",
    "batch_size",
    "warmup_ratio",
    "weight_decay",
    "lr_scheduler",
    "max_length",
    "class_weight",
    "seed",
    "max_steps",
]
INTEGER_HYPERPARAMETERS = frozenset({"epochs", "batch_size", "max_length", "seed", "max_steps"})


class SearchDimension(StrictModel):
    """One hyperparameter's candidates: a list of `values` (grid, or a choice for random and
    tpe search), or a range `low`..`high` (random and tpe; `log` for learning rates)."""

    values: list[float | int | str] | None = Field(default=None, min_length=1, max_length=50)
    low: float | None = None
    high: float | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> SearchDimension:
        if (self.values is None) == (self.low is None or self.high is None):
            raise ValueError("give either `values`, or both `low` and `high`")
        if self.values is None and self.low is not None and self.high is not None:
            if self.low >= self.high:
                raise ValueError("`low` must be below `high`")
            if self.log and self.low <= 0:
                raise ValueError("a `log` range needs `low` above 0")
        return self


class SweepCreate(StrictModel):
    """The body of POST /v1/sweeps: a job, and the hyperparameters to search. Every trial is
    that job with the searched values in place, run as an ordinary job on the queue."""

    job: JobCreate
    search: dict[SearchableName, SearchDimension] = Field(min_length=1, max_length=10)
    method: Literal["grid", "random", "tpe"] = Field(
        default="tpe",
        description="grid: every combination of the `values` (at most max_trials); random: "
        "independent draws; tpe: Optuna's Tree-structured Parzen Estimator, which draws near "
        "the best trials so far",
    )
    max_trials: int = Field(default=8, ge=1, le=100, description="the budget of trials")
    max_concurrent: int = Field(
        default=1, ge=1, le=32, description="trials queued or running at once, at most"
    )
    metric: MetricName | None = Field(
        default=None,
        description="the validation metric to optimise (loss, mse and perplexity are "
        "minimised, the others maximised); default: matthews_correlation (classification), "
        "pearson (regression), f1_macro (multi-label), f1 (token classification), perplexity "
        "(masked LM)",
    )
    prune: bool = Field(
        default=True,
        description="stop a trial at an evaluation where it is below the median of earlier "
        "trials at the same step (Optuna's MedianPruner); its model is kept",
    )
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="the search's own seed")
    metadata: Metadata = Field(default_factory=dict, max_length=16)


class SweepStatus(StrEnum):
    running = "running"
    succeeded = "succeeded"
    failed = "failed"
    cancelling = "cancelling"
    cancelled = "cancelled"


class Trial(BaseModel):
    number: int
    job_id: str
    status: JobStatus
    params: dict[str, float | int | str]
    value: float | None = Field(default=None, description="the sweep's metric at the end")
    pruned: bool = False
    error: ErrorInfo | None = None
    created_at: datetime
    finished_at: datetime | None = None


class Sweep(BaseModel):
    id: str
    object: Literal["sweep"] = "sweep"
    status: SweepStatus
    method: Literal["grid", "random", "tpe"]
    metric: str
    direction: Literal["maximize", "minimize"]
    max_trials: int
    max_concurrent: int
    search: dict[str, SearchDimension]
    model: str
    task: TaskName
    trials: list[Trial] = Field(default_factory=list)
    best_trial: Trial | None = Field(
        default=None,
        description="the finished trial with the best metric: an ordinary job, its model "
        "downloadable and answering predictions",
    )
    metadata: dict[str, str] = Field(default_factory=dict)
    error: ErrorInfo | None = None
    created_at: datetime
    finished_at: datetime | None = None


class SweepList(BaseModel):
    object: Literal["list"] = "list"
    data: list[Sweep]
    has_more: bool = False
