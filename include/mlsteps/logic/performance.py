"""Realized model performance on delayed labels: metrics, bootstrap intervals and the drop rule.

Pure functions over arrays (kedro-node style): the performance monitor step reads predictions and
labels from the lake, joins them and calls these. A day's metric is *significantly* worse than the
level recorded at evaluation when its whole confidence interval lies beyond that level by more than
the tolerance (below it for ROC-AUC and PR-AUC, above it for log loss), on ``consecutive_days``
judged days in a row. Days without enough labels are not judged: they neither count as a drop nor
break a run of drops.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from mlsteps.logic.metrics import expected_calibration_error

if TYPE_CHECKING:
    import pandas as pd

JudgedMetric = Literal["roc_auc", "pr_auc", "log_loss"]
#: Every realized metric, in report order.
METRICS = ("roc_auc", "pr_auc", "log_loss", "expected_calibration_error", "base_rate", "flagged_rate")
LOWER_IS_BETTER = frozenset({"log_loss", "expected_calibration_error"})
#: Probabilities are clipped so a confident miss costs a large, finite log loss.
EPSILON = 1e-7


@dataclass(frozen=True)
class Interval:
    """A metric's value on the observed rows and its bootstrap percentile interval."""

    value: float | None
    low: float | None
    high: float | None


@dataclass(frozen=True)
class DayJudgement:
    """One day's judged metric: its interval, and whether it is beyond the tolerated level."""

    day: str
    interval: Interval | None  # None: too few labels to judge
    dropped: bool


@dataclass(frozen=True)
class DropVerdict:
    """Whether the latest judged days make a significant drop, and why, in one sentence."""

    significant: bool
    run: int
    reason: str


def join_labels(scored: pd.DataFrame, labels: pd.DataFrame, row_id: str, label: str) -> pd.DataFrame:
    """The scored rows whose label is known, by row id, with the label as 0/1.

    Unknown (null) labels are not yet known, not negatives; a row labelled twice keeps its last label.
    """
    known = labels.dropna(subset=[label]).drop_duplicates(subset=[row_id], keep="last")
    joined = scored.merge(known[[row_id, label]], on=row_id, how="inner", validate="one_to_one")
    return joined.assign(**{label: joined[label].astype(int)})


def realized_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, weights: np.ndarray | None = None
) -> dict[str, float | None]:
    """The six realized metrics of one set of labelled rows; ranking metrics are None on one class."""
    from sklearn.metrics import average_precision_score, log_loss, roc_auc_score

    w = np.ones(len(y)) if weights is None else weights
    both_classes = bool(np.any(w[y == 1] > 0) and np.any(w[y == 0] > 0))
    clipped = np.clip(p, EPSILON, 1 - EPSILON)
    return {
        "roc_auc": float(roc_auc_score(y, p, sample_weight=w)) if both_classes else None,
        "pr_auc": float(average_precision_score(y, p, sample_weight=w)) if both_classes else None,
        "log_loss": float(log_loss(y, clipped, sample_weight=w, labels=[0, 1])),
        "expected_calibration_error": expected_calibration_error(y, p, weights=w),
        "base_rate": float(np.average(y, weights=w)),
        "flagged_rate": float(np.average(p >= threshold, weights=w)),
    }


def bootstrap_metrics(
    y: np.ndarray, p: np.ndarray, threshold: float, samples: int, confidence: float, seed: int
) -> dict[str, Interval]:
    """Each metric with its percentile interval over ``samples`` row resamples (seeded, so reruns agree)."""
    observed = realized_metrics(y, p, threshold)
    rng = np.random.default_rng(seed)
    drawn: dict[str, list[float]] = {name: [] for name in METRICS}
    for _ in range(samples):
        weights = np.bincount(rng.integers(0, len(y), len(y)), minlength=len(y)).astype("float64")
        for name, value in realized_metrics(y, p, threshold, weights).items():
            if value is not None:
                drawn[name].append(value)
    alpha = (1.0 - confidence) / 2
    intervals = {}
    for name in METRICS:
        values = drawn[name]
        if observed[name] is None or not values:
            intervals[name] = Interval(observed[name], None, None)
            continue
        low, high = np.quantile(values, [alpha, 1 - alpha])
        intervals[name] = Interval(observed[name], float(low), float(high))
    return intervals


def beyond_tolerance(interval: Interval, metric: JudgedMetric, level: float, tolerance: float) -> bool:
    """True when the whole interval is worse than the evaluation level by more than the tolerance."""
    if interval.low is None or interval.high is None:
        return False
    if metric in LOWER_IS_BETTER:
        return interval.low > level + tolerance
    return interval.high < level - tolerance


def drop_verdict(days: Sequence[DayJudgement], consecutive_days: int) -> DropVerdict:
    """A drop is significant when the latest ``consecutive_days`` judged days all dropped."""
    judged = [day for day in days if day.interval is not None]
    run = 0
    for day in reversed(judged):
        if not day.dropped:
            break
        run += 1
    if not judged:
        return DropVerdict(False, 0, "no day has enough labels to judge yet")
    if run >= consecutive_days:
        since = judged[-run].day
        return DropVerdict(True, run, f"{run} judged days in a row below the tolerated level, since {since}")
    latest = judged[-1].day
    return DropVerdict(
        False,
        run,
        f"{run} of {consecutive_days} judged days in a row below the tolerated level (latest {latest})",
    )


def coverage_text(record: dict[str, Any]) -> str:
    """A day record's label coverage, e.g. ``900/1000 rows labelled``."""
    return f"{record['labeled_rows']}/{record['scored_rows']} rows labelled"


def judged_text(record: dict[str, Any]) -> str:
    """A judged day record's metric and interval against its evaluation level."""
    judged = record["metrics"][record["metric"]]
    figure = f"{record['metric']} {judged['value']:.4f} [{judged['low']:.4f}, {judged['high']:.4f}]"
    return f"{figure} vs evaluated {record['evaluation_level']:.4f}"
