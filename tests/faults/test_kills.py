"""SIGKILL of ``materialize``, ``score``, ``promote``, ``monitor-performance`` and ``decide-retrain``
subprocesses at several points: nothing partial is visible afterwards, and a rerun completes with the
same result as an uninterrupted run."""

from __future__ import annotations

import datetime as dt
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
import yaml

from mlsteps.contract.config import load_config
from mlsteps.contract.layout import (
    champion_lock_path,
    partition,
    performance_record_path,
    performance_report_prefix,
    retrains_prefix,
)
from mlsteps.platform.lake import MARKER, STAGING, Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.mlflow_registry import CHAMPION, PREVIOUS_CHAMPION
from mlsteps.platform.monitoring import monitoring_experiment
from mlsteps.steps.performance import read_records
from mlsteps.steps.retrain_policy import run_id_for
from tests.conftest import DEFAULT_CONFIG
from tests.steps.test_performance import score_day
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


# --- monitor-performance and decide-retrain --------------------------------------------------------

JUDGED_DAY = dt.date(2026, 11, 2)


@pytest.fixture(scope="module")
def judged(
    mlflow_tracking: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory, module_env: pytest.MonkeyPatch
) -> dict[str, Any]:
    """A scored day judged twice, as labels arrive: on half its labels (the earlier record), then on all.

    One dropped day is a significant drop here, so the day's report asks for a retrain.
    """
    tmp = tmp_path_factory.mktemp("performance-kills")
    model = unique_model_name("kill_perf")
    config = Path(write_config(tmp, model))
    document = yaml.safe_load(config.read_text())
    document["performance"] = {
        "consecutive_days": 1, "tolerance": 0.02, "min_labeled_rows": 300, "bootstrap_samples": 100,
    }  # fmt: skip
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {
        **s3.env,
        "ML_LAKE_URI": str(tmp / "lake"),
        "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
        "ML_PIPELINE_CONFIG": str(config),
        "ML_STATE_DIR": str(tmp / "state"),
    }
    for key, value in env.items():
        module_env.setenv(key, value)
    client = mlflow.MlflowClient()
    run = client.create_run(client.create_experiment(f"{model}-train"))
    client.log_metric(run.info.run_id, "holdout_roc_auc", 0.90)  # what evaluate records
    client.create_registered_model(model)
    version = client.create_model_version(model, source="s3://mlflow-artifacts/stub", run_id=run.info.run_id)
    lake = Lake(env["ML_LAKE_URI"])
    judged = {"env": env, "model": model, "lake": lake, "tmp": tmp}
    paths = {"record": performance_record_path(model, JUDGED_DAY)}
    paths |= {
        name: f"{performance_report_prefix(JUDGED_DAY)}/{name}" for name in ("report.json", "report.html")
    }
    for stage, labelled in (("earlier", 0.5), ("reference", 1.0)):
        score_day(str(config), str(version.version), JUDGED_DAY, 0.3, labelled=labelled)
        code, result = run_step(_monitor_argv(stage), tmp / "m.json", module_env)
        assert code == 0
        judged[stage] = {name: lake.read_bytes(path) for name, path in paths.items()}
        judged[stage]["result"] = result
    assert judged["earlier"]["record"] != judged["reference"]["record"]
    assert judged["reference"]["result"]["significant"] is True
    reference_run = client.get_run(judged["reference"]["result"]["mlflow_run_id"]).data
    judged["reference"] |= {"params": reference_run.params, "metrics": reference_run.metrics}
    return judged | {"paths": paths}


@pytest.fixture
def judged_env(_isolated_environment: None, judged: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in judged["env"].items():
        monkeypatch.setenv(key, value)


def _monitor_argv(run_id: str) -> list[str]:
    return ["monitor-performance", "--ds", JUDGED_DAY.isoformat(), "--run-id", run_id]


def _monitoring_runs(judged: dict[str, Any], run_id: str) -> list[Any]:
    """The MLflow monitoring runs logged for the judged day by one DAG run."""
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(
        monitoring_experiment(load_config(judged["env"]["ML_PIPELINE_CONFIG"]))
    )
    query = f"tags.monitor = 'performance' and tags.ds = '{JUDGED_DAY}' and tags.dag_run = '{run_id}'"
    return list(client.search_runs([experiment.experiment_id], filter_string=query))


def _lake_files(lake: Lake, names: dict[str, str]) -> dict[str, bytes | None]:
    return {name: lake.read_bytes(path) if lake.exists(path) else None for name, path in names.items()}


def _assert_judged_like_the_reference(judged: dict[str, Any], run_id: str, result: dict[str, Any]) -> None:
    """The record and report.json byte for byte as an unkilled run wrote them, and one finished MLflow run."""
    reference = judged["reference"]
    files = _lake_files(judged["lake"], judged["paths"])
    assert files["record"] == reference["record"]
    assert files["report.json"] == reference["report.json"]
    assert files["report.html"] is not None
    expected = {k: v for k, v in reference["result"].items() if k != "mlflow_run_id"}
    assert {k: v for k, v in result.items() if k != "mlflow_run_id"} == expected
    runs = _monitoring_runs(judged, run_id)
    assert [run.info.run_id for run in runs] == [result["mlflow_run_id"]], "one monitoring run per DAG run"
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.params == reference["params"]
    assert runs[0].data.metrics == reference["metrics"]
    artifacts = mlflow.MlflowClient().list_artifacts(result["mlflow_run_id"], f"performance/ds={JUDGED_DAY}")
    assert sorted(a.path.rsplit("/", 1)[-1] for a in artifacts) == ["report.html", "report.json"]


PERFORMANCE_KILL_POINTS = {
    # name: (the earlier judgement in place?, the file whose new version to wait for, then seconds)
    "record rewritten": (True, "record", 0.0),
    "report.html rewritten": (True, "report.html", 0.0),
    "report.json rewritten + 0.2 s (MLflow run)": (True, "report.json", 0.2),
}


@pytest.mark.faults
@pytest.mark.parametrize("point", list(PERFORMANCE_KILL_POINTS))
def test_killed_monitor_performance_leaves_nothing_partial_and_the_rerun_completes(
    point: str,
    judged: dict[str, Any],
    judged_env: None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    lake: Lake = judged["lake"]
    earlier_in_place, waited_for, delay = PERFORMANCE_KILL_POINTS[point]
    for name, path in judged["paths"].items():
        lake.delete(path)
        if earlier_in_place:
            lake.write_bytes(path, judged["earlier"][name])
    before = _lake_files(lake, judged["paths"])
    run_id = f"killed-{uuid.uuid4().hex[:6]}"

    def ready() -> bool:
        path = judged["paths"][waited_for]
        return lake.exists(path) and lake.read_bytes(path) != before[waited_for]

    env = {**os.environ, "ML_STEP_RESULT": str(judged["tmp"] / "killed.json")}
    started = time.monotonic()
    process = start_step(_monitor_argv(run_id), env, judged["tmp"] / f"{run_id}.log")
    assert kill_when(process, ready, delay), f"monitor-performance finished before {point!r}"
    killed_after = time.monotonic() - started

    after = _lake_files(lake, judged["paths"])
    for name in ("record", "report.json"):  # the earlier version or the new one, whole; never a part
        assert after[name] in (before[name], judged["reference"][name]), name
    if after["report.json"] is not None:  # report.json is written last: its report.html is there
        assert after["report.html"] is not None
    if after["report.html"] is not None:
        assert after["report.html"].startswith(b"<!doctype html>")
        assert after["report.html"].endswith(b"</html>")
    assert [record["ds"] for record in read_records(lake, judged["model"])] == (
        [JUDGED_DAY.isoformat()] if after["record"] else []
    )
    runs_at_kill = [run.info.status for run in _monitoring_runs(judged, run_id)]

    code, result = run_step(_monitor_argv(run_id), judged["tmp"] / "m.json", monkeypatch)
    assert code == 0
    _assert_judged_like_the_reference(judged, run_id, result)
    figures = {"point": point, "killed_after_s": round(killed_after, 3), "runs_at_kill": runs_at_kill}
    figures["rewritten_at_kill"] = [name for name in after if after[name] != before[name]]
    record(request, tmp_path_factory, figures)


@pytest.mark.faults
def test_a_monitoring_run_killed_before_its_first_log_is_completed_by_the_rerun(
    judged: dict[str, Any], judged_env: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The narrowest MLflow kill point, made exact: the run exists (running), with no params or metrics."""
    run_id = f"killed-{uuid.uuid4().hex[:6]}"
    client = mlflow.MlflowClient()
    experiment = client.get_experiment_by_name(
        monitoring_experiment(load_config(judged["env"]["ML_PIPELINE_CONFIG"]))
    )
    version = judged["reference"]["result"]["model_version"]
    tags = {
        "monitor": "performance",
        "ds": JUDGED_DAY.isoformat(),
        "model_version": version,
        "dag_run": run_id,
    }
    client.create_run(experiment.experiment_id, run_name=f"performance-{JUDGED_DAY}", tags=tags)

    code, result = run_step(_monitor_argv(run_id), judged["tmp"] / "m.json", monkeypatch)

    assert code == 0
    _assert_judged_like_the_reference(judged, run_id, result)


def _decide_argv(run_id: str) -> list[str]:
    return ["decide-retrain", "--ds", JUDGED_DAY.isoformat(), "--reason", "performance", "--run-id", run_id]


@pytest.mark.faults
def test_killed_decide_retrain_leaves_no_partial_request_and_the_rerun_asks_once(
    judged: dict[str, Any],
    judged_env: None,
    monkeypatch: pytest.MonkeyPatch,
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    lake: Lake = judged["lake"]
    tmp: Path = judged["tmp"]
    for name in ("record", "report.json", "report.html"):
        lake.write_bytes(judged["paths"][name], judged["reference"][name])
    prefix = retrains_prefix(judged["model"])
    request_name = f"{run_id_for(JUDGED_DAY, 'performance')}.json"
    env = {**os.environ, "ML_STEP_RESULT": str(tmp / "killed.json")}

    def requests() -> dict[str, Any]:
        return {
            name: lake.read_json(f"{prefix}/{name}")
            for name in lake.list_dir(prefix)
            if name.endswith(".json")
        }

    lake.delete(prefix)
    started = time.monotonic()
    clean = start_step(_decide_argv("decide_1"), env, tmp / "decide-clean.log")
    assert clean.wait(timeout=120) == 0, (tmp / "decide-clean.log").read_text()[-2000:]
    clean_seconds = time.monotonic() - started
    expected = {k: v for k, v in requests()[request_name].items() if k not in ("triggered_at", "run_url")}

    kill_points: list[tuple[str, Callable[[], bool], float]] = [
        ("started", lambda: True, fraction * clean_seconds) for fraction in (0.6, 0.85)
    ]
    kill_points += [
        ("temporary file written", lambda: any(".tmp-" in n for n in lake.list_dir(prefix)), 0.0),
        ("request written", lambda: request_name in lake.list_dir(prefix), 0.0),
    ]
    figures: dict[str, Any] = {"clean_seconds": round(clean_seconds, 2), "kills": []}
    for label, ready, delay in kill_points:
        lake.delete(prefix)
        process = start_step(_decide_argv("decide_1"), env, tmp / "decide-killed.log")
        killed = kill_when(process, ready, delay)
        at_kill = requests()
        assert set(at_kill) <= {request_name}, label  # a leftover temporary file is no request
        if at_kill:
            assert {k: v for k, v in at_kill[request_name].items() if k in expected} == expected, label
        for _ in range(2):  # Airflow's retry, then a cleared task: still one request
            code, result = run_step(_decide_argv("decide_1"), tmp / "d.json", monkeypatch)
            assert code == 0, label
            assert (result["trigger"], result["run_id"]) == (True, request_name.removesuffix(".json"))
        after = requests()
        assert list(after) == [request_name], label
        assert {k: v for k, v in after[request_name].items() if k in expected} == expected, label
        if at_kill:  # the request the killed run made stands: the rerun neither duplicates nor rewrites it
            assert after == at_kill, label
        figures["kills"].append(
            {"point": f"{label} + {delay:.2f} s", "killed": killed, "request_at_kill": bool(at_kill)}
        )
    assert sum(kill["killed"] for kill in figures["kills"]) >= 2, figures
    record(request, tmp_path_factory, figures)
