"""Batch scoring on a real S3 API and mlflow server: atomic, idempotent, sharded, refusing bad input."""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from mlflow import MlflowClient

from mlsteps.contract.config import load_config
from mlsteps.contract.layout import partition, shadow_predictions_prefix
from mlsteps.platform import mlflow_registry
from mlsteps.platform.datasets import load_training_set
from mlsteps.platform.lake import Lake
from mlsteps.steps.evaluate import predict_holdout
from tests.steps.training_fixtures import (
    FEATURES,
    build_features,
    build_snapshot,
    run_step,
    unique_model_name,
    write_config,
)

KEYS = ["transaction_id", "customer_id", "event_time"]


@pytest.fixture(scope="module")
def frame() -> pd.DataFrame:
    return build_features(days=6, rows_per_day=1_000)


@pytest.fixture
def scoring(
    mlflow_tracking: Any, s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame
) -> dict[str, Any]:
    """A champion trained by the real train step, and the last day's features committed in the lake."""
    monkeypatch.setenv("ML_PARQUET_ROW_GROUP_ROWS", "200")  # several row groups, so shards get work
    return champion_and_features(mlflow_tracking, s3_lake, tmp_path, monkeypatch, frame, "score")


def champion_and_features(
    mlflow_tracking: Any,
    s3_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    frame: pd.DataFrame,
    prefix: str,
    **config: Any,
) -> dict[str, Any]:
    """Train a champion with the real train step (``config`` overrides its pipeline config) and
    commit the last day's features in the lake."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking.tracking_uri)
    model = unique_model_name(prefix)
    config_file = write_config(tmp_path, model, **config)
    monkeypatch.setenv("ML_PIPELINE_CONFIG", config_file)
    build_snapshot(s3_lake, "r1", frame=frame)
    code, trained = run_step(["train", "--training-run", "r1"], tmp_path / "train.json", monkeypatch)
    assert code == 0
    MlflowClient().set_registered_model_alias(model, "champion", trained["model_version"])
    day = frame["event_time"].max().date()
    write_features(Lake(s3_lake), day, frame[frame["event_time"].dt.date == day].drop(columns=["is_fraud"]))
    return {
        "model": model,
        "version": trained["model_version"],
        "day": day,
        "lake": Lake(s3_lake),
        "tmp": tmp_path,
        "config": config_file,
    }


def write_features(lake: Lake, day: dt.date, rows: pd.DataFrame) -> None:
    staging = lake.stage(partition("features/transactions", day))
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(rows[KEYS + FEATURES], preserve_index=False))
    lake.commit(staging, {"feature_columns": FEATURES})


def predictions(lake: Lake, model: str, day: dt.date) -> tuple[dict[str, Any], pd.DataFrame]:
    prefix = partition(f"predictions/{model}", day)
    manifest = lake.manifest(prefix)
    assert manifest is not None
    table = lake.read_table(lake.partition_files(prefix)).to_pandas()
    return manifest, table.sort_values("transaction_id").reset_index(drop=True)


def score(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch, *extra: str, run_id: str = "run-a"
) -> tuple:
    argv = ["score", "--ds", scoring["day"].isoformat(), "--run-id", run_id, *extra]
    return run_step(argv, scoring["tmp"] / "score.json", monkeypatch)


def test_partition_is_committed_with_lineage_and_reruns_identically(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, result = score(scoring, monkeypatch)
    assert code == 0
    manifest, first = predictions(scoring["lake"], scoring["model"], scoring["day"])
    expected_rows = 1_000 + 0  # build_features' ordinary rows plus bursts: compare with the input instead
    assert manifest["rows_in"] == manifest["rows_out"] == len(first) == result["rows"] >= expected_rows
    assert str(manifest["model_version"]) == scoring["version"]
    assert manifest["model_run_id"]
    assert manifest["alias"] == "champion"
    assert manifest["dag_run_id"] == "run-a"
    assert manifest["feature_fingerprint"]
    assert all(len(entry["sha256"]) == 64 for entry in manifest["files"])
    assert list(first.columns) == [*KEYS, "score", "decision"]
    assert first["transaction_id"].is_unique

    code, _ = score(scoring, monkeypatch, run_id="run-b")
    assert code == 0
    again_manifest, again = predictions(scoring["lake"], scoring["model"], scoring["day"])
    pd.testing.assert_frame_equal(first, again)
    files = scoring["lake"].list_dir(partition(f"predictions/{scoring['model']}", scoring["day"]))
    assert len(files) == len(again_manifest["files"]) + 1  # the parts plus _SUCCESS.json: no leftovers


def test_the_result_says_how_long_the_model_took_to_arrive(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, result = score(scoring, monkeypatch, "--shard-count", "2", "--defer-commit")
    assert code == 0
    assert 0 < result["model_seconds"] <= result["seconds"]


def test_sharded_run_equals_unsharded(scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    assert score(scoring, monkeypatch)[0] == 0
    _, unsharded = predictions(scoring["lake"], scoring["model"], scoring["day"])
    day = scoring["day"].isoformat()
    code, plan = run_step(
        ["plan-scoring", "--ds", day, "--shard-count", "3"], scoring["tmp"] / "p.json", monkeypatch
    )
    assert code == 0
    scored = []
    for shard in plan["shards"]:
        code, result = score(scoring, monkeypatch, *shard, "--defer-commit", run_id="sharded")
        assert code == 0
        scored.append(result["rows"])
    assert min(scored) > 0, f"every shard should get row groups: {scored}"
    argv = ["commit-predictions", "--ds", day, "--run-id", "sharded", "--shard-count", "3",
            "--model-version", plan["model_version"]]  # fmt: skip
    assert run_step(argv, scoring["tmp"] / "c.json", monkeypatch)[0] == 0
    manifest, sharded = predictions(scoring["lake"], scoring["model"], scoring["day"])
    assert manifest["shards"] == 3
    pd.testing.assert_frame_equal(unsharded, sharded)


def test_commit_refuses_until_every_shard_finished(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    day = scoring["day"].isoformat()
    assert (
        score(
            scoring, monkeypatch, "--shard-index", "0", "--shard-count", "2", "--defer-commit", run_id="half"
        )[0]
        == 0
    )
    argv = ["commit-predictions", "--ds", day, "--run-id", "half", "--shard-count", "2",
            "--model-version", scoring["version"]]  # fmt: skip
    assert run_step(argv, scoring["tmp"] / "c.json", monkeypatch)[0] == 2
    assert "shard(s) [1] of 2 have not finished" in capsys.readouterr().err
    assert scoring["lake"].manifest(partition(f"predictions/{scoring['model']}", scoring["day"])) is None


def test_killed_scoring_leaves_nothing_visible_and_a_rerun_completes(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake: Lake = scoring["lake"]
    prefix = partition(f"predictions/{scoring['model']}", scoring["day"])
    env = {**os.environ, "ML_STEP_RESULT": str(scoring["tmp"] / "killed.json")}
    argv = [sys.executable, "-m", "mlsteps", "score", "--ds", scoring["day"].isoformat(),
            "--run-id", "killed", "--batch-rows", "50"]  # fmt: skip
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    staged = f"_staging/{prefix}/killed"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and process.poll() is None:
        if any(name.endswith(".parquet") for name in lake.list_dir(staged)):
            break
        time.sleep(0.01)
    assert process.poll() is None, "scoring finished before it could be killed"
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert lake.manifest(prefix) is None
    assert lake.partition_files(prefix) == []

    code, result = score(scoring, monkeypatch, run_id="killed")
    assert code == 0
    manifest, table = predictions(lake, scoring["model"], scoring["day"])
    assert manifest["rows_out"] == len(table) == result["rows"]
    assert table["transaction_id"].is_unique


def test_missing_champion_is_refused(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    MlflowClient().delete_registered_model_alias(scoring["model"], "champion")
    assert score(scoring, monkeypatch)[0] == 2
    assert f"registered model '{scoring['model']}' has no alias 'champion'" in capsys.readouterr().err


def test_schema_mismatch_and_empty_input_are_refused(
    scoring: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    frame: pd.DataFrame,
) -> None:
    lake: Lake = scoring["lake"]
    day = scoring["day"]
    rows = frame[frame["event_time"].dt.date == day]
    staging = lake.stage(partition("features/transactions", day))
    staging.write_parquet("0.parquet", pa.Table.from_pandas(rows[KEYS + FEATURES[:-1]], preserve_index=False))
    lake.commit(staging, {})
    assert score(scoring, monkeypatch)[0] == 2
    assert "does not match the model's signature: missing feature column(s) ['amount_to_customer_mean']" in (
        capsys.readouterr().err
    )
    write_features(lake, day, rows.iloc[0:0])
    assert score(scoring, monkeypatch)[0] == 2
    assert "is empty; nothing to score" in capsys.readouterr().err


def test_version_without_pipeline_lineage_is_refused(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import mlflow

    client = MlflowClient()
    trained = client.get_model_version(scoring["model"], scoring["version"])
    stray = mlflow.register_model(trained.source, scoring["model"])  # by hand: same model, no lineage tags
    client.set_registered_model_alias(scoring["model"], "champion", stray.version)
    assert score(scoring, monkeypatch)[0] == 2
    assert "refusing to use a model without this pipeline's lineage" in capsys.readouterr().err


def register_challenger(model: str, champion: str) -> str:
    """A second version of the champion's own model, aliased challenger (as train would register one)."""
    import mlflow

    client = MlflowClient()
    trained = client.get_model_version(model, champion)
    created = mlflow.register_model(trained.source, model, tags=trained.tags)  # as train registers
    client.set_registered_model_alias(model, "challenger", created.version)
    return str(created.version)


def listing(lake: Lake, prefix: str) -> dict[str, bytes]:
    return {name: lake.read_bytes(f"{prefix}/{name}") for name in lake.list_dir(prefix)}


def shadow_rows(lake: Lake, prefix: str) -> pd.DataFrame:
    table = lake.read_table(lake.partition_files(prefix)).to_pandas()
    return table.sort_values("transaction_id").reset_index(drop=True)


def test_shadow_scoring_commits_apart_and_never_touches_the_champions_partition(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    lake, model, day = scoring["lake"], scoring["model"], scoring["day"]
    shadow_prefix = shadow_predictions_prefix(model, day)
    # train aliased the champion challenger too: nothing to shadow yet, which is a result, not a failure
    argv = ["plan-scoring", "--ds", day.isoformat(), "--shadow"]
    code, plan = run_step(argv, scoring["tmp"] / "p.json", monkeypatch)
    assert code == 0
    assert plan["shards"] == []
    assert plan["summary"].startswith("no challenger to shadow")
    assert not lake.exists(shadow_prefix)

    assert score(scoring, monkeypatch)[0] == 0
    champion = listing(lake, partition(f"predictions/{model}", day))
    challenger = register_challenger(model, scoring["version"])
    # the DAG's path: plan the challenger, score its shards, commit them into the shadow prefix
    code, plan = run_step(argv + ["--shard-count", "2"], scoring["tmp"] / "p.json", monkeypatch)
    assert (code, plan["model_version"], len(plan["shards"])) == (0, challenger, 2)
    for shard in plan["shards"]:
        assert score(scoring, monkeypatch, *shard, "--shadow", "--defer-commit", run_id="shadow-a")[0] == 0
    argv = ["commit-predictions", "--ds", day.isoformat(), "--run-id", "shadow-a", "--shard-count", "2",
            "--model-version", challenger, "--shadow"]  # fmt: skip
    code, result = run_step(argv, scoring["tmp"] / "c.json", monkeypatch)
    assert code == 0
    assert result["uri"].endswith(shadow_prefix)
    manifest = lake.manifest(shadow_prefix)
    assert manifest is not None
    assert (manifest["role"], manifest["alias"], manifest["model_version"]) == (
        "shadow",
        "challenger",
        challenger,
    )
    assert manifest["champion_version"] == scoring["version"]
    assert manifest["dag_run_id"] == "shadow-a"
    assert manifest["rows_out"] == manifest["rows_in"]
    assert listing(lake, partition(f"predictions/{model}", day)) == champion  # byte for byte

    first = shadow_rows(lake, shadow_prefix)
    # a rerun (here the one-step path: the latest challenger, scored and committed) replaces the day
    assert score(scoring, monkeypatch, "--shadow", run_id="shadow-b")[0] == 0
    pd.testing.assert_frame_equal(first, shadow_rows(lake, shadow_prefix))
    rerun = lake.manifest(shadow_prefix)
    assert rerun is not None
    assert len(lake.list_dir(shadow_prefix)) == len(rerun["files"]) + 1  # no leftovers
    assert listing(lake, partition(f"predictions/{model}", day)) == champion

    code, compared = run_step(
        ["compare-shadow", "--ds", day.isoformat()], scoring["tmp"] / "c.json", monkeypatch
    )
    assert code == 0
    assert (compared["champion_version"], compared["shadow_version"]) == (scoring["version"], challenger)
    assert compared["comparison"]["decision_agreement"] == 1.0  # the same booster under two versions
    assert compared["comparison"]["rows"] == manifest["rows_out"]


def test_a_day_with_new_categories_is_scored_and_every_new_value_alike(
    scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame
) -> None:
    day, lake = scoring["day"], scoring["lake"]
    rows = frame[frame["event_time"].dt.date == day].drop(columns=["is_fraud"]).reset_index(drop=True)
    scores = []
    for new_value in ("crypto_exchange", "space_travel"):  # outside merchant_category's categories
        landed = rows.copy()
        landed.loc[::2, "merchant_category"] = new_value
        write_features(lake, day, landed)
        code, _ = score(scoring, monkeypatch, run_id=f"run-{new_value}")
        assert code == 0
        manifest, table = predictions(lake, scoring["model"], day)
        assert manifest["rows_out"] == len(rows)
        scores.append(table["score"].to_numpy())
    np.testing.assert_array_equal(scores[0], scores[1])


def test_a_calibrated_champion_is_scored_as_evaluate_scores_it_not_raw(
    mlflow_tracking: Any, s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, frame: pd.DataFrame
) -> None:
    champion = champion_and_features(
        mlflow_tracking, s3_lake, tmp_path, monkeypatch, frame, "calibrated", calibration="isotonic"
    )
    model, day, config = champion["model"], champion["day"], champion["config"]
    assert run_step(["score", "--ds", day.isoformat()], tmp_path / "score.json", monkeypatch)[0] == 0
    scored = predictions(Lake(s3_lake), model, day)[1]["score"].to_numpy()

    snapshot = load_training_set(Lake(s3_lake), "r1")
    rows = snapshot.holdout[snapshot.holdout["event_time"].dt.date == day].sort_values("transaction_id")
    day_set, settings = dataclasses.replace(snapshot, holdout=rows), load_config(config)
    loaded = mlflow_registry.load_model(model, champion["version"])
    raw = predict_holdout(dataclasses.replace(loaded, calibrator=None), day_set, settings)
    np.testing.assert_array_equal(scored, predict_holdout(loaded, day_set, settings))
    assert np.abs(scored - raw).max() > 0.01
