"""The feature contract and feature computation, on the default config and tiny frames."""

from __future__ import annotations

import datetime as dt

import pandas as pd
import pytest

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.contract.feature_schema import (
    aggregate_name,
    feature_columns,
    feature_types,
    time_part_name,
    window_timedelta,
)
from mlsteps.errors import StepError
from mlsteps.logic.features import arrow_schema, compute_features, raw_columns


@pytest.fixture
def config() -> PipelineConfig:
    return load_config()


def test_aggregate_name_joins_column_function_and_window() -> None:
    assert aggregate_name("amount", "mean", "30d") == "amount_mean_30d"


def test_time_part_name_prefixes_the_event_time_column(config: PipelineConfig) -> None:
    assert time_part_name(config, "hour") == "event_time_hour"


@pytest.mark.parametrize(
    ("window", "expected"),
    [("7d", dt.timedelta(days=7)), ("12h", dt.timedelta(hours=12))],
    ids=["days", "hours"],
)
def test_window_timedelta_reads_the_unit(window: str, expected: dt.timedelta) -> None:
    assert window_timedelta(window) == expected


def test_raw_columns_never_include_the_label(config: PipelineConfig) -> None:
    assert config.dataset.label not in raw_columns(config)


def test_count_aggregates_are_integers(config: PipelineConfig) -> None:
    assert feature_types(config)["amount_count_1d"] == "int"


def test_feature_types_follow_feature_columns_order(config: PipelineConfig) -> None:
    assert list(feature_types(config)) == feature_columns(config)


def test_arrow_schema_holds_keys_time_and_features(config: PipelineConfig) -> None:
    dataset = config.dataset
    expected = [*dataset.key_columns, dataset.event_time, *feature_columns(config)]
    assert arrow_schema(config).names == expected


def test_compute_features_names_a_missing_raw_column(config: PipelineConfig) -> None:
    raw = pd.DataFrame({"transaction_id": ["a1"]})
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    with pytest.raises(StepError, match="lack column"):
        compute_features(raw, config, start, start + dt.timedelta(days=1))


def test_compute_features_keeps_only_events_in_the_interval(config: PipelineConfig) -> None:
    times = ["2026-02-28 23:00", "2026-03-01 10:00", "2026-03-02 00:00"]
    raw = pd.DataFrame(
        {
            "transaction_id": ["t0", "t1", "t2"],
            "customer_id": "c",
            "event_time": pd.to_datetime(times, utc=True),
            "amount": [1.0, 2.0, 3.0],
            "merchant_category": "grocery",
            "card_present": True,
            "is_international": False,
            "distance_from_home_km": 1.5,
        }
    )
    start = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    features = compute_features(raw, config, start, start + dt.timedelta(days=1))
    assert features["transaction_id"].tolist() == ["t1"]
