"""Ten promotions racing for the same champion, twenty times over: exactly one wins each race, and the
ledger stays one unbroken chain of promotions."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest

from mlsteps.contract.layout import champion_lock_path
from mlsteps.errors import StepError
from mlsteps.platform.lake import Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.mlflow_registry import CHAMPION, PREVIOUS_CHAMPION
from tests.steps.training_fixtures import (
    race_promotions,
    register_stub_versions,
    unique_model_name,
    write_config,
)

pytestmark = pytest.mark.faults

CONTENDERS = 10
TRIALS = 20


def _register_more(name: str, count: int) -> list[str]:
    """``count`` further approved versions of an existing registered model."""
    from mlsteps.platform.mlflow_registry import APPROVED_TAG, PIPELINE_TAG

    client = mlflow.MlflowClient()
    tags = {PIPELINE_TAG: "card_fraud", APPROVED_TAG: "true"}
    return [
        str(client.create_model_version(name, source="s3://mlflow-artifacts/stub/model", tags=tags).version)
        for _ in range(count)
    ]


def _check_chain(lake: Lake, name: str, champions: list[str]) -> None:
    """The ledger is exactly the sequence of winners, each replacing the one before."""
    ledger = read_ledger(lake, name)
    assert [(e["version"], e["replaced"]) for e in ledger] == list(
        zip(champions, [None, *champions[:-1]], strict=True)
    )
    assert len({e["entry"] for e in ledger}) == len(ledger)
    assert not lake.exists(champion_lock_path(name))


@pytest.mark.parametrize("lake_fixture", ["local_lake", "s3_lake"])
def test_ten_concurrent_promotions_twenty_times_leave_exactly_one_champion(
    lake_fixture: str,
    tracking: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    lake = Lake(request.getfixturevalue(lake_fixture))
    name = unique_model_name("race")
    register_stub_versions(name, 0)
    config = write_config(tmp_path, name)
    client = mlflow.MlflowClient()
    champions: list[str] = []
    seconds: list[float] = []
    for _ in range(TRIALS):
        versions = _register_more(name, CONTENDERS)
        expected = champions[-1] if champions else "none"
        started = time.monotonic()
        outcomes = race_promotions(config, versions, expected)
        seconds.append(time.monotonic() - started)

        assert sorted(outcomes) == sorted(versions)
        winners = [version for version, outcome in outcomes.items() if isinstance(outcome, dict)]
        assert len(winners) == 1, outcomes
        losers = [outcome for outcome in outcomes.values() if isinstance(outcome, StepError)]
        assert len(losers) == CONTENDERS - 1
        assert all("someone else promoted or rolled back since" in str(error) for error in losers), losers
        aliases = {k: str(v) for k, v in client.get_registered_model(name).aliases.items()}
        assert aliases[CHAMPION] == winners[0]
        if champions:
            assert aliases[PREVIOUS_CHAMPION] == champions[-1]
        champions.append(winners[0])
        _check_chain(lake, name, champions)

    figures = {
        "lake": lake_fixture,
        "trials": TRIALS,
        "contenders": CONTENDERS,
        "max_race_seconds": round(max(seconds), 2),
        "mean_race_seconds": round(sum(seconds) / len(seconds), 2),
    }
    path = tmp_path_factory.getbasetemp() / "fault-figures" / f"{request.node.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2))
    print(json.dumps(figures))


def test_concurrent_promotions_in_separate_processes_leave_exactly_one_champion(
    tracking: str, local_lake: str, tmp_path: Path
) -> None:
    """The same race between real ``python -m mlsteps promote`` processes (fewer trials: imports cost)."""
    lake = Lake(local_lake)
    name = unique_model_name("race_processes")
    register_stub_versions(name, 0)
    config = write_config(tmp_path, name)
    champions: list[str] = []
    for trial in range(2):
        versions = _register_more(name, CONTENDERS)
        expected = champions[-1] if champions else "none"
        processes = {
            version: subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "mlsteps",
                    "promote",
                    "--config",
                    config,
                    "--model-version",
                    version,
                    "--expected-champion",
                    expected,
                ],  # fmt: skip
                env={**os.environ, "ML_STEP_RESULT": str(tmp_path / f"{trial}-{version}.json")},
                stdout=subprocess.DEVNULL,
                stderr=(tmp_path / f"{trial}-{version}.log").open("wb"),
            )
            for version in versions
        }
        codes = {version: process.wait(timeout=300) for version, process in processes.items()}
        winners = [version for version, code in codes.items() if code == 0]
        assert len(winners) == 1, codes
        assert sorted(codes.values()) == [0] + [2] * (CONTENDERS - 1)  # refusals, not crashes
        for version in processes:
            if version not in winners:
                assert (
                    "someone else promoted or rolled back since"
                    in (tmp_path / f"{trial}-{version}.log").read_text()
                )
        assert str(mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version) == winners[0]
        champions.append(winners[0])
        _check_chain(lake, name, champions)
