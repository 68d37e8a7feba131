"""reproduce: rebuild a version from its records in scratch; identical, or differs on a raw change."""

from __future__ import annotations

import json
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mlsteps.cli import main
from mlsteps.platform.lake import Lake
from mlsteps.platform.lineage import MODEL_SHA256_TAG
from tests.steps.lineage_fixtures import TRAINING_RUN, PipelineRun, environment, run_pipeline, step
from tests.steps.training_fixtures import rewrite_raw_row
from tests.support.services import S3Server


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, mlflow_tracking: Any) -> PipelineRun:
    return run_pipeline(tmp_path_factory.mktemp("reproduce"), mlflow_tracking.tracking_uri)


def reproduce(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str], lake: str | None = None, *extra: str
) -> tuple[int, dict[str, Any], str]:
    with environment(pipeline.env(lake)):
        code = main(["reproduce", "--model-version", pipeline.version, "--json", *extra])
    captured = capsys.readouterr()
    return code, json.loads(captured.out) if code == 0 else {}, captured.err


def upload(pipeline: PipelineRun, s3: S3Server) -> str:
    """A copy of the module's pipeline lake in a fresh prefix of the loopback S3 bucket; its URI."""
    import pyarrow.fs as pafs

    s3.create_bucket("lake")
    lake = Lake(f"s3://lake/{uuid.uuid4().hex[:12]}")
    pafs.copy_files(pipeline.lake, lake.path(""), pafs.LocalFileSystem(), lake.fs)
    return lake.uri


def objects(s3: S3Server, uri: str) -> dict[str, tuple[str, Any]]:
    """Every object under an ``s3://`` URI with its ETag and time, as the S3 API lists them."""
    import boto3

    bucket, _, prefix = uri.removeprefix("s3://").partition("/")
    client = boto3.client("s3", endpoint_url=s3.endpoint)
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{prefix}/")
    return {
        found["Key"]: (found["ETag"], found["LastModified"])
        for page in pages
        for found in page.get("Contents", [])
    }


def engine_of(pipeline: PipelineRun, version: str) -> str | None:
    """The engine a version records it was trained on."""
    from mlflow import MlflowClient

    from mlsteps.steps.train import ENGINE_TAG

    found = MlflowClient(pipeline.tracking_uri).get_model_version(pipeline.model, version)
    return (found.tags or {}).get(ENGINE_TAG)


def listing(root: str) -> dict[str, int]:
    """Every file under a directory with its modification time: what must not change."""
    return {str(path): path.stat().st_mtime_ns for path in Path(root).rglob("*") if path.is_file()}


def test_a_version_trained_here_reproduces_identically_without_touching_the_originals(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    lake_before, state_before = listing(pipeline.lake), listing(pipeline.state)

    code, report, _ = reproduce(pipeline, capsys)

    assert code == 0
    assert report["verdict"] == "identical"
    assert report["first_difference"] is None
    assert report["training_run"] == TRAINING_RUN
    checks = {check["check"]: check for check in report["checks"]}
    assert list(checks) == ["config", "training-set fingerprint", "hyperparameters", "booster sha256"]
    assert all(check["same"] for check in checks.values())
    snapshot = Lake(pipeline.lake).manifest(f"training/{TRAINING_RUN}")
    assert snapshot is not None
    assert checks["training-set fingerprint"]["rebuilt"] == snapshot["fingerprint"]
    assert listing(pipeline.lake) == lake_before  # the scratch prefix is gone, nothing else was written
    assert listing(pipeline.state) == state_before  # the real Feast registry was not touched


def test_one_changed_raw_row_differs_at_the_training_set_fingerprint(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    rewrite_raw_row(lake_copy, "raw/transactions", "2026-10-05", 100.0)

    code, report, _ = reproduce(pipeline, capsys, lake_copy.uri, "--keep-scratch")

    assert code == 0
    assert report["verdict"] == "differs"
    first = report["first_difference"]
    assert first["check"] == "training-set fingerprint"
    assert first["recorded"] != first["rebuilt"]
    assert "raw partition(s) changed since training: 2026-10-05" in first["detail"]
    assert "first differing value:" in first["detail"]
    assert report["verdict_text"] == "differs: first difference in training-set fingerprint"
    scratch = Lake(report["scratch"])
    assert scratch.uri.startswith(f"{lake_copy.uri}/_scratch/reproduce/{pipeline.model}-v{pipeline.version}-")
    assert scratch.manifest(f"training/{TRAINING_RUN}") is not None  # kept for inspection
    original = lake_copy.manifest(f"training/{TRAINING_RUN}")
    assert original is not None
    assert original["fingerprint"] == first["recorded"]  # the original snapshot was not overwritten


def test_a_missing_training_record_is_named(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    lake_copy.delete(f"training/{TRAINING_RUN}/_SUCCESS.json")

    code, _, err = reproduce(pipeline, capsys, lake_copy.uri)

    assert code == 2
    record = lake_copy.url(f"training/{TRAINING_RUN}/_SUCCESS.json")
    assert err.strip().splitlines()[-1].startswith(f"ERROR: training snapshot record {record} of version")
    assert "cannot be reproduced" in err


def test_other_booster_bytes_with_the_same_predictions_are_equivalent(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    """As on another machine or XGBoost build: the bytes differ, the holdout predictions do not."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=pipeline.tracking_uri)
    recorded = client.get_model_version(pipeline.model, pipeline.version).tags[MODEL_SHA256_TAG]
    client.set_model_version_tag(pipeline.model, pipeline.version, MODEL_SHA256_TAG, "0" * 64)
    try:
        code, report, _ = reproduce(pipeline, capsys)
    finally:
        client.set_model_version_tag(pipeline.model, pipeline.version, MODEL_SHA256_TAG, recorded)

    assert code == 0
    assert report["verdict"] == "equivalent"
    assert report["verdict_text"] == "equivalent (max |Δp| = 0)"
    assert report["first_difference"]["check"] == "booster sha256"
    assert report["checks"][-1]["check"] == "holdout predictions"
    assert report["checks"][-1]["same"] is True


def test_a_version_tuned_with_optuna_trials_reproduces_identically(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The config says 0 trials; the version was tuned with 3 through --n-trials: its records rebuild it."""
    with environment(pipeline.env(lake_copy.uri)):
        tuned = step(["train", "--training-run", TRAINING_RUN, "--n-trials", "3"], tmp_path / "result.json")
    capsys.readouterr()  # the train step's own output

    code, report, _ = reproduce(replace(pipeline, version=tuned["model_version"]), capsys, lake_copy.uri)

    assert tuned["n_trials"] == 3
    assert code == 0
    assert report["verdict"] == "identical", report["first_difference"]
    checks = {check["check"]: check for check in report["checks"]}
    assert checks["hyperparameters"]["rebuilt"] == checks["hyperparameters"]["recorded"]
    assert "3 Optuna trials" in checks["hyperparameters"]["rebuilt"]


def test_a_version_trained_on_dask_workers_reproduces_on_a_dask_cluster(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """The version records engine dask and 2 workers; reproduce retrains it on a fresh cluster of 2.
    ``equivalent`` is allowed: the README's definition for a distributed fit (same predictions)."""
    with environment(pipeline.env(lake_copy.uri)):
        argv = ["train", "--training-run", TRAINING_RUN, "--engine", "dask", "--force", "true"]
        trained = step(argv, tmp_path / "result.json")
    capsys.readouterr()  # the train step's own output

    code, report, _ = reproduce(replace(pipeline, version=trained["model_version"]), capsys, lake_copy.uri)

    assert code == 0
    assert report["verdict"] in ("identical", "equivalent"), report["first_difference"]
    assert engine_of(pipeline, trained["model_version"]) == "dask"


def test_on_an_s3_lake_a_version_reproduces_identically_and_leaves_no_object_behind(
    pipeline: PipelineRun, s3_env: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = upload(pipeline, s3_env)
    before = objects(s3_env, lake)

    code, report, _ = reproduce(pipeline, capsys, lake)

    assert code == 0
    assert report["verdict"] == "identical", report["first_difference"]
    assert objects(s3_env, lake) == before  # scratch deleted, no original (nor directory marker) written


def test_on_an_s3_lake_one_changed_raw_value_differs_at_the_training_set_fingerprint(
    pipeline: PipelineRun, s3_env: S3Server, capsys: pytest.CaptureFixture[str]
) -> None:
    lake = upload(pipeline, s3_env)
    rewrite_raw_row(Lake(lake), "raw/transactions", "2026-10-05", 100.0)

    code, report, _ = reproduce(pipeline, capsys, lake, "--keep-scratch")

    assert code == 0
    assert report["verdict_text"] == "differs: first difference in training-set fingerprint"
    first = report["first_difference"]
    assert "raw partition(s) changed since training: 2026-10-05" in first["detail"]
    scratch = Lake(report["scratch"])
    assert scratch.uri.startswith(f"{lake}/_scratch/reproduce/{pipeline.model}-v{pipeline.version}-")
    rebuilt = scratch.manifest(f"training/{TRAINING_RUN}")
    original = Lake(lake).manifest(f"training/{TRAINING_RUN}")
    assert rebuilt is not None
    assert rebuilt["fingerprint"] == first["rebuilt"]  # the rebuilt snapshot, written on S3
    assert original is not None
    assert original["fingerprint"] == first["recorded"]  # the original was not overwritten
