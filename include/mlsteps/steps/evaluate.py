"""Gate a challenger on its snapshot's holdout: absolute thresholds, then challenger vs champion.

The gate rule is in :mod:`mlsteps.logic.gates`, the report in :mod:`mlsteps.reports.evaluation`; this
module loads both models, scores the holdout, and writes the verdict to the lake and to MLflow. A
rejection is a result (``approved: false``), not a failure.

Cached (``mlsteps.platform.step_cache``): scoring two models on a holdout with a bootstrap is costly,
and its effects are its own: the report, and the verdict on the challenger's run and version. The
key holds the challenger's content (run and booster hash), the snapshot's fingerprint, the champion
it is judged against (a new champion means a new judgement), the report day and the options. A
reuse requires the report to be there and the version's verdict tags to still say the same.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import evaluation_report_prefix, training_run_name
from mlsteps.contract.results import EvaluateResult
from mlsteps.errors import StepError
from mlsteps.logic.calibration import calibrate
from mlsteps.logic.gates import (
    Check,
    Judgement,
    Scored,
    champion_check,
    compare,
    effective_thresholds,
    segment_checks,
    summary,
    threshold_checks,
    verdict_document,
)
from mlsteps.logic.metrics import calibration_bins, classification_metrics
from mlsteps.logic.segments import SegmentResult, judge_segments
from mlsteps.platform import mlflow_registry
from mlsteps.platform.context import StepContext, parse_day
from mlsteps.platform.datasets import TrainingSet, load_training_set, model_input
from mlsteps.reports.evaluation import build_report
from mlsteps.reports.html import Report, save_report

if TYPE_CHECKING:
    import numpy as np
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.contract.config import PipelineConfig

log = logging.getLogger(__name__)


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
    segments = segments_of(snapshot, y, challenger, judgement, config)
    checks += segment_checks(segments, judgement, config.gates, config.evaluation)
    document = {
        **verdict_document(name, challenger, judgement, checks),
        "segments": [segment.summary() for segment in segments],
        "training_run": snapshot.manifest["training_run"],
        "gates": {**config.gates.model_dump(), "min_roc_auc": min_roc_auc},
        "thresholds": effective_thresholds(config.gates, min_roc_auc),
        "holdout": {
            "rows": int(len(y)),
            "positives": int(y.sum()),
            "class_names": list(config.dataset.class_names),
        },
        **context.lineage(),
    }
    ds = _report_day(args)
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
        segments=document["segments"],
        mlflow_run_id=challenger_version.run_id,
        experiment_id=client.get_run(str(challenger_version.run_id)).info.experiment_id,
        training_run=document["training_run"],
        report_html=uris["report_html"],
        report_json=uris["report_json"],
    )


# --- caching ------------------------------------------------------------------------------


def cache_inputs(context: StepContext, args: argparse.Namespace) -> dict[str, Any]:
    """The challenger's and the champion's identity, the snapshot's fingerprint and the report day.

    Raises:
        StepError: The challenger does not exist (the step then refuses, uncached).
    """
    from mlsteps.contract.layout import snapshot_prefix
    from mlsteps.platform.lineage import MODEL_SHA256_TAG

    client = mlflow_registry.mlflow_client()
    name = context.config.model.registered_name
    challenger = mlflow_registry.get_version(client, name, mlflow_registry.parse_version(args.model_version))
    champion = mlflow_registry.champion_version(client, name)
    champion_hash = (
        (mlflow_registry.get_version(client, name, champion).tags or {}).get(MODEL_SHA256_TAG)
        if champion
        else None
    )
    manifest = context.lake.manifest(snapshot_prefix(args.training_run)) or {}
    return {
        "challenger": [challenger.version, challenger.run_id, (challenger.tags or {}).get(MODEL_SHA256_TAG)],
        "champion": [champion, champion_hash],
        "snapshot_fingerprint": manifest.get("fingerprint"),
        "report_day": _report_day(args),
    }


def cache_outputs(context: StepContext, args: argparse.Namespace, result: EvaluateResult) -> list[str]:
    """The report's two files."""
    prefix = evaluation_report_prefix(_report_day(args), result["model_name"], result["model_version"])
    return [f"{prefix}/report.html", f"{prefix}/report.json"]


def cache_reusable(context: StepContext, result: EvaluateResult) -> bool:
    """The version still carries this verdict, against this champion."""
    client = mlflow_registry.mlflow_client()
    try:
        version = mlflow_registry.get_version(client, result["model_name"], result["model_version"])
    except StepError:
        return False
    tags = version.tags or {}
    return tags.get(mlflow_registry.APPROVED_TAG) == str(result["approved"]).lower() and tags.get(
        mlflow_registry.EVALUATED_AGAINST_TAG
    ) == (result["champion_version"] or "none")


def _report_day(args: argparse.Namespace) -> str:
    return str((args.ds or dt.datetime.now(dt.UTC).date()).isoformat())


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


# --- scoring ------------------------------------------------------------------------------


def score_version(name: str, version: str, snapshot: TrainingSet, config: PipelineConfig) -> Scored:
    """Load a version (booster and calibrator) and score the holdout as scoring would.

    Raises:
        StepError: The holdout lacks a feature the booster needs.
    """
    scores = predict_holdout(mlflow_registry.load_model(name, version), snapshot, config)
    y = snapshot.holdout[snapshot.label].astype(int).to_numpy()
    metrics = classification_metrics(y, scores, config.scoring.decision_threshold)
    return Scored(version, scores, metrics, calibration_bins(y, scores))


def predict_holdout(
    model: mlflow_registry.LoadedModel, snapshot: TrainingSet, config: PipelineConfig
) -> np.ndarray:
    """Scores for the holdout rows, encoded through :func:`model_input` with the booster's own features,
    then calibrated by the model's calibrator (if any)."""
    booster = model.booster
    features = list(booster.feature_names or snapshot.feature_columns)
    return calibrate(
        model.calibrator, booster.inplace_predict(model_input(snapshot.holdout, features, config))
    )


def judge_against_champion(
    client: MlflowClient, config: PipelineConfig, version: str, snapshot: TrainingSet, challenger: Scored
) -> Judgement:
    """Score the champion on the same holdout and apply the regression rule (mlsteps.logic.gates)."""
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


def segments_of(
    snapshot: TrainingSet, y: np.ndarray, challenger: Scored, judgement: Judgement, config: PipelineConfig
) -> list[SegmentResult]:
    """Challenger vs champion on each configured segment of the holdout (mlsteps.logic.segments).

    Raises:
        StepError: The holdout lacks a segment column (a snapshot built before it was configured).
    """
    missing = [s.column for s in config.evaluation.segments if s.column not in snapshot.holdout.columns]
    if missing:
        raise StepError(
            f"the holdout of snapshot {snapshot.manifest['training_run']} lacks the segment column(s) "
            f"{missing} of evaluation.segments; rebuild the training set (build-training-set) with this "
            "config, or remove them from evaluation.segments"
        )
    champion = judgement.champion
    return judge_segments(
        snapshot.holdout,
        y,
        challenger.scores,
        champion.scores if champion else None,
        judgement.champion_version if champion else None,
        config,
    )


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
