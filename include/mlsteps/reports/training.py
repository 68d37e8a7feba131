"""Figures of the train step: the booster's feature importance."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import xgboost as xgb
    from matplotlib.figure import Figure


def importance_figure(booster: xgb.Booster, top: int = 25) -> Figure:
    """A horizontal bar chart of the booster's gain importance."""
    from matplotlib.figure import Figure

    scores = booster.get_score(importance_type="gain")
    ranked = sorted(scores.items(), key=lambda item: item[1])[-top:]
    figure = Figure(figsize=(7, 0.3 * max(len(ranked), 4) + 1))
    axes = figure.subplots()
    axes.barh([name for name, _ in ranked], [value for _, value in ranked], color="#3e7cb1")
    axes.set_xlabel("average gain")
    axes.set_title("Feature importance (gain)")
    figure.tight_layout()
    return figure
