"""The train step's feature-importance figure."""

from __future__ import annotations

import numpy as np
import xgboost as xgb

from mlsteps.reports.training import importance_figure


def test_importance_figure_shows_the_booster_features_by_gain() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 2))
    matrix = xgb.DMatrix(x, label=(x[:, 0] > 0).astype(float), feature_names=["signal", "noise"])
    booster = xgb.train({"max_depth": 2, "nthread": 1}, matrix, num_boost_round=3)
    axes = importance_figure(booster).axes[0]
    assert "signal" in [label.get_text() for label in axes.get_yticklabels()]
