"""Feast repo config, objects derived from the pipeline config, and repeatable materialization."""

from __future__ import annotations

import datetime as dt
import importlib.util
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.contract.feature_schema import feature_columns
from mlsteps.contract.layout import features_prefix, partition
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext
from mlsteps.platform.feature_store import (
    DEFAULT_STORE_YAML,
    FEATURE_REPO,
    expand_variables,
    feast_objects,
    feature_service_name,
    feature_store,
    load_repo_config,
    store_yaml_path,
)
from mlsteps.platform.lake import MARKER, Lake
from tests.steps.training_fixtures import run_step

PRODUCTION_YAML = FEATURE_REPO / "feature_store.production.yaml"
SMALL = ["--rows-per-day", "400", "--customers", "300"]


@pytest.fixture
def config() -> PipelineConfig:
    return load_config()


@pytest.fixture
def built_lake(local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A local lake with 6 days of raw events and their features."""
    assert (
        run_step(["generate-data", "--start", "2026-03-01", "--days", "6", *SMALL], tmp_path, monkeypatch)[0]
        == 0
    )
    assert (
        run_step(["build-features", "--start", "2026-03-01", "--end", "2026-03-07"], tmp_path, monkeypatch)[0]
        == 0
    )
    return local_lake


def online_features(config: PipelineConfig, customers: list[str]) -> pd.DataFrame:
    """What the online store serves now, read through a fresh store."""
    from feast import FeatureStore

    store = FeatureStore(config=load_repo_config(config), repo_path=str(FEATURE_REPO))
    rows = [{"customer_id": customer} for customer in customers]
    service = store.get_feature_service(feature_service_name(config))
    frame = store.get_online_features(features=service, entity_rows=rows).to_df()
    return frame.set_index("customer_id").loc[customers, feature_columns(config)]


def test_materializing_an_interval_twice_leaves_the_same_online_store(
    built_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    lake = Lake(built_lake)
    prefix = features_prefix(config)
    assert MARKER in lake.list_dir(partition(prefix, "2026-03-05"))  # manifests sit among the Parquet parts
    interval = ["--start", "2026-03-04", "--end", "2026-03-06"]
    code, result = run_step(["materialize", *interval], tmp_path, monkeypatch)
    assert code == 0, result
    assert result["feature_views"] == ["transactions_features"]
    assert result["interval"] == {"start": "2026-03-04T00:00:00+00:00", "end": "2026-03-06T00:00:00+00:00"}

    table = lake.read_table(
        [f for d in ("2026-03-04", "2026-03-05") for f in lake.partition_files(partition(prefix, d))]
    )
    frame = table.to_pandas().sort_values(["event_time", "transaction_id"])
    latest = frame.drop_duplicates("customer_id", keep="last").set_index("customer_id")
    customers = sorted(latest.index)
    first = online_features(config, customers)
    # Each entity serves its latest event's features within the interval.
    pd.testing.assert_frame_equal(first, latest.loc[customers, feature_columns(config)], check_dtype=False)

    assert run_step(["materialize", *interval], tmp_path, monkeypatch)[0] == 0
    pd.testing.assert_frame_equal(online_features(config, customers), first)


def test_materialize_refuses_days_without_features(
    built_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _ = run_step(["materialize", "--start", "2026-03-06", "--end", "2026-03-08"], tmp_path, monkeypatch)
    assert code == 2
    assert "not built for 2026-03-07" in capsys.readouterr().err


def test_local_repo_config_keeps_state_under_ml_state_dir(tmp_path: Path, config: PipelineConfig) -> None:
    assert store_yaml_path() == DEFAULT_STORE_YAML
    repo_config = load_repo_config(config)
    assert repo_config.project == config.name
    assert repo_config.online_store.type == "sqlite"
    assert Path(repo_config.online_store.path).parent == tmp_path / "state" / "feast"
    assert Path(repo_config.registry.path).parent == tmp_path / "state" / "feast"


def test_state_dir_defaults_to_dot_state(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    monkeypatch.delenv("ML_STATE_DIR")
    monkeypatch.chdir(tmp_path)
    assert (
        Path(load_repo_config(config).online_store.path) == tmp_path / ".state" / "feast" / "online_store.db"
    )


def test_production_repo_config_is_chosen_by_environment(
    monkeypatch: pytest.MonkeyPatch, config: PipelineConfig
) -> None:
    monkeypatch.setenv("ML_FEAST_STORE_YAML", str(PRODUCTION_YAML))
    assert store_yaml_path() == PRODUCTION_YAML
    with pytest.raises(StepError, match=r"\['ML_FEAST_REDIS', 'ML_FEAST_REGISTRY_URI'\]"):
        load_repo_config(config)
    monkeypatch.setenv("ML_FEAST_REDIS", "redis.feast:6379,db=0")
    monkeypatch.setenv("ML_FEAST_REGISTRY_URI", "s3://feast/registry.db")
    raw = yaml.safe_load(expand_variables(PRODUCTION_YAML.read_text(), PRODUCTION_YAML))
    assert raw["online_store"] == {"type": "redis", "connection_string": "redis.feast:6379,db=0"}
    assert raw["registry"]["path"] == "s3://feast/registry.db"
    if importlib.util.find_spec("redis") is not None:
        assert load_repo_config(config).online_store.type == "redis"
    else:  # the image lacks feast's redis extra: the rest of the file must still be valid
        from feast import RepoConfig

        RepoConfig(**{**raw, "project": config.name, "online_store": {"type": "sqlite"}})


def test_feast_objects_point_at_the_lake(
    s3_lake: str, s3_env, config: PipelineConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    objects = feast_objects(config, Lake(s3_lake))
    source = objects.feature_view.batch_source
    assert source.path == f"{s3_lake}/features/transactions"
    assert source.s3_endpoint_override == s3_env.endpoint
    assert source.timestamp_field == config.dataset.event_time
    assert [e.name for e in objects.entities] == ["transaction_id", "customer_id"]
    assert objects.feature_view.entities == ["customer_id"]
    assert [f.name for f in objects.feature_view.features] == feature_columns(config)
    assert objects.feature_view.ttl == dt.timedelta(days=config.features.ttl_days)
    assert objects.feature_service.name == "card_fraud_model"
    assert sorted(objects.event_feature_view.entities) == ["customer_id", "transaction_id"]
    assert not objects.event_feature_view.online

    local = feast_objects(config, Lake(str(tmp_path / "lake")))
    assert local.feature_view.batch_source.path == str(tmp_path / "lake" / "features" / "transactions")
    assert local.feature_view.batch_source.s3_endpoint_override in (None, "")


def test_feast_serves_label_history_features_like_any_other(config: PipelineConfig, tmp_path: Path) -> None:
    document = config.model_dump(mode="json")
    document["features"]["label_history"] = {"functions": ["count", "mean"], "windows": ["30d"]}
    with_history = PipelineConfig.model_validate(document)
    objects = feast_objects(with_history, Lake(str(tmp_path / "lake")))
    for view in (objects.feature_view, objects.event_feature_view):
        names = {f.name: str(f.dtype) for f in view.features}
        assert (names["is_fraud_count_30d"], names["is_fraud_mean_30d"]) == ("Int64", "Float64")


def test_feast_on_an_s3_lake(s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Feast's file store reads s3:// through s3fs; without it the step says so in one line."""
    context = StepContext(None, s3_lake, "", "")
    if importlib.util.find_spec("s3fs") is None:
        with pytest.raises(StepError, match="s3fs"):
            feature_store(context)
        return
    assert (
        run_step(["generate-data", "--start", "2026-03-01", "--days", "2", *SMALL], tmp_path, monkeypatch)[0]
        == 0
    )
    assert (
        run_step(["build-features", "--start", "2026-03-01", "--end", "2026-03-03"], tmp_path, monkeypatch)[0]
        == 0
    )
    assert (
        run_step(["materialize", "--start", "2026-03-02", "--end", "2026-03-03"], tmp_path, monkeypatch)[0]
        == 0
    )


def test_stale_feature_partitions_are_refused(
    built_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Feast reads every partition, so one built with other feature columns must be rebuilt first."""
    lake = Lake(built_lake)
    marker = f"{partition(features_prefix(load_config()), '2026-03-02')}/{MARKER}"
    manifest = lake.read_json(marker)
    lake.write_json(marker, {**manifest, "feature_columns": manifest["feature_columns"][:-1]})
    code, _ = run_step(["materialize", "--start", "2026-03-05", "--end", "2026-03-06"], tmp_path, monkeypatch)
    assert code == 2
    assert "feature partitions 2026-03-02" in capsys.readouterr().err
