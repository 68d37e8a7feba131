"""The rollback step: to the previous or a named champion, ledgered; never to an unpromoted version."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow
import pytest

from mlsteps.platform.lake import Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.mlflow_registry import CHAMPION, PREVIOUS_CHAMPION
from tests.steps.training_fixtures import register_stub_versions, run_step, unique_model_name, write_config


@pytest.fixture
def promoted(
    mlflow_tracking, s3_env, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, str]:
    """A model with three approved versions, of which 1 then 2 were promoted (2 is champion)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking.tracking_uri)
    name = unique_model_name()
    register_stub_versions(name, 3)
    config = write_config(tmp_path, name)
    for version, expected in (("1", "none"), ("2", "1")):
        argv = ["promote", "--config", config, "--model-version", version, "--expected-champion", expected]
        assert run_step(argv, tmp_path / "p.json", monkeypatch)[0] == 0
    return name, config


def _rollback(
    config: str, version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[int, dict[str, Any]]:
    argv = [
        "rollback",
        "--config",
        config,
        "--version",
        version,
        "--reason",
        "bad scores",
        "--run-id",
        "manual_1",
    ]
    return run_step(argv, tmp_path / "r.json", monkeypatch)


def _champion(name: str) -> str:
    return str(mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version)


def test_rollback_to_previous_and_undo(
    promoted: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = promoted

    code, result = _rollback(config, "previous", tmp_path, monkeypatch)

    assert code == 0
    assert result["changed"] is True
    assert result["champion_version"] == "1"
    assert result["previous_champion"] == "2"
    assert _champion(name) == "1"
    assert mlflow.MlflowClient().get_model_version_by_alias(name, PREVIOUS_CHAMPION).version == "2"
    ledger = read_ledger(Lake(local_lake), name)
    assert [(e["action"], e["version"], e["replaced"]) for e in ledger] == [
        ("promote", "1", None),
        ("promote", "2", "1"),
        ("rollback", "1", "2"),
    ]
    assert ledger[-1]["reason"] == "bad scores"
    assert ledger[-1]["dag_run_id"] == "manual_1"

    undo = _rollback(config, "previous", tmp_path, monkeypatch)  # the rollback replaced 2, so back to 2

    assert undo[1]["champion_version"] == "2"
    assert _champion(name) == "2"


def test_rollback_to_a_named_version_and_to_the_champion_itself(
    promoted: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = promoted

    assert _rollback(config, "1", tmp_path, monkeypatch)[1]["champion_version"] == "1"
    code, again = _rollback(config, "1", tmp_path, monkeypatch)

    assert code == 0
    assert again["changed"] is False
    assert _champion(name) == "1"
    assert len(read_ledger(Lake(local_lake), name)) == 3


def test_a_version_never_promoted_is_refused(
    promoted: tuple[str, str],
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, config = promoted

    code, result = _rollback(config, "3", tmp_path, monkeypatch)

    assert code == 2
    assert result == {}
    assert "version 3 of" in capsys.readouterr().err
    assert _champion(name) == "2"
    assert len(read_ledger(Lake(local_lake), name)) == 2


def test_previous_without_an_earlier_champion_is_refused(
    mlflow_tracking,
    s3_env,
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking.tracking_uri)
    name = unique_model_name()
    register_stub_versions(name, 1)
    config = write_config(tmp_path, name)
    promote = ["promote", "--config", config, "--model-version", "1", "--expected-champion", "none"]
    assert run_step(promote, tmp_path / "p.json", monkeypatch)[0] == 0

    code, _ = _rollback(config, "previous", tmp_path, monkeypatch)

    assert code == 2
    assert "nothing to roll back to" in capsys.readouterr().err
