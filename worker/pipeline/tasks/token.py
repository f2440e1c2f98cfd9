"""Token classification (named entities and other tagging): a tag per word, IOB2.

The text column holds each row's words, the label column their tags (strings, or integer ids
named by the job's `label_names` or the data set's own class names). Words are split into
sub-word tokens; a word's tag goes on its first token and the rest are left out of the loss
(-100), which is how transformers' token-classification models are trained and how
`TFAutoModelForTokenClassification` scores them. Evaluation goes back to words: a word whose
tokens were cut by `max_length`, or that the tokenizer drops altogether, counts as tagged `O`,
so truncation costs recall instead of vanishing from the score. Entity-level precision, recall
and F1 are seqeval's (the CoNLL evaluation script's definition).
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf
from datasets import ClassLabel, Dataset, Sequence
from scipy.special import log_softmax, softmax
from seqeval.metrics import (
    accuracy_score,
    classification_report,
    f1_score,
    precision_score,
    recall_score,
)
from seqeval.metrics.sequence_labeling import get_entities
from transformers import (
    DataCollatorForTokenClassification,
    PreTrainedTokenizerBase,
    TFAutoModelForTokenClassification,
    TFPreTrainedModel,
)

from app.core.labels import LabelProblem, class_names
from app.core.schemas import (
    BatchSpec,
    ClassScores,
    EvaluationReport,
    Hyperparameters,
    JobSpec,
)
from app.core.tags import TagProblem, check_iob2, entity_type, entity_types
from worker.errors import InvalidInput
from worker.pipeline.batching import Collator, bucket_length
from worker.pipeline.data import LABELS, LENGTH, LabelInfo
from worker.pipeline.report import round6
from worker.pipeline.tasks.base import BatchChunk, TaskType, evaluation_function

IGNORED = -100  # positions the loss skips: special tokens, padding, a word's later pieces
WORD_TAGS = "word_tags"  # every word's tag id (the truth evaluation is scored against)
WORD_TOKEN = "word_token"  # every word's first token position, -1 if it has none


def align_tags(word_ids: list[int | None], word_tags: list[int]) -> tuple[list[int], list[int]]:
    """Token labels from word tags (`word_ids`: each token's word, None for special tokens)
    and each word's first token (-1: the tokenizer dropped it, or truncation cut it)."""
    labels: list[int] = []
    first_token = [-1] * len(word_tags)
    previous: int | None = None
    for position, word in enumerate(word_ids):
        if word is None or word == previous:
            labels.append(IGNORED)
        else:
            labels.append(word_tags[word])
            first_token[word] = position
        previous = word
    return labels, first_token


@dataclass
class TokenOutputs:
    """Validation outputs: per row, each token's predicted tag id; and the loss over the
    labelled tokens."""

    predicted: list[np.ndarray] = field(default_factory=list)
    loss_sum: float = 0.0
    loss_count: int = 0


class TokenCollator:
    """`DataCollatorForTokenClassification` padding to the batch's length bucket (labels
    padded with -100)."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase, buckets: np.ndarray) -> None:
        self.pad = DataCollatorForTokenClassification(
            tokenizer, label_pad_token_id=IGNORED, return_tensors="np"
        )
        self.buckets = buckets

    def __call__(self, features: list[dict[str, Any]]) -> dict[str, Any]:
        length = bucket_length(self.buckets, features)
        if length is None:
            self.pad.padding, self.pad.max_length = "longest", None
        else:
            self.pad.padding, self.pad.max_length = "max_length", length
        return dict(self.pad(features))


class TokenClassification(TaskType):
    name = "token_classification"
    model_class = TFAutoModelForTokenClassification
    head_suffix = "ForTokenClassification"

    def check_text(self, value: Any, split: str, row: int, column: str) -> None:
        if not isinstance(value, list) or not all(isinstance(w, str) for w in value):
            raise InvalidInput(
                f"{split} data row {row}: column '{column}' must hold a list of words "
                f"(token_classification), not {type(value).__name__}"
            )

    def _names(self, ds: Dataset, spec: JobSpec, split: str) -> list[list[str]]:
        """Every row's tags as names, lengths checked against its words."""
        column = spec.label_column
        feature = ds.features[column]
        known = None
        if isinstance(feature, Sequence) and isinstance(feature.feature, ClassLabel):
            known = list(feature.feature.names)
        elif spec.label_names:
            known = list(spec.label_names)
        rows = []
        for row, (words, tags) in enumerate(zip(ds[spec.text_column], ds[column], strict=True), 1):
            if not isinstance(tags, list):
                raise InvalidInput(
                    f"{split} data row {row}: column '{column}' must hold a list of tags"
                )
            if len(tags) != len(words):
                raise InvalidInput(
                    f"{split} data row {row}: {len(words)} words but {len(tags)} tags; every "
                    "word needs exactly one tag"
                )
            names = []
            for tag in tags:
                if isinstance(tag, str):
                    names.append(tag)
                elif isinstance(tag, int) and not isinstance(tag, bool) and known is not None:
                    if not 0 <= tag < len(known):
                        raise InvalidInput(
                            f"{split} data row {row}: tag id {tag} is not in label_names "
                            f"(ids 0-{len(known) - 1})"
                        )
                    names.append(known[tag])
                elif isinstance(tag, int):
                    raise InvalidInput(
                        f"{split} data row {row}: tags are integer ids; name them with the "
                        "job's label_names (the tag of each id), or use tag strings"
                    )
                else:
                    raise InvalidInput(f"{split} data row {row}: tag {tag!r} is not a tag")
            rows.append(names)
        return rows

    def _checked(
        self, rows: list[list[str]], spec: JobSpec, split: str
    ) -> tuple[list[list[str]], int]:
        """IOB2 checks: refused, or repaired as the job asks. Returns the tags and how many
        rows were repaired."""
        repaired = 0
        out = []
        for row, names in enumerate(rows, start=1):
            try:
                verdict = check_iob2(names)
            except TagProblem as exc:
                raise InvalidInput(f"{split} data row {row}: {exc}") from exc
            if verdict.broken_at is not None:
                at = verdict.broken_at
                if spec.invalid_tags == "refuse":
                    before = names[at - 1] if at else "the start of the row"
                    raise InvalidInput(
                        f"{split} data row {row}, word {at + 1}: tag {names[at]!r} after "
                        f"{before!r} is not valid IOB2 (an entity starts with B-); fix the "
                        "data, or set invalid_tags to 'repair' to make such tags B-"
                    )
                repaired += 1
                names = verdict.repaired
            out.append(names)
        return out, repaired

    def infer_labels(self, train: Dataset, spec: JobSpec, max_labels: int) -> LabelInfo:
        rows, _ = self._checked(self._names(train, spec, "training"), spec, "training")
        flat = [tag for names in rows for tag in names]
        try:
            names = class_names(flat, max_labels)
        except LabelProblem as exc:
            raise InvalidInput(f"training data, column '{spec.label_column}': {exc}") from exc
        if not entity_types(names):
            raise InvalidInput("the training tags name no entity (only O)")
        return LabelInfo("token_classification", names)

    def encode_labels(
        self, ds: Dataset, spec: JobSpec, labels: LabelInfo, split: str
    ) -> tuple[Dataset, list[str]]:
        rows, repaired = self._checked(self._names(ds, spec, split), spec, split)
        ids = labels.label2id
        encoded = []
        for row, names in enumerate(rows, start=1):
            unknown = [n for n in names if n not in ids]
            if unknown:
                raise InvalidInput(
                    f"{split} data row {row}: tag {unknown[0]!r} does not occur in the "
                    f"training data (its tags: {', '.join(labels.names[:30])})"
                )
            encoded.append([ids[n] for n in names])
        if WORD_TAGS in ds.column_names:
            ds = ds.remove_columns(WORD_TAGS)
        warnings = []
        if repaired:
            warnings.append(
                f"{split} data: {repaired} rows broke IOB2 (an I- tag starting an entity) and "
                "were repaired: those tags became B- (invalid_tags 'repair')"
            )
        return ds.add_column(WORD_TAGS, encoded), warnings

    def tokenize(self, ds: Dataset, tokenizer: PreTrainedTokenizerBase, spec: JobSpec) -> Dataset:
        if not tokenizer.is_fast:
            raise InvalidInput(
                "token_classification needs a fast tokenizer (tokenizer.json) to map tokens "
                "back to words; this model has none"
            )
        column = spec.text_column

        def encode(batch: dict[str, list[Any]]) -> dict[str, Any]:
            encoded = tokenizer(
                batch[column],
                is_split_into_words=True,
                truncation=True,
                max_length=spec.hyperparameters.max_length,
            )
            labels, first = [], []
            for i, tags in enumerate(batch[WORD_TAGS]):
                row_labels, row_first = align_tags(encoded.word_ids(i), tags)
                labels.append(row_labels)
                first.append(row_first)
            out = dict(encoded)
            out[LABELS], out[WORD_TOKEN] = labels, first
            out[LENGTH] = [len(ids) for ids in encoded["input_ids"]]
            return out

        return ds.map(
            encode,
            batched=True,
            remove_columns=[c for c in ds.column_names if c != WORD_TAGS],
            desc="tokenizing",
        )

    def label_summary(self, train: Dataset, labels: LabelInfo) -> dict[str, Any]:
        tags = Counter(labels.names[t] for row in train[WORD_TAGS] for t in row)
        entities = Counter(
            kind
            for row in train[WORD_TAGS]
            for kind, _, _ in get_entities([labels.names[t] for t in row])
        )
        return {"counts": dict(tags), "entities": dict(entities)}

    def collator(
        self,
        tokenizer: PreTrainedTokenizerBase,
        buckets: np.ndarray,
        hp: Hyperparameters,
        epoch: int | None,
    ) -> Collator:
        return TokenCollator(tokenizer, buckets)

    def validation_outputs(self, model: TFPreTrainedModel, batches: tf.data.Dataset) -> Any:
        """Batch by batch (rows of different lengths do not stack into one array)."""

        def build() -> Any:
            @tf.function(reduce_retracing=True)
            def forward(features: dict[str, tf.Tensor]) -> tf.Tensor:
                return tf.cast(model(features, training=False).logits, tf.float32)

            return forward

        forward = evaluation_function(model, self.name, build)

        outputs = TokenOutputs()
        for features, targets in batches:
            logits = forward(features).numpy().astype(np.float64)
            targets = targets.numpy()
            kept = targets != IGNORED
            scores = log_softmax(logits, axis=-1)
            picked = np.take_along_axis(scores, np.where(kept, targets, 0)[..., None], -1)[..., 0]
            outputs.loss_sum -= float(picked[kept].sum())
            outputs.loss_count += int(kept.sum())
            outputs.predicted.extend(logits.argmax(axis=-1))
        return outputs

    def word_level(
        self, outputs: TokenOutputs, rows: Dataset, labels: LabelInfo
    ) -> tuple[list[list[str]], list[list[str]]]:
        """(true tags, predicted tags) per row, word by word."""
        names = labels.names
        truth, predicted = [], []
        for ids, tags, first in zip(
            outputs.predicted, rows[WORD_TAGS], rows[WORD_TOKEN], strict=True
        ):
            truth.append([names[t] for t in tags])
            predicted.append([names[int(ids[p])] if p >= 0 else "O" for p in first])
        return truth, predicted

    def metrics(self, outputs: Any, rows: Dataset, labels: LabelInfo) -> dict[str, float]:
        truth, predicted = self.word_level(outputs, rows, labels)
        return {
            "loss": outputs.loss_sum / max(outputs.loss_count, 1),
            "precision": float(precision_score(truth, predicted, zero_division=0)),
            "recall": float(recall_score(truth, predicted, zero_division=0)),
            "f1": float(f1_score(truth, predicted, zero_division=0)),
            "accuracy": float(accuracy_score(truth, predicted)),
        }

    def report(
        self,
        outputs: Any,
        rows: Dataset,
        labels: LabelInfo,
        train: Dataset,
        before: dict[str, float] | None = None,
    ) -> EvaluationReport:
        truth, predicted = self.word_level(outputs, rows, labels)
        loss = outputs.loss_sum / max(outputs.loss_count, 1)
        return tag_report(truth, predicted, labels.names, loss)

    def predict(self, served: Any, inputs: list[dict[str, str | None]]) -> list[dict[str, Any]]:
        """Entities with character offsets in each input text: words as the tokenizer splits
        them, each tagged by its first token (as in training), joined into entities by
        seqeval's rules."""
        tokenizer = served.tokenizer
        texts = [str(x["text"]) for x in inputs]
        lengths = [len(ids) for ids in tokenizer(texts, truncation=False)["input_ids"]]
        encoded = tokenizer(
            texts,
            truncation=True,
            max_length=served.max_length,
            padding=True,
            pad_to_multiple_of=16,
            return_offsets_mapping=True,
            return_tensors="np",
        )
        offsets = encoded.pop("offset_mapping")
        probabilities = softmax(served.forward(dict(encoded)), axis=-1)
        answers = []
        for i, text in enumerate(texts):
            words: dict[int, list[Any]] = {}
            for position, word in enumerate(encoded.word_ids(i)):
                if word is None:
                    continue
                start, end = (int(v) for v in offsets[i][position])
                if word not in words:
                    best = int(probabilities[i, position].argmax())
                    words[word] = [start, end, best, float(probabilities[i, position, best])]
                else:
                    words[word][1] = end
            ordered = [words[w] for w in sorted(words)]
            tags = [served.names[w[2]] for w in ordered]
            entities = []
            for kind, first, last in get_entities(tags):
                start, end = ordered[first][0], ordered[last][1]
                entities.append(
                    {
                        "entity": kind,
                        "text": text[start:end],
                        "start": start,
                        "end": end,
                        "score": float(np.mean([w[3] for w in ordered[first : last + 1]])),
                    }
                )
            answers.append(
                {
                    "entities": entities,
                    "tokens": lengths[i],
                    "truncated": lengths[i] > served.max_length,
                }
            )
        return answers

    # -- batch predictions ----------------------------------------------------------------------

    def batch_chunk(
        self, served: Any, rows: list[dict[str, Any]], spec: BatchSpec, evaluate: bool
    ) -> BatchChunk:
        """Rows holding a list of words get a tag per word and entities as word spans (the
        form the model was trained on, and the one evaluation needs); rows holding a text get
        entities with character offsets, as online predictions do."""
        column = spec.text_column
        answers: list[dict[str, Any] | None] = [None] * len(rows)
        errors: list[str | None] = [None] * len(rows)
        listed, texts = [], []
        for i, row in enumerate(rows):
            value = row.get(column)
            if isinstance(value, list) and all(isinstance(w, str) for w in value):
                listed.append(i)
            elif isinstance(value, str) and value.strip() and not evaluate:
                texts.append(i)
            elif evaluate and isinstance(value, str):
                errors[i] = "evaluation needs a list of words per row (their tags are per word)"
            else:
                errors[i] = f"column '{column}' holds no text and no list of words"
        if texts:
            online = self.predict(served, [{"text": rows[i][column]} for i in texts])
            for i, answer in zip(texts, online, strict=True):
                answers[i] = answer
        found = word_predictions(served, [rows[i][column] for i in listed])
        for i, (tags, scores, length) in zip(listed, found, strict=True):
            words = rows[i][column]
            answers[i] = {
                "tags": tags,
                "entities": [
                    {
                        "entity": kind,
                        "text": " ".join(words[first : last + 1]),
                        "start_word": first,
                        "end_word": last + 1,
                        "score": float(np.mean(scores[first : last + 1])),
                    }
                    for kind, first, last in get_entities(tags)
                ],
                "tokens": length,
                "truncated": length > served.max_length,
            }
        record = None
        if evaluate:
            assert spec.label_column is not None
            names = served.job.get("spec", {}).get("label_names")
            truth, predicted = [], []
            for i in listed:
                try:
                    tags = _tag_names(rows[i].get(spec.label_column), names)
                except TagProblem as exc:
                    answers[i], errors[i] = None, str(exc)
                    continue
                tagged = answers[i]
                assert tagged is not None
                if len(tags) != len(tagged["tags"]):
                    answers[i] = None
                    errors[i] = (
                        f"{len(tagged['tags'])} words but {len(tags)} tags; every word needs "
                        "exactly one tag"
                    )
                    continue
                truth.append(tags)
                predicted.append(tagged["tags"])
            record = {"truth": truth, "predicted": predicted}
        return BatchChunk(answers, errors, record)

    def batch_csv_header(self, served: Any) -> list[str]:
        return ["entities", "tokens", "truncated", "error"]

    def batch_csv_values(self, served: Any, answer: dict[str, Any] | None) -> list[Any]:
        if answer is None:
            return ["", "", ""]
        entities = json.dumps(answer["entities"], ensure_ascii=False)
        return [entities, answer["tokens"], answer["truncated"]]

    def batch_report(self, served: Any, records: list[Any]) -> EvaluationReport:
        truth = [t for r in records for t in r["truth"]]
        predicted = [p for r in records for p in r["predicted"]]
        return tag_report(truth, predicted, list(served.names), None)


def _tag_names(tags: Any, names: list[str] | None) -> list[str]:
    """A row's tags as strings (integer ids through the job's `label_names`)."""
    if not isinstance(tags, list):
        raise TagProblem("the label column must hold a list of tags")
    out = []
    for tag in tags:
        if isinstance(tag, str):
            out.append(tag)
        elif isinstance(tag, int) and not isinstance(tag, bool) and names and 0 <= tag < len(names):
            out.append(names[tag])
        else:
            raise TagProblem(
                f"tag {tag!r} is neither a tag string nor an id of the job's label_names"
            )
    return out


def word_predictions(
    served: Any, word_lists: list[list[str]], batch_size: int = 64
) -> list[tuple[list[str], list[float], int]]:
    """Each row's tag per word (from its first token, as in training; `O` for a word without
    one), that tag's probability, and the row's length in tokens before truncation. Rows run
    shortest first, in batches padded to their own longest row."""
    if not word_lists:
        return []
    tokenizer = served.tokenizer
    lengths = [
        len(ids)
        for ids in tokenizer(word_lists, is_split_into_words=True, truncation=False)["input_ids"]
    ]
    order = np.argsort(lengths, kind="stable")
    results: list[tuple[list[str], list[float], int]] = [([], [], 0)] * len(word_lists)
    for start in range(0, len(order), batch_size):
        chosen = order[start : start + batch_size]
        encoded = tokenizer(
            [word_lists[i] for i in chosen],
            is_split_into_words=True,
            truncation=True,
            max_length=served.max_length,
            padding=True,
            pad_to_multiple_of=16,
            return_tensors="np",
        )
        probabilities = softmax(served.forward(dict(encoded)), axis=-1)
        for k, i in enumerate(chosen):
            first = [-1] * len(word_lists[i])
            for position, word in enumerate(encoded.word_ids(k)):
                if word is not None and first[word] < 0:
                    first[word] = position
            best = [int(probabilities[k, p].argmax()) if p >= 0 else -1 for p in first]
            tags = [served.names[b] if b >= 0 else "O" for b in best]
            scores = [
                float(probabilities[k, p, b]) if p >= 0 else 0.0
                for p, b in zip(first, best, strict=True)
            ]
            results[i] = (tags, scores, lengths[i])
    return results


def tag_report(
    truth: list[list[str]], predicted: list[list[str]], names: list[str], loss: float | None
) -> EvaluationReport:
    """Entity-level precision, recall and F1 overall and per type (seqeval), word accuracy,
    and the baseline of tagging every word O."""
    metrics = {
        "precision": round6(precision_score(truth, predicted, zero_division=0)),
        "recall": round6(recall_score(truth, predicted, zero_division=0)),
        "f1": round6(f1_score(truth, predicted, zero_division=0)),
        "accuracy": round6(accuracy_score(truth, predicted)) if truth else 0.0,
    }
    if loss is not None:
        metrics = {"loss": round6(loss), **metrics}
    table = classification_report(truth, predicted, output_dict=True, zero_division=0)
    kinds = entity_types(names)
    per_entity = [
        ClassScores(
            label=kind,
            precision=round6(table.get(kind, {}).get("precision", 0.0)),
            recall=round6(table.get(kind, {}).get("recall", 0.0)),
            f1=round6(table.get(kind, {}).get("f1-score", 0.0)),
            support=int(table.get(kind, {}).get("support", 0)),
        )
        for kind in kinds
    ]
    all_o = [["O"] * len(tags) for tags in truth]
    baseline = {
        "precision": 0.0,
        "recall": 0.0,
        "f1": 0.0,
        "accuracy": round6(accuracy_score(truth, all_o)) if truth else 0.0,
    }
    found = sum(len(get_entities(tags)) for tags in predicted)
    warnings = []
    if found == 0:
        warnings.append(
            f"the model tags every word of the {len(truth)} rows O: it has learned nothing "
            "beyond the tag balance; try more epochs or a higher learning_rate"
        )
    elif metrics["f1"] <= 0.05:
        warnings.append(
            f"entity F1 {metrics['f1']:.3f}: the model finds almost no entity correctly; "
            "try more epochs or a higher learning_rate"
        )
    return EvaluationReport(
        task="token_classification",
        rows=len(truth),
        metrics=metrics,
        baseline=baseline,
        labels=kinds,
        per_class=per_entity,
        predicted_classes=len({kind for tags in predicted for kind, _, _ in get_entities(tags)}),
        warnings=warnings,
    )


__all__ = ["TokenClassification", "align_tags", "entity_type"]
