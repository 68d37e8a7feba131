"""The validation report: problems, checks applied, and plots of the rows read."""

from __future__ import annotations

import html
import itertools
import math
from typing import TYPE_CHECKING, Any

from mlsteps.reports.html import Report

if TYPE_CHECKING:
    import datetime as dt

    from matplotlib.figure import Figure

    from mlsteps.contract.config import DatasetConfig
    from mlsteps.logic.validation import DataProfile, Histogram, NullShare, Problem
    from mlsteps.platform.context import DataInterval


def rows_per_day_figure(rows_per_day: dict[dt.date, int], minimum: int) -> Figure:
    """Bars of rows per day against the minimum per day; red bars fall short."""
    from matplotlib.figure import Figure

    days, counts = list(rows_per_day), list(rows_per_day.values())
    figure = Figure(figsize=(min(12.0, 4 + 0.3 * len(days)), 3.6))
    axes = figure.subplots()
    colors = ["#b42318" if count < minimum else "#3e7cb1" for count in counts]
    positions = range(len(days))
    bars = axes.bar(positions, counts, color=colors)
    if len(days) <= 31:  # a day with no rows has no bar, so its count is written out
        axes.bar_label(bars, fontsize=7)
    axes.axhline(minimum, color="#52606d", linestyle="--", label=f"minimum per day ({minimum})")
    step = max(1, len(days) // 20)  # about 20 labels at most, so long intervals stay legible
    axes.set_xticks(
        list(positions)[::step], [day.isoformat() for day in days][::step], rotation=45, ha="right"
    )
    axes.set_xlabel("day (UTC, by event time)")
    axes.set_ylabel("rows")
    axes.set_title(f"Rows per day, {days[0]} to {days[-1]} (red: below the minimum)")
    axes.legend(loc="best", fontsize=8)
    figure.tight_layout()
    return figure


def null_share_figure(null_shares: list[NullShare]) -> Figure:
    """Horizontal bars of each column's null share, with a tick at its allowed share; red bars exceed it."""
    from matplotlib.figure import Figure
    from matplotlib.ticker import PercentFormatter

    figure = Figure(figsize=(7, 0.35 * len(null_shares) + 1.6))
    axes = figure.subplots()
    positions = list(range(len(null_shares)))
    shares = [entry.share or 0.0 for entry in null_shares]
    colors = ["#b42318" if entry.over else "#3e7cb1" for entry in null_shares]
    bars = axes.barh(positions, shares, color=colors)
    axes.bar_label(bars, [f"{share:.1%}" if share else "" for share in shares], fontsize=7, padding=2)
    axes.scatter(
        [entry.allowed for entry in null_shares], positions, marker="|", s=250, color="black", label="allowed"
    )
    labels = [entry.column + (" (missing)" if entry.share is None else "") for entry in null_shares]
    axes.set_yticks(positions, labels, fontsize=8)
    axes.invert_yaxis()  # config order, top to bottom
    visible = [*shares, *(entry.allowed for entry in null_shares if entry.allowed < 1.0), 0.01]
    axes.set_xlim(0, min(1.05, max(visible) * 1.15))
    axes.xaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_xlabel("share of rows that are null")
    axes.set_ylabel("column")
    axes.set_title("Null share per column (red: above the allowed share)")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    return figure


def histogram_figure(histograms: list[Histogram]) -> Figure:
    """One small panel per numeric column: log-scaled counts with the configured min/max as lines."""
    from matplotlib.figure import Figure

    width = min(3, len(histograms))
    height = math.ceil(len(histograms) / width)
    figure = Figure(figsize=(4.2 * width, 3.0 * height + 0.4))
    panels = figure.subplots(height, width, squeeze=False).ravel()
    for axes, histogram in zip(panels, histograms, strict=False):
        _plot_histogram(axes, histogram)
    for axes in panels[len(histograms) :]:
        axes.set_visible(False)
    figure.suptitle("Numeric columns against their configured range")
    figure.tight_layout()
    return figure


def _plot_histogram(axes: Any, histogram: Histogram) -> None:
    edges = histogram.edges
    low = -math.inf if histogram.minimum is None else histogram.minimum
    high = math.inf if histogram.maximum is None else histogram.maximum
    colors = [
        "#b42318" if right <= low or left > high else "#3e7cb1" for left, right in itertools.pairwise(edges)
    ]
    widths = [right - left for left, right in itertools.pairwise(edges)]
    axes.bar(edges[:-1], histogram.counts, width=widths, align="edge", color=colors, log=True)
    span = (edges[-1] - edges[0]) or 1.0
    for limit, name in ((histogram.minimum, "min"), (histogram.maximum, "max")):
        # A limit far beyond the data would squash every bar into one; its value is in the title.
        if limit is not None and edges[0] - 0.25 * span <= limit <= edges[-1] + 0.25 * span:
            axes.axvline(limit, color="black", linestyle="--", linewidth=1, label=f"{name} {limit:g}")
    limits = f"[{_limit(histogram.minimum)}, {_limit(histogram.maximum)}]"
    axes.set_title(f"{histogram.column}: {histogram.outside} outside {limits}", fontsize=9)
    axes.set_xlabel("value", fontsize=8)
    axes.set_ylabel("rows (log scale)", fontsize=8)
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=7)


def _limit(value: float | None) -> str:
    return "none" if value is None else f"{value:g}"


def _add_figures(report: Report, dataset: DatasetConfig, summary: DataProfile) -> None:
    """Plots of the rows read; a plot with nothing to draw says why instead."""
    if summary.rows_per_day is None:
        report.add_html(
            "Rows per day",
            f"<p>Not drawn: column {html.escape(dataset.event_time)} is missing, entirely null or not a "
            "timestamp.</p>",
        )
    else:
        report.add_figure("Rows per day", rows_per_day_figure(summary.rows_per_day, dataset.min_rows_per_day))
    if summary.null_shares:
        report.add_figure("Null share per column", null_share_figure(summary.null_shares))
    else:
        report.add_html("Null share per column", "<p>Not drawn: no rows could be read.</p>")
    if summary.histograms:
        report.add_figure("Numeric column distributions", histogram_figure(summary.histograms))


def build_report(
    dataset: DatasetConfig, interval: DataInterval, rows: int, problems: list[Problem], summary: DataProfile
) -> Report:
    """The HTML report: the problems found, plots of the rows read, and the checks applied."""
    verdict = "All checks passed." if not problems else f"{len(problems)} check(s) failed."
    report = Report(
        title=f"Validation: {dataset.name} {interval.start.date()}",
        verdict=verdict,
        passed=not problems,
        meta={"interval": str(interval), "rows": rows, "source": dataset.source},
    )
    report.add_table(
        "Problems",
        [{"check": p.check, "where": p.where, "rows": p.count, "what": p.message} for p in problems],
    )
    report.add_table(
        "New categories (kept: encoded as one 'other' category at training and scoring)",
        [{"column": u.column, "rows": u.count, "examples": ", ".join(u.examples)} for u in summary.unseen],
        note="A column whose config says `unseen: fail` fails validation instead.",
    )
    _add_figures(report, dataset, summary)
    report.add_table(
        "Checks applied",
        [
            {
                "column": name,
                "type": spec.type,
                "nullable": spec.nullable,
                "min": spec.min,
                "max": spec.max,
                "categories": spec.categories or "",
                "unseen categories": spec.unseen if spec.type == "categorical" else "",
            }
            for name, spec in dataset.columns.items()
        ],
        note=f"Plus: unique {dataset.row_id}, at least {dataset.min_rows_per_day} rows per day, newest event "
        f"at most {dataset.max_staleness_hours:g} h before the interval end.",
    )
    return report
