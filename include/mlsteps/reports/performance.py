"""The performance monitor's report: each metric per day with its band, the evaluation level,
model version changes on the time axis, and label coverage."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsteps.reports.html import Report

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Plotted metrics, in panel order; the judged one also shows its evaluation level.
PANELS = ("roc_auc", "pr_auc", "log_loss", "expected_calibration_error")


def build_report(document: dict[str, Any], history: list[dict[str, Any]]) -> Report:
    """The report on one judged (or waiting) day, drawn over every recorded day of the model."""
    report = Report(
        title=f"Realized performance: {document['model_name']} on {document['ds']}",
        verdict=document["summary"],
        passed=not document["significant"],
        meta={
            "model version": document["model_version"],
            "judged metric": document["metric"],
            "evaluation level": document["evaluation_level"],
            "tolerance": document["tolerance"],
            "labelled rows": f"{document['labeled_rows']} of {document['scored_rows']}",
            "verdict": document["reason"],
        },
    )
    rows = [
        {"metric": name, "value": m["value"], "low": m["low"], "high": m["high"]}
        for name, m in document["metrics"].items()
    ]
    report.add_table("This day", rows, note="Percentile bootstrap intervals over the labelled rows.")
    if document.get("shadow"):
        report.add_table(
            "Champion vs shadow on the same rows",
            shadow_rows(document),
            note="The shadow-scored challenger on the labelled rows both models scored. The interval of "
            "the difference (shadow - champion) is a paired bootstrap: the same rows are drawn for both. "
            "An interval above zero means the challenger ranks this day's rows better. It informs, it "
            "does not judge: the verdict above is the champion's.",
        )
    if history:
        report.add_figure("Metrics per day", metrics_figure(history, document["metric"]))
        report.add_figure("Label coverage", coverage_figure(history))
    report.add_table(
        "Recorded days",
        [
            {
                "ds": entry["ds"],
                "version": entry["model_version"],
                "status": entry["status"],
                "labelled": entry["labeled_rows"],
                "coverage": entry["label_coverage"],
            }
            for entry in history
        ],
    )
    return report


def shadow_rows(document: dict[str, Any]) -> list[dict[str, Any]]:
    """ROC-AUC of the champion and of the shadow side by side, and their paired difference."""
    shadow = document["shadow"]
    return [
        {
            "champion": f"v{document['model_version']}",
            "shadow": f"v{shadow['model_version']}",
            "rows": shadow["labeled_rows"],
            "champion roc_auc": shadow["champion_roc_auc"],
            "shadow roc_auc": shadow["roc_auc"],
            "shadow - champion": shadow["delta_roc_auc"],
            "low": shadow["ci_low"],
            "high": shadow["ci_high"],
        }
    ]


def metrics_figure(history: list[dict[str, Any]], judged: str) -> Figure:
    """One panel per metric: the daily value, its band, the evaluation level and version changes."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 2.4 * len(PANELS)))
    axes = figure.subplots(len(PANELS), 1, sharex=True)
    days = [entry["ds"] for entry in history]
    for axis, name in zip(axes, PANELS, strict=True):
        points = [(i, entry["metrics"].get(name)) for i, entry in enumerate(history)]
        points = [(i, m) for i, m in points if m and m["value"] is not None]
        if points:
            xs = [i for i, _ in points]
            axis.plot(xs, [m["value"] for _, m in points], marker="o", label=name)
            banded = [(i, m) for i, m in points if m["low"] is not None]
            if banded:
                axis.fill_between(
                    [i for i, _ in banded], [m["low"] for _, m in banded], [m["high"] for _, m in banded],
                    alpha=0.25,
                )  # fmt: skip
        if name == judged:
            axis.step(
                range(len(history)), [entry["evaluation_level"] for entry in history],
                where="mid", linestyle="--", color="black", label="evaluation level",
            )  # fmt: skip
        _mark_version_changes(axis, history)
        axis.set_ylabel(name)
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="best", fontsize="small")
    axes[-1].set_xticks(range(len(days)), days, rotation=45, ha="right")
    return figure


def coverage_figure(history: list[dict[str, Any]]) -> Figure:
    """The share of each day's scored rows whose label is known."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 2.5))
    axis = figure.subplots()
    axis.bar(range(len(history)), [entry["label_coverage"] for entry in history])
    _mark_version_changes(axis, history)
    axis.set_ylim(0, 1)
    axis.set_ylabel("label coverage")
    axis.set_xticks(range(len(history)), [entry["ds"] for entry in history], rotation=45, ha="right")
    return figure


def _mark_version_changes(axis: Any, history: list[dict[str, Any]]) -> None:
    """A dotted vertical line where the scoring model version changes, labelled with the new one."""
    for i in range(1, len(history)):
        if history[i]["model_version"] != history[i - 1]["model_version"]:
            axis.axvline(i - 0.5, linestyle=":", color="grey")
            axis.annotate(f"v{history[i]['model_version']}", (i - 0.5, 1), xycoords=("data", "axes fraction"))
