"""Training logic on tiny frames: the time split, parameters and the search space."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pytest

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.errors import StepError
from mlsteps.logic.training import Fit, base_params, labels, loggable_params, split_by_time, suggest
from mlsteps.platform.datasets import TrainingSet


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
    manifest = {
        "event_time": "time",
        "row_id": "row",
        "label": "y",
        "training_run": "run_1",
        "feature_columns": ["x"],
    }
    return TrainingSet(train, train.iloc[:0], manifest)


@pytest.mark.parametrize(
    ("part", "rows"),
    [("validation", ["r8", "r9"]), ("fit", [f"r{i}" for i in range(8)])],
    ids=["validation_is_the_latest_part_by_event_time", "fit_part_is_everything_before_validation"],
)
def test_the_split_is_by_event_time(part: str, rows: list[str]) -> None:
    splits = split_by_time(snapshot([0, 1, 0, 1, 0, 1, 0, 1, 0, 1]), 0.2)
    assert getattr(splits, part)["row"].tolist() == rows


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
