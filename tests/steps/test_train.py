"""The train step: MLflow logging, registration as challenger, determinism, and refusing a missing GPU."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlsteps.errors import StepError
from mlsteps.logic.training import predict
from mlsteps.platform.datasets import load_training_set
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import (
    CHALLENGER,
    PIPELINE_TAG,
    RETRAIN_COLUMNS_TAG,
    RETRAIN_DS_TAG,
    load_booster,
)
from mlsteps.steps.train import SCORE_COLUMN, retrain_tags
from tests.steps.training_fixtures import build_snapshot, run_step, unique_model_name, write_config


def test_train_logs_everything_and_registers_a_challenger(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name)
    manifest = build_snapshot(local_lake, "run_1")
    argv = [
        "train",
        "--config",
        config,
        "--training-run",
        "run_1",
        "--dag-id",
        "ml_training",
        "--run-id",
        "r1",
    ]

    code, result = run_step(argv, tmp_path / "result.json", monkeypatch)

    assert code == 0
    assert result["model_version"] == "1"
    assert result["device"] == "cpu"
    assert result["model_uri"] == f"models:/{name}/1"
    assert 0.7 < result["metrics"]["validation_auc"] <= 1.0
    assert result["training_seconds"] > 0
    assert "registered" in result["summary"]

    client = mlflow.MlflowClient()
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.tags["dag_id"] == "ml_training"
    assert run.data.tags["dag_run_id"] == "r1"
    assert run.data.tags["training_run"] == "run_1"
    assert run.data.tags["data_fingerprint"] == manifest["fingerprint"]
    assert run.data.tags["data_interval"].startswith("[2026-10-01")
    assert {"git_sha", "image", "config_hash", PIPELINE_TAG} <= set(run.data.tags)
    assert run.data.params["tree_method"] == "hist"
    assert run.data.params["seed"] == "42"
    assert {"validation_auc", "best_iteration", "training_seconds"} <= set(run.data.metrics)
    inputs = {d.dataset.name: d for d in run.inputs.dataset_inputs}
    assert set(inputs) == {"run_1/train", "run_1/holdout"}
    assert inputs["run_1/train"].dataset.digest == manifest["fingerprint"][:32]
    assert "feature_importance.png" in [a.path for a in client.list_artifacts(result["mlflow_run_id"])]

    version = client.get_model_version(name, "1")
    assert version.tags[PIPELINE_TAG] == "card_fraud"
    assert version.tags["training_run"] == "run_1"
    assert version.run_id == result["mlflow_run_id"]
    assert not {RETRAIN_DS_TAG, RETRAIN_COLUMNS_TAG} & set(version.tags)  # not a drift retrain
    assert client.get_model_version_by_alias(name, CHALLENGER).version == "1"
    model_info = mlflow.models.get_model_info(f"models:/{name}/1")
    assert model_info.signature is not None
    assert "xgboost" in model_info.flavors

    lake = Lake(local_lake)
    reference = lake.manifest(f"reference/{name}/1")
    assert reference is not None
    assert reference["rows"] == 1_000
    sample = lake.read_table(lake.partition_files(f"reference/{name}/1")).to_pandas()
    assert list(sample.columns) == [*manifest["feature_columns"], SCORE_COLUMN]
    assert sample[SCORE_COLUMN].between(0, 1).all()


def test_a_drift_retrain_records_its_day_and_columns_on_the_run_and_version(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name, n_trials=0)
    build_snapshot(local_lake, "run_1")
    argv = ["train", "--config", config, "--training-run", "run_1", "--retrain-ds", "2026-11-01"]

    code, result = run_step([*argv, "--drifted-columns", "amount,country"], tmp_path / "r.json", monkeypatch)

    assert code == 0
    client = mlflow.MlflowClient()
    for tags in (client.get_run(result["mlflow_run_id"]).data.tags, client.get_model_version(name, "1").tags):
        assert tags[RETRAIN_DS_TAG] == "2026-11-01"
        assert tags[RETRAIN_COLUMNS_TAG] == "amount,country"


def test_empty_retrain_options_record_nothing_and_bad_ones_are_refused() -> None:
    assert retrain_tags("", "") == {}
    assert retrain_tags(" ", ",") == {}
    assert retrain_tags("2026-11-01", "") == {RETRAIN_DS_TAG: "2026-11-01", RETRAIN_COLUMNS_TAG: ""}
    with pytest.raises(StepError, match="--retrain-ds"):
        retrain_tags("None", "amount")
    with pytest.raises(StepError, match="--drifted-columns"):
        retrain_tags("2026-11-01", "amount,$(id)")
    many = ",".join(f"column_{index:04d}" for index in range(1000))
    kept = retrain_tags("2026-11-01", many)[RETRAIN_COLUMNS_TAG]
    assert len(kept) <= 5000
    assert many.startswith(f"{kept},")


def test_same_seed_gives_the_same_booster(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name)
    build_snapshot(local_lake, "run_1")
    argv = ["train", "--config", config, "--training-run", "run_1", "--n-trials", "2"]

    first = run_step(argv, tmp_path / "first.json", monkeypatch)
    second = run_step(argv, tmp_path / "second.json", monkeypatch)

    assert first[0] == second[0] == 0
    assert first[1]["metrics"] == second[1]["metrics"]
    assert first[1]["n_trials"] == 2
    holdout = load_training_set(Lake(local_lake), "run_1").holdout
    from mlsteps.contract.config import load_config

    loaded = load_config(config)
    scores = [predict(load_booster(name, v), holdout, loaded) for v in ("1", "2")]
    np.testing.assert_array_equal(scores[0], scores[1])


def test_a_retried_attempt_of_the_same_dag_run_reuses_its_version(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name)
    build_snapshot(local_lake, "run_1")
    argv = ["train", "--config", config, "--training-run", "run_1", "--run-id", "scheduled__2026-10-11"]
    first = run_step(argv, tmp_path / "first.json", monkeypatch)[1]
    Lake(local_lake).delete(f"reference/{name}/1")  # as if the first attempt died before committing it

    code, second = run_step(argv, tmp_path / "second.json", monkeypatch)

    assert code == 0
    assert second["reused"] is True
    assert second["model_version"] == first["model_version"] == "1"
    assert second["metrics"] == first["metrics"]
    assert Lake(local_lake).manifest(f"reference/{name}/1") is not None
    assert len(mlflow.MlflowClient().search_model_versions(f"name='{name}'")) == 1


def test_cuda_without_a_gpu_fails_clearly(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    build_snapshot(local_lake, "run_1")
    config = write_config(tmp_path, unique_model_name())

    code, result = run_step(["train", "--config", config, "--training-run", "run_1", "--device", "cuda"],
                            tmp_path / "r.json", monkeypatch)  # fmt: skip

    assert code == 2
    assert result == {}
    error = capsys.readouterr().err
    assert "--device cuda was requested but" in error
    assert "use --device cpu" in error


def test_gpu_profile_refuses_cpu_training(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ML_REQUIRE_GPU", "1")
    config = write_config(tmp_path, unique_model_name())

    code, _ = run_step(
        ["train", "--config", config, "--training-run", "run_1"], tmp_path / "r.json", monkeypatch
    )

    assert code == 2
    assert "ML_REQUIRE_GPU=1" in capsys.readouterr().err


def test_missing_snapshot_is_a_clear_error(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, unique_model_name())

    code, _ = run_step(
        ["train", "--config", config, "--training-run", "nope"], tmp_path / "r.json", monkeypatch
    )

    assert code == 2
    assert "run build-training-set" in capsys.readouterr().err


def test_the_dask_engine_registers_the_same_kind_of_version_as_single_node(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from sklearn.metrics import roc_auc_score

    from mlsteps.contract.config import load_config
    from mlsteps.logic.training import train_model, training_splits
    from mlsteps.platform.lineage import MODEL_SHA256_TAG, VERSIONS_TAG
    from mlsteps.platform.mlflow_registry import CALIBRATION_TAG
    from mlsteps.steps.train import DEVICE_TAG, ENGINE_TAG, TRIALS_TAG, WORKERS_TAG

    monkeypatch.setenv("ML_PARQUET_ROW_GROUP_ROWS", "2000")  # several row groups: both workers get data
    name = unique_model_name()
    config = write_config(tmp_path, name, dask={"workers": 2, "memory_limit": "2GiB"})
    build_snapshot(local_lake, "run_1")
    argv = ["train", "--config", config, "--training-run", "run_1", "--engine", "dask", "--run-id", "r1"]

    code, result = run_step(argv, tmp_path / "result.json", monkeypatch)

    assert code == 0
    assert result["model_version"] == "1"
    version = mlflow.MlflowClient().get_model_version(name, "1")
    lineage = {"training_run", "data_fingerprint", "config_hash", "git_sha", "image", PIPELINE_TAG}
    single = {DEVICE_TAG, TRIALS_TAG, VERSIONS_TAG, MODEL_SHA256_TAG, CALIBRATION_TAG}
    assert lineage | single | {ENGINE_TAG, WORKERS_TAG} <= set(version.tags)
    assert (version.tags[ENGINE_TAG], version.tags[WORKERS_TAG]) == ("dask", "2")
    peaks = [result["metrics"][f"worker_{i}_peak_rss_mib"] for i in (0, 1)]
    assert 0 < max(peaks) == result["metrics"]["worker_peak_rss_mib_max"] < 2048  # its memory_limit
    snapshot = load_training_set(Lake(local_lake), "run_1")
    loaded = load_config(config)
    alone = train_model(training_splits(snapshot, loaded), snapshot, loaded, "cpu", 0).booster
    labels = snapshot.holdout["is_fraud"].astype(int)
    aucs = [
        roc_auc_score(labels, predict(b, snapshot.holdout, loaded)) for b in (load_booster(name, "1"), alone)
    ]
    assert abs(aucs[0] - aucs[1]) < 0.01


def test_the_dask_engine_in_kubernetes_mode_refuses_a_pod_without_an_api_token(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ML_EXECUTION_MODE", "kubernetes")
    monkeypatch.setenv("ML_STEP_IMAGE", "mlsteps:0.1.0")
    monkeypatch.delenv("KUBECONFIG", raising=False)
    build_snapshot(local_lake, "run_1")
    config = write_config(tmp_path, unique_model_name(), engine="dask")

    code, result = run_step(
        ["train", "--config", config, "--training-run", "run_1"], tmp_path / "r.json", monkeypatch
    )

    assert (code, result) == (2, {})
    assert "ERROR: model.engine dask in kubernetes mode creates a DaskCluster" in capsys.readouterr().err
