"""The drift report: the verdict, per-column tables, and reference vs current distributions."""

from __future__ import annotations

import html
import math
from typing import TYPE_CHECKING, Any

from mlsteps.logic.drift import ColumnDrift, Samples, present_values
from mlsteps.reports.html import Report

if TYPE_CHECKING:
    import pandas as pd
    from matplotlib.figure import Figure

#: Panels in the distribution figure: drifted columns first, then the score.
MAX_DISTRIBUTION_PANELS = 12


def describe_values(series: pd.Series, kind: str) -> str:
    """A short description of a sample column: quantiles, or the most common values."""
    values = present_values(series, kind)
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

    reference, current = present_values(reference, kind), present_values(current, kind)
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
    report.add_table(
        "New categories in the current sample (encoded as 'other')",
        [
            {"column": u["column"], "sampled rows": u["count"], "examples": ", ".join(u["examples"])}
            for u in document.get("unseen_categories", [])
        ],
        note="Values outside a column's configured categories. Add them to `categories` in the config "
        "and retrain to give them their own category.",
    )
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
