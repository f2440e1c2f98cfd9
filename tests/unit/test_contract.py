"""The job contract, label rules and model names: pure Python, no services."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from app.core.catalog import UnknownModel, resolve_model
from app.core.labels import LabelProblem, class_names, task_for_dtype
from app.core.schemas import Hyperparameters, JobCreate
from app.core.settings import Settings, parse_api_keys


def test_hyperparameter_defaults_are_auto_where_the_data_decides() -> None:
    hp = Hyperparameters()
    chosen = (hp.epochs, hp.batch_size, hp.learning_rate, hp.lr_scheduler, hp.class_weight)
    assert chosen == ("auto",) * 5
    assert hp.max_length == 128 and hp.max_steps is None
    # Each can still be given, and class weights turned off.
    given = Hyperparameters(epochs=3, batch_size=16, learning_rate=5e-5, class_weight=None)
    assert (given.epochs, given.batch_size, given.learning_rate) == (3, 16, 5e-5)
    assert given.class_weight is None
    assert (hp.warmup_ratio, hp.weight_decay, hp.seed, hp.eval_every) == (0.1, 0.0, 42, "auto")
    assert hp.early_stopping_patience is None and hp.checkpoint_every_steps == "auto"
    assert Hyperparameters(checkpoint_every_steps=200).checkpoint_every_steps == 200


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": 101}, "epochs"),
        ({"batch_size": "16"}, "batch_size"),
        ({"learning_rate": 0}, "learning_rate"),
        ({"warmup_ratio": 1.0}, "warmup_ratio"),
        ({"eval_every": 0}, "eval_every"),
        ({"eval_every": "sometimes"}, "eval_every"),
        ({"checkpoint_every_steps": 0}, "checkpoint_every_steps"),
        ({"checkpoint_every_steps": "often"}, "checkpoint_every_steps"),
        ({"epochs": True}, "epochs"),
        ({"trust_remote_code": True}, "trust_remote_code"),
    ],
)
def test_hyperparameters_out_of_bounds_name_the_field(values: dict, field: str) -> None:
    with pytest.raises(ValidationError) as error:
        Hyperparameters.model_validate(values)
    assert field in str(error.value)


def test_contradictory_hyperparameters_are_rejected() -> None:
    with pytest.raises(ValidationError, match="needs early_stopping_patience"):
        Hyperparameters(early_stopping_metric="accuracy")
    assert Hyperparameters(early_stopping_metric="accuracy", early_stopping_patience=2)


def test_job_request_rejects_unknown_fields_and_column_clashes() -> None:
    base = {"model": "m", "training_file": "file_x"}
    assert JobCreate.model_validate(base).text_column == "text"
    with pytest.raises(ValidationError, match="trust_remote_code"):
        JobCreate.model_validate({**base, "trust_remote_code": True})
    with pytest.raises(ValidationError, match="must be different"):
        JobCreate.model_validate({**base, "text_column": "a", "label_column": "a"})
    with pytest.raises(ValidationError):
        JobCreate.model_validate({**base, "metadata": {str(i): "v" for i in range(17)}})


def test_records_round_trip_through_json() -> None:
    job = JobCreate.model_validate(
        {
            "model": "m",
            "training_file": "f",
            "hyperparameters": {"early_stopping_patience": 2, "early_stopping_metric": "mse"},
        }
    )
    assert JobCreate.model_validate_json(job.model_dump_json()) == job


def test_class_names_sort_integers_numerically_and_reject_bad_labels() -> None:
    assert class_names([10, 2, 2, 1], 100) == ["1", "2", "10"]
    assert class_names(["pos", "neg", "neutral"], 100) == ["neg", "neutral", "pos"]
    with pytest.raises(LabelProblem, match="single class"):
        class_names([1, 1], 100)
    with pytest.raises(LabelProblem, match="mix types"):
        class_names([1, "a"], 100)
    with pytest.raises(LabelProblem, match="row 3: the label is missing"):
        class_names([1, 0, None], 100)
    with pytest.raises(LabelProblem, match="more than the limit 3"):
        class_names([0, 1, 2, 3], 3)
    assert task_for_dtype("double") == "regression"
    assert task_for_dtype("int64") == task_for_dtype("string") == "classification"


def test_model_names_cannot_escape_the_models_folder(tmp_path: Path) -> None:
    (tmp_path / "models" / "good").mkdir(parents=True)
    (tmp_path / "models" / "good" / "config.json").write_text("{}")
    (tmp_path / "config.json").write_text("{}")  # a "model" one level up
    models = tmp_path / "models"
    assert resolve_model("good", models, allow_hub=False).source == "local"
    for name in ("..", "../models/good", "/etc", "good/../..", "http://x/y", "a/b/c", ""):
        with pytest.raises(UnknownModel):
            resolve_model(name, models, allow_hub=True)
    with pytest.raises(UnknownModel, match="hub access is off"):
        resolve_model("org/model", models, allow_hub=False)
    assert resolve_model("org/model", models, allow_hub=True).location == "org/model"


def test_api_keys_setting() -> None:
    assert parse_api_keys("a:k1, b:k2") == {"k1": "a", "k2": "b"}
    assert parse_api_keys("") == {}
    with pytest.raises(ValidationError):
        Settings(api_keys="nocolon")


def test_an_open_api_refuses_to_listen_beyond_loopback() -> None:
    from app.core.settings import exposure_problem

    for host in ("127.0.0.1", "localhost", "::1", "127.0.0.2"):
        assert exposure_problem(Settings(host=host, api_keys="")) is None
    problem = exposure_problem(Settings(host="0.0.0.0", api_keys=""))
    assert problem and "FINETUNE_API_KEYS" in problem
    assert exposure_problem(Settings(host="0.0.0.0", api_keys="team:k123")) is None
    assert exposure_problem(Settings(host="0.0.0.0", api_keys="", allow_open_access=True)) is None


def test_create_app_refuses_an_open_public_api() -> None:
    from app.api.main import create_app

    with pytest.raises(SystemExit, match=r"refusing to listen on 0\.0\.0\.0"):
        create_app(Settings(host="0.0.0.0", api_keys=""))
