"""Training logic on tiny frames: the time split, parameters and the search space."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.errors import StepError
from mlsteps.logic.training import (
    Fit,
    base_params,
    labels,
    loggable_params,
    split_by_time,
    suggest,
    train_model,
    training_splits,
)
from mlsteps.platform.datasets import TrainingSet

#: The column roles of every tiny snapshot here.
MANIFEST = {
    "event_time": "time",
    "row_id": "row",
    "label": "y",
    "training_run": "run_1",
    "feature_columns": ["x"],
}


@pytest.fixture
def config() -> PipelineConfig:
    return load_config()


def snapshot(labels_in_time_order: list[int]) -> TrainingSet:
    count = len(labels_in_time_order)
    train = pd.DataFrame(
        {
            "row": [f"r{i}" for i in range(count)],
            "time": pd.date_range("2026-03-01", periods=count, freq="h", tz="UTC"),
            "x": range(count),
            "y": labels_in_time_order,
        }
    ).iloc[::-1]
    return TrainingSet(train, train.iloc[:0], MANIFEST)


@pytest.mark.parametrize(
    ("part", "rows"),
    [("validation", ["r8", "r9"]), ("fit", [f"r{i}" for i in range(8)])],
    ids=["validation_is_the_latest_part_by_event_time", "fit_part_is_everything_before_validation"],
)
def test_the_split_is_by_event_time(part: str, rows: list[str]) -> None:
    splits = split_by_time(snapshot([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]), 0.2)
    assert getattr(splits, part)["row"].tolist() == rows


@pytest.mark.parametrize(
    ("part", "rows"),
    [("calibration", ["r8", "r9"]), ("validation", ["r6", "r7"]), ("fit", [f"r{i}" for i in range(6)])],
    ids=["calibration_is_the_latest_part", "validation_comes_just_before_it", "fit_part_is_the_rest"],
)
def test_the_calibration_slice_is_the_latest_by_event_time(part: str, rows: list[str]) -> None:
    splits = split_by_time(snapshot([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]), 0.2, 0.2)
    assert getattr(splits, part)["row"].tolist() == rows


def test_without_calibration_there_is_no_calibration_slice(config: PipelineConfig) -> None:
    assert training_splits(snapshot([0, 1] * 5), config).calibration is None


def test_a_part_with_one_class_is_refused() -> None:
    with pytest.raises(StepError, match="validation part of snapshot run_1"):
        split_by_time(snapshot([0, 1, 0, 1, 0, 1, 0, 1, 1, 1]), 0.2)


def test_labels_are_float32() -> None:
    assert str(labels(pd.DataFrame({"y": [True, False]}), "y").dtype) == "float32"


def test_base_params_force_hist_and_the_seed(config: PipelineConfig) -> None:
    params = base_params(config, "cuda")
    assert (params["tree_method"], params["device"], params["seed"]) == ("hist", "cuda", config.model.seed)


def test_base_params_default_the_thread_count(config: PipelineConfig) -> None:
    model = config.model.model_copy(update={"params": {}})
    assert base_params(config.model_copy(update={"model": model}), "cpu")["nthread"] == 4


class LowestTrial:
    """Answers every suggestion with its lower bound."""

    def suggest_int(self, name: str, low: int, high: int) -> int:
        return low

    def suggest_float(self, name: str, low: float, high: float, log: bool = False) -> float:
        return low


def test_search_space_lower_bounds() -> None:
    assert suggest(LowestTrial())["max_depth"] == 3


def test_search_space_covers_the_main_tree_parameters() -> None:
    expected = {
        "max_depth",
        "learning_rate",
        "min_child_weight",
        "subsample",
        "colsample_bytree",
        "reg_lambda",
    }
    assert set(suggest(LowestTrial())) == expected


def test_loggable_params_join_the_eval_metrics(config: PipelineConfig) -> None:
    fit: Any = Fit(
        booster=None, params={"eval_metric": ["logloss", "auc"]}, best_iteration=1, validation_auc=0.5
    )
    assert loggable_params(fit, config, "0", snapshot([0, 1]))["eval_metric"] == "logloss,auc"


def learnable_snapshot(holdout_labels: list[int] | None = None) -> TrainingSet:
    """400 hourly rows whose label follows ``x`` with noise, and a small holdout."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=400)
    y = (x + rng.normal(scale=0.8, size=400) > 0.5).astype(int)
    train = pd.DataFrame(
        {
            "row": [f"r{i}" for i in range(400)],
            "time": pd.date_range("2026-03-01", periods=400, freq="h", tz="UTC"),
            "x": x,
            "y": y,
        }
    )
    holdout_y = holdout_labels or [0, 1, 0, 1]
    holdout = pd.DataFrame(
        {
            "row": [f"h{i}" for i in range(len(holdout_y))],
            "time": pd.date_range("2026-04-20", periods=len(holdout_y), freq="h", tz="UTC"),
            "x": np.linspace(-1, 1, len(holdout_y)),
            "y": holdout_y,
        }
    )
    return TrainingSet(train, holdout, MANIFEST)


def quick(config: PipelineConfig, *, refit: bool) -> PipelineConfig:
    model = config.model.model_copy(
        update={"refit": refit, "num_boost_round": 40, "early_stopping_rounds": 5}
    )
    return config.model_copy(update={"model": model})


def trained(config: PipelineConfig, snapshot: TrainingSet) -> Fit:
    return train_model(split_by_time(snapshot, config.model.validation_fraction), snapshot, config, "cpu", 0)


def test_refit_learns_from_the_whole_train_split(config: PipelineConfig) -> None:
    fit = trained(quick(config, refit=True), learnable_snapshot())

    assert (fit.refit, fit.rows) == (True, 400)


def test_refit_keeps_the_rounds_early_stopping_chose(config: PipelineConfig) -> None:
    fit = trained(quick(config, refit=True), learnable_snapshot())

    assert fit.booster.num_boosted_rounds() == fit.best_iteration + 1


def test_without_refit_the_booster_learns_from_the_fit_part_only(config: PipelineConfig) -> None:
    fit = trained(quick(config, refit=False), learnable_snapshot())

    assert (fit.refit, fit.rows) == (False, 340)


def test_refit_changes_the_booster(config: PipelineConfig) -> None:
    snapshot = learnable_snapshot()
    refitted = trained(quick(config, refit=True), snapshot).booster.save_raw("json")
    early_stopped = trained(quick(config, refit=False), snapshot).booster.save_raw("json")

    assert refitted != early_stopped


def test_the_holdout_never_reaches_the_refit_booster(config: PipelineConfig) -> None:
    settings = quick(config, refit=True)
    one = trained(settings, learnable_snapshot([0, 1, 0, 1])).booster.save_raw("json")
    other = trained(settings, learnable_snapshot([1, 1, 1, 0])).booster.save_raw("json")

    assert one == other


def calibrated(config: PipelineConfig, method: str = "isotonic") -> PipelineConfig:
    settings = quick(config, refit=True)
    return settings.model_copy(update={"model": settings.model.model_copy(update={"calibration": method})})


def with_calibration_labels(labels_of_the_latest: list[int]) -> TrainingSet:
    """The learnable snapshot with the labels of its latest rows (the calibration slice) replaced."""
    base = learnable_snapshot()
    train = base.train.copy()
    train.loc[len(train) - len(labels_of_the_latest) :, "y"] = labels_of_the_latest
    return TrainingSet(train, base.holdout, MANIFEST)


def test_with_calibration_the_refit_leaves_out_the_calibration_slice(config: PipelineConfig) -> None:
    settings = calibrated(config)
    fit = train_model(
        training_splits(learnable_snapshot(), settings), learnable_snapshot(), settings, "cpu", 0
    )

    assert (fit.rows, fit.calibrator and fit.calibrator.rows) == (340, 60)


def test_the_calibration_slice_never_reaches_the_booster(config: PipelineConfig) -> None:
    settings = calibrated(config)
    boosters = []
    for latest in ([0, 1] * 30, [1, 0] * 30):
        data = with_calibration_labels(latest)
        boosters.append(train_model(training_splits(data, settings), data, settings, "cpu", 0).booster)

    assert boosters[0].save_raw("json") == boosters[1].save_raw("json")


def test_loggable_params_record_the_calibration_method(config: PipelineConfig) -> None:
    settings = calibrated(config, "platt")
    fit = train_model(
        training_splits(learnable_snapshot(), settings), learnable_snapshot(), settings, "cpu", 0
    )

    assert loggable_params(fit, settings, "0", learnable_snapshot())["calibration"] == "platt"
