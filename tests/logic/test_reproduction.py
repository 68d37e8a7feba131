"""Reproduction comparisons and the verdict, on hand-made checks, frames and arrays."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlsteps.logic.reproduction import (
    DIFFERS,
    EQUIVALENT,
    IDENTICAL,
    INPUT_CHECKS,
    Check,
    changed_raw_partitions,
    config_check,
    feature_passes,
    first_value_difference,
    package_changes,
    params_check,
    predictions_check,
    verdict,
)
from mlsteps.platform.datasets import TrainingSet

START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def inputs_same() -> list[Check]:
    return [Check(name, True, 1, 1) for name in INPUT_CHECKS]


def test_all_checks_same_is_identical() -> None:
    assert verdict(inputs_same())[0] == IDENTICAL


def test_only_the_booster_differing_is_equivalent() -> None:
    checks = [*inputs_same(), Check("booster sha256", False, "a", "b")]
    assert verdict(checks)[0] == EQUIVALENT


def test_an_input_difference_differs() -> None:
    checks = [Check(name, name != "hyperparameters", 1, 2) for name in INPUT_CHECKS]
    assert verdict(checks)[1] == f"{DIFFERS}: first difference in hyperparameters"


@pytest.mark.parametrize(
    ("same", "detail", "text"),
    [
        (True, "d", f"{EQUIVALENT} (d)"),
        (False, "max |dp| = 0.2", f"{DIFFERS}: holdout predictions (max |dp| = 0.2)"),
    ],
    ids=["equivalent_text_quotes_the_holdout_difference", "holdout_predictions_beyond_the_tolerance_differ"],
)
def test_a_differing_booster_is_judged_by_its_holdout_predictions(same: bool, detail: str, text: str) -> None:
    checks = [
        *inputs_same(),
        Check("booster sha256", False, "a", "b"),
        Check("holdout predictions", same, "", detail),
    ]
    assert verdict(checks)[1] == text


def test_config_check_names_a_snapshot_config_that_does_not_match_its_hash() -> None:
    assert config_check("h", "h", "other", "h").detail.startswith("the config recorded in the snapshot")


def test_params_check_ignores_eval_metric() -> None:
    assert params_check({"seed": "42"}, {"seed": 42, "eval_metric": ["auc"]}).same


def test_params_check_names_a_changed_parameter() -> None:
    assert params_check({"seed": "42"}, {"seed": 7}).detail == "seed: 42 then, 7 now"


def test_params_check_names_another_optuna_trial_count() -> None:
    check = params_check({"seed": "42", "n_trials": "3"}, {"seed": 42}, trials=5)

    assert not check.same
    assert check.detail == "Optuna trials: 3 then, 5 now"
    assert (check.recorded, check.rebuilt) == (
        "1 parameters, seed 42, 3 Optuna trials",
        "1 parameters, seed 42, 5 Optuna trials",
    )


@pytest.mark.parametrize(
    ("then", "now", "same"),
    [([0.5, 0.2], [0.5, 0.2000001], True), ([0.5], [0.6], False)],
    ids=["within_tolerance_are_the_same", "beyond_tolerance_differ"],
)
def test_predictions_are_compared_within_the_tolerance(
    then: list[float], now: list[float], same: bool
) -> None:
    assert bool(predictions_check(np.array(then), np.array(now), 1e-6).same) is same


@pytest.mark.parametrize(
    ("then", "now", "text"),
    [
        (
            {"2026-03-01": "a", "2026-03-02": "b"},
            {"2026-03-01": "a", "2026-03-02": "c"},
            "raw partition(s) changed since training: 2026-03-02",
        ),
        ({"d": "a"}, {"d": "a"}, ""),
    ],
    ids=["lists_the_changed_days", "none_changed_is_empty"],
)
def test_changed_raw_partitions(then: dict[str, str], now: dict[str, str], text: str) -> None:
    assert changed_raw_partitions(then, now) == text


def test_package_changes_show_old_and_new() -> None:
    assert package_changes({"xgboost": "2.1", "pandas": "2.2"}, {"xgboost": "3.0", "pandas": "2.2"}) == {
        "xgboost": "2.1 -> 3.0"
    }


def split_set(values: list[float]) -> TrainingSet:
    frame = pd.DataFrame({"row": ["a", "b"], "x": values})
    return TrainingSet(frame, frame.iloc[:0], {"row_id": "row"})


def test_first_value_difference_names_row_and_column() -> None:
    text = first_value_difference(split_set([1.0, 2.0]), split_set([1.0, 2.5]))
    assert text == "first differing value: train row=b, x 2.0 then, 2.5 now"


def test_missing_values_in_both_are_no_difference() -> None:
    assert first_value_difference(split_set([1.0, float("nan")]), split_set([1.0, float("nan")])) == ""


def test_recorded_feature_passes_are_kept() -> None:
    batch = {"start": "2026-02-27T00:00:00+00:00", "end": "2026-03-02T00:00:00+00:00"}
    passes = feature_passes(
        {"feature_batches": {"2026-03-01": batch}}, START, START + dt.timedelta(days=1), 7
    )
    assert [(str(interval.start.date()), days) for interval, days in passes] == [
        ("2026-02-27", [dt.date(2026, 3, 1)])
    ]


def test_unrecorded_days_are_grouped_into_batches() -> None:
    passes = feature_passes({}, START, START + dt.timedelta(days=5), 2)
    assert [len(days) for _, days in passes] == [2, 2, 1]
