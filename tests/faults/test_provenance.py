"""Model provenance: every step that loads or moves a model version refuses one without this pipeline's
lineage tag (``mlsteps.pipeline``), such as a version registered by hand.

Already covered elsewhere: ``score`` with a hand-registered champion (tests/steps/test_score.py) and
``evaluate`` with an untagged or foreign challenger (tests/steps/test_evaluate.py). This module adds
``plan-scoring``, ``score`` and ``commit-predictions`` pinned to such a version, ``evaluate`` against
such a champion, ``promote`` and ``rollback``. ``drift`` loads no model: it compares the committed
predictions with the reference sample that ``train`` wrote for the version, and a version without
that reference is refused (tests/steps/test_drift.py).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import mlflow
import pyarrow as pa
import pytest

from mlsteps.contract.layout import partition
from mlsteps.platform.lake import Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.mlflow_registry import APPROVED_TAG, CHAMPION, PIPELINE_TAG
from tests.steps.training_fixtures import (
    FEATURES,
    build_features,
    build_snapshot,
    register_stub_versions,
    run_step,
    unique_model_name,
    write_config,
)

REFUSAL = "refusing to use a model without this pipeline's lineage"
KEYS = ["transaction_id", "customer_id", "event_time"]


def _by_hand(name: str, **tags: str) -> str:
    """A version registered by hand: whatever tags the person set, but not this pipeline's lineage."""
    version = mlflow.MlflowClient().create_model_version(
        name, source="s3://mlflow-artifacts/stub/model", tags=tags
    )
    return str(version.version)


def _refused(code: int, capsys: pytest.CaptureFixture[str], version: str) -> None:
    error = capsys.readouterr().err
    assert code == 2, error
    assert REFUSAL in error
    assert f"version {version} " in error


# --- promote and rollback --------------------------------------------------------------------------


@pytest.mark.parametrize("owner", ["", "another_pipeline"], ids=["untagged", "another_pipeline"])
def test_promote_refuses_a_version_without_this_pipelines_lineage(
    owner: str,
    tracking: str,
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = unique_model_name("provenance")
    register_stub_versions(name, 0)
    tags = {APPROVED_TAG: "true", **({PIPELINE_TAG: owner} if owner else {})}  # approval alone is not enough
    version = _by_hand(name, **tags)
    config = write_config(tmp_path, name)

    argv = ["promote", "--config", config, "--model-version", version, "--expected-champion", "none"]
    _refused(run_step(argv, tmp_path / "r.json", monkeypatch)[0], capsys, version)

    assert mlflow.MlflowClient().get_registered_model(name).aliases == {}
    assert read_ledger(Lake(local_lake), name) == []


def test_rollback_refuses_a_version_whose_lineage_was_removed_by_hand(
    tracking: str,
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = unique_model_name("provenance")
    register_stub_versions(name, 2)
    config = write_config(tmp_path, name)
    for version, expected in (("1", "none"), ("2", "1")):
        argv = ["promote", "--config", config, "--model-version", version, "--expected-champion", expected]
        assert run_step(argv, tmp_path / "p.json", monkeypatch)[0] == 0
    client = mlflow.MlflowClient()
    client.delete_model_version_tag(name, "1", PIPELINE_TAG)

    argv = ["rollback", "--config", config, "--version", "previous"]
    _refused(run_step(argv, tmp_path / "r.json", monkeypatch)[0], capsys, "1")

    assert str(client.get_model_version_by_alias(name, CHAMPION).version) == "2"
    assert len(read_ledger(Lake(local_lake), name)) == 2


# --- scoring ------------------------------------------------------------------------------------


@pytest.fixture
def stray_champion(
    tracking: str, s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A day of features, and a registered model whose champion was registered by hand."""
    name = unique_model_name("provenance")
    register_stub_versions(name, 1)
    stray = _by_hand(name, **{APPROVED_TAG: "true"})
    mlflow.MlflowClient().set_registered_model_alias(name, CHAMPION, stray)
    monkeypatch.setenv("ML_PIPELINE_CONFIG", write_config(tmp_path, name))
    frame = build_features(days=2, rows_per_day=200)
    day = frame["event_time"].max().date()
    lake = Lake(s3_lake)
    staging = lake.stage(partition("features/transactions", day))
    rows = frame[frame["event_time"].dt.date == day]
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(rows[KEYS + FEATURES], preserve_index=False))
    lake.commit(staging, {"feature_columns": FEATURES})
    return {"name": name, "version": stray, "day": day, "lake": lake}


def _no_predictions(champion: dict[str, Any]) -> None:
    lake: Lake = champion["lake"]
    prefix = partition(f"predictions/{champion['name']}", champion["day"])
    assert lake.manifest(prefix) is None
    assert lake.list_dir(prefix) == []


def test_plan_scoring_refuses_a_champion_registered_by_hand(
    stray_champion: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["plan-scoring", "--ds", stray_champion["day"].isoformat(), "--shard-count", "2"]
    _refused(run_step(argv, tmp_path / "r.json", monkeypatch)[0], capsys, stray_champion["version"])
    _no_predictions(stray_champion)


@pytest.mark.parametrize("step", ["score", "commit-predictions"])
def test_a_shard_pinned_to_a_version_registered_by_hand_is_refused(
    step: str,
    stray_champion: dict[str, Any],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A pinned ``--model-version`` (as plan-scoring passes it on) gets the same check as an alias."""
    day, version = stray_champion["day"].isoformat(), stray_champion["version"]
    argv = [step, "--ds", day, "--model-version", version, "--shard-count", "1", "--run-id", "pinned"]
    _refused(run_step(argv, tmp_path / "r.json", monkeypatch)[0], capsys, version)
    _no_predictions(stray_champion)
    assert stray_champion["lake"].list_dir("_staging/predictions") == []


# --- evaluate --------------------------------------------------------------------------------------


def test_evaluate_refuses_to_compare_with_a_champion_registered_by_hand(
    tracking: str,
    s3_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The champion's booster would be loaded and scored: it must carry the lineage too."""
    name = unique_model_name("provenance")
    config = write_config(tmp_path, name)
    monkeypatch.setenv("ML_PIPELINE_CONFIG", config)
    build_snapshot(s3_lake, "good", frame=build_features(days=6, rows_per_day=600))
    code, trained = run_step(["train", "--training-run", "good"], tmp_path / "t.json", monkeypatch)
    assert code == 0
    client = mlflow.MlflowClient()
    source = client.get_model_version(name, trained["model_version"]).source
    stray = str(mlflow.register_model(source, name).version)  # the same model files, registered by hand
    client.set_registered_model_alias(name, CHAMPION, stray)

    argv = ["evaluate", "--model-version", trained["model_version"], "--training-run", "good",
            "--ds", dt.date(2026, 10, 7).isoformat()]  # fmt: skip
    _refused(run_step(argv, tmp_path / "e.json", monkeypatch)[0], capsys, stray)

    tags = client.get_model_version(name, trained["model_version"]).tags
    assert APPROVED_TAG not in tags  # no verdict was recorded on the challenger
