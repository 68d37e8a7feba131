"""monitor-performance: the realized performance of the model that scored a day, once labels are in.

Labels arrive late (an outcome is known days or weeks after its event), so the monitor judges the day that is
``performance.label_delay_days`` old. It joins that day's committed predictions with the labels
known so far, by row id (the label column of the raw partition, or the config's
``performance.label_source``), and computes the realized metrics with bootstrap intervals
(:mod:`mlsteps.logic.performance`). The judged metric is compared with the level recorded for the
same model version at evaluation (its ``holdout_<metric>``). A day with fewer labelled rows than
``performance.min_labeled_rows`` is *waiting for labels*: a result, not a failure.

Each day's record is written to ``monitoring/<model>/performance/ds=<day>.json`` (rewritten as more
labels arrive; a rerun on the same inputs writes the same bytes). The verdict reads the records of
the same model version: ``performance.consecutive_days`` judged days in a row beyond the tolerance
make a significant drop, which ``decide-retrain --reason performance`` turns into one retrain.
"""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import (
    partition,
    performance_prefix,
    performance_record_path,
    performance_report_prefix,
    predictions_prefix,
    shadow_predictions_prefix,
)
from mlsteps.contract.results import MonitorPerformanceResult
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, add_day_argument

if TYPE_CHECKING:
    import pandas as pd

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.logic.performance import DayJudgement
    from mlsteps.platform.lake import Lake
    from mlsteps.reports.html import Report


@dataclass(frozen=True)
class ScoredDay:
    """A day's committed predictions: the rows (row id, score) and the version that scored them."""

    frame: pd.DataFrame
    model_name: str
    model_version: str
    threshold: float


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The scored day whose labels are judged.")


def run(args: argparse.Namespace) -> MonitorPerformanceResult:
    return monitor_performance(StepContext.from_args(args), args.ds)


def monitor_performance(context: StepContext, day: dt.date) -> MonitorPerformanceResult:
    """Judge one scored day on its labels, record it, and give the model version's verdict."""
    from mlsteps.logic.performance import drop_verdict, join_labels
    from mlsteps.reports.html import save_report
    from mlsteps.reports.performance import build_report

    config, lake = context.config, context.lake
    scored = read_scored_day(lake, config, day)
    labels = read_labels(lake, config, day)
    dataset = config.dataset
    joined = join_labels(scored.frame, labels, dataset.row_id, dataset.label)
    level = evaluation_level(scored, config.performance.metric)
    record = judge_day(config, day, scored, joined, level)
    shadow = judge_shadow(lake, config, day, joined, record)
    if shadow is not None:
        record["shadow"] = shadow
    lake.write_json(performance_record_path(scored.model_name, day), record)
    history = read_records(lake, scored.model_name)
    verdict = drop_verdict(
        [judgement(entry) for entry in history if entry["model_version"] == scored.model_version],
        config.performance.consecutive_days,
    )
    document = {**record, "significant": verdict.significant, "run": verdict.run, "reason": verdict.reason}
    document["summary"] = summary(document)
    report = build_report(document, history)
    uris = save_report(lake, performance_report_prefix(day), report, document)
    run_id, experiment = log_run(context, document, report)
    result: MonitorPerformanceResult = {
        "ds": day.isoformat(),
        "model_name": scored.model_name,
        "model_version": scored.model_version,
        "status": record["status"],
        "labeled_rows": record["labeled_rows"],
        "scored_rows": record["scored_rows"],
        "label_coverage": record["label_coverage"],
        "metric": record["metric"],
        "evaluation_level": level,
        "metrics": record["metrics"],
        "significant": verdict.significant,
        "reason": verdict.reason,
        "report_html": uris["report_html"],
        "report_json": uris["report_json"],
        "mlflow_run_id": run_id,
        "experiment_id": experiment,
        "summary": document["summary"],
    }
    return {**result, "shadow": shadow} if shadow is not None else result


def read_scored_day(lake: Lake, config: PipelineConfig, day: dt.date) -> ScoredDay:
    """The day's committed predictions, or refuse: a day never scored cannot be judged."""
    model = config.model.registered_name
    prefix = predictions_prefix(model, day)
    manifest = lake.require_manifest(
        prefix, "predictions", f"score ds={day} (ml_batch_scoring) before judging its performance"
    )
    table = lake.read_table(lake.partition_files(prefix), columns=[config.dataset.row_id, "score"])
    return ScoredDay(
        table.to_pandas(),
        str(manifest.get("model_name", model)),
        str(manifest["model_version"]),
        float(manifest.get("decision_threshold", config.scoring.decision_threshold)),
    )


def read_labels(lake: Lake, config: PipelineConfig, day: dt.date) -> pd.DataFrame:
    """The labels known so far for the day's rows; none yet is an empty frame, not an error."""
    import pandas as pd

    dataset = config.dataset
    source = config.performance.label_source or dataset.source
    prefix = partition(source, day)
    files = lake.partition_files(prefix) if lake.exists(prefix) else []
    if not files:
        return pd.DataFrame({dataset.row_id: pd.Series(dtype=str), dataset.label: pd.Series(dtype=bool)})
    try:
        table = lake.read_table(files, columns=[dataset.row_id, dataset.label])
    except (KeyError, ValueError) as err:
        raise StepError(
            f"labels at {lake.url(prefix)} lack the columns {dataset.row_id!r} and {dataset.label!r}: {err}"
        ) from err
    return table.to_pandas()


def evaluation_level(scored: ScoredDay, metric: str) -> float:
    """The metric the scoring version reached on its holdout at evaluation."""
    from mlflow import MlflowClient

    from mlsteps.platform import mlflow_registry

    client = MlflowClient()
    version = client.get_model_version(scored.model_name, scored.model_version)
    recorded = mlflow_registry.holdout_metrics(client, version)
    key = f"holdout_{metric}"
    if key not in recorded:
        raise StepError(
            f"{scored.model_name} version {scored.model_version} has no {key} recorded at evaluation; "
            "only evaluated versions can be monitored"
        )
    return recorded[key]


def judge_day(
    config: PipelineConfig, day: dt.date, scored: ScoredDay, joined: pd.DataFrame, level: float
) -> dict[str, Any]:
    """The day's record: coverage, metrics with intervals, and whether it is beyond tolerance."""
    from mlsteps.logic.performance import beyond_tolerance, bootstrap_metrics

    settings = config.performance
    scored_rows, labeled_rows = len(scored.frame), len(joined)
    record: dict[str, Any] = {
        "ds": day.isoformat(),
        "model_name": scored.model_name,
        "model_version": scored.model_version,
        "scored_rows": scored_rows,
        "labeled_rows": labeled_rows,
        "label_coverage": round(labeled_rows / scored_rows, 6) if scored_rows else 0.0,
        "metric": settings.metric,
        "evaluation_level": level,
        "tolerance": settings.tolerance,
        "metrics": {},
        "status": "waiting",
    }
    if labeled_rows < settings.min_labeled_rows:
        return record
    intervals = bootstrap_metrics(
        joined[config.dataset.label].to_numpy(),
        joined["score"].to_numpy(dtype="float64"),
        scored.threshold,
        settings.bootstrap_samples,
        settings.confidence,
        seed=config.model.seed + day.toordinal(),
    )
    record["metrics"] = {
        name: {"value": _round(i.value), "low": _round(i.low), "high": _round(i.high)}
        for name, i in intervals.items()
    }
    dropped = beyond_tolerance(intervals[settings.metric], settings.metric, level, settings.tolerance)
    record["status"] = "dropped" if dropped else "ok"
    return record


def judge_shadow(
    lake: Lake, config: PipelineConfig, day: dt.date, joined: pd.DataFrame, record: dict[str, Any]
) -> dict[str, Any] | None:
    """The shadow-scored challenger beside the champion, on the same labelled rows; None if not shadowed.

    Both models are resampled together (the same rows in every bootstrap draw), so the interval of
    their difference is not widened by the day's own noise. It never changes the verdict, which is
    the champion's.
    """
    from mlsteps.logic.shadow import paired_auc_difference

    prefix = shadow_predictions_prefix(config.model.registered_name, day)
    manifest = lake.manifest(prefix)
    if manifest is None:
        return None
    row_id = config.dataset.row_id
    shadow = lake.read_table(lake.partition_files(prefix), columns=[row_id, "score"]).to_pandas()
    paired = joined.merge(shadow, on=row_id, suffixes=("", "_shadow"), validate="one_to_one")
    entry: dict[str, Any] = {
        "model_version": str(manifest["model_version"]),
        "labeled_rows": len(paired),
        **dict.fromkeys(("roc_auc", "champion_roc_auc", "delta_roc_auc", "ci_low", "ci_high")),
    }
    settings = config.performance
    if record["status"] == "waiting" or len(paired) < settings.min_labeled_rows:
        return entry
    difference = paired_auc_difference(
        paired[config.dataset.label].to_numpy(),
        paired["score"].to_numpy(dtype="float64"),
        paired["score_shadow"].to_numpy(dtype="float64"),
        settings.bootstrap_samples,
        settings.confidence,
        seed=config.model.seed + day.toordinal(),
    )
    if difference is not None:
        entry.update(
            roc_auc=difference.shadow_roc_auc,
            champion_roc_auc=difference.champion_roc_auc,
            delta_roc_auc=difference.delta_roc_auc,
            ci_low=difference.ci_low,
            ci_high=difference.ci_high,
        )
    return entry


def read_records(lake: Lake, model: str) -> list[dict[str, Any]]:
    """Every recorded day of the model, oldest first."""
    prefix = performance_prefix(model)
    names = sorted(
        name for name in lake.list_dir(prefix) if name.startswith("ds=") and name.endswith(".json")
    )
    return [lake.read_json(f"{prefix}/{name}") for name in names]


def judgement(record: dict[str, Any]) -> DayJudgement:
    """A record as the drop rule reads it."""
    from mlsteps.logic.performance import DayJudgement, Interval

    judged = record["metrics"].get(record["metric"])
    interval = Interval(judged["value"], judged["low"], judged["high"]) if judged else None
    return DayJudgement(record["ds"], interval, record["status"] == "dropped")


def summary(document: dict[str, Any]) -> str:
    """One line for the UI."""
    from mlsteps.logic.performance import coverage_text, judged_text

    head = f"{document['model_name']} v{document['model_version']} on {document['ds']}"
    if document["status"] == "waiting":
        return f"{head}: waiting for labels ({coverage_text(document)})"
    verdict = "significant drop: retrain" if document["significant"] else document["status"]
    return f"{head}: {judged_text(document)}, {coverage_text(document)}; {verdict}"


def log_run(context: StepContext, document: dict[str, Any], report: Report) -> tuple[str, str]:
    """The day's MLflow monitoring run (monitor ``performance``)."""
    from mlsteps.platform.monitoring import log_monitoring_run

    tags = {
        "monitor": "performance",
        "ds": document["ds"],
        "model_name": document["model_name"],
        "model_version": document["model_version"],
        "dag_run": context.run_id,
        "status": document["status"],
        "significant": str(document["significant"]).lower(),
        **context.lineage(),
    }
    metrics: dict[str, float] = {
        "labeled_rows": float(document["labeled_rows"]),
        "label_coverage": float(document["label_coverage"]),
        "significant": float(document["significant"]),
    }
    for name, interval in document["metrics"].items():
        for part in ("value", "low", "high"):
            if interval[part] is not None:
                metrics[name if part == "value" else f"{name}.{part}"] = float(interval[part])
    for name in ("roc_auc", "delta_roc_auc"):
        if document.get("shadow", {}).get(name) is not None:
            metrics[f"shadow.{name}"] = float(document["shadow"][name])
    params = {
        "metric": document["metric"],
        "tolerance": str(document["tolerance"]),
        "evaluation_level": str(document["evaluation_level"]),
    }
    return log_monitoring_run(context.config, tags, metrics, params, report, document)


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 6)
