"""The promote step (check-and-set, ledger, idempotence, concurrency) and the lake lock under it."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import mlflow
import pytest

from mlsteps.contract.layout import champion_lock_path, ledger_prefix
from mlsteps.errors import StepError
from mlsteps.platform.lake import Lake
from mlsteps.platform.ledger import read_decisions, read_ledger
from mlsteps.platform.lock import LakeLock, champion_lock
from mlsteps.platform.mlflow_registry import (
    CHAMPION,
    EVALUATED_AGAINST_TAG,
    PREVIOUS_CHAMPION,
    RETRAIN_COLUMNS_TAG,
    RETRAIN_DS_TAG,
)
from tests.steps.training_fixtures import (
    race_promotions,
    register_stub_versions,
    run_step,
    unique_model_name,
    write_config,
)


@pytest.fixture
def model(tracking: str, tmp_path: Path) -> tuple[str, str]:
    """A fresh registered model with three approved stub versions, and a config naming it."""
    name = unique_model_name()
    register_stub_versions(name, 3)
    return name, write_config(tmp_path, name)


def _promote(
    config: str, version: str, expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Any:
    argv = ["promote", "--config", config, "--model-version", version, "--expected-champion", expected]
    return run_step(
        [*argv, "--reason", "test", "--dag-id", "ml_training", "--run-id", "r1"],
        tmp_path / "p.json",
        monkeypatch,
    )


def test_promote_sets_champion_and_appends_the_ledger(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model

    first = _promote(config, "1", "none", tmp_path, monkeypatch)
    second = _promote(config, "2", "1", tmp_path, monkeypatch)

    assert first[0] == second[0] == 0
    assert first[1]["changed"] is True
    assert first[1]["previous_champion"] is None
    assert second[1]["champion_version"] == "2"
    assert second[1]["previous_champion"] == "1"
    assert second[1]["model_uri"] == f"models:/{name}@champion"
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(name, CHAMPION).version == "2"
    assert client.get_model_version_by_alias(name, PREVIOUS_CHAMPION).version == "1"
    tags = client.get_model_version(name, "2").tags
    assert tags["mlsteps.promoted.replaced"] == "1"
    assert tags["mlsteps.promoted.dag_run_id"] == "r1"

    ledger = read_ledger(Lake(local_lake), name)
    assert [(e["action"], e["version"], e["replaced"]) for e in ledger] == [
        ("promote", "1", None),
        ("promote", "2", "1"),
    ]
    assert ledger[1]["reason"] == "test"
    assert ledger[1]["dag_id"] == "ml_training"
    assert {"at", "metrics", "dag_run_id", "config_hash"} <= set(ledger[1])
    assert second[1]["ledger_entry"] == Lake(local_lake).url(ledger[1]["entry"])
    assert Lake(local_lake).list_dir(ledger_prefix(name)) == [e["entry"].rsplit("/", 1)[1] for e in ledger]
    assert not Lake(local_lake).exists(champion_lock_path(name))


def test_repeating_a_promotion_is_a_no_op(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model
    assert _promote(config, "1", "none", tmp_path, monkeypatch)[0] == 0

    code, result = _promote(config, "1", "none", tmp_path, monkeypatch)

    assert code == 0
    assert result["changed"] is False
    assert "already champion" in result["summary"]
    assert len(read_ledger(Lake(local_lake), name)) == 1


def test_a_stale_expected_champion_is_refused(
    model: tuple[str, str],
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, config = model
    assert _promote(config, "1", "none", tmp_path, monkeypatch)[0] == 0

    code, result = _promote(config, "2", "none", tmp_path, monkeypatch)

    assert code == 2
    assert result == {}
    assert "is now version 1, not none" in capsys.readouterr().err
    assert mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version == "1"
    assert len(read_ledger(Lake(local_lake), name)) == 1


def test_an_unapproved_version_is_refused(
    tracking: str,
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = unique_model_name()
    register_stub_versions(name, 1, approved=False)

    code, _ = _promote(write_config(tmp_path, name), "1", "none", tmp_path, monkeypatch)

    assert code == 2
    assert "was rejected by evaluate" in capsys.readouterr().err


def test_a_version_evaluated_against_another_champion_is_refused(
    model: tuple[str, str],
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name, config = model
    mlflow.MlflowClient().set_model_version_tag(name, "2", EVALUATED_AGAINST_TAG, "1")

    code, _ = _promote(config, "2", "none", tmp_path, monkeypatch)

    assert code == 2
    assert "was evaluated against champion 1, not none" in capsys.readouterr().err
    assert read_ledger(Lake(local_lake), name) == []


@pytest.mark.parametrize("lake_fixture", ["local_lake", "s3_lake"])
def test_concurrent_promotions_have_exactly_one_winner(
    lake_fixture: str, tracking: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    lake_uri = request.getfixturevalue(lake_fixture)
    name = unique_model_name()
    versions = register_stub_versions(name, 5)
    config = write_config(tmp_path, name)
    outcomes = race_promotions(config, versions, "none", timeout=120)

    winners = [version for version, outcome in outcomes.items() if isinstance(outcome, dict)]
    assert len(outcomes) == 5
    assert len(winners) == 1
    losers = [outcome for outcome in outcomes.values() if isinstance(outcome, StepError)]
    assert all("not none as when" in str(error) for error in losers)
    assert mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version == winners[0]
    ledger = read_ledger(Lake(lake_uri), name)
    assert [(e["version"], e["replaced"]) for e in ledger] == [(winners[0], None)]


# --- the lock ----------------------------------------------------------------------------


@pytest.mark.parametrize("lake_fixture", ["local_lake", "s3_lake"])
def test_an_expired_lease_is_taken_over_and_the_old_holder_cannot_release_it(
    lake_fixture: str, request: pytest.FixtureRequest
) -> None:
    lake = Lake(request.getfixturevalue(lake_fixture))
    stalled = LakeLock(lake, "locks/m/champion.lock", lease_seconds=0.5)
    stalled.acquire()  # never released, as if the holder was killed
    waiter = LakeLock(lake, "locks/m/champion.lock", lease_seconds=30, wait_seconds=10)

    waiter.acquire()

    with pytest.raises(StepError, match="lease"):
        stalled.ensure_held()
    stalled.release()  # must not delete the new holder's lock
    assert lake.exists("locks/m/champion.lock")
    waiter.ensure_held()
    waiter.release()
    assert not lake.exists("locks/m/champion.lock")


@pytest.mark.parametrize("lake_fixture", ["local_lake", "s3_lake"])
def test_a_held_lock_makes_others_wait_then_give_up(
    lake_fixture: str, request: pytest.FixtureRequest
) -> None:
    lake = Lake(request.getfixturevalue(lake_fixture))
    with champion_lock(lake, "m", purpose="first"):
        started = time.monotonic()
        with pytest.raises(StepError, match="is held by"):
            LakeLock(lake, "locks/m/champion.lock", wait_seconds=0.5).acquire()
        assert time.monotonic() - started >= 0.5
    with champion_lock(lake, "m", purpose="second"):  # released: free again
        pass


@pytest.mark.parametrize("lake_fixture", ["local_lake", "s3_lake"])
def test_racing_acquisitions_of_a_free_lock_have_exactly_one_winner(
    lake_fixture: str, request: pytest.FixtureRequest
) -> None:
    lake = Lake(request.getfixturevalue(lake_fixture))
    rounds, contenders = 20, 8
    locks = [
        [LakeLock(lake, f"locks/race/{r}.lock", wait_seconds=0) for _ in range(contenders)]
        for r in range(rounds)
    ]

    def winners(attempts: list[LakeLock]) -> int:
        start = threading.Barrier(len(attempts))

        def attempt(lock: LakeLock) -> bool:
            start.wait()
            try:
                lock.acquire()
            except StepError:
                return False
            return True

        with ThreadPoolExecutor(len(attempts)) as pool:
            return sum(pool.map(attempt, attempts))

    assert [winners(attempts) for attempts in locks] == [1] * rounds


_COUNTER_WORKER = """
import sys, time
from mlsteps.platform.lake import Lake
from mlsteps.platform.lock import LakeLock
lake = Lake(sys.argv[1])
for _ in range(5):
    with LakeLock(lake, "counter.lock", lease_seconds=30, wait_seconds=60):
        value = int(lake.read_bytes("counter")) if lake.exists("counter") else 0
        time.sleep(0.01)  # widen the read-modify-write window
        lake.write_bytes("counter", str(value + 1).encode())
"""


@pytest.mark.parametrize("lake_fixture", ["local_lake", "s3_lake"])
def test_the_lock_excludes_across_processes(lake_fixture: str, request: pytest.FixtureRequest) -> None:
    lake_uri = request.getfixturevalue(lake_fixture)
    workers = [subprocess.Popen([sys.executable, "-c", _COUNTER_WORKER, lake_uri]) for _ in range(5)]

    codes = [worker.wait(timeout=120) for worker in workers]

    assert codes == [0] * 5
    assert Lake(lake_uri).read_bytes("counter") == b"25"


def test_the_ledger_entry_records_the_drift_that_triggered_the_retrain(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model
    client = mlflow.MlflowClient()
    client.set_model_version_tag(name, "2", RETRAIN_DS_TAG, "2026-11-01")
    client.set_model_version_tag(name, "2", RETRAIN_COLUMNS_TAG, "amount,country")

    assert _promote(config, "1", "none", tmp_path, monkeypatch)[0] == 0
    assert _promote(config, "2", "1", tmp_path, monkeypatch)[0] == 0

    scheduled, drift = read_ledger(Lake(local_lake), name)
    assert "retrain" not in scheduled
    assert drift["retrain"] == {"ds": "2026-11-01", "drifted_columns": ["amount", "country"]}


HOSTILE_COMMENT = (
    "ok $(touch /tmp/pwned) `id` {{ var.value.secret }} --expected-champion 9\n<script>x</script>"
)


def test_an_approved_promotion_records_who_when_and_the_comment(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model
    argv = ["promote", "--config", config, "--model-version", "1", "--expected-champion", "none"]
    argv += ["--approved-by", "alice", "--approved-at", "2026-11-28T07:00:00+00:00"]
    argv += ["--approval-comment", HOSTILE_COMMENT, "--run-id", "r1"]

    code, _ = run_step(argv, tmp_path / "p.json", monkeypatch)

    assert code == 0
    (entry,) = read_ledger(Lake(local_lake), name)
    assert entry["approval"] == {"by": "alice", "at": "2026-11-28T07:00:00+00:00", "comment": HOSTILE_COMMENT}
    tags = mlflow.MlflowClient().get_model_version(name, "1").tags
    assert tags["mlsteps.approval.by"] == "alice"
    assert tags["mlsteps.approval.comment"] == HOSTILE_COMMENT
    assert not Path("/tmp/pwned").exists()


def test_a_promotion_without_approval_records_none(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model
    assert _promote(config, "1", "none", tmp_path, monkeypatch)[0] == 0

    (entry,) = read_ledger(Lake(local_lake), name)
    assert "approval" not in entry
    assert "mlsteps.approval.by" not in mlflow.MlflowClient().get_model_version(name, "1").tags


def _reject(config: str, version: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> Any:
    argv = ["record-decision", "--config", config, "--model-version", version, "--run-id", "r2", *extra]
    return run_step(argv, tmp_path / "d.json", monkeypatch)


def test_a_rejection_is_recorded_beside_the_ledger_and_moves_nothing(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model
    assert _promote(config, "1", "none", tmp_path, monkeypatch)[0] == 0

    code, result = _reject(
        config, "2", tmp_path, monkeypatch, "--decided-by", "bob", "--comment", "not convinced"
    )

    assert code == 0
    assert result["changed"] is False
    assert "rejected by bob" in result["summary"]
    assert mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version == "1"
    assert [e["version"] for e in read_ledger(Lake(local_lake), name)] == ["1"]
    (decision,) = read_decisions(Lake(local_lake), name)
    assert (decision["action"], decision["version"], decision["champion"]) == ("reject", "2", "1")
    assert decision["approval"]["by"] == "bob"
    assert decision["approval"]["comment"] == "not convinced"
    assert decision["timed_out"] is False
    assert mlflow.MlflowClient().get_model_version(name, "2").tags["mlsteps.approval.decision"] == "rejected"


def test_a_rejected_version_cannot_be_rolled_back_to(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model
    assert _promote(config, "1", "none", tmp_path, monkeypatch)[0] == 0
    assert _reject(config, "2", tmp_path, monkeypatch, "--decided-by", "bob")[0] == 0

    code, _ = run_step(
        ["rollback", "--config", config, "--version", "2", "--run-id", "r3"], tmp_path / "r.json", monkeypatch
    )

    assert code == 2
    assert mlflow.MlflowClient().get_model_version_by_alias(name, CHAMPION).version == "1"


def test_a_timed_out_approval_is_recorded_as_no_answer(
    model: tuple[str, str], local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, config = model

    code, result = _reject(config, "1", tmp_path, monkeypatch, "--decided-by", "", "--timed-out", "true")

    assert code == 0
    assert "nobody answered in time" in result["summary"]
    (decision,) = read_decisions(Lake(local_lake), name)
    assert decision["timed_out"] is True
    assert decision["approval"]["by"] == "no answer (approval timed out)"
    assert mlflow.MlflowClient().get_registered_model(name).aliases == {}


def test_a_rejection_needs_a_name_or_a_timeout(
    model: tuple[str, str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _, config = model

    code, _ = _reject(config, "1", tmp_path, monkeypatch, "--decided-by", "")

    assert code == 2
    assert "--decided-by is empty" in capsys.readouterr().err
