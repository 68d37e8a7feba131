"""Segments of the holdout (``evaluation.segments``): which segment each row is in, and challenger vs
champion within each one, with the same paired bootstrap as the global comparison.

A categorical column gives one segment per value (a value outside its ``categories`` counts as
``OTHER_CATEGORY``, as at training and scoring); a numeric column is bucketed by ``bins``, whose
edges ``e0 < e1 < ... < en`` give ``< e0``, ``[e0, e1)``, ..., ``>= en``. A missing value is its own
segment, ``MISSING``. A segment with fewer than ``evaluation.min_rows`` rows, or fewer than
``evaluation.min_positives`` rows of either class, is too small to judge: it is listed, never judged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.logic.gates import Comparison, compare, regressed

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlsteps.contract.config import PipelineConfig, SegmentSpec

#: The segment of rows whose segment column is empty.
MISSING = "(missing)"

TOO_SMALL = "too small to judge"
NO_CHAMPION = "no champion to compare"
REGRESSED = "significant regression"
NOT_REGRESSED = "no significant regression"


@dataclass(frozen=True)
class SegmentResult:
    """One segment of the holdout: its size, both models' ROC-AUC on it, and the comparison."""

    column: str
    value: str
    rows: int
    positives: int
    challenger_roc_auc: float | None
    champion_roc_auc: float | None
    comparison: Comparison | None
    verdict: str

    @property
    def name(self) -> str:
        """How reasons and summaries name the segment, e.g. ``merchant_category=travel``."""
        return f"{self.column}={self.value}"

    def summary(self) -> dict[str, Any]:
        """The compact form the step's result and report JSON carry."""
        comparison = self.comparison
        return {
            "segment": self.name,
            "rows": self.rows,
            "positives": self.positives,
            "champion_roc_auc": self.champion_roc_auc,
            "challenger_roc_auc": self.challenger_roc_auc,
            "delta_roc_auc": comparison.delta_roc_auc if comparison else None,
            "ci_low": comparison.ci_low if comparison else None,
            "ci_high": comparison.ci_high if comparison else None,
            "verdict": self.verdict,
        }


def bucket_names(bins: tuple[float, ...]) -> list[str]:
    """The bucket names of ``bins`` in order, e.g. ``[20, 100]`` gives ``< 20``, ``[20, 100)``, ``>= 100``."""
    edges = [f"{edge:g}" for edge in bins]
    inner = [f"[{low}, {high})" for low, high in zip(edges, edges[1:], strict=False)]
    return [f"< {edges[0]}", *inner, f">= {edges[-1]}"]


def segment_values(frame: pd.DataFrame, segment: SegmentSpec, config: PipelineConfig) -> pd.Series:
    """Each row's segment value (a string) for one segment column, in ``frame``'s index."""
    import numpy as np
    import pandas as pd

    from mlsteps.platform.datasets import categorical_values

    series = frame[segment.column]
    spec = config.dataset.columns[segment.column]
    if segment.bins is not None:
        numbers = pd.to_numeric(series, errors="coerce").to_numpy(dtype="float64")
        names = np.array(bucket_names(segment.bins), dtype=object)
        named = names[np.searchsorted(np.asarray(segment.bins), numbers, side="right")]
        return pd.Series(np.where(np.isnan(numbers), MISSING, named), index=frame.index, dtype=object)
    if spec.type == "categorical":
        series = categorical_values(series, spec)
    return series.astype(object).where(series.notna(), MISSING).astype(str)


def segment_order(values: pd.Series, segment: SegmentSpec, config: PipelineConfig) -> list[str]:
    """The segment values present, in a stable order: bucket or category order, else sorted."""
    present = set(values.unique())
    spec = config.dataset.columns[segment.column]
    if segment.bins is not None:
        known = bucket_names(segment.bins)
    elif spec.type == "categorical":
        known = spec.encoded_categories
    else:
        known = []
    ordered = [value for value in known if value in present]
    return ordered + sorted(present - set(ordered) - {MISSING}) + ([MISSING] if MISSING in present else [])


def judge_segments(
    frame: pd.DataFrame,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    champion_version: str | None,
    config: PipelineConfig,
) -> list[SegmentResult]:
    """Challenger vs champion ROC-AUC on each segment of the holdout (the same rows for both).

    Args:
        frame: The holdout rows, holding every segment column.
        y: Their 0/1 labels.
        challenger: The challenger's scores of those rows.
        champion: The champion's scores of the same rows, or None without a champion.
        champion_version: The champion's version (named in the comparison).
        config: The pipeline config: ``evaluation`` and ``gates`` settings and the seed.

    Returns:
        One result per segment present in the holdout, column by column in config order.
    """
    results = []
    for segment in config.evaluation.segments:
        values = segment_values(frame, segment, config)
        for value in segment_order(values, segment, config):
            rows = (values == value).to_numpy()
            results.append(
                _judge_one(
                    segment.column,
                    value,
                    y[rows],
                    challenger[rows],
                    None if champion is None else champion[rows],
                    champion_version,
                    config,
                )
            )
    return results


def _judge_one(
    column: str,
    value: str,
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray | None,
    champion_version: str | None,
    config: PipelineConfig,
) -> SegmentResult:
    from sklearn.metrics import roc_auc_score

    evaluation = config.evaluation
    positives = int(y.sum())
    both_classes = 0 < positives < len(y)

    def auc(scores: np.ndarray | None) -> float | None:
        return round(float(roc_auc_score(y, scores)), 6) if scores is not None and both_classes else None

    too_small = len(y) < evaluation.min_rows or min(positives, len(y) - positives) < evaluation.min_positives
    comparison = None
    if too_small:
        verdict = TOO_SMALL
    elif champion is None or champion_version is None:
        verdict = NO_CHAMPION
    else:
        comparison = compare(y, challenger, champion, champion_version, config.gates, config.model.seed)
        verdict = REGRESSED if regressed(comparison, config.gates) else NOT_REGRESSED
    return SegmentResult(
        column, value, len(y), positives, auc(challenger), auc(champion), comparison, verdict
    )
