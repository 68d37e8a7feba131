"""Champion vs shadow on in-memory arrays: correlations, agreement, flagged rates, paired bootstrap."""

from __future__ import annotations

import numpy as np
import pytest

from mlsteps.logic.shadow import compare_scores, paired_auc_difference

RNG = np.random.default_rng(7)
SCORES = RNG.random(2_000)


def test_identical_models_correlate_perfectly_and_always_agree() -> None:
    decisions = SCORES >= 0.5
    comparison = compare_scores(SCORES, SCORES.copy(), decisions, decisions.copy())
    assert comparison.pearson == pytest.approx(1.0)
    assert comparison.spearman == pytest.approx(1.0)
    assert comparison.decision_agreement == 1.0


def test_a_monotone_transform_keeps_the_rank_correlation_only() -> None:
    shadow = SCORES**8
    comparison = compare_scores(SCORES, shadow, SCORES >= 0.5, shadow >= 0.5)
    assert comparison.spearman == pytest.approx(1.0)
    assert comparison.pearson is not None
    assert comparison.pearson < 0.95


def test_flagged_rates_and_disagreements_are_counted_per_model() -> None:
    champion = np.array([True, True, False, False])
    shadow = np.array([True, False, True, True])
    comparison = compare_scores(np.arange(4.0), np.arange(4.0), champion, shadow)
    assert (comparison.champion_flagged_rate, comparison.shadow_flagged_rate) == (0.5, 0.75)
    assert comparison.decision_agreement == 0.25
    assert (comparison.flagged_by_champion_only, comparison.flagged_by_shadow_only) == (1, 2)


def test_a_constant_score_has_no_correlation() -> None:
    constant = np.full(len(SCORES), 0.3)
    assert compare_scores(SCORES, constant, SCORES >= 0.5, constant >= 0.5).pearson is None


def test_rows_must_be_joined_first() -> None:
    with pytest.raises(ValueError, match="same, non-empty rows"):
        compare_scores(SCORES, SCORES[:10], SCORES >= 0.5, SCORES[:10] >= 0.5)


def labelled(separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = (rng.random(1_500) < 0.2).astype(int)
    return y, rng.normal(0.0, 1.0, len(y)) + separation * y


def test_a_better_shadow_has_a_paired_interval_above_zero() -> None:
    y, weak = labelled(0.5, 1)
    strong = weak + 1.5 * y
    difference = paired_auc_difference(y, weak, strong, samples=200, confidence=0.95, seed=3)
    assert difference is not None
    assert difference.delta_roc_auc == pytest.approx(difference.shadow_roc_auc - difference.champion_roc_auc)
    assert 0 < difference.ci_low <= difference.delta_roc_auc <= difference.ci_high


def test_the_same_model_twice_differs_by_exactly_zero() -> None:
    y, scores = labelled(1.0, 2)
    difference = paired_auc_difference(y, scores, scores.copy(), samples=100, confidence=0.95, seed=3)
    assert difference is not None
    assert (difference.delta_roc_auc, difference.ci_low, difference.ci_high) == (0.0, 0.0, 0.0)


def test_one_class_has_no_difference() -> None:
    y = np.zeros(100, dtype=int)
    assert paired_auc_difference(y, SCORES[:100], SCORES[:100], 50, 0.95, 0) is None
