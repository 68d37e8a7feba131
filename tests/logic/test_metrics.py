"""Classification metrics, calibration bins and the weighted AUC on tiny score arrays."""

from __future__ import annotations

import numpy as np
import pytest

from mlsteps.logic.metrics import (
    calibration_bins,
    classification_metrics,
    expected_calibration_error,
    weighted_auc,
)

Y = np.array([0, 0, 0, 1, 1])
SCORES = np.array([0.1, 0.2, 0.6, 0.7, 0.9])


def test_confusion_counts_at_the_threshold() -> None:
    metrics = classification_metrics(Y, SCORES, threshold=0.5)

    assert metrics["confusion"] == {"tp": 2, "fp": 1, "tn": 2, "fn": 0}


def test_perfectly_ranked_scores_have_an_auc_of_one() -> None:
    assert classification_metrics(Y, SCORES, threshold=0.5)["roc_auc"] == 1.0


def test_calibration_bins_hold_every_row_once() -> None:
    bins = calibration_bins(Y, SCORES)

    assert sum(b["rows"] for b in bins) == len(Y)


def test_a_score_of_one_falls_in_the_last_bin() -> None:
    assert calibration_bins(np.array([1]), np.array([1.0]))[0]["bin_low"] == 0.9


def test_the_calibration_error_is_the_weighted_gap_of_the_calibration_bins() -> None:
    rng = np.random.default_rng(3)
    scores = rng.random(2_000) ** 2
    y = (rng.random(2_000) < scores * 0.8).astype(int)
    bins = calibration_bins(y, scores)
    gap = sum(b["rows"] * abs(b["mean_score"] - b["positive_rate"]) for b in bins) / len(y)

    assert expected_calibration_error(y, scores) == pytest.approx(gap, abs=1e-6)  # the table is rounded
    assert classification_metrics(y, scores, 0.5)["expected_calibration_error"] == round(gap, 6)


def test_calibration_error_weights_count_rows() -> None:
    weights = np.array([2.0, 0.0, 1.0, 3.0, 1.0])
    repeated = np.repeat(np.arange(len(Y)), weights.astype(int))

    weighted = expected_calibration_error(Y, SCORES, weights=weights)

    assert weighted == pytest.approx(expected_calibration_error(Y[repeated], SCORES[repeated]))


@pytest.mark.parametrize(
    ("scores", "expected"),
    [([0.1, 0.2, 0.8, 0.9], 1.0), ([0.9, 0.8, 0.2, 0.1], 0.0), ([0.5, 0.5, 0.5, 0.5], 0.5)],
)
def test_weighted_auc_with_unit_weights(scores: list[float], expected: float) -> None:
    assert weighted_auc(np.array(scores), np.array([0, 0, 1, 1]), np.ones(4)) == expected


def test_weighted_auc_ignores_rows_of_zero_weight() -> None:
    scores, y = np.array([0.1, 0.9, 0.8, 0.2]), np.array([0, 0, 1, 1])

    assert weighted_auc(scores, y, np.array([1.0, 0.0, 1.0, 1.0])) == 1.0
