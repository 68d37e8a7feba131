"""build-features: point-in-time correct features from raw events, per day, on a local or S3 lake."""

from __future__ import annotations

import datetime as dt
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.contract.feature_schema import categorical_columns, feature_columns, lookback_days
from mlsteps.contract.layout import features_prefix, partition
from mlsteps.errors import StepError
from mlsteps.logic.features import compute_features
from mlsteps.platform.lake import MARKER, Lake
from mlsteps.steps.generate import generate_events
from tests.conftest import DEFAULT_CONFIG
from tests.steps.training_fixtures import run_step

START = dt.date(2026, 3, 1)
SMALL = ["--rows-per-day", "400", "--customers", "300"]


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


@pytest.fixture
def config() -> PipelineConfig:
    return load_config()


def hand_built_raw() -> pd.DataFrame:
    """A few events whose features can be worked out by hand (see the test below)."""
    rows = [
        ("a1", "a", "2026-03-01 10:00", 10.0, False),
        ("a2", "a", "2026-03-01 12:00", 20.0, True),
        ("a3", "a", "2026-03-02 11:00", 40.0, False),
        ("a4", "a", "2026-03-02 11:00", 100.0, False),  # same instant as a3: neither sees the other
        ("a5", "a", "2026-03-10 11:00", 5.0, False),
        ("a6", "a", "2026-03-11 11:00", 8.0, False),  # exactly one day after a5
        ("b1", "b", "2026-03-02 11:00", 7.0, True),
    ]
    frame = pd.DataFrame(
        rows, columns=["transaction_id", "customer_id", "event_time", "amount", "is_international"]
    )
    return frame.assign(
        event_time=pd.to_datetime(frame["event_time"], utc=True),
        merchant_category="grocery",
        card_present=True,
        distance_from_home_km=1.5,
        is_fraud=[False, True, False, True, False, False, True],
    )


def test_feature_columns_follow_the_config(config: PipelineConfig) -> None:
    columns = feature_columns(config)
    assert columns[:5] == list(config.features.passthrough)
    assert "amount_count_1d" in columns
    assert "amount_max_30d" in columns
    assert "is_international_mean_7d" in columns
    assert columns[-4:] == ["event_time_hour", "event_time_day_of_week", "log_amount", "amount_to_mean_30d"]
    assert config.dataset.label not in columns
    assert categorical_columns(config) == ["merchant_category"]
    assert lookback_days(config) == 30


def test_aggregates_are_point_in_time_correct(config: PipelineConfig) -> None:
    features = compute_features(
        hand_built_raw(),
        config,
        dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
        dt.datetime(2026, 3, 12, tzinfo=dt.UTC),
    )
    by_id = features.set_index("transaction_id")
    # An event sees only its entity's strictly earlier events: not itself, a same-instant event, the future.
    expected = {
        #       count_1d sum_1d mean_1d count_7d sum_7d max_7d count_30d mean_30d ratio_to_mean_30d
        "a1": (0, 0.0, math.nan, 0, 0.0, math.nan, 0, math.nan, 1.0),
        "a2": (1, 10.0, 10.0, 1, 10.0, 10.0, 1, 10.0, 2.0),
        "a3": (1, 20.0, 20.0, 2, 30.0, 20.0, 2, 15.0, 40.0 / 15.0),
        "a4": (1, 20.0, 20.0, 2, 30.0, 20.0, 2, 15.0, 100.0 / 15.0),
        "a5": (0, 0.0, math.nan, 0, 0.0, math.nan, 4, 42.5, 5.0 / 42.5),
        "a6": (1, 5.0, 5.0, 1, 5.0, 5.0, 5, 35.0, 8.0 / 35.0),  # windows are closed on the left
        "b1": (0, 0.0, math.nan, 0, 0.0, math.nan, 0, math.nan, 1.0),
    }
    names = [
        "amount_count_1d", "amount_sum_1d", "amount_mean_1d", "amount_count_7d", "amount_sum_7d",
        "amount_max_7d", "amount_count_30d", "amount_mean_30d", "amount_to_mean_30d",
    ]  # fmt: skip
    actual = by_id.loc[list(expected), names]
    np.testing.assert_allclose(
        actual.to_numpy(float), np.array(list(expected.values()), float), equal_nan=True
    )
    assert by_id.loc["a3", "is_international_mean_7d"] == 0.5
    assert math.isnan(by_id.loc["b1", "is_international_mean_7d"])  # b1's own True is not its history
    assert by_id.loc["a1", "event_time_hour"] == 10
    assert by_id.loc["a1", "event_time_day_of_week"] == 6
    assert by_id.loc["a3", "log_amount"] == pytest.approx(math.log1p(40.0))
    assert features["amount_count_1d"].dtype == "int64"
    assert features["amount_sum_1d"].dtype == "float64"
    assert list(features.columns) == ["transaction_id", "customer_id", "event_time", *feature_columns(config)]
    assert list(features["transaction_id"]) == ["a1", "a2", "a3", "a4", "b1", "a5", "a6"]


def test_features_ignore_future_events_and_labels(config: PipelineConfig) -> None:
    raw = hand_built_raw()
    start, end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 12, tzinfo=dt.UTC)
    baseline = compute_features(raw, config, start, end)
    future = pd.DataFrame(
        [{**raw.iloc[0].to_dict(), "transaction_id": "a9", "event_time": utc("2026-03-05"), "amount": 9999.0}]
    )
    with_future = compute_features(pd.concat([raw, future], ignore_index=True), config, start, end)
    before = with_future["event_time"] < utc("2026-03-05")
    pd.testing.assert_frame_equal(
        with_future.loc[before].reset_index(drop=True), baseline.iloc[:5].reset_index(drop=True)
    )
    flipped = compute_features(raw.assign(is_fraud=~raw["is_fraud"]), config, start, end)
    pd.testing.assert_frame_equal(flipped, baseline)
    pd.testing.assert_frame_equal(
        compute_features(raw.drop(columns="is_fraud"), config, start, end), baseline
    )


def test_a_range_gives_the_same_features_as_its_days_alone(config: PipelineConfig) -> None:
    days = [START + dt.timedelta(days=i) for i in range(8)]
    raw = generate_events(days, 400, 300, seed=3)
    whole = compute_features(
        raw, config, dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 9, tzinfo=dt.UTC)
    )
    one_day = compute_features(
        raw, config, dt.datetime(2026, 3, 6, tzinfo=dt.UTC), dt.datetime(2026, 3, 7, tzinfo=dt.UTC)
    )
    expected = whole.loc[whole["event_time"].dt.date == dt.date(2026, 3, 6)].reset_index(drop=True)
    pd.testing.assert_frame_equal(one_day, expected)


def test_generated_data_matches_a_brute_force_reference(config: PipelineConfig) -> None:
    days = [START + dt.timedelta(days=i) for i in range(6)]
    raw = generate_events(days, 400, 300, seed=5)
    start, end = dt.datetime(2026, 3, 5, tzinfo=dt.UTC), dt.datetime(2026, 3, 7, tzinfo=dt.UTC)
    features = compute_features(raw, config, start, end).set_index("transaction_id")
    for row_id in features.sample(25, random_state=1).index:
        event = raw.loc[raw["transaction_id"] == row_id].iloc[0]
        same = raw["customer_id"] == event["customer_id"]
        past = raw.loc[same & (raw["event_time"] < event["event_time"])]
        week = past.loc[past["event_time"] >= event["event_time"] - pd.Timedelta(days=7), "amount"]
        assert features.loc[row_id, "amount_count_7d"] == len(week)
        assert features.loc[row_id, "amount_sum_7d"] == pytest.approx(week.sum())
        assert features.loc[row_id, "amount_count_30d"] == len(past)


def test_missing_feature_input_is_a_step_error(config: PipelineConfig) -> None:
    with pytest.raises(StepError, match="lack column"):
        compute_features(
            hand_built_raw().drop(columns="amount"),
            config,
            dt.datetime(2026, 3, 1, tzinfo=dt.UTC),
            dt.datetime(2026, 3, 2, tzinfo=dt.UTC),
        )


def read_partition(lake: Lake, prefix: str) -> pd.DataFrame:
    return lake.read_table(lake.partition_files(prefix)).to_pandas()


def test_build_features_writes_committed_days_idempotently(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    assert (
        run_step(["generate-data", "--start", "2026-03-01", "--days", "10", *SMALL], tmp_path, monkeypatch)[0]
        == 0
    )
    code, result = run_step(
        [
            "build-features",
            "--start",
            "2026-03-01",
            "--end",
            "2026-03-11",
            "--batch-days",
            "3",
            "--run-id",
            "r1",
        ],
        tmp_path,
        monkeypatch,
    )
    assert code == 0, result
    assert result["days"] == [(START + dt.timedelta(days=i)).isoformat() for i in range(10)]
    lake = Lake(local_lake)
    day = partition(features_prefix(config), "2026-03-07")
    first = read_partition(lake, day)
    assert config.dataset.label not in first.columns
    manifest = lake.manifest(day)
    assert manifest is not None
    assert manifest["feature_columns"] == feature_columns(config)
    assert manifest["config_hash"] == config.config_hash
    assert manifest["lineage"]["dag_run_id"] == "r1"
    raw_rows = lake.manifest(partition(config.dataset.source, "2026-03-07"))
    assert raw_rows is not None
    assert manifest["rows"] == raw_rows["rows"]

    # Rebuilding that day alone (look-back read from raw) replaces the partition with the same rows.
    code, _ = run_step(
        ["build-features", "--start", "2026-03-07", "--end", "2026-03-08"], tmp_path, monkeypatch
    )
    assert code == 0
    pd.testing.assert_frame_equal(read_partition(lake, day), first)
    assert sorted(lake.list_dir(day)) == sorted([MARKER, *(f["path"] for f in lake.manifest(day)["files"])])
    assert len(lake.list_dir(day)) == 2


def write_raw_without_label(lake: Lake, config: PipelineConfig, days: list[dt.date]) -> None:
    events = generate_events(days, 400, 300, seed=11).drop(columns=config.dataset.label)
    for day, frame in events.groupby(events["event_time"].dt.date):
        staging = lake.stage(partition(config.dataset.source, day))
        staging.write_parquet(
            "00000.parquet", pa.Table.from_pandas(frame.reset_index(drop=True), preserve_index=False)
        )
        lake.commit(staging, {"producer": "test"})


def test_scoring_input_without_label_works(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    lake = Lake(local_lake)
    write_raw_without_label(lake, config, [START + dt.timedelta(days=i) for i in range(3)])
    code, result = run_step(
        ["build-features", "--start", "2026-03-03", "--end", "2026-03-04"], tmp_path, monkeypatch
    )
    assert code == 0, result
    frame = read_partition(lake, partition(features_prefix(config), "2026-03-03"))
    assert len(frame) == result["rows"] > 0
    assert frame["amount_count_30d"].max() > 0  # the two earlier days were read as look-back


def test_a_day_without_raw_data_is_refused(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_step(
        ["build-features", "--start", "2026-03-01", "--end", "2026-03-02"], tmp_path, monkeypatch
    )
    assert code == 2
    assert "no raw events of transactions for 2026-03-01" in capsys.readouterr().err


def test_build_features_on_the_s3_api(
    s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    assert (
        run_step(["generate-data", "--start", "2026-03-01", "--days", "3", *SMALL], tmp_path, monkeypatch)[0]
        == 0
    )
    code, result = run_step(
        ["build-features", "--start", "2026-03-02", "--end", "2026-03-04"], tmp_path, monkeypatch
    )
    assert code == 0, result
    assert result["uri"] == f"{s3_lake}/features/transactions"
    lake = Lake(s3_lake)
    assert lake.partitions(features_prefix(config)) == ["2026-03-02", "2026-03-03"]
    frame = read_partition(lake, partition(features_prefix(config), "2026-03-03"))
    raw = read_partition(lake, partition(config.dataset.source, "2026-03-03"))
    assert sorted(frame["transaction_id"]) == sorted(raw["transaction_id"])


def test_label_history_of_a_day_landed_without_labels_uses_the_known_ones(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    document = yaml.safe_load(DEFAULT_CONFIG.read_text())
    document["features"]["label_history"] = {"functions": ["count", "mean"], "windows": ["10d"]}
    path = tmp_path / "label_history.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("ML_PIPELINE_CONFIG", str(path))
    config = load_config(path)
    assert (
        run_step(["generate-data", "--start", "2026-03-01", "--days", "10", *SMALL], tmp_path, monkeypatch)[0]
        == 0
    )
    lake = Lake(local_lake)
    days = [partition(config.dataset.source, START + dt.timedelta(days=i)) for i in range(10)]
    raw = pd.concat([read_partition(lake, day) for day in days], ignore_index=True)
    last = dt.datetime(2026, 3, 10, tzinfo=dt.UTC)
    expected = compute_features(raw, config, last, last + dt.timedelta(days=1))
    scored_day = raw.loc[raw["event_time"] >= pd.Timestamp(last)].drop(columns=config.dataset.label)
    staging = lake.stage(partition(config.dataset.source, "2026-03-10"))
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(scored_day, preserve_index=False))
    lake.commit(staging, {"producer": "test"})

    code, result = run_step(
        ["build-features", "--start", "2026-03-10", "--end", "2026-03-11"], tmp_path, monkeypatch
    )

    assert code == 0, result
    assert result["feature_columns"] == feature_columns(config)
    built = read_partition(lake, partition(features_prefix(config), "2026-03-10"))
    assert built["is_fraud_count_10d"].max() > 0  # labels known from the look-back days
    # The day's own labels are never known to its events, so landing it without them changes nothing.
    pd.testing.assert_frame_equal(built, expected)
