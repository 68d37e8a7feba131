"""The evaluation report: gate checks, the comparison table and figures of both models on the holdout."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsteps.reports.html import Report

if TYPE_CHECKING:
    import numpy as np
    from matplotlib.figure import Figure

    from mlsteps.logic.gates import Scored

#: Equal-width score bins of the score distribution figure.
SCORE_BINS = 50


def build_report(
    document: dict[str, Any], y: np.ndarray, challenger: Scored, champion: Scored | None
) -> Report:
    """The HTML report: gate checks, comparison table and figures of both models on the holdout."""
    verdict = ("Approved: " if document["approved"] else "Rejected: ") + " ".join(document["reasons"])
    holdout = document["holdout"]
    negative, positive = holdout["class_names"]
    report = Report(
        title=f"Evaluation: {document['model_name']} version {document['model_version']}",
        verdict=verdict,
        passed=document["approved"],
        meta={
            "champion": document["champion_version"] or "none",
            "training run": document["training_run"],
            "holdout rows": holdout["rows"],
            f"holdout rows of {positive} (positive)": holdout["positives"],
            f"holdout rows of {negative}": holdout["rows"] - holdout["positives"],
            "dag run": f"{document['dag_id'] or '-'} / {document['dag_run_id'] or '-'}",
        },
    )
    report.add_table(
        "Gate checks",
        [{"check": c["name"], "passed": c["passed"], "detail": c["sentence"]} for c in document["checks"]],
    )
    report.add_table("Challenger vs champion on the same holdout", comparison_rows(challenger, champion))
    if document["segments"]:
        report.add_table(
            "Segments: challenger vs champion on the same holdout rows",
            segment_rows(document["segments"]),
            note=segment_note(document),
        )
    models = [(f"challenger v{challenger.version}", challenger)]
    if champion is not None:
        models.append((f"champion v{champion.version}", champion))
    report.add_figure("ROC curves", curve_figure(y, models, "roc"))
    report.add_figure("Precision-recall curves", curve_figure(y, models, "pr"))
    report.add_figure("Confusion matrices", confusion_figure(models, (negative, positive)))
    report.add_figure("Score distribution", score_distribution_figure(y, models, (negative, positive)))
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


def segment_rows(segments: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per segment: its size, both ROC-AUCs, the difference with its interval, the verdict."""
    rows = []
    for segment in segments:
        delta = segment["delta_roc_auc"]
        difference = (
            "-" if delta is None else f"{delta:+.4f} ({segment['ci_low']:+.4f} to {segment['ci_high']:+.4f})"
        )
        rows.append(
            {
                "segment": segment["segment"],
                "rows": segment["rows"],
                "positives": segment["positives"],
                "champion ROC-AUC": segment["champion_roc_auc"],
                "challenger ROC-AUC": segment["challenger_roc_auc"],
                "difference (CI)": difference,
                "verdict": segment["verdict"],
            }
        )
    return rows


def segment_note(document: dict[str, Any]) -> str:
    """How to read the segment table: the interval, the rule, and whether the gate applies it."""
    gates = document["gates"]
    rule = (
        "The gate refuses the challenger on any such segment (gates.segment_regression)."
        if gates["segment_regression"]
        else "This is shown, not gated (gates.segment_regression is off)."
    )
    return (
        f"Difference = challenger minus champion ROC-AUC on the segment's rows, with its "
        f"{gates['confidence']:.0%} paired bootstrap interval. A significant regression is a drop beyond "
        f"{gates['max_auc_drop']:.4f} whose whole interval lies below zero. {rule}"
    )


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


def confusion_figure(models: list[tuple[str, Scored]], class_names: tuple[str, str]) -> Figure:
    """Confusion matrices at the decision threshold, one panel per model; ``class_names``: label 0, 1."""
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
        negative, positive = class_names
        axes.set_xticks([0, 1], [f"predicted {negative}", f"predicted {positive}"])
        axes.set_yticks([0, 1], [negative, positive])
        axes.set_xlabel("predicted class")
        axes.set_ylabel("true class")
        axes.set_title(f"{label} @ {scored.metrics['threshold']:g}")
    figure.suptitle("Holdout confusion matrices at the decision threshold")
    figure.tight_layout()
    return figure


def score_distribution_figure(
    y: np.ndarray, models: list[tuple[str, Scored]], class_names: tuple[str, str]
) -> Figure:
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
        for value, name, color in zip((0, 1), class_names, ("#3e7cb1", "#b42318"), strict=True):
            chosen = scores[y == value]
            axes.hist(
                chosen, bins=bins, alpha=0.6, color=color, log=True, label=f"{name} ({len(chosen)} rows)"
            )
        axes.axvline(scored.metrics["threshold"], color="#52606d", linestyle="--", label="decision threshold")
        axes.set_xlabel(f"predicted probability of {class_names[1]}")
        axes.set_title(label)
    panels[0].set_ylabel("holdout rows (log scale)")
    panels[0].legend(loc="upper right", fontsize=8)
    figure.suptitle("Holdout scores by true label")
    figure.tight_layout()
    return figure


def calibration_figure(models: list[tuple[str, Scored]]) -> Figure:
    """Reliability diagram: mean score vs observed positive rate per bin."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5))
    axes = figure.subplots()
    axes.plot([0, 1], [0, 1], linestyle=":", color="grey", label="perfectly calibrated")
    for label, scored in models:
        axes.plot(
            [b["mean_score"] for b in scored.calibration],
            [b["positive_rate"] for b in scored.calibration],
            marker="o",
            label=f"{label} (Brier {scored.metrics['brier']:.4f})",
        )
    axes.set_xlabel("mean predicted probability")
    axes.set_ylabel("observed positive rate")
    axes.set_title("Calibration on the holdout (reliability diagram)")
    axes.legend(loc="best")
    figure.tight_layout()
    return figure
