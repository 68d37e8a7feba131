"""Compare a day's features and scores with the model version's reference sample, report it and log it.

The inputs are the day's committed predictions partition (which names the model version), that
version's reference sample written by ``train``, and the day's committed feature partition. Each
side is reduced to a seeded uniform sample of at most ``drift.sample_rows`` rows while streaming,
so a large day costs one pass over the needed columns and memory bounded by the sample.

Each column gets two of Evidently's stat tests, chosen by the column's kind, and drifts only when
both agree: a p-value test (is the difference real?) and a distance with a threshold (is it big
enough to matter?). A p-value test alone flags about ``column_p_value`` of unchanged columns by
chance and flags negligible differences once samples are large; a distance alone is noisy on
small samples. Univariate tests need no row alignment, so features and scores are sampled apart.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import json
import logging
import math
import tempfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import drift_report_prefix, reference_prefix
from mlsteps.contract.results import DriftResult
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, parse_day
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import run_url
from mlsteps.reports.html import Report, save_report

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from matplotlib.figure import Figure
    from mlflow import MlflowClient

    from mlsteps.contract.config import PipelineConfig

log = logging.getLogger(__name__)

#: Panels in the distribution figure: drifted columns first, then the score.
MAX_DISTRIBUTION_PANELS = 12


@dataclass(frozen=True)
class ColumnMethod:
    """The two Evidently stat tests a column kind gets: a p-value test and a thresholded distance."""

    test: str
    distance: str
    distance_threshold: float


#: Wasserstein distance is normed by the reference's standard deviation, so 0.1 means a shift of about
#: a tenth of a standard deviation (Evidently's default). Jensen-Shannon distance is about 0.35 times a
#: standardized effect for small changes, so 0.05 is about as sensitive; Evidently's default of 0.1
#: would let a boolean's rate double from 5% to 10% unflagged. Under no drift both stay below 0.02
#: at 50k rows, so unchanged columns never reach them.
METHODS: dict[str, ColumnMethod] = {
    "numeric": ColumnMethod(test="ks", distance="wasserstein", distance_threshold=0.1),
    "categorical": ColumnMethod(test="chisquare", distance="jensenshannon", distance_threshold=0.05),
}


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column."""

    column: str
    kind: str
    test: str
    p_value: float | None
    method: str
    score: float | None
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    reference_missing: float
    current_missing: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; ``column`` is the key it is stored under."""
        document = asdict(self)
        del document["column"]
        return document

    @property
    def relative_score(self) -> float:
        """The distance as a multiple of its threshold (1.0 is the line), comparable across kinds."""
        if self.score is None:
            return 1.0 if self.drifted else 0.0
        return self.score / self.threshold


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


@dataclass(frozen=True)
class Samples:
    """The seeded samples compared: reference and current features, and both sides' scores."""

    reference: pd.DataFrame
    current: pd.DataFrame
    current_scores: pd.DataFrame
    seed: list[int]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ds", type=parse_day, required=True, help="The scored day to check for drift (YYYY-MM-DD)."
    )


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
    features = compare_columns(
        samples.reference, samples.current, checked, inputs.categorical_columns, config
    )
    score = compare_columns(samples.reference, samples.current_scores, [inputs.score_column], [], config)[0]
    document = drift_document(context, inputs, samples, features, score, excluded)
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
    predictions = lake.manifest(predictions_at)
    if predictions is None:
        raise StepError(
            f"the predictions partition for ds={day} at {lake.url(predictions_at)} was never committed; "
            "run ml_batch_scoring for that day first"
        )
    version = str(predictions.get("model_version") or "")
    if not version:
        raise StepError(
            f"the predictions manifest for ds={day} at {lake.url(predictions_at)} names no model_version; "
            "rerun ml_batch_scoring for that day"
        )
    reference_at = reference_prefix(config, version)
    reference = lake.manifest(reference_at)
    if reference is None:
        raise StepError(
            f"no committed drift reference for {config.model.registered_name} version {version} at "
            f"{lake.url(reference_at)}; train writes it when it registers a version, so retrain or "
            "score with a version trained by this pipeline"
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
    from mlsteps.steps.features import time_part_name

    excluded = {}
    if "day_of_week" in config.features.time_parts:
        name = time_part_name(config, "day_of_week")
        if name in feature_columns:
            excluded[name] = "constant within one day's partition by construction"
    return excluded


def missing_columns(lake: Lake, files: list[str], columns: list[str]) -> list[str]:
    """The wanted columns that some Parquet file lacks (reads only the footers)."""
    import pyarrow.parquet as pq

    missing: set[str] = set()
    for relative in files:
        with lake.fs.open_input_file(lake.path(relative)) as handle:
            names = set(pq.read_schema(handle).names)
        missing.update(c for c in columns if c not in names)
    return [c for c in columns if c in missing]


def require_columns(lake: Lake, files: list[str], columns: list[str], where: str, remedy: str) -> None:
    """Refuse with one sentence when the partition lacks columns."""
    missing = missing_columns(lake, files, columns)
    if missing:
        raise StepError(f"{where} lacks column(s) {missing} that drift compares; {remedy}")


# --- sampling -------------------------------------------------------------------------------------


def sample_seed(config: PipelineConfig, day: dt.date) -> list[int]:
    """The entropy of a day's samples: the same for reruns of that day, different across days."""
    return [config.model.seed, day.toordinal()]


def sample_positions(total_rows: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row positions of a uniform sample without replacement of ``min(total_rows, limit)`` rows."""
    import numpy as np

    if total_rows <= limit:
        return np.arange(total_rows, dtype=np.int64)
    return np.sort(rng.choice(total_rows, size=limit, replace=False)).astype(np.int64)


def sample_partition(
    lake: Lake,
    files: list[str],
    columns: list[str],
    total_rows: int,
    limit: int,
    rng: np.random.Generator,
    batch_rows: int = 65_536,
) -> pd.DataFrame:
    """Stream the needed columns and keep only the sampled rows; stops once the last one is read.

    Args:
        lake: The lake holding the files.
        files: The partition's data files, in manifest order (row positions count across them).
        columns: The columns to read.
        total_rows: The partition's row count from its manifest.
        limit: The most rows to keep.
        rng: The seeded generator that picks the rows.
        batch_rows: Rows per streamed batch (memory per batch).

    Returns:
        The sampled rows, in partition order.
    """
    import numpy as np
    import pyarrow as pa

    positions = sample_positions(total_rows, limit, rng)
    kept: list[pa.RecordBatch] = []
    offset, taken = 0, 0
    schema = None
    for batch in lake.iter_batches(files, columns=columns, batch_rows=batch_rows):
        schema = batch.schema
        end = offset + batch.num_rows
        stop = int(np.searchsorted(positions, end, side="left"))
        if stop > taken:
            kept.append(batch.take(pa.array(positions[taken:stop] - offset)))
        taken, offset = stop, end
        if taken >= len(positions):
            break
    if not kept:
        return pa.Table.from_batches([], schema=schema).to_pandas() if schema else _empty(columns)
    # Parts written apart may differ in schema metadata; concat_tables tolerates that, from_batches not.
    tables = [pa.Table.from_batches([batch]) for batch in kept]
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _empty(columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})


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
    seed = sample_seed(config, day)
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


# --- comparison (pure) ----------------------------------------------------------------------------


def column_kind(series: pd.Series, categorical: bool) -> str:
    """``categorical`` for declared categories, booleans and text; ``numeric`` otherwise."""
    import pandas as pd

    if categorical or pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "numeric"


def _present(series: pd.Series, kind: str) -> pd.Series:
    """Values a stat test can take: no missing values, and no infinities in numeric columns."""
    import numpy as np

    if kind == "numeric":
        series = series.astype("float64").replace([np.inf, -np.inf], np.nan)
    return series.dropna()


def _missing_share(series: pd.Series) -> float:
    return round(float(series.isna().mean()), 6) if len(series) else 0.0


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def column_drift(
    column: str, reference: pd.Series, current: pd.Series, kind: str, p_value_threshold: float
) -> ColumnDrift:
    """Run the kind's p-value test and distance on one column; it drifts when both say so.

    A column with no values on one side only drifts (a feature appeared or vanished); with no
    values on either side it does not.
    """
    method = METHODS[kind]
    reference_values, current_values = _present(reference, kind), _present(current, kind)
    base = ColumnDrift(
        column=column,
        kind=kind,
        test=method.test,
        p_value=None,
        method=method.distance,
        score=None,
        threshold=method.distance_threshold,
        drifted=False,
        reference_rows=len(reference_values),
        current_rows=len(current_values),
        reference_missing=_missing_share(reference),
        current_missing=_missing_share(current),
    )
    if reference_values.empty or current_values.empty:
        empty = [
            side for side, v in (("reference", reference_values), ("current", current_values)) if v.empty
        ]
        return replace(base, drifted=len(empty) == 1, note=f"no values in {' and '.join(empty)}")
    p_value, significant = evidently_test(
        reference_values, current_values, kind, method.test, p_value_threshold
    )
    score, large = evidently_test(
        reference_values, current_values, kind, method.distance, method.distance_threshold
    )
    return replace(base, p_value=_finite(p_value), score=_finite(score), drifted=significant and large)


def evidently_test(
    reference: pd.Series, current: pd.Series, kind: str, name: str, threshold: float
) -> tuple[float, bool]:
    """One of Evidently's registered stat tests; returns its score and its own drift decision.

    These are the tests Evidently's ``ValueDrift`` metric runs; calling them directly skips the
    Plotly widgets that metric renders for every column, which cost more than the tests.
    """
    import warnings

    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    stat_test = get_stattest(reference, current, column_type, name)
    with warnings.catch_warnings():  # a category absent from the reference is drift, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stat_test(reference, current, column_type, threshold)
    return float(result.drift_score), bool(result.drifted)


def compare_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    config: PipelineConfig,
) -> list[ColumnDrift]:
    """Per-column drift of ``columns`` between two samples, each tested by its kind."""
    results = []
    for column in columns:
        kind = column_kind(reference[column], column in categorical)
        results.append(
            column_drift(column, reference[column], current[column], kind, config.drift.column_p_value)
        )
    return results


def summary_line(document: dict[str, Any]) -> str:
    """One line for people: how many columns drifted, which, and what it means."""
    drifted, checked = document["drifted_columns"], document["columns_checked"]
    if drifted:
        names = ", ".join(drifted[:6]) + (", ..." if len(drifted) > 6 else "")
        line = f"drift in {len(drifted)} of {checked} columns ({names})"
    else:
        line = f"no drift in {checked} columns"
    if document["drift"]:
        line += ": retrain suggested"
    elif drifted:
        line += f": below the {document['thresholds']['drift_share']:.0%} share that suggests retraining"
    if document["prediction_drift"]:
        line += "; the model's scores drifted too"
    return f"{line} (ds={document['ds']}, model v{document['model_version']})"


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
    drifted = [c.column for c in features if c.drifted]
    share = len(drifted) / len(features) if features else 0.0
    document: dict[str, Any] = {
        "ds": inputs.day.isoformat(),
        "model_name": config.model.registered_name,
        "model_version": inputs.model_version,
        "drift": bool(features) and share >= config.drift.drift_share,
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


# --- report ---------------------------------------------------------------------------------------


def describe_values(series: pd.Series, kind: str) -> str:
    """A short description of a sample column: quantiles, or the most common values."""
    values = _present(series, kind)
    if values.empty:
        return "no values"
    if kind == "numeric":
        low, median, high = values.quantile([0.05, 0.5, 0.95]).to_list()
        return f"mean {values.mean():.4g}; p5 {low:.4g}, median {median:.4g}, p95 {high:.4g}"
    shares = values.astype(str).value_counts(normalize=True).head(3)
    return ", ".join(f"{value} {share:.1%}" for value, share in shares.items())


def table_rows(
    drifts: list[ColumnDrift], reference: pd.DataFrame, current: pd.DataFrame
) -> list[dict[str, Any]]:
    """One row per column for the report's tables, drifted columns first."""
    rows = []
    for drift in sorted(drifts, key=lambda d: (not d.drifted, -d.relative_score)):
        rows.append(
            {
                "column": drift.column,
                "drifted": "DRIFT" if drift.drifted else "no",
                "kind": drift.kind,
                "test": drift.test,
                "p-value": drift.p_value,
                "distance": f"{drift.method} {_number(drift.score)} (threshold {drift.threshold:g})",
                "reference": describe_values(reference[drift.column], drift.kind),
                "current": describe_values(current[drift.column], drift.kind),
                "missing ref / cur": f"{drift.reference_missing:.1%} / {drift.current_missing:.1%}",
                "note": drift.note,
            }
        )
    return rows


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def drift_score_figure(drifts: list[ColumnDrift]) -> Figure:
    """Each column's distance as a multiple of its threshold; red bars drifted."""
    from matplotlib.figure import Figure

    ordered = sorted(drifts, key=lambda d: d.relative_score)
    figure = Figure(figsize=(8, max(2.5, 0.28 * len(ordered) + 1)))
    axes = figure.subplots()
    colors = ["#b42318" if d.drifted else "#3e7cb1" for d in ordered]
    axes.barh([d.column for d in ordered], [d.relative_score for d in ordered], color=colors)
    axes.axvline(1.0, color="#52606d", linestyle="--", linewidth=1)
    axes.set_xlabel("distance / threshold (drift needs >= 1 and a significant p-value)")
    axes.set_ylabel("feature column")
    axes.set_title("Drift distance per feature column (red: drifted)")
    axes.tick_params(axis="y", labelsize=8)
    figure.tight_layout()
    return figure


def distribution_figure(
    drifts: list[ColumnDrift], reference: pd.DataFrame, current: pd.DataFrame, title: str
) -> Figure:
    """Reference vs current distributions of the given columns, one small panel each."""
    from matplotlib.figure import Figure

    shown = drifts[:MAX_DISTRIBUTION_PANELS]
    width = min(3, len(shown))
    height = math.ceil(len(shown) / width)
    figure = Figure(figsize=(4 * width, 2.8 * height))
    axes = figure.subplots(height, width, squeeze=False).ravel()
    for panel, drift in zip(axes, shown, strict=False):
        _plot_distribution(panel, reference[drift.column], current[drift.column], drift.kind)
        panel.set_title(f"{drift.column} ({drift.method} {_number(drift.score)})", fontsize=9)
    for panel in axes[len(shown) :]:
        panel.set_visible(False)
    axes[0].legend(fontsize=8)
    figure.suptitle(title)
    figure.tight_layout()
    return figure


def _plot_distribution(axes: Any, reference: pd.Series, current: pd.Series, kind: str) -> None:
    import numpy as np
    import pandas as pd

    reference, current = _present(reference, kind), _present(current, kind)
    if kind == "numeric":
        combined = pd.concat([reference, current])
        low, high = (combined.quantile([0.005, 0.995]).to_list()) if len(combined) else (0.0, 1.0)
        bins = np.linspace(low, high if high > low else low + 1.0, 40)
        axes.hist(reference, bins=bins, density=True, alpha=0.5, label="reference", color="#3e7cb1")
        axes.hist(current, bins=bins, density=True, alpha=0.5, label="current", color="#e07b39")
        axes.set_xlabel("value (0.5% to 99.5% quantiles)", fontsize=8)
        axes.set_ylabel("density", fontsize=8)
        return
    shares = pd.DataFrame(
        {
            "reference": reference.astype(str).value_counts(normalize=True),
            "current": current.astype(str).value_counts(normalize=True),
        }
    ).fillna(0.0)
    shares = shares.sort_values("reference", ascending=False).head(15)
    positions = np.arange(len(shares))
    axes.bar(positions - 0.2, shares["reference"], width=0.4, label="reference", color="#3e7cb1")
    axes.bar(positions + 0.2, shares["current"], width=0.4, label="current", color="#e07b39")
    axes.set_xticks(positions, shares.index, rotation=45, ha="right", fontsize=7)
    axes.set_xlabel("value", fontsize=8)
    axes.set_ylabel("share of rows", fontsize=8)


def build_report(
    document: dict[str, Any],
    features: list[ColumnDrift],
    score: ColumnDrift,
    samples: Samples,
    score_column: str,
) -> Report:
    """The self-contained HTML report: verdict, per-column tables and plots."""
    thresholds = document["thresholds"]
    report = Report(
        title=f"Drift of {document['model_name']} v{document['model_version']} on ds={document['ds']}",
        verdict=document["summary"],
        passed=not document["drift"],
        meta={
            "reference": document["inputs"]["reference"],
            "features": document["inputs"]["features"],
            "predictions": document["inputs"]["predictions"],
            "sample rows (reference / current / scores)": (
                f"{len(samples.reference)} / {len(samples.current)} / {len(samples.current_scores)}"
            ),
            "dag run": document["lineage"]["dag_run_id"],
        },
    )
    rule = (
        f"A column drifts when its p-value test gives p < {thresholds['column_p_value']} and its distance "
        f"reaches the threshold. Drift (retraining suggested) means at least {thresholds['drift_share']:.0%} "
        "of the feature columns drifted. Numeric columns: Kolmogorov-Smirnov and Wasserstein distance "
        "normed by the reference's standard deviation; categorical and boolean columns: chi-square and "
        "Jensen-Shannon distance (Evidently's stat tests)."
    )
    report.add_html("How to read this", f"<p>{html.escape(rule)}</p>")
    report.add_figure("Drift per feature column", drift_score_figure(features))
    report.add_table("Feature columns", table_rows(features, samples.reference, samples.current))
    scores_current = samples.current_scores
    report.add_table("Prediction drift (model score)", table_rows([score], samples.reference, scores_current))
    shown = [d for d in features if d.drifted]
    if shown:
        figure = distribution_figure(
            shown, samples.reference, samples.current, "Drifted columns: reference vs current sample"
        )
        report.add_figure("Distributions of drifted columns", figure)
    figure = distribution_figure(
        [score], samples.reference, scores_current, "Model score: reference vs current sample"
    )
    report.add_figure("Distribution of the model score", figure)
    skipped = [{"column": name, "reason": reason} for name, reason in document["skipped_columns"].items()]
    if skipped:
        report.add_table("Columns not checked", skipped)
    return report


# --- MLflow ---------------------------------------------------------------------------------------


def monitoring_experiment(config: PipelineConfig) -> str:
    """The MLflow experiment drift runs go to."""
    return f"{config.model.experiment}-monitoring"


def _experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it; a concurrent creation is fine."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def _monitoring_run(
    client: MlflowClient, experiment_id: str, dag_run: str, tags: dict[str, str]
) -> tuple[str, bool]:
    """The run an earlier attempt of this DAG run logged for the day and version, else a new run.

    A retried or cleared drift task thus updates its one run instead of adding a duplicate.
    Runs without a DAG run id (manual runs) always get a new run.

    Returns:
        The run id, and whether the run is new.
    """
    keys = ("ds", "model_version")
    if dag_run and "'" not in dag_run and all("'" not in tags[key] for key in keys):
        query = " and ".join(f"tags.{key} = '{tags[key]}'" for key in (*keys, "dag_run"))
        for earlier in client.search_runs([experiment_id], filter_string=query, max_results=1):
            for key, value in tags.items():
                client.set_tag(earlier.info.run_id, key, value)
            return str(earlier.info.run_id), False
    run = client.create_run(experiment_id, run_name=f"drift-{tags['ds']}", tags=tags)
    return str(run.info.run_id), True


def mlflow_metrics(document: dict[str, Any]) -> dict[str, float]:
    """The figures logged per run: verdict, share, counts and every column's scores."""
    values: dict[str, float] = {
        "drift": float(document["drift"]),
        "drift_share": float(document["drift_share"]),
        "drifted_columns": float(len(document["drifted_columns"])),
        "columns_checked": float(document["columns_checked"]),
        "prediction_drift": float(document["prediction_drift"]),
    }
    prediction = document["prediction"]
    columns = {**document["columns"], f"prediction.{prediction['column']}": prediction}
    for name, result in columns.items():
        if result["score"] is not None:
            values[f"distance.{name}"] = float(result["score"])
        if result["p_value"] is not None:
            values[f"p_value.{name}"] = float(result["p_value"])
    return values


def log_to_mlflow(context: StepContext, document: dict[str, Any], report: Report) -> tuple[str, str]:
    """Log the figures, tags and report files as one run named ``drift-<ds>``.

    Returns:
        The run id and its experiment id.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    experiment_id = _experiment_id(client, monitoring_experiment(context.config))
    tags = {
        "ds": document["ds"],
        "model_name": document["model_name"],
        "model_version": document["model_version"],
        "dag_run": context.run_id,
        "drift": str(document["drift"]).lower(),
        **context.lineage(),
    }
    run_id, new = _monitoring_run(client, experiment_id, context.run_id, tags)
    try:
        now = int(time.time() * 1000)
        metrics = [Metric(k, v, now, 0) for k, v in mlflow_metrics(document).items()]
        params = [
            Param("column_p_value", str(document["thresholds"]["column_p_value"])),
            Param("drift_share_threshold", str(document["thresholds"]["drift_share"])),
            Param("sample_rows", str(document["samples"]["limit"])),
        ]
        params = params if new else []  # an earlier attempt logged them; MLflow params are write-once
        for start in range(0, len(metrics), 1000):
            client.log_batch(
                run_id, metrics=metrics[start : start + 1000], params=params if not start else []
            )
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "report.html").write_text(report.render())
            Path(directory, "report.json").write_text(json.dumps(document, indent=2, default=str))
            client.log_artifacts(run_id, directory, artifact_path=f"drift/ds={document['ds']}")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id, experiment_id
