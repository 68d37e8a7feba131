"""The evaluation gates: absolute thresholds, then challenger vs champion.

Gate rule against the champion (both scored on the same holdout rows): let
``delta = AUC(challenger) - AUC(champion)`` and ``[low, high]`` its paired, stratified bootstrap
percentile interval (``gates.bootstrap_samples`` resamples, ``gates.confidence``, seeded by
``model.seed``). The challenger is rejected when its drop is both *material* (``delta <
-gates.max_auc_drop``) and *real* (``high < 0``: the whole interval lies below zero). Noise alone
cannot reject an equally good retrain, and a clear regression beyond the allowance is rejected;
a small holdout with a wide interval gives the challenger the benefit of the doubt, while the
absolute thresholds still apply. A rejection is a result (``approved: false``), not a failure.

With ``gates.segment_regression`` on, the same rule is applied within every segment of
``evaluation.segments`` that is large enough to judge (:mod:`mlsteps.logic.segments`): one segment
that regresses is enough to refuse the challenger, even when the global ROC-AUC improves.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.logic.metrics import paired_bootstrap, weighted_auc

if TYPE_CHECKING:
    import numpy as np

    from mlsteps.contract.config import EvaluationConfig, GatesConfig
    from mlsteps.logic.segments import SegmentResult

#: The gate settings a verdict depends on (``gates.*``); the approval settings are not thresholds.
THRESHOLD_FIELDS = (
    "min_roc_auc",
    "min_pr_auc",
    "max_log_loss",
    "max_calibration_error",
    "max_auc_drop",
    "bootstrap_samples",
    "confidence",
    "segment_regression",
)


@dataclass(frozen=True)
class Check:
    """One gate check and the sentence that explains its outcome."""

    name: str
    passed: bool
    sentence: str


@dataclass(frozen=True)
class Comparison:
    """Challenger minus champion ROC-AUC on the same holdout, with its paired bootstrap interval."""

    champion_version: str
    delta_roc_auc: float
    ci_low: float
    ci_high: float
    confidence: float
    samples: int


@dataclass(frozen=True)
class Scored:
    """A model version and its holdout scores and metrics."""

    version: str
    scores: np.ndarray
    metrics: dict[str, Any]
    calibration: list[dict[str, float]]


@dataclass(frozen=True)
class Judgement:
    """The champion when evaluation ran, its scores when it could be scored, and the check against it."""

    champion_version: str | None
    champion: Scored | None
    comparison: Comparison | None
    check: Check


def verdict_document(
    name: str, challenger: Scored, judgement: Judgement, checks: list[Check]
) -> dict[str, Any]:
    """The verdict, the reasons for it, and both models' metrics (the core of the report and result)."""
    approved = all(check.passed for check in checks)
    champion = judgement.champion
    return {
        "model_name": name,
        "model_version": challenger.version,
        "champion_version": judgement.champion_version,
        "approved": approved,
        "reasons": [check.sentence for check in checks if approved or not check.passed],
        "checks": [asdict(check) for check in checks],
        "metrics": {"challenger": challenger.metrics, "champion": champion.metrics if champion else None},
        "calibration": {
            "challenger": challenger.calibration,
            "champion": champion.calibration if champion else None,
        },
        "comparison": asdict(judgement.comparison) if judgement.comparison else None,
    }


def effective_thresholds(gates: GatesConfig, min_roc_auc: float) -> dict[str, Any]:
    """The thresholds this evaluation applies: the config's gates, with this run's ROC-AUC minimum.

    Recorded in the step's result and on the version (``mlflow_registry.THRESHOLDS_TAG``), so ``promote``,
    ``trace`` and the UI show what a version was judged against, not only the report.
    """
    return {**gates.model_dump(include=set(THRESHOLD_FIELDS)), "min_roc_auc": min_roc_auc}


def threshold_checks(metrics: dict[str, Any], gates: GatesConfig, min_roc_auc: float) -> list[Check]:
    """The absolute gates: minimum ROC-AUC and PR-AUC; maximum log loss and calibration error if set."""
    checks = [
        _at_least("roc_auc", "ROC-AUC", metrics["roc_auc"], min_roc_auc),
        _at_least("pr_auc", "PR-AUC", metrics["pr_auc"], gates.min_pr_auc),
    ]
    if gates.max_log_loss is not None:
        checks.append(_at_most("log_loss", "Log loss", metrics["log_loss"], gates.max_log_loss))
    if gates.max_calibration_error is not None:
        checks.append(
            _at_most(
                "calibration_error",
                "Expected calibration error",
                metrics["expected_calibration_error"],
                gates.max_calibration_error,
            )
        )
    return checks


def _at_most(name: str, label: str, value: float, maximum: float) -> Check:
    passed = value <= maximum
    relation = "is within" if passed else "exceeds"
    return Check(name, passed, f"{label} {value:.4f} on the holdout {relation} the maximum {maximum:.4f}.")


def _at_least(name: str, label: str, value: float, minimum: float) -> Check:
    passed = value >= minimum
    relation = "meets" if passed else "is below"
    return Check(name, passed, f"{label} {value:.4f} on the holdout {relation} the minimum {minimum:.4f}.")


def compare(
    y: np.ndarray,
    challenger: np.ndarray,
    champion: np.ndarray,
    champion_version: str,
    gates: GatesConfig,
    seed: int,
) -> Comparison:
    """The observed ROC-AUC difference and its paired bootstrap percentile interval."""
    import numpy as np

    uniform = np.ones(len(y))
    delta = weighted_auc(challenger, y, uniform) - weighted_auc(champion, y, uniform)
    deltas = paired_bootstrap(y, challenger, champion, gates.bootstrap_samples, seed)
    alpha = 1.0 - gates.confidence
    low, high = np.quantile(deltas, [alpha / 2, 1 - alpha / 2])
    return Comparison(
        champion_version, round(float(delta), 6), round(float(low), 6), round(float(high), 6),
        gates.confidence, gates.bootstrap_samples,
    )  # fmt: skip


def regressed(comparison: Comparison, gates: GatesConfig) -> bool:
    """A drop both beyond ``max_auc_drop`` (material) and significant (the interval lies below zero)."""
    return comparison.delta_roc_auc < -gates.max_auc_drop and comparison.ci_high < 0


def champion_check(comparison: Comparison, gates: GatesConfig) -> Check:
    """Reject only a drop that is both beyond ``max_auc_drop`` and significant (interval below zero)."""
    material = comparison.delta_roc_auc < -gates.max_auc_drop
    passed = not regressed(comparison, gates)
    interval = (
        f"ROC-AUC vs champion version {comparison.champion_version}: {comparison.delta_roc_auc:+.4f} "
        f"({comparison.confidence:.0%} CI {comparison.ci_low:+.4f} to {comparison.ci_high:+.4f})"
    )
    if passed and not material:
        verdict = f"within the allowed drop of {gates.max_auc_drop:.4f}"
    elif passed:
        verdict = (
            f"beyond the allowed drop of {gates.max_auc_drop:.4f} but not significant (the CI reaches 0)"
        )
    else:
        verdict = f"a significant drop beyond the allowed {gates.max_auc_drop:.4f}"
    return Check("champion", passed, f"{interval}: {verdict}.")


def segment_checks(
    segments: list[SegmentResult], judgement: Judgement, gates: GatesConfig, evaluation: EvaluationConfig
) -> list[Check]:
    """With ``gates.segment_regression`` on, the check that refuses a challenger regressing significantly
    on any segment large enough to judge; with it off, none (the segments are only reported)."""
    return [_segment_check(segments, judgement, gates, evaluation)] if gates.segment_regression else []


def _segment_check(
    segments: list[SegmentResult], judgement: Judgement, gates: GatesConfig, evaluation: EvaluationConfig
) -> Check:
    """Segments too small to judge never refuse; without a champion scored on the holdout there is
    nothing to compare, and the check passes saying so."""
    if judgement.champion is None:
        reason = (
            "there is no champion yet"
            if judgement.champion_version is None
            else f"champion version {judgement.champion_version} was not scored on this holdout"
        )
        return Check("segments", True, f"Segments are not compared: {reason}.")
    judged = [s for s in segments if s.comparison is not None]
    worse = [s for s in judged if s.comparison is not None and regressed(s.comparison, gates)]
    if worse:
        named = "; ".join(
            f"{s.name} {s.comparison.delta_roc_auc:+.4f} (CI {s.comparison.ci_low:+.4f} to "
            f"{s.comparison.ci_high:+.4f})"
            for s in worse
            if s.comparison is not None
        )
        return Check(
            "segments",
            False,
            f"ROC-AUC vs champion version {judgement.champion_version} drops significantly beyond the "
            f"allowed {gates.max_auc_drop:.4f} on {len(worse)} segment(s): {named}.",
        )
    if not judged:
        return Check(
            "segments",
            True,
            f"No segment is large enough to judge (at least {evaluation.min_rows} rows and "
            f"{evaluation.min_positives} of each class).",
        )
    return Check(
        "segments",
        True,
        f"No significant ROC-AUC regression on any of the {len(judged)} segment(s) large enough to judge "
        f"({len(segments) - len(judged)} too small to judge).",
    )


def summary(
    challenger: Scored, champion: Scored | None, approved: bool, checks: list[Check], min_roc_auc: float
) -> str:
    """One line, e.g. ``version 3: AUC 0.9312 vs champion 0.9107: approved (minimum AUC 0.80)``."""
    against = f" vs champion {champion.metrics['roc_auc']:.4f}" if champion else ", no champion"
    failed = sum(not check.passed for check in checks)
    verdict = "approved" if approved else f"rejected ({failed} check(s) failed)"
    auc = challenger.metrics["roc_auc"]
    return f"version {challenger.version}: AUC {auc:.4f}{against}: {verdict} (minimum AUC {min_roc_auc:.2f})"
