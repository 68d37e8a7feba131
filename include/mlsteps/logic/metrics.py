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
    ece = sum(b["rows"] * abs(b["mean_score"] - b["fraud_rate"]) for b in bins) / len(y)
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


def calibration_bins(
    y: np.ndarray, scores: np.ndarray, bins: int = CALIBRATION_BINS
) -> list[dict[str, float]]:
    """Reliability table: equal-width score bins with their mean score and observed fraud rate."""
    import numpy as np

    index = np.minimum((scores * bins).astype(int), bins - 1)
    table = []
    for b in range(bins):
        mask = index == b
        if mask.any():
            table.append(
                {
                    "bin_low": b / bins,
                    "bin_high": (b + 1) / bins,
                    "rows": int(mask.sum()),
                    "mean_score": round(float(scores[mask].mean()), 6),
                    "fraud_rate": round(float(y[mask].mean()), 6),
                }
            )
    return table


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
