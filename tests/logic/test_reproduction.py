"""Reproduction comparisons and the verdict, on hand-made checks, frames and arrays."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd

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


def test_equivalent_text_quotes_the_holdout_difference() -> None:
    checks = [
        *inputs_same(),
        Check("booster sha256", False, "a", "b"),
        Check("holdout predictions", True, "", "d"),
    ]
    assert verdict(checks)[1] == f"{EQUIVALENT} (d)"


def test_holdout_predictions_beyond_the_tolerance_differ() -> None:
    checks = [
        *inputs_same(),
        Check("booster sha256", False, "a", "b"),
        Check("holdout predictions", False, "", "max |dp| = 0.2"),
    ]
    assert verdict(checks)[1] == f"{DIFFERS}: holdout predictions (max |dp| = 0.2)"


def test_config_check_names_a_snapshot_config_that_does_not_match_its_hash() -> None:
    assert config_check("h", "h", "other", "h").detail.startswith("the config recorded in the snapshot")


def test_params_check_ignores_eval_metric() -> None:
    assert params_check({"seed": "42"}, {"seed": 42, "eval_metric": ["auc"]}).same


def test_params_check_names_a_changed_parameter() -> None:
    assert params_check({"seed": "42"}, {"seed": 7}).detail == "seed: 42 then, 7 now"


def test_predictions_within_tolerance_are_the_same() -> None:
    assert predictions_check(np.array([0.5, 0.2]), np.array([0.5, 0.2000001]), 1e-6).same


def test_predictions_beyond_tolerance_differ() -> None:
    assert not predictions_check(np.array([0.5]), np.array([0.6]), 1e-6).same


def test_changed_raw_partitions_lists_the_days() -> None:
    text = changed_raw_partitions(
        {"2026-03-01": "a", "2026-03-02": "b"}, {"2026-03-01": "a", "2026-03-02": "c"}
    )
    assert text == "raw partition(s) changed since training: 2026-03-02"


def test_no_changed_raw_partitions_is_empty() -> None:
    assert changed_raw_partitions({"d": "a"}, {"d": "a"}) == ""


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
