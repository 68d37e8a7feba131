"""Compare a day's features and scores with the model version's reference sample, report it and log it.

The inputs are the day's committed predictions partition (which names the model version), that
version's reference sample written by ``train``, and the day's committed feature partition. Each
side is reduced to a seeded uniform sample of at most ``drift.sample_rows`` rows while streaming,
so a large day costs one pass over the needed columns and memory bounded by the sample.

The stat tests and the verdict live in :mod:`mlsteps.logic.drift`, the report in
:mod:`mlsteps.reports.drift`; this module finds the inputs, samples them, and writes the report,
the JSON document and the MLflow run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import time
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import drift_report_prefix, reference_prefix
from mlsteps.contract.results import DriftResult
from mlsteps.errors import StepError
from mlsteps.logic.drift import (
    METHODS,
    ColumnDrift,
    Samples,
    compare_columns,
    drift_verdict,
    mlflow_metrics,
    sample_seed,
    summary_line,
)
from mlsteps.logic.validation import unseen_categories
from mlsteps.platform.context import StepContext, add_day_argument
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import run_url
from mlsteps.platform.sampling import missing_columns, sample_partition
from mlsteps.reports.drift import build_report
from mlsteps.reports.html import Report, save_report

if TYPE_CHECKING:
    from mlsteps.contract.config import PipelineConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DriftInputs:
    """The committed partitions one drift check reads, and the column roles from the reference."""

    day: dt.date
    model_version: str
    predictions_prefix: str
    predictions: dict[str, Any]
    reference_prefix: str
    reference: dict[str, Any]
    features_prefix: str
    features_files: list[str]
    features_rows: int
    features_fingerprint: str

    @property
    def feature_columns(self) -> list[str]:
        return [str(c) for c in self.reference["feature_columns"]]

    @property
    def categorical_columns(self) -> list[str]:
        return [str(c) for c in self.reference.get("categorical_columns", [])]

    @property
    def score_column(self) -> str:
        return str(self.reference.get("score_column", "score"))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The scored day to check for drift.")


def run(args: argparse.Namespace) -> DriftResult:
    return monitor_drift(StepContext.from_args(args), args.ds)


def monitor_drift(context: StepContext, day: dt.date) -> DriftResult:
    """Check one scored day for drift against the reference of the model version that scored it.

    Args:
        context: Config, lake and lineage of this step run.
        day: The day whose committed predictions and features are checked.

    Returns:
        The step result: verdict, drifted columns, share, report URIs and a one-line summary.

    Raises:
        StepError: The predictions, the reference sample or the features of the day are missing,
            or lack columns the comparison needs.
    """
    config, lake = context.config, context.lake
    started = time.monotonic()
    inputs = locate_inputs(lake, config, day)
    samples = draw_samples(lake, config, inputs)
    excluded = excluded_columns(config, inputs.feature_columns)
    checked = [c for c in inputs.feature_columns if c not in excluded]
    threshold = config.drift.column_p_value
    features = compare_columns(
        samples.reference, samples.current, checked, inputs.categorical_columns, threshold
    )
    scores = [inputs.score_column]
    score = compare_columns(samples.reference, samples.current_scores, scores, [], threshold)[0]
    document = drift_document(context, inputs, samples, features, score, excluded)
    document["unseen_categories"] = [asdict(u) for u in unseen_categories(samples.current, config.dataset)]
    document["seconds"] = round(time.monotonic() - started, 3)
    report = build_report(document, features, score, samples, inputs.score_column)
    uris = save_report(lake, drift_report_prefix(day), report, document)
    run_id, experiment_id = log_to_mlflow(context, document, report)
    return DriftResult(
        ds=day.isoformat(),
        drift=document["drift"],
        drifted_columns=document["drifted_columns"],
        drift_share=document["drift_share"],
        columns_checked=document["columns_checked"],
        prediction_drift=document["prediction_drift"],
        model_name=document["model_name"],
        model_version=inputs.model_version,
        report_html=uris["report_html"],
        report_json=uris["report_json"],
        mlflow_run_id=run_id,
        experiment_id=experiment_id,
        mlflow_run_url=run_url(experiment_id, run_id),
        summary=document["summary"],
    )


# --- inputs ---------------------------------------------------------------------------------------


def locate_inputs(lake: Lake, config: PipelineConfig, day: dt.date) -> DriftInputs:
    """Find the committed predictions, reference and features of a day, or refuse in one sentence."""
    from mlsteps.contract.layout import predictions_prefix
    from mlsteps.platform.scoring import scoring_input

    predictions_at = predictions_prefix(config.model.registered_name, day)
    predictions = lake.require_manifest(
        predictions_at, f"predictions of ds={day}", "run ml_batch_scoring for that day first"
    )
    version = str(predictions.get("model_version") or "")
    if not version:
        raise StepError(
            f"the predictions manifest for ds={day} at {lake.url(predictions_at)} names no model_version; "
            "rerun ml_batch_scoring for that day"
        )
    reference_at = reference_prefix(config, version)
    reference = lake.require_manifest(
        reference_at,
        f"drift reference for {config.model.registered_name} version {version}",
        "train writes it when it registers a version, so retrain or score with a version trained by "
        "this pipeline",
    )
    if not reference.get("feature_columns") or not reference.get("rows"):
        raise StepError(
            f"the drift reference at {lake.url(reference_at)} is empty or lists no feature_columns; "
            "retrain the model to rewrite it"
        )
    features = scoring_input(lake, config, day)
    return DriftInputs(
        day,
        version,
        predictions_at,
        predictions,
        reference_at,
        reference,
        features.prefix,
        features.files,
        features.rows,
        features.fingerprint,
    )


def excluded_columns(config: PipelineConfig, feature_columns: list[str]) -> dict[str, str]:
    """Feature columns left out of the verdict, with the reason.

    A day's partition holds a single day of the week, so against a reference spanning weeks that
    feature differs every day by construction and would only add a permanent false alarm.
    """
    from mlsteps.contract.feature_schema import time_part_name

    excluded = {}
    if "day_of_week" in config.features.time_parts:
        name = time_part_name(config, "day_of_week")
        if name in feature_columns:
            excluded[name] = "constant within one day's partition by construction"
    return excluded


def require_columns(lake: Lake, files: list[str], columns: list[str], where: str, remedy: str) -> None:
    """Refuse with one sentence when the partition lacks columns."""
    missing = missing_columns(lake, files, columns)
    if missing:
        raise StepError(f"{where} lacks column(s) {missing} that drift compares; {remedy}")


# --- sampling -------------------------------------------------------------------------------------


def draw_samples(lake: Lake, config: PipelineConfig, inputs: DriftInputs) -> Samples:
    """Seeded samples of the reference, the day's features and the day's scores."""
    import numpy as np

    columns, score = inputs.feature_columns, inputs.score_column
    day = inputs.day
    reference_files = lake.partition_files(inputs.reference_prefix)
    predictions_files = lake.partition_files(inputs.predictions_prefix)
    require_columns(
        lake,
        reference_files,
        [*columns, score],
        f"the drift reference at {lake.url(inputs.reference_prefix)}",
        "retrain the model to rewrite it",
    )
    require_columns(
        lake,
        inputs.features_files,
        columns,
        f"the features for ds={day} at {lake.url(inputs.features_prefix)}",
        f"rebuild them with the config that model version {inputs.model_version} was trained on",
    )
    require_columns(
        lake,
        predictions_files,
        [score],
        f"the predictions for ds={day} at {lake.url(inputs.predictions_prefix)}",
        "rerun ml_batch_scoring for that day",
    )
    seed = sample_seed(config.model.seed, day)
    streams = [np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(3)]
    limit, batch = config.drift.sample_rows, config.scoring.batch_rows
    reference = sample_partition(
        lake, reference_files, [*columns, score], int(inputs.reference["rows"]), limit, streams[0], batch
    )
    current = sample_partition(
        lake, inputs.features_files, columns, inputs.features_rows, limit, streams[1], batch
    )
    scores = sample_partition(
        lake, predictions_files, [score], int(inputs.predictions["rows"]), limit, streams[2], batch
    )
    return Samples(reference, current, scores, seed)


def drift_document(
    context: StepContext,
    inputs: DriftInputs,
    samples: Samples,
    features: list[ColumnDrift],
    score: ColumnDrift,
    excluded: dict[str, str],
) -> dict[str, Any]:
    """The JSON report: per-column results, share, verdict, inputs, samples and lineage."""
    config, lake = context.config, context.lake
    drifted, share, drift = drift_verdict(features, config.drift.drift_share)
    document: dict[str, Any] = {
        "ds": inputs.day.isoformat(),
        "model_name": config.model.registered_name,
        "model_version": inputs.model_version,
        "drift": drift,
        "drift_share": round(share, 6),
        "drifted_columns": drifted,
        "columns_checked": len(features),
        "columns": {c.column: c.as_dict() for c in features},
        "skipped_columns": excluded,
        "prediction_drift": score.drifted,
        "prediction": {"column": score.column, **score.as_dict()},
        "thresholds": {
            "column_p_value": config.drift.column_p_value,
            "drift_share": config.drift.drift_share,
            "methods": {kind: asdict(method) for kind, method in METHODS.items()},
            "rule": "a column drifts when its p-value test and its distance both flag it",
        },
        "samples": {
            "limit": config.drift.sample_rows,
            "seed": samples.seed,
            "reference_rows": len(samples.reference),
            "reference_total_rows": int(inputs.reference["rows"]),
            "current_rows": len(samples.current),
            "current_total_rows": inputs.features_rows,
            "prediction_rows": len(samples.current_scores),
            "prediction_total_rows": int(inputs.predictions["rows"]),
        },
        "inputs": {
            "reference": lake.url(inputs.reference_prefix),
            "features": lake.url(inputs.features_prefix),
            "predictions": lake.url(inputs.predictions_prefix),
            "training_run": inputs.reference.get("training_run"),
            "features_changed_since_scoring": inputs.predictions.get("feature_fingerprint")
            not in (None, inputs.features_fingerprint),
        },
        "lineage": context.lineage(),
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
    }
    document["summary"] = summary_line(document)
    return document


# --- MLflow ---------------------------------------------------------------------------------------


def log_to_mlflow(context: StepContext, document: dict[str, Any], report: Report) -> tuple[str, str]:
    """Log the figures, tags and report files as the day's monitoring run, ``drift-<ds>``.

    Returns:
        The run id and its experiment id.
    """
    from mlsteps.platform.monitoring import log_monitoring_run

    tags = {
        "monitor": "drift",
        "ds": document["ds"],
        "model_name": document["model_name"],
        "model_version": document["model_version"],
        "dag_run": context.run_id,
        "drift": str(document["drift"]).lower(),
        **context.lineage(),
    }
    params = {
        "column_p_value": str(document["thresholds"]["column_p_value"]),
        "drift_share_threshold": str(document["thresholds"]["drift_share"]),
        "sample_rows": str(document["samples"]["limit"]),
    }
    return log_monitoring_run(context.config, tags, mlflow_metrics(document), params, report, document)
