"""Gate a challenger on its snapshot's holdout: absolute thresholds, then challenger vs champion.

Gate rule against the champion (both scored on the same holdout rows): let
``delta = AUC(challenger) - AUC(champion)`` and ``[low, high]`` its paired, stratified bootstrap
percentile interval (``gates.bootstrap_samples`` resamples, ``gates.confidence``, seeded by
``model.seed``). The challenger is rejected when its drop is both *material* (``delta <
-gates.max_auc_drop``) and *real* (``high < 0``: the whole interval lies below zero). Noise alone
cannot reject an equally good retrain, and a clear regression beyond the allowance is rejected;
a small holdout with a wide interval gives the challenger the benefit of the doubt, while the
absolute thresholds still apply. A rejection is a result (``approved: false``), not a failure.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import evaluation_report_prefix, training_run_name
from mlsteps.contract.results import EvaluateResult
from mlsteps.errors import StepError
from mlsteps.platform import mlflow_registry
from mlsteps.platform.context import StepContext, parse_day
from mlsteps.platform.datasets import TrainingSet, load_training_set, model_input
from mlsteps.reports.html import Report, save_report

if TYPE_CHECKING:
    import numpy as np
    import xgboost as xgb
    from matplotlib.figure import Figure
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.contract.config import GatesConfig, PipelineConfig

log = logging.getLogger(__name__)

CALIBRATION_BINS = 10
#: The gate settings a verdict depends on (``gates.*``); the approval settings are not thresholds.
THRESHOLD_FIELDS = (
    "min_roc_auc",
    "min_pr_auc",
    "max_log_loss",
    "max_auc_drop",
    "bootstrap_samples",
    "confidence",
)
#: Equal-width score bins of the score distribution figure.
SCORE_BINS = 50


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-version", required=True, help="The challenger's registry version number.")
    parser.add_argument("--training-run", required=True, help="The snapshot whose holdout judges the model.")
    parser.add_argument("--min-roc-auc", type=float, help="Override gates.min_roc_auc for this run.")
    parser.add_argument("--ds", type=parse_day, help="Day the report is filed under (default: today, UTC).")


def run(args: argparse.Namespace) -> EvaluateResult:
    context = StepContext.from_args(args)
    config = context.config
    name = config.model.registered_name
    version = mlflow_registry.parse_version(args.model_version)
    min_roc_auc = _min_roc_auc(args.min_roc_auc, config)
    client = mlflow_registry.mlflow_client()
    challenger_version = mlflow_registry.get_version(client, name, version)
    mlflow_registry.require_lineage(challenger_version, config)
    _require_same_snapshot(challenger_version, args.training_run)
    snapshot = load_training_set(context.lake, args.training_run)
    y = _holdout_labels(snapshot)
    challenger = score_version(name, version, snapshot, config)
    checks = threshold_checks(challenger.metrics, config.gates, min_roc_auc)
    judgement = judge_against_champion(client, config, version, snapshot, challenger)
    checks.append(judgement.check)
    document = {
        **verdict_document(name, challenger, judgement, checks),
        "training_run": snapshot.manifest["training_run"],
        "gates": {**config.gates.model_dump(), "min_roc_auc": min_roc_auc},
        "thresholds": effective_thresholds(config.gates, min_roc_auc),
        "holdout": {"rows": int(len(y)), "positives": int(y.sum())},
        **context.lineage(),
    }
    ds = (args.ds or dt.datetime.now(dt.UTC).date()).isoformat()
    report = build_report(document, y, challenger, judgement.champion)
    uris = save_report(context.lake, evaluation_report_prefix(ds, name, version), report, document)
    record_in_mlflow(client, challenger_version, document, report, ds)
    return EvaluateResult(
        summary=summary(challenger, judgement.champion, document["approved"], checks, min_roc_auc),
        approved=document["approved"],
        reasons=document["reasons"],
        model_name=document["model_name"],
        model_version=document["model_version"],
        champion_version=document["champion_version"],
        metrics=document["metrics"],
        comparison=document["comparison"],
        thresholds=document["thresholds"],
        mlflow_run_id=challenger_version.run_id,
        experiment_id=client.get_run(str(challenger_version.run_id)).info.experiment_id,
        training_run=document["training_run"],
        report_html=uris["report_html"],
        report_json=uris["report_json"],
    )


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


def _min_roc_auc(option: float | None, config: PipelineConfig) -> float:
    if option is None:
        return config.gates.min_roc_auc
    if not 0.0 <= option <= 1.0:
        raise StepError(f"--min-roc-auc must be between 0 and 1, got {option}")
    return option


def _require_same_snapshot(version: ModelVersion, training_run: str) -> None:
    """A model judged on another snapshot's holdout may have trained on those very rows."""
    trained_on = (version.tags or {}).get("training_run")
    if trained_on and trained_on != training_run_name(training_run):
        raise StepError(
            f"model {version.name} version {version.version} was trained on snapshot {trained_on}, not "
            f"{training_run_name(training_run)}; evaluate it with --training-run {trained_on} so its holdout "
            "is unseen data"
        )


def _holdout_labels(snapshot: TrainingSet) -> np.ndarray:
    labels = snapshot.holdout[snapshot.label].astype(int).to_numpy()
    if len(labels) == 0 or labels.min() == labels.max():
        raise StepError(
            f"the holdout of snapshot {snapshot.manifest['training_run']} has {len(labels)} rows and only "
            "one label class, so ROC-AUC is undefined; widen the training window or the holdout days"
        )
    return labels


# --- scoring and metrics ------------------------------------------------------------------


def score_version(name: str, version: str, snapshot: TrainingSet, config: PipelineConfig) -> Scored:
    """Load a version's booster and score the holdout.

    Raises:
        StepError: The holdout lacks a feature the booster needs.
    """
    booster = mlflow_registry.load_booster(name, version)
    scores = predict_holdout(booster, snapshot, config)
    y = snapshot.holdout[snapshot.label].astype(int).to_numpy()
    metrics = classification_metrics(y, scores, config.scoring.decision_threshold)
    return Scored(version, scores, metrics, calibration_bins(y, scores))


def predict_holdout(booster: xgb.Booster, snapshot: TrainingSet, config: PipelineConfig) -> np.ndarray:
    """Scores for the holdout rows, encoded through :func:`model_input` with the booster's own features."""
    features = list(booster.feature_names or snapshot.feature_columns)
    return booster.inplace_predict(model_input(snapshot.holdout, features, config))


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


# --- gates --------------------------------------------------------------------------------


def effective_thresholds(gates: GatesConfig, min_roc_auc: float) -> dict[str, Any]:
    """The thresholds this evaluation applies: the config's gates, with this run's ROC-AUC minimum.

    Recorded in the step's result and on the version (``mlflow_registry.THRESHOLDS_TAG``), so ``promote``,
    ``trace`` and the UI show what a version was judged against, not only the report.
    """
    return {**gates.model_dump(include=set(THRESHOLD_FIELDS)), "min_roc_auc": min_roc_auc}


def threshold_checks(metrics: dict[str, Any], gates: GatesConfig, min_roc_auc: float) -> list[Check]:
    """The absolute gates: minimum ROC-AUC and PR-AUC, and maximum log loss when configured."""
    checks = [
        _at_least("roc_auc", "ROC-AUC", metrics["roc_auc"], min_roc_auc),
        _at_least("pr_auc", "PR-AUC", metrics["pr_auc"], gates.min_pr_auc),
    ]
    if gates.max_log_loss is not None:
        passed = metrics["log_loss"] <= gates.max_log_loss
        relation = "is within" if passed else "exceeds"
        checks.append(
            Check(
                "log_loss",
                passed,
                f"Log loss {metrics['log_loss']:.4f} {relation} the maximum {gates.max_log_loss:.4f}.",
            )
        )
    return checks


def _at_least(name: str, label: str, value: float, minimum: float) -> Check:
    passed = value >= minimum
    relation = "meets" if passed else "is below"
    return Check(name, passed, f"{label} {value:.4f} on the holdout {relation} the minimum {minimum:.4f}.")


def judge_against_champion(
    client: MlflowClient, config: PipelineConfig, version: str, snapshot: TrainingSet, challenger: Scored
) -> Judgement:
    """Score the champion on the same holdout and apply the regression rule (see the module docstring)."""
    name = config.model.registered_name
    current = mlflow_registry.champion_version(client, name)
    if current is None:
        return Judgement(
            None, None, None, Check("champion", True, "There is no champion yet to compare with.")
        )
    if current == version:
        return Judgement(
            current, None, None, Check("champion", True, f"Version {version} is the champion itself.")
        )
    mlflow_registry.require_lineage(mlflow_registry.get_version(client, name, current), config)
    try:
        champion = score_version(name, current, snapshot, config)
    except StepError as err:
        sentence = (
            f"Champion version {current} could not be scored on this holdout ({err}); comparison skipped."
        )
        return Judgement(current, None, None, Check("champion", True, sentence))
    y = snapshot.holdout[snapshot.label].astype(int).to_numpy()
    comparison = compare(y, challenger.scores, champion.scores, current, config.gates, config.model.seed)
    return Judgement(current, champion, comparison, champion_check(comparison, config.gates))


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


def champion_check(comparison: Comparison, gates: GatesConfig) -> Check:
    """Reject only a drop that is both beyond ``max_auc_drop`` and significant (interval below zero)."""
    material = comparison.delta_roc_auc < -gates.max_auc_drop
    real = comparison.ci_high < 0
    passed = not (material and real)
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


def summary(
    challenger: Scored, champion: Scored | None, approved: bool, checks: list[Check], min_roc_auc: float
) -> str:
    """One line, e.g. ``version 3: AUC 0.9312 vs champion 0.9107: approved (minimum AUC 0.80)``."""
    against = f" vs champion {champion.metrics['roc_auc']:.4f}" if champion else ", no champion"
    failed = sum(not check.passed for check in checks)
    verdict = "approved" if approved else f"rejected ({failed} check(s) failed)"
    auc = challenger.metrics["roc_auc"]
    return f"version {challenger.version}: AUC {auc:.4f}{against}: {verdict} (minimum AUC {min_roc_auc:.2f})"


# --- report and MLflow --------------------------------------------------------------------


def build_report(
    document: dict[str, Any], y: np.ndarray, challenger: Scored, champion: Scored | None
) -> Report:
    """The HTML report: gate checks, comparison table and figures of both models on the holdout."""
    verdict = ("Approved: " if document["approved"] else "Rejected: ") + " ".join(document["reasons"])
    report = Report(
        title=f"Evaluation: {document['model_name']} version {document['model_version']}",
        verdict=verdict,
        passed=document["approved"],
        meta={
            "champion": document["champion_version"] or "none",
            "training run": document["training_run"],
            "holdout rows": document["holdout"]["rows"],
            "holdout positives": document["holdout"]["positives"],
            "dag run": f"{document['dag_id'] or '-'} / {document['dag_run_id'] or '-'}",
        },
    )
    report.add_table(
        "Gate checks",
        [{"check": c["name"], "passed": c["passed"], "detail": c["sentence"]} for c in document["checks"]],
    )
    report.add_table("Challenger vs champion on the same holdout", comparison_rows(challenger, champion))
    models = [(f"challenger v{challenger.version}", challenger)]
    if champion is not None:
        models.append((f"champion v{champion.version}", champion))
    report.add_figure("ROC curves", curve_figure(y, models, "roc"))
    report.add_figure("Precision-recall curves", curve_figure(y, models, "pr"))
    report.add_figure("Confusion matrices", confusion_figure(models))
    report.add_figure("Score distribution", score_distribution_figure(y, models))
    report.add_figure("Calibration", calibration_figure(models))
    report.add_table("Calibration bins (challenger)", challenger.calibration)
    return report


def comparison_rows(challenger: Scored, champion: Scored | None) -> list[dict[str, Any]]:
    """One row per metric: challenger, champion and their difference."""
    rows = []
    for key in (
        "roc_auc",
        "pr_auc",
        "f1",
        "precision",
        "recall",
        "log_loss",
        "brier",
        "expected_calibration_error",
    ):
        mine = challenger.metrics[key]
        theirs = champion.metrics[key] if champion else None
        rows.append(
            {
                "metric": key,
                f"challenger v{challenger.version}": mine,
                f"champion v{champion.version}" if champion else "champion": theirs,
                "difference": None if theirs is None else round(mine - theirs, 6),
            }
        )
    return rows


def curve_figure(y: np.ndarray, models: list[tuple[str, Scored]], kind: str) -> Figure:
    """ROC (``kind='roc'``) or precision-recall curves of each model."""
    from matplotlib.figure import Figure
    from sklearn.metrics import precision_recall_curve, roc_curve

    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    for label, scored in models:
        if kind == "roc":
            x_values, y_values, _ = roc_curve(y, scored.scores)
            axes.plot(x_values, y_values, label=f"{label} (AUC {scored.metrics['roc_auc']:.3f})")
        else:
            precision, recall, _ = precision_recall_curve(y, scored.scores)
            axes.plot(recall, precision, label=f"{label} (AP {scored.metrics['pr_auc']:.3f})")
    if kind == "roc":
        axes.plot([0, 1], [0, 1], linestyle=":", color="grey")
        axes.set_xlabel("false positive rate")
        axes.set_ylabel("true positive rate")
    else:
        axes.axhline(float(y.mean()), linestyle=":", color="grey")
        axes.set_xlabel("recall")
        axes.set_ylabel("precision")
    axes.set_title(("ROC" if kind == "roc" else "Precision-recall") + " curves on the holdout")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure


def confusion_figure(models: list[tuple[str, Scored]]) -> Figure:
    """Confusion matrices at the decision threshold, one panel per model."""
    import numpy as np
    from matplotlib.figure import Figure

    figure = Figure(figsize=(4.2 * len(models), 3.8))
    for position, (label, scored) in enumerate(models, start=1):
        axes = figure.add_subplot(1, len(models), position)
        counts = scored.metrics["confusion"]
        matrix = np.array([[counts["tn"], counts["fp"]], [counts["fn"], counts["tp"]]])
        axes.imshow(matrix, cmap="Blues")
        for (row, column), value in np.ndenumerate(matrix):
            color = "white" if value > matrix.max() / 2 else "black"
            axes.text(column, row, str(value), ha="center", va="center", color=color)
        axes.set_xticks([0, 1], ["predicted legit", "predicted fraud"])
        axes.set_yticks([0, 1], ["legit", "fraud"])
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(f"{label} @ {scored.metrics['threshold']:g}")
    figure.suptitle("Holdout confusion matrices at the decision threshold")
    figure.tight_layout()
    return figure


def score_distribution_figure(y: np.ndarray, models: list[tuple[str, Scored]]) -> Figure:
    """Histograms of each model's holdout scores split by true label, one panel per model.

    Counts are log-scaled: positives are rare, and on a linear axis their bars would be invisible.
    """
    import numpy as np
    from matplotlib.figure import Figure

    bins = np.linspace(0.0, 1.0, SCORE_BINS + 1)
    figure = Figure(figsize=(5.2 * len(models), 3.8))
    panels = figure.subplots(1, len(models), squeeze=False, sharey=True).ravel()
    for axes, (label, scored) in zip(panels, models, strict=True):
        scores = np.clip(scored.scores.astype("float64"), 0.0, 1.0)
        for value, name, color in ((0, "legit", "#3e7cb1"), (1, "fraud", "#b42318")):
            chosen = scores[y == value]
            axes.hist(
                chosen, bins=bins, alpha=0.6, color=color, log=True, label=f"{name} ({len(chosen)} rows)"
            )
        axes.axvline(scored.metrics["threshold"], color="#52606d", linestyle="--", label="decision threshold")
        axes.set_xlabel("predicted fraud probability")
        axes.set_title(label)
    panels[0].set_ylabel("holdout rows (log scale)")
    panels[0].legend(loc="upper right", fontsize=8)
    figure.suptitle("Holdout scores by true label")
    figure.tight_layout()
    return figure


def calibration_figure(models: list[tuple[str, Scored]]) -> Figure:
    """Reliability diagram: mean score vs observed fraud rate per bin."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for label, scored in models:
        axes.plot(
            [b["mean_score"] for b in scored.calibration],
            [b["fraud_rate"] for b in scored.calibration],
            marker="o",
            label=f"{label} (Brier {scored.metrics['brier']:.4f})",
        )
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed fraud rate")
    axes.set_title("Calibration on the holdout (reliability diagram)")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure


def record_in_mlflow(
    client: MlflowClient, version: ModelVersion, document: dict[str, Any], report: Report, ds: str
) -> None:
    """Log holdout metrics and the report on the challenger's run; tag the version with the verdict."""
    import time

    from mlflow.entities import Metric

    approved = "true" if document["approved"] else "false"
    if version.run_id:
        now = int(time.time() * 1000)
        metrics = document["metrics"]["challenger"]
        values = {f"holdout_{k}": v for k, v in metrics.items() if isinstance(v, float) and k != "threshold"}
        comparison = document["comparison"]
        if comparison:
            # e.g. vs_champion_delta_roc_auc, vs_champion_delta_roc_auc_ci_low
            names = {"delta_roc_auc": "", "ci_low": "_ci_low", "ci_high": "_ci_high"}
            values.update(
                {f"vs_champion_delta_roc_auc{suffix}": comparison[k] for k, suffix in names.items()}
            )
        client.log_batch(version.run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])
        client.set_tag(version.run_id, "evaluation.approved", approved)
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "report.html").write_text(report.render())
            Path(directory, "report.json").write_text(
                json.dumps(document, indent=2, sort_keys=True, default=str)
            )
            client.log_artifacts(version.run_id, directory, artifact_path=f"evaluation/ds={ds}")
    tags = {
        mlflow_registry.APPROVED_TAG: approved,
        mlflow_registry.EVALUATED_AGAINST_TAG: document["champion_version"] or "none",
        "mlsteps.evaluation.roc_auc": str(document["metrics"]["challenger"]["roc_auc"]),
        "mlsteps.evaluation.ds": ds,
        mlflow_registry.THRESHOLDS_TAG: json.dumps(
            document["thresholds"], sort_keys=True, separators=(",", ":")
        ),
    }
    for key, value in tags.items():
        client.set_model_version_tag(version.name, version.version, key, value)
