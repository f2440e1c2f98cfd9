"""Online predictions through the API, answered by a real prediction worker process."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from app.core.schemas import FileObject, Job, JobStatus
from finetune import Client, Conflict, Invalid, NotFound
from tests.support.jobs import submit_tiny
from tests.support.models import load_reference

DONE = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
TEXTS = [
    "a warm and fun film",
    "a cold and boring plot",
    "the film",
    "fun fun fun but boring boring and cold and the plot the plot the film a film " * 3,
]


@pytest.fixture(scope="module")
def train_file(alice: Client, data_dir: Path) -> FileObject:
    return alice.upload(data_dir / "train.csv")


@pytest.fixture(scope="module")
def trained(alice: Client, train_file: FileObject) -> Job:
    job = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 5, "max_length": 16})
    done = alice.wait(job.id, until=DONE, timeout=180, interval=0.2)
    assert done.status == "succeeded", done.error
    return done


def test_predictions_equal_the_downloaded_models_own_forward_pass(
    predictor: None, alice: Client, trained: Job, tmp_path: Path
) -> None:
    from scipy.special import softmax

    answers = alice.predict(trained.id, TEXTS)

    model, tokenizer = load_reference(alice.download(trained.id, tmp_path))
    for text, answer in zip(TEXTS, answers, strict=True):
        encoded = tokenizer([text], truncation=True, max_length=16, return_tensors="tf")
        probabilities = softmax(model(encoded).logits.numpy()[0].astype(np.float64))
        names = [model.config.id2label[i] for i in range(len(probabilities))]
        assert answer.label == names[int(probabilities.argmax())]
        got = np.array([answer.scores[n] for n in names])
        assert np.abs(got - probabilities).max() < 1e-5, (text, got, probabilities)
        assert answer.score == pytest.approx(probabilities.max(), abs=1e-5)
        untruncated = len(tokenizer(text)["input_ids"])
        assert answer.tokens == untruncated and answer.truncated == (untruncated > 16)
    assert [a.truncated for a in answers] == [False, False, False, True]
    assert answers[0].label != answers[1].label  # the model learned the sentiment words


def test_prediction_requests_are_checked(
    predictor: None, alice: Client, bob: Client, trained: Job, train_file: FileObject
) -> None:
    with pytest.raises(NotFound):
        bob.predict(trained.id, ["a warm film"])  # another tenant's job does not exist
    with pytest.raises(Invalid) as too_many:
        alice.predict(trained.id, ["text"] * 65)
    assert too_many.value.param == "inputs"
    with pytest.raises(Invalid) as pair:
        alice.predict(trained.id, [("a warm film", "second text")])
    assert pair.value.param == "inputs.0.text_pair"
    with pytest.raises(Invalid):
        alice.predict(trained.id, [""])
    queued = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 1})
    with pytest.raises(Conflict, match="predictions need a succeeded job"):
        alice.predict(queued.id, ["a warm film"])
    alice.wait(queued.id, until=DONE, timeout=180, interval=0.2)


def test_predictions_answer_while_a_long_job_trains(
    predictor: None, alice: Client, trained: Job, train_file: FileObject
) -> None:
    """The training worker is busy for minutes; the prediction worker answers meanwhile."""
    long = submit_tiny(alice, train_file.id, hyperparameters={"epochs": 60})
    try:
        alice.wait(long.id, until={JobStatus.running}, timeout=60, interval=0.2)
        latencies = []
        for _ in range(20):
            started = time.monotonic()
            (answer,) = alice.predict(trained.id, ["a warm and fun film"])
            latencies.append(time.monotonic() - started)
            assert answer.label is not None
        assert alice.job(long.id).status == JobStatus.running
        print(f"prediction latency while training: median {sorted(latencies)[10] * 1000:.0f} ms")
    finally:
        alice.cancel(long.id)
        alice.wait(long.id, until=DONE, timeout=60, interval=0.2)
