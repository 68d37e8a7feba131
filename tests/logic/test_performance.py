"""Realized performance on labelled rows, and the rule that calls a drop significant (in memory)."""

from __future__ import annotations

import numpy as np
import pytest

from mlsteps.logic.performance import (
    DayJudgement,
    Interval,
    beyond_tolerance,
    bootstrap_metrics,
    drop_verdict,
    expected_calibration_error,
    join_labels,
    realized_metrics,
)


def _scored(rows: int, separation: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Labels at a 20% base rate and scores that separate them by ``separation``."""
    rng = np.random.default_rng(seed)
    y = (rng.random(rows) < 0.2).astype(int)
    logits = rng.normal(0.0, 1.0, rows) + separation * (2 * y - 1) - 1.4
    return y, 1 / (1 + np.exp(-logits))


def _day(day: str, dropped: bool, judged: bool = True) -> DayJudgement:
    return DayJudgement(day, Interval(0.7, 0.65, 0.75) if judged else None, dropped)


def test_perfectly_calibrated_bins_have_no_calibration_error() -> None:
    y = np.array([0, 0, 0, 1, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert expected_calibration_error(y, p) == pytest.approx(0.0)


def test_calibration_error_is_the_gap_of_a_constant_score() -> None:
    y = np.array([1, 0, 0, 0])
    assert expected_calibration_error(y, np.full(4, 0.75)) == pytest.approx(0.5)


def test_ranking_metrics_are_none_when_the_labels_have_one_class() -> None:
    metrics = realized_metrics(np.zeros(5, dtype=int), np.linspace(0.1, 0.9, 5), threshold=0.5)
    assert metrics["roc_auc"] is None
    assert metrics["pr_auc"] is None


def test_base_and_flagged_rates_are_shares_of_rows() -> None:
    metrics = realized_metrics(np.array([1, 0, 0, 0]), np.array([0.9, 0.6, 0.2, 0.1]), threshold=0.5)
    assert metrics["base_rate"] == pytest.approx(0.25)
    assert metrics["flagged_rate"] == pytest.approx(0.5)


def test_a_confident_miss_costs_a_finite_log_loss() -> None:
    metrics = realized_metrics(np.array([1, 0]), np.array([0.0, 1.0]), threshold=0.5)
    assert np.isfinite(metrics["log_loss"])


def test_interval_contains_the_observed_value() -> None:
    y, p = _scored(2000, 1.0)
    auc = bootstrap_metrics(y, p, 0.5, samples=100, confidence=0.95, seed=1)["roc_auc"]
    assert auc.low is not None
    assert auc.high is not None
    assert auc.value is not None
    assert auc.low < auc.value < auc.high


def test_bootstrap_is_reproducible_by_seed() -> None:
    y, p = _scored(500, 1.0)
    assert bootstrap_metrics(y, p, 0.5, 50, 0.9, seed=7) == bootstrap_metrics(y, p, 0.5, 50, 0.9, seed=7)


def test_weaker_scores_give_a_lower_interval() -> None:
    y, strong = _scored(3000, 1.5, seed=3)
    _, weak = _scored(3000, 0.3, seed=3)
    strong_auc = bootstrap_metrics(y, strong, 0.5, 100, 0.95, seed=1)["roc_auc"]
    weak_auc = bootstrap_metrics(y, weak, 0.5, 100, 0.95, seed=1)["roc_auc"]
    assert weak_auc.high is not None
    assert strong_auc.low is not None
    assert weak_auc.high < strong_auc.low


@pytest.mark.parametrize(
    ("metric", "interval", "dropped"),
    [
        ("roc_auc", Interval(0.80, 0.78, 0.84), False),  # reaches into the tolerated band
        ("roc_auc", Interval(0.75, 0.72, 0.77), True),  # wholly below 0.85 - 0.05
        ("pr_auc", Interval(0.75, 0.72, 0.80), False),  # touches 0.80 exactly: not beyond
        ("log_loss", Interval(0.95, 0.91, 0.99), True),  # wholly above 0.85 + 0.05
        ("log_loss", Interval(0.75, 0.72, 0.77), False),  # better than evaluated
        ("roc_auc", Interval(None, None, None), False),  # nothing to judge
    ],
)
def test_only_an_interval_wholly_beyond_the_tolerance_is_a_drop(
    metric: str, interval: Interval, dropped: bool
) -> None:
    assert beyond_tolerance(interval, metric, level=0.85, tolerance=0.05) is dropped  # type: ignore[arg-type]


def test_enough_dropped_days_in_a_row_are_significant() -> None:
    verdict = drop_verdict([_day("d1", False), _day("d2", True), _day("d3", True)], consecutive_days=2)
    assert verdict.significant
    assert verdict.reason.endswith("since d2")


def test_a_recovered_latest_day_ends_the_run() -> None:
    verdict = drop_verdict([_day("d1", True), _day("d2", True), _day("d3", False)], consecutive_days=2)
    assert not verdict.significant
    assert verdict.run == 0


def test_days_without_enough_labels_neither_count_nor_break_a_run() -> None:
    days = [_day("d1", True), _day("d2", False, judged=False), _day("d3", True)]
    assert drop_verdict(days, consecutive_days=2).significant


def test_no_judged_day_is_waiting_not_a_drop() -> None:
    verdict = drop_verdict([_day("d1", False, judged=False)], consecutive_days=1)
    assert not verdict.significant
    assert "no day has enough labels" in verdict.reason


def test_only_rows_with_a_known_label_are_joined() -> None:
    import pandas as pd

    scored = pd.DataFrame({"id": ["a", "b", "c"], "score": [0.1, 0.5, 0.9]})
    labels = pd.DataFrame({"id": ["a", "c", "z"], "y": [False, None, True]})
    joined = join_labels(scored, labels, "id", "y")
    assert joined.to_dict("list") == {"id": ["a"], "score": [0.1], "y": [0]}


def test_a_row_labelled_twice_keeps_its_last_label() -> None:
    import pandas as pd

    scored = pd.DataFrame({"id": ["a"], "score": [0.1]})
    labels = pd.DataFrame({"id": ["a", "a"], "y": [False, True]})
    assert join_labels(scored, labels, "id", "y")["y"].tolist() == [1]
