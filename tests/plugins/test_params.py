"""The DAGs' Params take their limits from the config: every config that loads gives DAGs that parse."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from mlsteps.contract.config import DEFAULT_CONFIG_PATH, GatesConfig, ModelConfig, load_config
from step_tasks.params import field_limits
from tests.support.airflow import load_dagbag

#: (section, field, value) at each limit of a field an ``ml_training`` Param mirrors.
BOUNDARIES = [
    ("model", "n_trials", 0),
    ("model", "n_trials", 500),
    ("gates", "min_roc_auc", 0.0),
    ("gates", "min_roc_auc", 0.45),
    ("gates", "min_roc_auc", 1.0),
    ("model", "training_window_days", 5),  # holdout_days (4) + 1: the shortest window the config allows
    ("model", "training_window_days", 3650),
    ("gates", "require_approval", True),
    ("model", "engine", "dask"),
]
#: ``ml_training`` Param -> the config field its default comes from.
PARAM_FIELDS = {
    "n_trials": ("model", "n_trials"),
    "min_roc_auc": ("gates", "min_roc_auc"),
    "training_window_days": ("model", "training_window_days"),
    "require_approval": ("gates", "require_approval"),
    "engine": ("model", "engine"),
}


def config_with(tmp_path: Path, section: str, field: str, value: Any) -> Path:
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw[section][field] = value
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    load_config(path)  # the config itself is valid
    return path


@pytest.mark.parametrize(
    ("model", "field", "expected"),
    [
        (ModelConfig, "n_trials", {"minimum": 0, "maximum": 500}),
        (ModelConfig, "validation_fraction", {"exclusiveMinimum": 0.0, "exclusiveMaximum": 0.5}),
        (GatesConfig, "require_approval", {}),
    ],
    ids=["inclusive_bounds", "exclusive_bounds", "no_limits"],
)
def test_field_limits_are_the_config_fields_bounds(
    model: type[BaseModel], field: str, expected: dict[str, Any]
) -> None:
    assert field_limits(model, field) == expected


@pytest.mark.parametrize(("section", "field", "value"), BOUNDARIES, ids=lambda v: str(v))
def test_a_config_at_a_field_limit_gives_dags_that_parse(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, section: str, field: str, value: Any
) -> None:
    path = config_with(tmp_path, section, field, value)
    bag = load_dagbag(monkeypatch, "local", ML_PIPELINE_CONFIG=str(path))
    assert bag.import_errors == {}
    assert {"ml_training", "ml_batch_scoring", "ml_drift_monitor", "ml_rollback"} <= set(bag.dags)


@pytest.mark.parametrize(("section", "field", "value"), BOUNDARIES, ids=lambda v: str(v))
def test_the_training_params_default_to_the_configs_value(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, section: str, field: str, value: Any
) -> None:
    path = config_with(tmp_path, section, field, value)
    params = load_dagbag(monkeypatch, "local", ML_PIPELINE_CONFIG=str(path)).dags["ml_training"].params
    name = next(param for param, source in PARAM_FIELDS.items() if source == (section, field))
    assert params[name] == value


def test_the_window_param_refuses_a_window_no_longer_than_the_holdout(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    holdout = load_config().model.holdout_days
    param = load_dagbag(monkeypatch, "local").dags["ml_training"].params.get_param("training_window_days")
    assert param.resolve(holdout + 1) == holdout + 1
    with pytest.raises(ParamValidationError):
        param.resolve(holdout)
