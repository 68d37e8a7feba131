"""Feast on an s3:// lake (loopback S3): the feature steps as processes, and the production repo config."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlparse

import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mlsteps.cli import main
from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.contract.feature_schema import feature_columns, lookback_days
from mlsteps.contract.layout import features_prefix, partition
from mlsteps.platform.context import StepContext
from mlsteps.platform.datasets import load_training_set
from mlsteps.platform.feast_registry import EndpointS3RegistryStore
from mlsteps.platform.feature_store import (
    FEATURE_REPO,
    feature_service_name,
    feature_store,
    feature_view_name,
    load_repo_config,
)
from mlsteps.platform.lake import MARKER, Lake
from mlsteps.steps.generate import generate_events
from tests.conftest import DEFAULT_CONFIG
from tests.support.services import S3Server, free_port

PRODUCTION_YAML = FEATURE_REPO / "feature_store.production.yaml"
#: Raw days: three days of look-back, then the six-day training window of the small config.
RAW_DAYS = [dt.date(2026, 3, 1) + dt.timedelta(days=offset) for offset in range(9)]
WINDOW = ("2026-03-04", "2026-03-10")
HOLDOUT_START = "2026-03-08"


@pytest.fixture
def small_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PipelineConfig:
    """The production pipeline config with 3-day windows, a 6-day training window and a 2-day holdout."""
    raw = yaml.safe_load(DEFAULT_CONFIG.read_text())
    features = raw["features"]
    features["aggregates"] = [
        {"column": "amount", "functions": ["count", "sum", "mean", "max"], "windows": ["1d", "3d"]},
        {"column": "is_international", "functions": ["mean"], "windows": ["3d"]},
    ]
    features["transforms"] = [
        {"name": "log_amount", "kind": "log1p", "column": "amount"},
        {"name": "amount_to_mean_3d", "kind": "ratio_to_entity_mean", "column": "amount", "window": "3d"},
    ]
    raw["model"].update(training_window_days=6, holdout_days=2)
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(raw))
    monkeypatch.setenv("ML_PIPELINE_CONFIG", str(path))
    config = load_config()
    assert lookback_days(config) == 3
    return config


@pytest.fixture
def raw_events(s3_lake: str, small_config: PipelineConfig) -> pd.DataFrame:
    """About 400 events a day of 300 customers, committed to the S3 lake one partition a day."""
    return commit_raw_events(Lake(s3_lake), small_config, RAW_DAYS, rows_per_day=400, customers=300)


def commit_raw_events(
    lake: Lake, config: PipelineConfig, days: list[dt.date], rows_per_day: int, customers: int
) -> pd.DataFrame:
    events = generate_events(days, rows_per_day=rows_per_day, customers=customers, seed=7)
    for day, frame in events.groupby(events["event_time"].dt.date, sort=True):
        staging = lake.stage(partition(config.dataset.source, day))
        staging.write_parquet("00000.parquet", pa.Table.from_pandas(frame, preserve_index=False))
        lake.commit(staging, {"producer": "test", "ds": day.isoformat()})
    return events


def run_cli(step: str, *arguments: str, tmp_path: Path) -> dict:
    """Run ``python -m mlsteps <step>`` as its own process, as the step tasks do; return its JSON result."""
    result = tmp_path / f"result-{step}.json"
    result.unlink(missing_ok=True)
    process = subprocess.run(
        [sys.executable, "-m", "mlsteps", step, *arguments],
        env={**os.environ, "ML_STEP_RESULT": str(result)},
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert process.returncode == 0, f"{step} exited with {process.returncode}:\n{process.stderr[-3000:]}"
    return json.loads(result.read_text())


def feature_rows(lake: Lake, config: PipelineConfig, days: list[str]) -> pd.DataFrame:
    """The committed feature partitions of ``days``, read straight from the lake."""
    prefix = features_prefix(config)
    files = [f for day in days for f in lake.partition_files(partition(prefix, day))]
    return lake.read_table(files).to_pandas()


def online_features(config: PipelineConfig, customers: list[str]) -> pd.DataFrame:
    """What the online store serves now, read through a fresh store."""
    from feast import FeatureStore

    store = FeatureStore(config=load_repo_config(config), repo_path=str(FEATURE_REPO))
    service = store.get_feature_service(feature_service_name(config))
    rows = [{"customer_id": customer} for customer in customers]
    frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return frame.set_index("customer_id").loc[customers, feature_columns(config)]


def bucket_keys(s3: S3Server, uri: str) -> list[str]:
    """Object keys under an ``s3://bucket/prefix`` URI, as the S3 API lists them."""
    import boto3

    parsed = urlparse(uri)
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(
        Bucket=parsed.netloc, Prefix=parsed.path.lstrip("/")
    )
    return [item["Key"] for page in pages for item in page.get("Contents", [])]


def test_feature_steps_on_an_s3_lake(
    s3_lake: str, s3_env: S3Server, raw_events: pd.DataFrame, small_config: PipelineConfig, tmp_path: Path
) -> None:
    """build-features, materialize and build-training-set as processes; Feast reads the lake through s3fs.

    One scenario, because the Feast steps cost a process start each (Feast's import alone is
    several seconds): the online store is read back, then the training set, then a rerun of
    materialize must leave the online store as it was.
    """
    lake = Lake(s3_lake)
    built = run_cli("build-features", "--start", WINDOW[0], "--end", WINDOW[1], tmp_path=tmp_path)
    days = [f"2026-03-0{day}" for day in range(4, 10)]
    assert built["days"] == days
    assert built["uri"] == f"{s3_lake}/{features_prefix(small_config)}"

    interval = ("--start", HOLDOUT_START, "--end", WINDOW[1])
    materialized = run_cli("materialize", *interval, tmp_path=tmp_path)
    assert materialized["feature_views"] == [feature_view_name(small_config)]
    assert materialized["online_store"] == "sqlite"
    features = feature_rows(lake, small_config, days)
    in_interval = features.loc[features["event_time"] >= pd.Timestamp(HOLDOUT_START, tz="UTC")]
    latest = (
        in_interval.sort_values(["event_time", "transaction_id"])
        .drop_duplicates("customer_id", keep="last")
        .set_index("customer_id")
    )
    served = sorted(latest.index)
    idle = sorted(set(raw_events["customer_id"]) - set(served))  # no event in the interval
    assert len(served) > 200
    assert idle
    customers = served + idle
    online = online_features(small_config, customers)
    pd.testing.assert_frame_equal(
        online.loc[served], latest.loc[served, feature_columns(small_config)], check_dtype=False
    )
    assert online.loc[idle].isna().all().all()

    result = run_cli("build-training-set", "--end", WINDOW[1], "--training-run", "s3run", tmp_path=tmp_path)
    assert result["uri"] == f"{s3_lake}/training/s3run"
    assert result["holdout_start"] == f"{HOLDOUT_START}T00:00:00+00:00"
    keys = bucket_keys(s3_env, result["uri"])
    assert f"{urlparse(s3_lake).path.lstrip('/')}/training/s3run/{MARKER}" in keys
    assert sum(key.endswith(("-train.parquet", "-holdout.parquet")) for key in keys) == 2
    snapshot = load_training_set(lake, "s3run")
    assert snapshot.manifest["fingerprint"] == result["fingerprint"]
    holdout_start = pd.Timestamp(HOLDOUT_START, tz="UTC")
    assert snapshot.train["event_time"].max() < holdout_start <= snapshot.holdout["event_time"].min()
    # Every labelled event of the window appears once, with its own feature row and its own label.
    joined = pd.concat([snapshot.train, snapshot.holdout]).set_index("transaction_id")
    by_row = features.set_index("transaction_id")
    assert joined.index.is_unique
    assert sorted(joined.index) == sorted(by_row.index)
    own = ["customer_id", "event_time", *feature_columns(small_config)]
    pd.testing.assert_frame_equal(joined.loc[by_row.index, own], by_row[own], check_dtype=False)
    labels = raw_events.set_index("transaction_id").loc[by_row.index, "is_fraud"].astype("int64")
    pd.testing.assert_series_equal(joined.loc[by_row.index, "is_fraud"], labels)

    run_cli("materialize", *interval, tmp_path=tmp_path)
    pd.testing.assert_frame_equal(online_features(small_config, customers), online)


def test_a_long_lived_process_reads_rebuilt_partitions(
    s3_lake: str, small_config: PipelineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """fsspec keeps one s3fs client, listings included, per process: a rebuild must not leave them stale."""
    commit_raw_events(Lake(s3_lake), small_config, RAW_DAYS[:2], rows_per_day=100, customers=50)
    monkeypatch.chdir(tmp_path)
    interval = ["--start", "2026-03-01", "--end", "2026-03-03"]
    assert main(["build-features", *interval]) == 0
    assert main(["materialize", *interval]) == 0
    assert main(["build-features", "--start", "2026-03-02", "--end", "2026-03-03"]) == 0  # new part names
    assert main(["materialize", *interval]) == 0


def test_production_repo_config_loads_and_applies_without_contacting_redis(
    s3_lake: str, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The Redis online store is validated in full; applying touches only the registry, on S3."""
    from feast import FileSource
    from feast.infra.online_stores.redis import RedisOnlineStoreConfig, RedisType

    unused = f"127.0.0.1:{free_port()},db=0"  # nothing listens there, so any connection would fail
    monkeypatch.setenv("ML_FEAST_STORE_YAML", str(PRODUCTION_YAML))
    monkeypatch.setenv("ML_FEAST_REDIS", unused)
    monkeypatch.setenv("ML_FEAST_REGISTRY_URI", f"{s3_lake}/feast/registry.db")
    monkeypatch.setenv("FEAST_S3_ENDPOINT_URL", "")  # empty counts as unset; restored after the test
    config = load_config()

    repo_config = load_repo_config(config)
    assert isinstance(repo_config.online_store, RedisOnlineStoreConfig)
    assert repo_config.online_store.connection_string == unused
    assert repo_config.online_store.redis_type == RedisType.redis
    assert repo_config.registry.path == f"{s3_lake}/feast/registry.db"
    assert repo_config.offline_store.type == "file"
    assert repo_config.project == config.name

    store = feature_store(StepContext(None, s3_lake, "", ""))
    assert os.environ["FEAST_S3_ENDPOINT_URL"] == ""  # the endpoint is passed to the registry, not set
    registry_store = store.registry._registry_store
    assert isinstance(registry_store, EndpointS3RegistryStore)
    assert registry_store.s3_client.meta.client.meta.endpoint_url == s3_env.endpoint
    assert f"{urlparse(s3_lake).path.lstrip('/')}/feast/registry.db" in bucket_keys(s3_env, s3_lake)
    source = store.get_feature_view(feature_view_name(config)).batch_source
    assert isinstance(source, FileSource)
    assert source.path == f"{s3_lake}/{features_prefix(config)}"
    assert source.s3_endpoint_override == s3_env.endpoint
