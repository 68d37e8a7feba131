"""The shadow comparison report: champion vs challenger scores and decisions on the same day's rows."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsteps.reports.html import Report

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

#: Points drawn in the scatter plot at most (a seeded sample of the rows), so large days stay light.
SCATTER_POINTS = 5_000


def build_report(document: dict[str, Any], champion: np.ndarray, shadow: np.ndarray) -> Report:
    """The report on one day: the numbers, then the two scores against each other and their histograms."""
    comparison = document["comparison"]
    report = Report(
        title=f"Shadow scoring: {document['model_name']} on {document['ds']}",
        verdict=document["summary"],
        passed=True,  # a comparison, not a gate: nothing passes or fails here
        meta={
            "champion version": document["champion_version"],
            "shadow (challenger) version": document["shadow_version"],
            "rows compared": comparison["rows"],
            "rows in one partition only": document["unmatched_rows"],
        },
    )
    report.add_table(
        "Champion vs shadow",
        [
            {"measure": "Pearson correlation of scores", "value": comparison["pearson"]},
            {"measure": "Spearman (rank) correlation of scores", "value": comparison["spearman"]},
            {"measure": "decision agreement", "value": comparison["decision_agreement"]},
            {"measure": "champion flagged rate", "value": comparison["champion_flagged_rate"]},
            {"measure": "shadow flagged rate", "value": comparison["shadow_flagged_rate"]},
            {"measure": "rows flagged by the champion only", "value": comparison["flagged_by_champion_only"]},
            {"measure": "rows flagged by the shadow only", "value": comparison["flagged_by_shadow_only"]},
        ],
        note="No labels are needed: this says how differently the challenger would act, not which is "
        "right. The performance monitor compares their accuracy on the same rows once labels arrive.",
    )
    report.add_figure("Scores, row by row", scatter_figure(champion, shadow, document["decision_threshold"]))
    report.add_figure("Score distributions", histogram_figure(champion, shadow))
    return report


def scatter_figure(champion: np.ndarray, shadow: np.ndarray, threshold: float) -> Figure:
    """Shadow score against champion score per row, with the decision threshold on both axes."""
    import numpy as np
    from matplotlib.figure import Figure

    rows = np.random.default_rng(0).permutation(len(champion))[:SCATTER_POINTS]
    figure = Figure(figsize=(6, 6))
    axis = figure.subplots()
    axis.scatter(champion[rows], shadow[rows], s=4, alpha=0.4)
    axis.plot([0, 1], [0, 1], color="grey", linewidth=0.8)
    axis.axvline(threshold, linestyle="--", color="black")
    axis.axhline(threshold, linestyle="--", color="black")
    axis.set_xlabel("champion score")
    axis.set_ylabel("shadow score")
    return figure


def histogram_figure(champion: np.ndarray, shadow: np.ndarray) -> Figure:
    """Both models' score histograms over the same bins."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 3))
    axis = figure.subplots()
    bins = [i / 50 for i in range(51)]
    axis.hist(champion, bins=bins, alpha=0.5, label="champion")
    axis.hist(shadow, bins=bins, alpha=0.5, label="shadow")
    axis.set_xlabel("score")
    axis.set_ylabel("rows")
    axis.legend(loc="best", fontsize="small")
    return figure
