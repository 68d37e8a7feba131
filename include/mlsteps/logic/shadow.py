"""Champion vs shadow on one scored day: how alike their scores and decisions are, before any label.

Pure functions over arrays: ``compare-shadow`` joins the two committed partitions by row id and
calls :func:`compare_scores`; the performance monitor calls :func:`paired_auc_difference` on the
labelled rows both models scored.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from mlsteps.logic.metrics import paired_bootstrap, weighted_auc


@dataclass(frozen=True)
class ShadowComparison:
    """How the shadow's scores and decisions relate to the champion's on the same rows."""

    rows: int
    #: Linear and rank correlation of the two scores; None when either score is constant.
    pearson: float | None
    spearman: float | None
    #: Share of rows where both models made the same decision.
    decision_agreement: float
    champion_flagged_rate: float
    shadow_flagged_rate: float
    #: Rows flagged by one model only.
    flagged_by_champion_only: int
    flagged_by_shadow_only: int

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class PairedDifference:
    """Shadow minus champion ROC-AUC on the same labelled rows, with a paired bootstrap interval."""

    champion_roc_auc: float
    shadow_roc_auc: float
    delta_roc_auc: float
    ci_low: float
    ci_high: float


def compare_scores(
    champion_scores: np.ndarray,
    shadow_scores: np.ndarray,
    champion_decisions: np.ndarray,
    shadow_decisions: np.ndarray,
) -> ShadowComparison:
    """Correlations, decision agreement and flagged rates of two models' outputs on the same rows.

    Raises:
        ValueError: The arrays differ in length or are empty (the rows must be joined first).
    """
    rows = len(champion_scores)
    if rows == 0 or not rows == len(shadow_scores) == len(champion_decisions) == len(shadow_decisions):
        raise ValueError("compare_scores needs the same, non-empty rows for both models")
    first, second = champion_decisions.astype(bool), shadow_decisions.astype(bool)
    return ShadowComparison(
        rows=rows,
        pearson=_correlation(champion_scores, shadow_scores),
        spearman=_correlation(_ranks(champion_scores), _ranks(shadow_scores)),
        decision_agreement=round(float(np.mean(first == second)), 6),
        champion_flagged_rate=round(float(np.mean(first)), 6),
        shadow_flagged_rate=round(float(np.mean(second)), 6),
        flagged_by_champion_only=int(np.sum(first & ~second)),
        flagged_by_shadow_only=int(np.sum(second & ~first)),
    )


def paired_auc_difference(
    y: np.ndarray,
    champion_scores: np.ndarray,
    shadow_scores: np.ndarray,
    samples: int,
    confidence: float,
    seed: int,
) -> PairedDifference | None:
    """AUC(shadow) - AUC(champion) on the same rows, resampled together (same indices for both).

    None when the rows hold a single class (no ROC-AUC is defined).
    """
    if not (np.any(y == 1) and np.any(y == 0)):
        return None
    uniform = np.ones(len(y))
    champion = weighted_auc(champion_scores, y, uniform)
    shadow = weighted_auc(shadow_scores, y, uniform)
    deltas = paired_bootstrap(y, shadow_scores, champion_scores, samples, seed)
    alpha = (1.0 - confidence) / 2
    low, high = np.quantile(deltas, [alpha, 1 - alpha])
    return PairedDifference(
        round(champion, 6), round(shadow, 6), round(shadow - champion, 6), round(float(low), 6),
        round(float(high), 6),
    )  # fmt: skip


def _ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks (ties share their mean rank), as Spearman's correlation uses them."""
    from scipy.stats import rankdata

    return np.asarray(rankdata(values), dtype="float64")


def _correlation(first: np.ndarray, second: np.ndarray) -> float | None:
    a, b = np.asarray(first, dtype="float64"), np.asarray(second, dtype="float64")
    if len(a) < 2 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return round(float(np.corrcoef(a, b)[0, 1]), 6)
