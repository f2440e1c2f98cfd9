"""`"auto"` hyperparameters on small, large, imbalanced and long-row data sets."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from app.core.schemas import Hyperparameters
from worker.pipeline.auto import resolve_auto

AUTO = Hyperparameters(
    epochs="auto",
    batch_size="auto",
    learning_rate="auto",
    class_weight="auto",
    lr_scheduler="auto",
)
SHORT = np.full(1000, 20)


def test_a_small_data_set_gets_many_passes_decayed() -> None:
    chosen = resolve_auto(AUTO, 300, SHORT[:300], [150, 150], hidden_size=384)
    hp = chosen.hyperparameters
    # 300 rows of batch 16: 19 steps an epoch; 3 epochs (57 steps) learned nothing here, and
    # 20 epochs decayed beat 10 held at a doubled rate on every seed measured.
    assert (hp.batch_size, hp.epochs, hp.learning_rate) == (16, 20, 5e-5)
    assert "19 steps per epoch" in chosen.reasons["epochs"]["reason"]
    assert "2-20 epochs" in chosen.reasons["epochs"]["reason"]
    reason = chosen.reasons["learning_rate"]["reason"]
    assert reason == "a small model (hidden size 384)"  # 380 steps, but 20 passes: not doubled
    assert hp.class_weight is None  # 150 against 150
    assert hp.lr_scheduler == "linear"
    assert "20 passes over a small data set" in chosen.reasons["lr_scheduler"]["reason"]


def test_one_or_two_passes_of_few_steps_get_a_doubled_rate_three_do_not() -> None:
    one = AUTO.model_copy(update={"epochs": 1})  # 500 rows: 32 steps an epoch
    chosen = resolve_auto(one, 500, SHORT[:500], [250, 250], hidden_size=384)
    hp = chosen.hyperparameters
    assert (hp.learning_rate, hp.lr_scheduler) == (1e-4, "constant")
    reason = chosen.reasons["learning_rate"]["reason"]
    assert reason.endswith("doubled for a short run (32 optimizer steps in 1 epoch)")
    assert "a decay to 0 would cut learning short" in chosen.reasons["lr_scheduler"]["reason"]
    two = resolve_auto(AUTO.model_copy(update={"epochs": 2}), 500, SHORT[:500], [250, 250], 384)
    assert two.hyperparameters.learning_rate == 1e-4
    assert "(64 optimizer steps in 2 epochs)" in two.reasons["learning_rate"]["reason"]
    # 300 SST-2 rows, 3 passes held constant, seeds 1-6: 1e-4 scored below 5e-5 on every seed.
    three = resolve_auto(AUTO.model_copy(update={"epochs": 3}), 500, SHORT[:500], [250, 250], 384)
    assert three.hyperparameters.learning_rate == 5e-5
    assert three.reasons["learning_rate"]["reason"] == "a small model (hidden size 384)"
    assert three.hyperparameters.lr_scheduler == "constant"  # 96 steps, no class weights


def test_a_mid_sized_data_set_gets_about_the_target_steps() -> None:
    chosen = resolve_auto(AUTO, 8551, SHORT, [2528, 6023], hidden_size=384)
    hp = chosen.hyperparameters
    assert (hp.batch_size, hp.epochs) == (16, 3)  # 535 steps an epoch: 1605 steps
    assert hp.learning_rate == 3e-5 and hp.lr_scheduler == "linear"  # a long run
    assert "on a long run (1605 steps)" in chosen.reasons["learning_rate"]["reason"]
    two_epochs = AUTO.model_copy(update={"epochs": 2})  # 1070 steps: not long
    hp2 = resolve_auto(two_epochs, 8551, SHORT, [2528, 6023], hidden_size=384).hyperparameters
    assert (hp2.learning_rate, hp2.lr_scheduler) == (5e-5, "linear")  # weighted: decayed
    unweighted = two_epochs.model_copy(update={"class_weight": None})
    hp3 = resolve_auto(unweighted, 8551, SHORT, [2528, 6023], hidden_size=384).hyperparameters
    assert (hp3.learning_rate, hp3.lr_scheduler) == (5e-5, "constant")
    assert hp.class_weight == "balanced"  # CoLA: 70% one class
    assert "2.4x the rows of the rarest" in chosen.reasons["class_weight"]["reason"]


def test_a_large_data_set_is_not_over_trained() -> None:
    hp = resolve_auto(AUTO, 43_410, SHORT, None, hidden_size=768).hyperparameters
    assert (hp.batch_size, hp.epochs, hp.learning_rate) == (32, 2, 3e-5)
    huge = resolve_auto(AUTO, 400_000, SHORT, None, hidden_size=1024)
    assert huge.hyperparameters.epochs == 1 and huge.hyperparameters.learning_rate == 2e-5
    assert "one epoch is enough" in huge.reasons["epochs"]["reason"]


def test_a_rare_class_is_seen_often_enough() -> None:
    chosen = resolve_auto(AUTO, 20_000, SHORT, [19_950, 50], hidden_size=384)
    assert chosen.hyperparameters.epochs == 6  # 50 rows x 6 epochs = 300 views
    assert "the rarest class has 50 rows" in chosen.reasons["epochs"]["reason"]


def test_long_rows_halve_the_batch() -> None:
    chosen = resolve_auto(AUTO, 2000, np.full(2000, 400), None, hidden_size=384)
    assert chosen.hyperparameters.batch_size == 8
    assert "long rows (400 tokens" in chosen.reasons["batch_size"]["reason"]


def test_values_given_are_kept_and_only_auto_is_explained() -> None:
    hp = Hyperparameters(
        epochs=2,
        batch_size="auto",
        learning_rate=3e-5,
        lr_scheduler="linear",
        class_weight=None,
        eval_every="epoch",
    )
    chosen = resolve_auto(hp, 500, SHORT[:500], [250, 250], hidden_size=384)
    assert chosen.hyperparameters.epochs == 2 and chosen.hyperparameters.learning_rate == 3e-5
    assert set(chosen.reasons) == {"batch_size"}
    assert chosen.hyperparameters.class_weight is None
    assert chosen.hyperparameters.lr_scheduler == "linear"


@pytest.mark.parametrize("field", ["epochs", "batch_size", "learning_rate"])
def test_only_auto_or_a_number(field: str) -> None:
    with pytest.raises(ValidationError):
        Hyperparameters(**{field: "fast"})


def test_max_steps_sets_the_length_the_rules_judge() -> None:
    # 8,551 rows of batch 32 (268 steps an epoch) cut at 400 steps: 2 passes, a short run.
    capped = AUTO.model_copy(update={"batch_size": 32, "max_steps": 400})
    chosen = resolve_auto(capped, 8551, SHORT, [2528, 6023], hidden_size=384)
    hp = chosen.hyperparameters
    assert hp.epochs == 2 and hp.max_steps == 400
    assert chosen.reasons["epochs"]["reason"] == "max_steps 400 at 268 steps per epoch"
    assert hp.learning_rate == 1e-4  # 400 steps in 2 passes: doubled, as for any short run
    assert hp.lr_scheduler == "linear"  # with balanced class weights (CoLA's 2.4x)
    long_cap = capped.model_copy(update={"max_steps": 1300})
    hp_long = resolve_auto(long_cap, 8551, SHORT, [2528, 6023], hidden_size=384).hyperparameters
    assert (hp_long.epochs, hp_long.learning_rate, hp_long.lr_scheduler) == (5, 3e-5, "linear")


def test_a_short_run_with_class_weights_is_decayed() -> None:
    # Full CoLA, one epoch: balanced weights held constant at 1e-4 gave MCC 0.175, 0.054,
    # 0.000 (seeds 1-3), decayed 0.174, 0.142, 0.164; without weights a decay to 0 over one
    # epoch answered the majority class, so unweighted short runs stay constant.
    one_epoch = AUTO.model_copy(update={"epochs": 1})
    chosen = resolve_auto(one_epoch, 8551, SHORT, [2528, 6023], hidden_size=384)
    hp = chosen.hyperparameters
    assert (hp.learning_rate, hp.class_weight, hp.lr_scheduler) == (1e-4, "balanced", "linear")
    assert "535 optimizer steps, with class weights" in chosen.reasons["lr_scheduler"]["reason"]
    given = one_epoch.model_copy(update={"class_weight": {"1": 2.0}})
    assert resolve_auto(given, 8551, SHORT, [2528, 6023], 384).hyperparameters.lr_scheduler == (
        "linear"
    )
    balanced_data = resolve_auto(one_epoch, 8551, SHORT, [4200, 4351], hidden_size=384)
    assert balanced_data.hyperparameters.class_weight is None
    assert balanced_data.hyperparameters.lr_scheduler == "constant"


def test_many_passes_over_a_small_set_are_validated_about_five_times() -> None:
    # 300 SST-2 rows against its 872 validation rows, 20 epochs: validating after each epoch
    # took 44 s of the job's 100 s of training (MiniLM), as long as the training steps.
    chosen = resolve_auto(AUTO, 300, SHORT[:300], [150, 150], 384, validation_rows=872)
    assert chosen.hyperparameters.epochs == 20
    assert chosen.hyperparameters.eval_every == 4 * 19  # every 4 epochs of 19 steps
    reason = chosen.reasons["eval_every"]["reason"]
    assert reason == (
        "20 epochs over 300 rows, each validation pass (872 rows) costing about 1.0 epochs "
        "of training: every 4 epochs (76 steps) and at the end"
    )
    # Seven epochs: every 2, so evaluations at 2, 4, 6 and the end.
    seven = resolve_auto(AUTO.model_copy(update={"epochs": 7}), 300, SHORT[:300], None, 384, 872)
    assert seven.hyperparameters.eval_every == 2 * 19


@pytest.mark.parametrize(
    ("update", "rows", "validation_rows", "why"),
    [
        # Full CoLA: 1,043 validation rows beside 8,551 cost a few percent of an epoch.
        ({}, 8551, 1043, "validation (1043 rows) costs little beside an epoch (8551 rows)"),
        # A held-out tenth (validation_fraction 0.1) is always cheap.
        ({}, 270, 30, "validation (30 rows) costs little"),
        ({"epochs": 5}, 300, 872, "5 epochs: one evaluation each"),
        ({"early_stopping_patience": 3}, 300, 872, "early stopping counts evaluations"),
        ({}, 300, None, "the validation set's size is not known"),
    ],
)
def test_evaluations_stay_once_per_epoch_where_they_are_cheap_few_or_counted(
    update: dict[str, object], rows: int, validation_rows: int | None, why: str
) -> None:
    hp = AUTO.model_copy(update=update)
    chosen = resolve_auto(hp, rows, SHORT[:rows], None, 384, validation_rows=validation_rows)
    assert chosen.hyperparameters.eval_every == "epoch"
    assert chosen.reasons["eval_every"]["reason"].startswith(why)


def test_a_given_eval_every_is_kept() -> None:
    for given in ("epoch", 7):
        hp = AUTO.model_copy(update={"eval_every": given})
        chosen = resolve_auto(hp, 300, SHORT[:300], None, 384, validation_rows=872)
        assert chosen.hyperparameters.eval_every == given and "eval_every" not in chosen.reasons
