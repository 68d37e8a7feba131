"""SIGKILL of ``materialize``, ``score`` and ``promote`` subprocesses at several points: nothing partial is
visible afterwards, and a rerun completes with the same result as an uninterrupted run."""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pyarrow as pa
import pytest

from mlsteps.contract.layout import champion_lock_path, partition
from mlsteps.platform.lake import MARKER, STAGING, Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.mlflow_registry import CHAMPION, PREVIOUS_CHAMPION
from tests.conftest import DEFAULT_CONFIG
from tests.steps.training_fixtures import (
    FEATURES,
    build_features,
    build_snapshot,
    register_stub_versions,
    run_step,
    unique_model_name,
    write_config,
)

KEYS = ["transaction_id", "customer_id", "event_time"]


# --- shared checks --------------------------------------------------------------------------------


def partition_problems(lake: Lake) -> list[str]:
    """Every way a reader could see partial state: data readable without a manifest, or a manifest
    whose files are missing or differ from their recorded SHA-256."""
    problems = []
    for prefix in sorted(_partitions(lake)):
        manifest = lake.manifest(prefix)
        if manifest is None:
            if lake.partition_files(prefix):
                problems.append(f"{prefix}: {lake.partition_files(prefix)} readable without {MARKER}")
            continue
        for entry in manifest["files"]:
            path = f"{prefix}/{entry['path']}"
            if not lake.exists(path):
                problems.append(f"{path}: listed in the manifest but missing")
            elif hashlib.sha256(lake.read_bytes(path)).hexdigest() != entry["sha256"]:
                problems.append(f"{path}: content differs from the manifest's sha256")
    return problems


def _partitions(lake: Lake) -> set[str]:
    """Directories outside staging that hold a manifest or are named ``ds=...``."""
    import pyarrow.fs as pafs

    root = lake.path("")
    found: set[str] = set()
    for info in lake.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True)):
        parts = info.path[len(root) :].strip("/").split("/")
        if info.type != pafs.FileType.File or parts[0] == STAGING:
            continue
        if parts[-1] == MARKER:
            found.add("/".join(parts[:-1]))
        found.update("/".join(parts[: i + 1]) for i, part in enumerate(parts[:-1]) if part.startswith("ds="))
    return found


def start_step(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    handle = log.open("wb")
    return subprocess.Popen(
        [sys.executable, "-m", "mlsteps", *argv], env=env, stdout=handle, stderr=subprocess.STDOUT
    )


def kill_when(
    process: subprocess.Popen, ready: Callable[[], bool], delay: float = 0.0, timeout: float = 180.0
) -> bool:
    """SIGKILL the process ``delay`` seconds after ``ready()`` first holds; False if it finished first."""
    deadline = time.monotonic() + timeout
    while process.poll() is None and not ready():
        if time.monotonic() > deadline:
            process.kill()
            raise AssertionError("the kill point was never reached")
        time.sleep(0.002)
    if delay:
        time.sleep(delay)
    if process.poll() is not None:
        return False
    process.send_signal(signal.SIGKILL)
    process.wait()
    return True


def record(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, figures: Any) -> None:
    """Keep a test's figures as JSON under the pytest temp dir, and print them."""
    path = tmp_path_factory.getbasetemp() / "fault-figures" / f"{request.node.name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(figures, indent=2, default=str))
    print(json.dumps(figures, default=str))


def content_hash(table: pa.Table, sort_by: list[str]) -> str:
    """A hash of a table's rows in key order, blind to Parquet metadata and part boundaries."""
    frame = table.to_pandas().sort_values(sort_by, kind="stable").reset_index(drop=True)
    hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy()
    return hashlib.sha256(hashed.tobytes() + ",".join(frame.columns).encode()).hexdigest()


@pytest.fixture(scope="module")
def module_env() -> Iterator[pytest.MonkeyPatch]:
    patch = pytest.MonkeyPatch()
    yield patch
    patch.undo()


# --- score ------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scoring(
    mlflow_tracking: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory, module_env: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A champion trained by the real train step, and one day's features, on a lake on the S3 API."""
    tmp = tmp_path_factory.mktemp("score-kills")
    s3.create_bucket("lake")
    lake_uri = f"s3://lake/{uuid.uuid4().hex[:12]}"
    model = unique_model_name("kill_score")
    env = {
        **s3.env,
        "ML_LAKE_URI": lake_uri,
        "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
        "ML_PIPELINE_CONFIG": write_config(tmp, model),
        "ML_STATE_DIR": str(tmp / "state"),
        "ML_PARQUET_ROW_GROUP_ROWS": "100",
    }
    for key, value in env.items():
        module_env.setenv(key, value)
    frame = build_features(days=6, rows_per_day=1_000)
    build_snapshot(lake_uri, "r1", frame=frame)
    code, trained = run_step(["train", "--training-run", "r1"], tmp / "train.json", module_env)
    assert code == 0
    mlflow.MlflowClient().set_registered_model_alias(model, CHAMPION, trained["model_version"])
    lake = Lake(lake_uri)
    day = frame["event_time"].max().date()
    rows = frame[frame["event_time"].dt.date == day].drop(columns=["is_fraud"])
    staging = lake.stage(partition("features/transactions", day))
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(rows[KEYS + FEATURES], preserve_index=False))
    lake.commit(staging, {"feature_columns": FEATURES})
    return {"env": env, "model": model, "day": day, "lake": lake, "tmp": tmp, "rows": len(rows)}


@pytest.fixture
def score_env(_isolated_environment: None, scoring: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in scoring["env"].items():
        monkeypatch.setenv(key, value)


def _score_argv(scoring: dict[str, Any], run_id: str) -> list[str]:
    return ["score", "--ds", scoring["day"].isoformat(), "--run-id", run_id, "--batch-rows", "25"]


def _predictions(lake: Lake, prefix: str) -> tuple[dict[str, Any], pa.Table] | None:
    manifest = lake.manifest(prefix)
    return None if manifest is None else (manifest, lake.read_table(lake.partition_files(prefix)))


def _names(lake: Lake, directory: str) -> list[str]:
    return lake.list_dir(directory)


SCORE_KILL_POINTS = {
    # name: (publish a clean partition first?, the condition to kill at)
    "first staged part": (False, lambda n: n["staged_parts"] >= 1),
    "half the parts staged": (False, lambda n: n["staged_parts"] >= 20),
    "receipt written": (False, lambda n: n["receipt"]),
    "mid-commit of a new partition": (False, lambda n: n["moved_parts"] >= 1),
    "mid-commit replacing a partition": (True, lambda n: n["moved_parts"] >= 1),
}


@pytest.mark.faults
@pytest.mark.parametrize("point", list(SCORE_KILL_POINTS))
def test_killed_score_leaves_nothing_partial_and_the_rerun_completes(
    point: str,
    scoring: dict[str, Any],
    score_env: None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    lake: Lake = scoring["lake"]
    prefix = partition(f"predictions/{scoring['model']}", scoring["day"])
    lake.delete(prefix)
    lake.delete(f"{STAGING}/{prefix}")
    republish, condition = SCORE_KILL_POINTS[point]
    reference = None
    if republish:
        assert run_step(_score_argv(scoring, "earlier"), scoring["tmp"] / "s.json", monkeypatch)[0] == 0
        reference = _predictions(lake, prefix)
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    staged = f"{STAGING}/{prefix}/{run_id}"
    old_parts = set(_names(lake, prefix))

    def progress() -> dict[str, Any]:
        staged_names = _names(lake, staged)
        return {
            "staged_parts": sum(name.endswith(".parquet") for name in staged_names),
            "receipt": any(name.startswith("receipt-") for name in staged_names),
            "moved_parts": len(
                [n for n in _names(lake, prefix) if n.endswith(".parquet") and n not in old_parts]
            ),
        }

    env = {**os.environ, "ML_STEP_RESULT": str(scoring["tmp"] / "killed.json")}
    started = time.monotonic()
    process = start_step(_score_argv(scoring, run_id), env, scoring["tmp"] / f"{run_id}.log")
    assert kill_when(process, lambda: condition(progress())), f"score finished before {point!r}"
    killed_after = time.monotonic() - started
    state = progress()

    assert partition_problems(lake) == []
    visible = _predictions(lake, prefix)
    if reference is None:
        assert visible is None, "a killed first commit must leave the partition unpublished"
    else:  # the earlier, complete version stays visible, untouched
        assert visible is not None
        assert visible[0]["attempt"] == reference[0]["attempt"]
        assert visible[1].equals(reference[1])

    rerun = _score_argv(scoring, run_id)
    if state["moved_parts"]:  # what Airflow's retry of commit_predictions alone does
        version = lake.read_json(f"{staged}/receipt-00000.json")["model_version"]
        rerun = ["commit-predictions", "--ds", scoring["day"].isoformat(), "--run-id", run_id]
        rerun += ["--model-version", str(version), "--shard-count", "1"]
    code, result = run_step(rerun, scoring["tmp"] / "s.json", monkeypatch)
    assert code == 0
    manifest, table = _predictions(lake, prefix) or ({}, pa.table({}))
    assert manifest["rows_out"] == table.num_rows == result["rows"] == scoring["rows"]
    assert len(set(table.column("transaction_id").to_pylist())) == table.num_rows
    assert sorted(_names(lake, prefix)) == sorted([e["path"] for e in manifest["files"]] + [MARKER])
    assert not lake.exists(staged)
    if reference is not None:
        assert content_hash(table, KEYS) == content_hash(reference[1], KEYS)
    assert partition_problems(lake) == []
    record(request, tmp_path_factory, {"point": point, "killed_after_s": round(killed_after, 3), **state})


# --- materialize --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def features_lake(tmp_path_factory: pytest.TempPathFactory, module_env: pytest.MonkeyPatch) -> dict[str, Any]:
    """A local lake with 6 days of raw events and their features."""
    tmp = tmp_path_factory.mktemp("materialize-kills")
    lake_uri = str(tmp / "lake")
    module_env.setenv("ML_PIPELINE_CONFIG", str(DEFAULT_CONFIG))
    module_env.setenv("ML_LAKE_URI", lake_uri)
    module_env.setenv("ML_STATE_DIR", str(tmp / "state"))
    small = ["--rows-per-day", "600", "--customers", "400"]
    generate = ["generate-data", "--start", "2026-03-01", "--days", "6", *small]
    assert run_step(generate, tmp / "g.json", module_env)[0] == 0
    features = ["build-features", "--start", "2026-03-01", "--end", "2026-03-07"]
    assert run_step(features, tmp / "f.json", module_env)[0] == 0
    return {"lake": lake_uri, "tmp": tmp}


MATERIALIZE = ["materialize", "--start", "2026-03-02", "--end", "2026-03-07"]


def _online_rows(state: Path) -> list[tuple[Any, ...]]:
    """Every row of the SQLite online store's tables, sorted (Feast's own layout, read as data)."""
    database = state / "feast" / "online_store.db"
    with sqlite3.connect(database) as connection:
        assert connection.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        tables = [row[0] for row in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        rows = []
        for table in sorted(tables):
            columns = [c[1] for c in connection.execute(f"PRAGMA table_info('{table}')")]
            kept = ", ".join(f'"{c}"' for c in columns if c not in ("created_ts",))
            rows += [(table, *row) for row in connection.execute(f'SELECT {kept} FROM "{table}"')]
    return sorted(rows, key=repr)


@pytest.mark.faults
@pytest.mark.usefixtures("_isolated_environment")
def test_killed_materialize_leaves_a_sound_store_and_the_rerun_completes(
    features_lake: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    tmp: Path = features_lake["tmp"]
    monkeypatch.setenv("ML_LAKE_URI", features_lake["lake"])

    def env_for(state: Path) -> dict[str, str]:
        return {**os.environ, "ML_STATE_DIR": str(state), "ML_STEP_RESULT": str(state / "result.json")}

    clean_state = tmp / "state-clean"
    started = time.monotonic()
    clean = start_step(MATERIALIZE, env_for(clean_state), tmp / "clean.log")
    assert clean.wait(timeout=300) == 0, (tmp / "clean.log").read_text()[-2000:]
    clean_seconds = time.monotonic() - started
    reference = _online_rows(clean_state)
    assert reference

    store_file = "feast/online_store.db"
    kill_points: list[tuple[str, Callable[[Path], bool], float]] = [
        (f"{fraction:.0%} of a clean run", lambda _state: True, fraction * clean_seconds)
        for fraction in (0.5, 0.75, 0.9)
    ]
    kill_points += [
        (f"online store created + {delay:g} s", lambda state: (state / store_file).exists(), delay)
        for delay in (0.0, 0.2, 0.5, 1.0)
    ]
    figures: dict[str, Any] = {"clean_seconds": round(clean_seconds, 2), "kills": []}
    for number, (label, ready, delay) in enumerate(kill_points):
        state = tmp / f"state-{number}"
        process = start_step(MATERIALIZE, env_for(state), tmp / f"kill-{number}.log")
        killed = kill_when(process, lambda state=state, ready=ready: ready(state), delay)
        store_existed = (state / store_file).exists()
        if store_existed:
            _online_rows(state)  # a killed writer leaves a store SQLite can still open, with no corruption
        assert partition_problems(Lake(features_lake["lake"])) == []
        rerun = start_step(MATERIALIZE, env_for(state), tmp / f"rerun-{number}.log")
        assert rerun.wait(timeout=300) == 0, (tmp / f"rerun-{number}.log").read_text()[-2000:]
        assert _online_rows(state) == reference, label
        figures["kills"].append({"point": label, "killed": killed, "store_existed_at_kill": store_existed})
    assert sum(kill["killed"] for kill in figures["kills"]) >= 5, figures
    record(request, tmp_path_factory, figures)


# --- promote ---------------------------------------------------------------------------------------


@pytest.fixture
def promotion(
    mlflow_tracking: Any, s3_env: Any, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> dict[str, Any]:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking.tracking_uri)
    return {"lake": Lake(local_lake), "tmp": tmp_path}


def _new_model_with_champion(promotion: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    """A model whose version 1 was promoted; versions 2 and 3 are approved against champion 1."""
    name = unique_model_name("kill_promote")
    register_stub_versions(name, 3)
    config = write_config(promotion["tmp"], name)
    assert run_step(_promote_argv(config, "1", "none"), promotion["tmp"] / "p.json", monkeypatch)[0] == 0
    return name, config


def _promote_argv(config: str, version: str, expected: str) -> list[str]:
    return ["promote", "--config", config, "--model-version", version, "--expected-champion", expected,
            "--reason", "fault test", "--dag-id", "ml_training", "--run-id", f"run-v{version}"]  # fmt: skip


def _expire_lock_left_by(lake: Lake, name: str) -> bool:
    """The killed holder's lease runs out, as waiting ``DEFAULT_LEASE_SECONDS`` would make it."""
    path = champion_lock_path(name)
    if not lake.exists(path):
        return False
    document = lake.read_json(path)
    lake.write_json(path, {**document, "expires_at": time.time() - 1})
    return True


def _state(lake: Lake, name: str) -> dict[str, Any]:
    aliases = {k: str(v) for k, v in (mlflow.MlflowClient().get_registered_model(name).aliases or {}).items()}
    ledger = [(entry["version"], entry["replaced"]) for entry in read_ledger(lake, name)]
    return {"champion": aliases.get(CHAMPION), "previous": aliases.get(PREVIOUS_CHAMPION), "ledger": ledger}


def _assert_consistent_after_kill(state: dict[str, Any]) -> None:
    """The alias moved or not, the ledger never ahead of it, and never a duplicate or foreign entry."""
    assert state["champion"] in ("1", "2")
    assert state["ledger"] in ([("1", None)], [("1", None), ("2", "1")])
    if len(state["ledger"]) == 2:
        assert state["champion"] == "2"


def _assert_promoted(lake: Lake, name: str) -> None:
    state = _state(lake, name)
    assert state == {"champion": "2", "previous": "1", "ledger": [("1", None), ("2", "1")]}
    tags = mlflow.MlflowClient().get_model_version(name, "2").tags
    assert tags["mlsteps.promoted.replaced"] == "1"
    assert tags["mlsteps.promoted.action"] == "promote"
    assert not lake.exists(champion_lock_path(name))


@pytest.mark.faults
def test_killed_promote_never_half_moves_the_champion_and_the_rerun_completes(
    promotion: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    lake: Lake = promotion["lake"]
    tmp: Path = promotion["tmp"]
    env = {**os.environ, "ML_STEP_RESULT": str(tmp / "killed.json")}
    points: list[tuple[str, str, float]] = [
        ("lock taken", "lock", delay) for delay in (0, 0.02, 0.05, 0.1, 0.2, 0.4)
    ]
    points += [("ledger entry written", "ledger", 0.0)]
    figures: dict[str, Any] = {"kills": []}
    for label, signal_name, delay in points:
        name, config = _new_model_with_champion(promotion, monkeypatch)
        lock, ledger = lake.path(champion_lock_path(name)), lake.path(f"ledger/{name}")

        def ready(signal_name: str = signal_name, lock: str = lock, ledger: str = ledger) -> bool:
            if signal_name == "lock":
                return os.path.exists(lock)
            return os.path.isdir(ledger) and len([n for n in os.listdir(ledger) if n.endswith(".json")]) >= 2

        process = start_step(_promote_argv(config, "2", "1"), env, tmp / "promote.log")
        killed = kill_when(process, ready, delay)
        state = _state(lake, name)
        _assert_consistent_after_kill(state)
        lock_left = _expire_lock_left_by(lake, name)
        code, result = run_step(_promote_argv(config, "2", "1"), tmp / "p.json", monkeypatch)
        assert code == 0, (label, delay, state)
        assert result["champion_version"] == "2"
        _assert_promoted(lake, name)
        figures["kills"].append(
            {
                "point": f"{label} + {delay:g} s",
                "killed": killed,
                "lock_left": lock_left,
                "state_at_kill": state,
            }
        )
    assert sum(kill["killed"] for kill in figures["kills"]) >= 5, figures
    record(request, tmp_path_factory, figures)


def test_a_promotion_killed_between_alias_and_ledger_is_completed_by_the_rerun(
    promotion: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrowest kill point, made exact: ``champion`` moved, but no tags and no ledger entry yet."""
    lake: Lake = promotion["lake"]
    name, config = _new_model_with_champion(promotion, monkeypatch)
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, PREVIOUS_CHAMPION, "1")
    client.set_registered_model_alias(name, CHAMPION, "2")
    assert _state(lake, name)["ledger"] == [("1", None)]

    code, result = run_step(_promote_argv(config, "2", "1"), promotion["tmp"] / "p.json", monkeypatch)

    assert code == 0
    assert result["champion_version"] == "2"
    _assert_promoted(lake, name)
    assert run_step(_promote_argv(config, "2", "1"), promotion["tmp"] / "p.json", monkeypatch)[0] == 0
    _assert_promoted(lake, name)  # and a third run adds nothing
