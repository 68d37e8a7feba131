"""Metrics of binary scores on a holdout: classification metrics, calibration, and the paired bootstrap."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

CALIBRATION_BINS = 10


def classification_metrics(y: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, Any]:
    """Ranking, threshold, probability and calibration metrics of binary scores.

    Args:
        y: 0/1 labels.
        scores: Predicted probabilities of class 1.
        threshold: Scores at or above it count as positive.

    Returns:
        A flat mapping of rounded metrics plus the confusion counts.
    """
    import numpy as np
    from sklearn.metrics import average_precision_score, confusion_matrix, log_loss, roc_auc_score

    predicted = (scores >= threshold).astype(int)
    tn, fp, fn, tp = (int(v) for v in confusion_matrix(y, predicted, labels=[0, 1]).ravel())
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    clipped = np.clip(scores.astype("float64"), 1e-7, 1 - 1e-7)
    bins = calibration_bins(y, scores)
    ece = sum(b["rows"] * abs(b["mean_score"] - b["positive_rate"]) for b in bins) / len(y)
    values = {
        "roc_auc": roc_auc_score(y, scores),
        "pr_auc": average_precision_score(y, scores),
        "f1": f1,
        "precision": precision,
        "recall": recall,
        "log_loss": log_loss(y, clipped, labels=[0, 1]),
        "brier": float(np.mean((clipped - y) ** 2)),
        "expected_calibration_error": ece,
    }
    return {
        **{key: round(float(value), 6) for key, value in values.items()},
        "threshold": threshold,
        "rows": int(len(y)),
        "positives": int(y.sum()),
        "confusion": {"tp": tp, "fp": fp, "tn": tn, "fn": fn},
    }


def calibration_totals(
    y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width score bin: the rows' total weight, weighted score sum and weighted label sum.

    The one binning behind the reliability table and the expected calibration error; a score of 1.0
    falls in the last bin.
    """
    import numpy as np

    w = np.ones(len(y)) if weights is None else weights
    index = np.minimum((scores * bins).astype(int), bins - 1)
    return (
        np.bincount(index, weights=w, minlength=bins),
        np.bincount(index, weights=w * scores, minlength=bins),
        np.bincount(index, weights=w * y, minlength=bins),
    )


def calibration_bins(
    y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Reliability table: equal-width score bins with their mean score and observed positive rate."""
    total, predicted, observed = calibration_totals(y, scores, bins)
    return [
        {
            "bin_low": b / bins,
            "bin_high": (b + 1) / bins,
            "rows": int(total[b]),
            "mean_score": round(float(predicted[b] / total[b]), 6),
            "positive_rate": round(float(observed[b] / total[b]), 6),
        }
        for b in range(bins)
        if total[b] > 0
    ]


def expected_calibration_error(
    y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS, weights: np.ndarray | None = None
) -> float:
    """Weighted mean gap between predicted and observed positive rate over the calibration bins."""
    total, predicted, observed = calibration_totals(y, scores, bins, weights)
    filled = total > 0
    return float(abs(predicted[filled] - observed[filled]).sum() / total.sum())


def weighted_auc(scores: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """ROC-AUC with per-row weights (bootstrap counts); ties count as half (the Mann-Whitney statistic)."""
    import numpy as np

    _, group = np.unique(scores, return_inverse=True)
    return _grouped_auc(group, y, weights)


def paired_bootstrap(
    y: np.ndarray, first: np.ndarray, second: np.ndarray, samples: int, seed: int
) -> np.ndarray:
    """AUC(first) - AUC(second) over stratified resamples of the same rows; pairing cancels shared noise."""
    import numpy as np

    rng = np.random.default_rng(seed)
    positives, negatives = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    _, first_group = np.unique(first, return_inverse=True)
    _, second_group = np.unique(second, return_inverse=True)
    deltas = np.empty(samples)
    for i in range(samples):
        drawn = np.concatenate(
            [
                positives[rng.integers(0, len(positives), len(positives))],
                negatives[rng.integers(0, len(negatives), len(negatives))],
            ]
        )
        weights = np.bincount(drawn, minlength=len(y)).astype("float64")
        deltas[i] = _grouped_auc(first_group, y, weights) - _grouped_auc(second_group, y, weights)
    return deltas


def _grouped_auc(group: np.ndarray, y: np.ndarray, weights: np.ndarray) -> float:
    """AUC from rows' ascending score-rank groups: each positive beats the negatives ranked below it."""
    import numpy as np

    positives = np.bincount(group, weights=weights * y)
    negatives = np.bincount(group, weights=weights * (1 - y))
    negatives_below = np.cumsum(negatives) - negatives
    return float(
        (positives * (negatives_below + 0.5 * negatives)).sum() / (positives.sum() * negatives.sum())
    )
