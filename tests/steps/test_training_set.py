"""build-training-set: a point-in-time join through Feast, a time split, and a reproducible snapshot."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pytest

from mlsteps.cli import main
from mlsteps.contract.config import PipelineConfig, SegmentSpec, load_config
from mlsteps.contract.feature_schema import feature_columns
from mlsteps.contract.layout import features_prefix, partition, training_run_name
from mlsteps.errors import StepError
from mlsteps.platform.context import DataInterval
from mlsteps.platform.datasets import load_training_set
from mlsteps.platform.lake import Lake
from mlsteps.steps.training_set import labelled_events, split_by_time
from tests.conftest import DEFAULT_CONFIG
from tests.steps.training_fixtures import rewrite_raw_row, run_step

END = "2026-03-15"
WINDOW = ["--end", END, "--window-days", "10"]


@pytest.fixture(scope="module")
def built_lake(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Raw events and features for 2026-03-01 .. 2026-03-14, built once for the module."""
    lake = tmp_path_factory.mktemp("training") / "lake"
    common = ["--config", str(DEFAULT_CONFIG), "--lake", str(lake)]
    generate = ["--start", "2026-03-01", "--days", "14", "--rows-per-day", "400", "--customers", "300"]
    assert main(["generate-data", *generate, *common]) == 0
    assert main(["build-features", "--start", "2026-03-01", "--end", END, *common]) == 0
    return lake


@pytest.fixture
def lake(built_lake: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Lake:
    """A private copy of the built lake, exported as ML_LAKE_URI."""
    copy = tmp_path / "lake"
    shutil.copytree(built_lake, copy)
    monkeypatch.setenv("ML_LAKE_URI", str(copy))
    return Lake(str(copy))


@pytest.fixture
def config() -> PipelineConfig:
    return load_config()


def test_snapshot_splits_by_time_and_joins_each_event_to_its_features(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    code, result = run_step(["build-training-set", *WINDOW, "--training-run", "t1"], tmp_path, monkeypatch)
    assert code == 0, result
    assert result["holdout_start"] == "2026-03-11T00:00:00+00:00"
    snapshot = load_training_set(lake, "t1")
    train, holdout, manifest = snapshot.train, snapshot.holdout, snapshot.manifest
    assert train["event_time"].min() >= pd.Timestamp("2026-03-05", tz="UTC")
    assert train["event_time"].max() < pd.Timestamp("2026-03-11", tz="UTC") <= holdout["event_time"].min()
    assert holdout["event_time"].max() < pd.Timestamp(END, tz="UTC")
    assert manifest["feature_columns"] == feature_columns(config)
    assert manifest["categorical_columns"] == ["merchant_category"]
    assert (manifest["label"], manifest["row_id"], manifest["event_time"]) == (
        "is_fraud",
        "transaction_id",
        "event_time",
    )
    assert manifest["entity_keys"] == ["customer_id"]
    assert manifest["feature_service"] == "card_fraud_model_training"
    assert manifest["config_hash"] == config.config_hash
    assert manifest["interval"] == {"start": "2026-03-05T00:00:00+00:00", "end": "2026-03-15T00:00:00+00:00"}
    for split in (train, holdout):
        assert split["is_fraud"].dtype == "int64"
        assert set(split["is_fraud"]) == {0, 1}
        ordered = split.sort_values(["event_time", "transaction_id"], kind="stable")
        assert split["transaction_id"].tolist() == ordered["transaction_id"].tolist()

    # Every labelled event of the window is there once, with exactly its own feature row.
    both = pd.concat([train, holdout]).set_index("transaction_id")
    days = [dt.date(2026, 3, 5) + dt.timedelta(days=i) for i in range(10)]
    prefix = features_prefix(config)
    files = [f for day in days for f in lake.partition_files(partition(prefix, day))]
    features = lake.read_table(files).to_pandas().set_index("transaction_id")
    assert both.index.is_unique
    assert len(both) == len(features)
    pd.testing.assert_frame_equal(
        both.loc[features.index, feature_columns(config)], features[feature_columns(config)]
    )


def test_fingerprint_is_reproducible_and_follows_the_data(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    run_id = "manual__2026-03-15T00:00:00+00:00"
    code, first = run_step(["build-training-set", *WINDOW, "--run-id", run_id], tmp_path, monkeypatch)
    assert code == 0, first
    assert first["training_run"] == training_run_name(run_id)
    code, again = run_step(["build-training-set", *WINDOW, "--training-run", "again"], tmp_path, monkeypatch)
    assert code == 0, again
    assert again["fingerprint"] == first["fingerprint"]

    rewrite_raw_row(lake, config.dataset.source, "2026-03-12", 1.0)
    rebuild = ["build-features", "--start", "2026-03-12", "--end", END]
    assert run_step(rebuild, tmp_path, monkeypatch)[0] == 0
    code, changed = run_step(
        ["build-training-set", *WINDOW, "--training-run", "changed"], tmp_path, monkeypatch
    )
    assert code == 0, changed
    assert changed["fingerprint"] != first["fingerprint"]


def test_windows_without_features_are_refused(
    lake: Lake, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["build-training-set", "--end", "2026-03-05", "--window-days", "10", "--training-run", "x"]
    assert run_step(argv, tmp_path, monkeypatch)[0] == 2
    assert "run build-features" in capsys.readouterr().err


def test_splits_without_positives_are_refused(config: PipelineConfig) -> None:
    times = pd.to_datetime(["2026-03-01 10:00", "2026-03-02 10:00", "2026-03-03 10:00"], utc=True)
    frame = pd.DataFrame({"transaction_id": ["x", "y", "z"], "event_time": times, "is_fraud": [1, 0, 0]})
    with pytest.raises(StepError, match="holdout split"):
        split_by_time(frame, config, dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    train, holdout = split_by_time(
        frame.assign(is_fraud=[1, 0, 1]), config, dt.datetime(2026, 3, 2, tzinfo=dt.UTC)
    )
    assert (len(train), len(holdout)) == (1, 2)


def test_events_without_labels_are_refused(tmp_path: Path, config: PipelineConfig) -> None:
    lake = Lake(str(tmp_path / "lake"))
    times = pd.to_datetime(["2026-03-01 10:00", "2026-03-01 11:00"], utc=True)
    frame = pd.DataFrame(
        {
            "transaction_id": ["x", "y"],
            "customer_id": ["a", "b"],
            "event_time": times,
            "is_fraud": [None, None],
        }
    )
    staging = lake.stage(partition(config.dataset.source, "2026-03-01"))
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(frame.astype({"is_fraud": "boolean"})))
    lake.commit(staging, {})
    interval = DataInterval(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, tzinfo=dt.UTC))
    with pytest.raises(StepError, match="no labelled events"):
        labelled_events(lake, config, interval)


def test_a_segment_column_that_is_not_a_feature_is_read_with_the_events(
    tmp_path: Path, config: PipelineConfig
) -> None:
    features = config.features.model_copy(update={"passthrough": ("amount", "merchant_category")})
    evaluation = config.evaluation.model_copy(update={"segments": (SegmentSpec(column="card_present"),)})
    segmented = config.model_copy(update={"features": features, "evaluation": evaluation})
    lake = Lake(str(tmp_path / "lake"))
    frame = pd.DataFrame(
        {
            "transaction_id": ["x", "y"],
            "customer_id": ["a", "b"],
            "event_time": pd.to_datetime(["2026-03-01 10:00", "2026-03-01 11:00"], utc=True),
            "card_present": [True, False],
            "is_fraud": [True, False],
        }
    )
    staging = lake.stage(partition(config.dataset.source, "2026-03-01"))
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(frame))
    lake.commit(staging, {})
    interval = DataInterval(dt.datetime(2026, 3, 1, tzinfo=dt.UTC), dt.datetime(2026, 3, 2, tzinfo=dt.UTC))

    events = labelled_events(lake, segmented, interval)

    assert events["card_present"].tolist() == [True, False]
