"""The evaluation report's figures name the classes as the config does (dataset.class_names)."""

from __future__ import annotations

import numpy as np
import pytest

from mlsteps.logic.gates import Scored
from mlsteps.reports.evaluation import confusion_figure, score_distribution_figure, segment_rows


@pytest.fixture
def scored() -> Scored:
    metrics = {"threshold": 0.5, "confusion": {"tn": 5, "fp": 1, "fn": 2, "tp": 3}}
    return Scored("3", np.array([0.1, 0.7, 0.4, 0.9]), metrics, [])


def test_confusion_matrix_ticks_use_the_class_names(scored: Scored) -> None:
    figure = confusion_figure([("challenger v3", scored)], ("stayed", "churned"))

    ticks = [tick.get_text() for tick in figure.axes[0].get_yticklabels()]

    assert ticks == ["stayed", "churned"]


def test_score_histograms_use_the_class_names(scored: Scored) -> None:
    figure = score_distribution_figure(
        np.array([0, 1, 0, 1]), [("challenger v3", scored)], ("stayed", "churned")
    )

    legend = [text.get_text() for text in figure.axes[0].get_legend().get_texts()]

    assert legend[:2] == ["stayed (2 rows)", "churned (2 rows)"]
    assert figure.axes[0].get_xlabel() == "predicted probability of churned"


def test_the_segment_table_shows_the_difference_with_its_interval() -> None:
    summary = {
        "segment": "region=north", "rows": 500, "positives": 40, "champion_roc_auc": 0.9,
        "challenger_roc_auc": 0.85, "delta_roc_auc": -0.05, "ci_low": -0.08, "ci_high": -0.02,
        "verdict": "significant regression",
    }  # fmt: skip

    (row,) = segment_rows([summary])

    assert row["difference (CI)"] == "-0.0500 (-0.0800 to -0.0200)"
