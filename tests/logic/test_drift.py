"""Per-column drift tests, the day's verdict and its summary, on small in-memory samples."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mlsteps.logic.drift import (
    ColumnDrift,
    column_drift,
    column_kind,
    drift_verdict,
    mlflow_metrics,
    sample_positions,
    summary_line,
)

RNG = np.random.default_rng(7)
REFERENCE = pd.Series(RNG.normal(0.0, 1.0, 2000))


def drift(column: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(column, "numeric", "ks", 0.01, "wasserstein", 0.2, 0.1, drifted, 10, 10, 0.0, 0.0)


@pytest.mark.parametrize(
    ("seed", "mean", "drifted"),
    [(8, 1.0, True), (9, 0.0, False)],
    ids=["a_shifted_column_drifts", "an_unchanged_column_does_not_drift"],
)
def test_a_numeric_column_drifts_only_when_shifted(seed: int, mean: float, drifted: bool) -> None:
    current = pd.Series(np.random.default_rng(seed).normal(mean, 1.0, 2000))

    assert bool(column_drift("amount", REFERENCE, current, "numeric", 0.05).drifted) is drifted


def test_a_categorical_column_whose_shares_changed_drifts() -> None:
    reference = pd.Series(["a"] * 900 + ["b"] * 100)
    current = pd.Series(["a"] * 500 + ["b"] * 500)

    assert column_drift("merchant", reference, current, "categorical", 0.05).drifted


@pytest.mark.parametrize(
    ("reference", "current", "drifted"),
    [([1.0, 2.0], [np.nan, np.nan], True), ([np.nan], [np.nan], False)],
)
def test_a_column_without_values_on_one_side_only_drifts(
    reference: list[float], current: list[float], drifted: bool
) -> None:
    result = column_drift("x", pd.Series(reference), pd.Series(current), "numeric", 0.05)

    assert (result.drifted, result.note.startswith("no values in")) == (drifted, True)


@pytest.mark.parametrize(
    ("series", "categorical", "kind"),
    [
        (pd.Series([1.0, 2.0]), False, "numeric"),
        (pd.Series([1, 2]), True, "categorical"),
        (pd.Series([True, False]), False, "categorical"),
        (pd.Series(["a", "b"]), False, "categorical"),
    ],
)
def test_column_kind(series: pd.Series, categorical: bool, kind: str) -> None:
    assert column_kind(series, categorical) == kind


@pytest.mark.parametrize(("threshold", "expected"), [(0.5, True), (0.6, False)])
def test_drift_needs_the_share_of_drifted_columns(threshold: float, expected: bool) -> None:
    features = [drift("a", True), drift("b", False)]

    assert drift_verdict(features, threshold) == (["a"], 0.5, expected)


def test_no_columns_is_no_drift() -> None:
    assert drift_verdict([], 0.0) == ([], 0.0, False)


def test_summary_line_names_the_drifted_columns_and_the_suggestion() -> None:
    document = {
        "drifted_columns": ["amount"],
        "columns_checked": 2,
        "drift": True,
        "prediction_drift": False,
        "thresholds": {"drift_share": 0.5},
        "ds": "2026-11-03",
        "model_version": "4",
    }

    assert summary_line(document) == (
        "drift in 1 of 2 columns (amount): retrain suggested (ds=2026-11-03, model v4)"
    )


@pytest.mark.parametrize(
    ("drifted", "ending"),
    [
        (["amount"], "; the model's scores drifted too"),
        ([], "; the model's scores drifted all the same"),
    ],
    ids=["with-input-drift", "scores-alone"],
)
def test_summary_line_says_too_only_when_inputs_drifted(drifted: list[str], ending: str) -> None:
    document = {
        "drifted_columns": drifted,
        "columns_checked": 2,
        "drift": False,
        "prediction_drift": True,
        "thresholds": {"drift_share": 0.9},
        "ds": "2026-11-03",
        "model_version": "4",
    }

    assert summary_line(document).split(" (ds=")[0].endswith(ending)


def test_mlflow_metrics_hold_each_columns_distance_and_the_scores() -> None:
    features, score = drift("amount", True), drift("score", False)
    document = {
        "drift": True,
        "drift_share": 1.0,
        "drifted_columns": ["amount"],
        "columns_checked": 1,
        "prediction_drift": False,
        "columns": {"amount": features.as_dict()},
        "prediction": {"column": "score", **score.as_dict()},
    }

    metrics = mlflow_metrics(document)

    assert {"distance.amount", "p_value.amount", "distance.prediction.score"} <= set(metrics)


def test_a_partition_under_the_limit_is_taken_whole() -> None:
    assert sample_positions(5, 10, np.random.default_rng(0)).tolist() == [0, 1, 2, 3, 4]


def test_a_sample_holds_limit_sorted_distinct_positions() -> None:
    positions = sample_positions(1000, 50, np.random.default_rng(0))

    assert len(set(positions.tolist())) == 50
    assert positions.tolist() == sorted(positions.tolist())
