"""The evaluation gates: absolute thresholds, the verdict and its summary line."""

from __future__ import annotations

import numpy as np
import pytest

from mlsteps.contract.config import GatesConfig
from mlsteps.logic.gates import (
    Check,
    Judgement,
    Scored,
    compare,
    effective_thresholds,
    summary,
    threshold_checks,
    verdict_document,
)

METRICS = {"roc_auc": 0.8, "pr_auc": 0.4, "log_loss": 0.3}


def scored(version: str, roc_auc: float) -> Scored:
    return Scored(version, np.array([0.1, 0.9]), {"roc_auc": roc_auc}, [])


@pytest.mark.parametrize(("minimum", "passed"), [(0.7, True), (0.8, True), (0.81, False)])
def test_roc_auc_check_fails_only_below_the_minimum(minimum: float, passed: bool) -> None:
    roc_auc = threshold_checks(METRICS, GatesConfig(), minimum)[0]

    assert (roc_auc.name, roc_auc.passed) == ("roc_auc", passed)


def test_roc_auc_check_below_the_minimum_says_so() -> None:
    roc_auc = threshold_checks(METRICS, GatesConfig(), 0.9)[0]

    assert roc_auc.sentence == "ROC-AUC 0.8000 on the holdout is below the minimum 0.9000."


def test_log_loss_is_checked_only_when_configured() -> None:
    assert [c.name for c in threshold_checks(METRICS, GatesConfig(), 0.5)] == ["roc_auc", "pr_auc"]


@pytest.mark.parametrize(("maximum", "passed"), [(0.5, True), (0.2, False)])
def test_log_loss_check_fails_above_the_maximum(maximum: float, passed: bool) -> None:
    log_loss = threshold_checks(METRICS, GatesConfig(max_log_loss=maximum), 0.5)[-1]

    assert (log_loss.name, log_loss.passed) == ("log_loss", passed)


def test_effective_thresholds_take_this_runs_roc_auc_minimum() -> None:
    thresholds = effective_thresholds(GatesConfig(min_roc_auc=0.75), 0.6)

    assert thresholds["min_roc_auc"] == 0.6
    assert "require_approval" not in thresholds


def test_a_rejection_gives_only_the_failed_checks_as_reasons() -> None:
    checks = [Check("roc_auc", False, "too low."), Check("pr_auc", True, "fine.")]
    judgement = Judgement(None, None, None, Check("champion", True, "no champion."))

    document = verdict_document("model", scored("2", 0.6), judgement, checks)

    assert (document["approved"], document["reasons"]) == (False, ["too low."])


def test_summary_line_names_both_aucs_and_the_verdict() -> None:
    line = summary(scored("3", 0.93), scored("2", 0.91), True, [Check("roc_auc", True, "")], 0.8)

    assert line == "version 3: AUC 0.9300 vs champion 0.9100: approved (minimum AUC 0.80)"


def test_comparison_of_identical_scores_is_zero_with_a_zero_interval() -> None:
    rng = np.random.default_rng(1)
    y, scores = rng.integers(0, 2, 200), rng.random(200)

    comparison = compare(y, scores, scores.copy(), "1", GatesConfig(bootstrap_samples=20), seed=0)

    assert (comparison.delta_roc_auc, comparison.ci_low, comparison.ci_high) == (0.0, 0.0, 0.0)


def test_calibration_error_is_checked_only_when_configured() -> None:
    names = [
        check.name
        for check in threshold_checks({**METRICS, "expected_calibration_error": 0.2}, GatesConfig(), 0.5)
    ]

    assert "calibration_error" not in names


@pytest.mark.parametrize(("maximum", "passed"), [(0.25, True), (0.2, True), (0.1, False)])
def test_calibration_error_check_fails_above_the_maximum(maximum: float, passed: bool) -> None:
    metrics = {**METRICS, "expected_calibration_error": 0.2}

    check = threshold_checks(metrics, GatesConfig(max_calibration_error=maximum), 0.5)[-1]

    assert (check.name, check.passed) == ("calibration_error", passed)


def test_a_calibration_error_above_the_maximum_says_so() -> None:
    metrics = {**METRICS, "expected_calibration_error": 0.21}

    check = threshold_checks(metrics, GatesConfig(max_calibration_error=0.05), 0.5)[-1]

    assert check.sentence == "Expected calibration error 0.2100 on the holdout exceeds the maximum 0.0500."


def test_effective_thresholds_include_the_calibration_error_maximum() -> None:
    thresholds = effective_thresholds(GatesConfig(max_calibration_error=0.05), 0.6)

    assert thresholds["max_calibration_error"] == 0.05
