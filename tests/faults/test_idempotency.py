"""Every step run twice for the same data interval leaves the same outputs: the same rows (compared by
content hash, since Parquet part names and commit times legitimately differ), the same reports, and no
duplicate rows, model versions, ledger entries or retrain records.

The steps run in pipeline order on one local lake against the real ``mlflow server``, each twice in a
row, exactly as an Airflow retry or a cleared task would run it again (same options, same run id).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd
import pytest

from mlsteps.platform.lake import MARKER, STAGING, Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.mlflow_registry import CHAMPION
from tests.faults.test_kills import _online_rows, partition_problems
from tests.steps.training_fixtures import run_step, unique_model_name, write_config

pytestmark = pytest.mark.faults

FIRST_DAY, DAYS = "2026-10-01", 14
SCORED_DAY = "2026-10-14"  # the last generated day; the window before it is for training
WINDOW = ["--start", FIRST_DAY, "--end", SCORED_DAY]
#: Keys whose values say when or how fast something ran, which attempt wrote it, or whether this attempt
#: was the one that did the work (train's ``reused``, promote's ``changed``): they differ by design.
VOLATILE = {
    "attempt", "committed_at", "seconds", "model_seconds", "training_seconds", "at", "triggered_at",
    "generated_at", "mlflow_run_id", "mlflow_run_url", "run_url", "reused", "changed", "summary",
}  # fmt: skip


class Chain:
    """One pipeline's lake, config and MLflow model, with what each step left behind."""

    def __init__(self, tmp: Path, env: dict[str, str], model: str) -> None:
        self.tmp, self.env, self.model = tmp, env, model
        self.lake = Lake(env["ML_LAKE_URI"])
        self.results: dict[str, dict[str, Any]] = {}

    def twice(self, argv: list[str], monkeypatch: pytest.MonkeyPatch) -> tuple[Any, Any]:
        """Run a step twice; return what was observable after each run."""
        observed = []
        for attempt in range(2):
            code, result = run_step(argv, self.tmp / "result.json", monkeypatch)
            assert code == 0, f"{argv[0]} attempt {attempt + 1} failed"
            self.results[argv[0]] = result
            # A deferred shard leaves its parts staged for commit-predictions, by design.
            observed.append({"result": normalized(result), **self.observe("--defer-commit" not in argv)})
        return observed[0], observed[1]

    def observe(self, committed: bool = True) -> dict[str, Any]:
        if committed:
            assert staged_files(self.lake) == [], "nothing may stay staged after a successful step"
        assert partition_problems(self.lake) == []
        client = mlflow.MlflowClient()
        versions = client.search_model_versions(f"name='{self.model}'")
        experiments = client.search_experiments()
        runs = {e.name: len(client.search_runs([e.experiment_id])) for e in experiments}
        online = Path(self.env["ML_STATE_DIR"]) / "feast" / "online_store.db"
        return {
            "lake": lake_snapshot(self.lake),
            "model_versions": sorted((v.version, v.tags.get("training_run")) for v in versions),
            "aliases": dict(client.get_registered_model(self.model).aliases) if versions else {},
            "runs": runs,
            "ledger": [(e["version"], e["replaced"]) for e in read_ledger(self.lake, self.model)],
            "online_store": hashlib.sha256(repr(_online_rows(online.parent.parent)).encode()).hexdigest()
            if online.exists()
            else None,
        }


def staged_files(lake: Lake) -> list[str]:
    """Files left under ``_staging/`` (empty directories do not count)."""
    import pyarrow.fs as pafs

    selector = pafs.FileSelector(lake.path(STAGING), recursive=True, allow_not_found=True)
    return [info.path for info in lake.fs.get_file_info(selector) if info.type == pafs.FileType.File]


def normalized(document: Any) -> Any:
    """A JSON document without its volatile keys (recursively)."""
    if isinstance(document, dict):
        return {k: normalized(v) for k, v in document.items() if k not in VOLATILE}
    if isinstance(document, list):
        return [normalized(v) for v in document]
    return document


_TABLE_HASHES: dict[tuple[str, ...], dict[str, Any]] = {}


def table_hash(lake: Lake, prefix: str, manifest: dict[str, Any]) -> dict[str, Any]:
    """Rows and a content hash of a committed partition, independent of part names and row order.

    Cached by the parts' SHA-256 list: byte-identical parts need not be read again.
    """
    key = (prefix, *sorted(entry["sha256"] for entry in manifest["files"]))
    if key not in _TABLE_HASHES:
        frame = lake.read_table(lake.partition_files(prefix)).to_pandas()
        frame = frame.sort_values(list(frame.columns), kind="stable").reset_index(drop=True)
        hashed = pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes()
        digest = hashlib.sha256(hashed).hexdigest()
        _TABLE_HASHES[key] = {"rows": len(frame), "columns": list(frame.columns), "sha256": digest}
    return _TABLE_HASHES[key]


def lake_snapshot(lake: Lake) -> dict[str, Any]:
    """Every committed partition by content, every other file by normalized content (HTML by presence)."""
    import pyarrow.fs as pafs

    root = lake.path("")
    files = [
        info.path[len(root) :].strip("/")
        for info in lake.fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
        if info.type == pafs.FileType.File
    ]
    partitions = {path.rsplit("/", 1)[0] for path in files if path.endswith(f"/{MARKER}")}
    snapshot: dict[str, Any] = {}
    for prefix in partitions:
        manifest = lake.manifest(prefix) or {}
        content = table_hash(lake, prefix, manifest)
        snapshot[prefix] = {"manifest": {**normalized(manifest), "files": len(manifest["files"])}, **content}
    for path in files:
        if path.rsplit("/", 1)[0] in partitions:
            continue
        assert ".tmp" not in path, f"leftover temporary file {path}"
        if path.endswith(".json"):
            snapshot[path] = normalized(lake.read_json(path))
        elif path.endswith(".html"):
            snapshot[path] = "html"
        else:
            snapshot[path] = hashlib.sha256(lake.read_bytes(path)).hexdigest()
    return snapshot


def differences(first: Any, second: Any, where: str = "") -> list[str]:
    """Human-readable paths where two observations differ."""
    if isinstance(first, dict) and isinstance(second, dict):
        found = [
            f"{where}/{k}: only in {'first' if k in first else 'second'}"
            for k in first.keys() ^ second.keys()
        ]
        for key in first.keys() & second.keys():
            found += differences(first[key], second[key], f"{where}/{key}")
        return found
    if isinstance(first, list) and isinstance(second, list) and len(first) == len(second):
        return [
            d
            for i, pair in enumerate(zip(first, second, strict=True))
            for d in differences(*pair, f"{where}[{i}]")
        ]
    if isinstance(first, float) and isinstance(second, float):
        # Evidently sums categorical distances over a set of categories, whose order follows each
        # process's string-hash seed: two processes may differ in the last bit, never more.
        return [] if math.isclose(first, second, rel_tol=1e-12) else [f"{where}: {first} != {second}"]
    return [] if first == second else [f"{where}: {str(first)[:200]} != {str(second)[:200]}"]


@pytest.fixture(scope="module")
def chain(mlflow_tracking: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Chain:
    tmp = tmp_path_factory.mktemp("idempotency")
    model = unique_model_name("idempotent")
    env = {
        **s3.env,
        "ML_LAKE_URI": str(tmp / "lake"),
        "ML_STATE_DIR": str(tmp / "state"),
        "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
        "ML_PIPELINE_CONFIG": write_config(tmp, model),
    }
    return Chain(tmp, env, model)


@pytest.fixture(autouse=True)
def _chain_environment(_isolated_environment: None, chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in chain.env.items():
        monkeypatch.setenv(key, value)


FIGURES: dict[str, float] = {}


def _check(
    chain: Chain, argv: list[str], monkeypatch: pytest.MonkeyPatch, explained: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Run a step twice and require identical observations, except the ``explained`` result keys."""
    import time

    started = time.monotonic()
    first, second = chain.twice(argv, monkeypatch)
    FIGURES[argv[0]] = round(time.monotonic() - started, 2)
    for key in explained:
        first["result"].pop(key, None)
        second["result"].pop(key, None)
    assert differences(first, second) == []
    return second


# The tests below run in file order: each step reads what the ones before it wrote.


def test_generate_data(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["generate-data", "--start", FIRST_DAY, "--days", str(DAYS), "--rows-per-day", "800",
            "--customers", "500"]  # fmt: skip
    after = _check(chain, argv, monkeypatch)
    assert len([k for k in after["lake"] if k.startswith("raw/transactions/ds=")]) == DAYS


def test_validate(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    _check(chain, ["validate", *WINDOW, "--run-id", "train_1"], monkeypatch)


def test_build_features(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    after = _check(chain, ["build-features", "--start", FIRST_DAY, "--end", "2026-10-15"], monkeypatch)
    features = {k: v for k, v in after["lake"].items() if k.startswith("features/")}
    raw = {k: v for k, v in after["lake"].items() if k.startswith("raw/")}
    assert len(features) == DAYS
    assert sum(v["rows"] for v in features.values()) == sum(v["rows"] for v in raw.values())  # no duplicate


def test_materialize(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    after = _check(chain, ["materialize", *WINDOW], monkeypatch)
    assert after["online_store"] is not None


def test_build_training_set(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["build-training-set", "--end", SCORED_DAY, "--window-days", "12", "--training-run", "train_1"]
    _check(chain, argv, monkeypatch)


def test_train(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    after = _check(chain, ["train", "--training-run", "train_1", "--run-id", "train_1"], monkeypatch)
    assert chain.results["train"]["reused"] is True  # the second run found the registered version
    assert [training_run for _, training_run in after["model_versions"]] == ["train_1"]  # one version


def test_evaluate(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    version = chain.results["train"]["model_version"]
    argv = ["evaluate", "--model-version", version, "--training-run", "train_1", "--ds", SCORED_DAY,
            "--run-id", "train_1"]  # fmt: skip
    _check(chain, argv, monkeypatch)
    assert chain.results["evaluate"]["approved"] is True, chain.results["evaluate"]["reasons"]


def test_promote(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    version = chain.results["train"]["model_version"]
    argv = ["promote", "--model-version", version, "--expected-champion", "none", "--run-id", "train_1"]
    after = _check(chain, argv, monkeypatch)
    assert chain.results["promote"]["changed"] is False  # the second run found the work done
    assert after["ledger"] == [(version, None)]
    assert str(after["aliases"][CHAMPION]) == version


def test_plan_score_and_commit_predictions(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    day = ["--ds", SCORED_DAY, "--run-id", "score_1"]
    plan = _check(chain, ["plan-scoring", *day, "--shard-count", "2"], monkeypatch)["result"]
    for shard in plan["shards"]:
        _check(chain, ["score", *day, *shard, "--defer-commit"], monkeypatch)
    commit = ["commit-predictions", *day, "--shard-count", "2", "--model-version", plan["model_version"]]
    after = _check(chain, commit, monkeypatch)
    predictions = after["lake"][f"predictions/{chain.model}/ds={SCORED_DAY}"]
    features = after["lake"][f"features/transactions/ds={SCORED_DAY}"]
    assert predictions["rows"] == features["rows"] == predictions["manifest"]["rows_in"]
    table = chain.lake.read_table(chain.lake.partition_files(f"predictions/{chain.model}/ds={SCORED_DAY}"))
    assert len(set(table.column("transaction_id").to_pylist())) == table.num_rows


def test_score_unsharded(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    """The single-shard path commits by itself; a second run (another DAG run) replaces it identically."""
    before = lake_snapshot(chain.lake)[f"predictions/{chain.model}/ds={SCORED_DAY}"]
    after = _check(chain, ["score", "--ds", SCORED_DAY, "--run-id", "score_2"], monkeypatch)
    again = after["lake"][f"predictions/{chain.model}/ds={SCORED_DAY}"]
    assert (again["rows"], again["sha256"]) == (before["rows"], before["sha256"])


def test_drift(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    _check(chain, ["drift", "--ds", SCORED_DAY, "--run-id", "drift_1"], monkeypatch)


def test_decide_retrain(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["decide-retrain", "--ds", SCORED_DAY, "--run-id", "drift_1"]
    # The same decision (trigger, run id, conf); a repeat says why it asks for the same run again.
    after = _check(chain, argv, monkeypatch, explained=("reasons",))
    records = [k for k in after["lake"] if k.startswith(f"monitoring/{chain.model}/retrains/")]
    assert len(records) == (1 if chain.results["decide-retrain"]["trigger"] else 0)


def test_monitor_performance(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    after = _check(chain, ["monitor-performance", "--ds", SCORED_DAY, "--run-id", "perf_1"], monkeypatch)
    assert chain.results["monitor-performance"]["status"] in {"ok", "dropped"}  # judged: its labels are in
    assert [k for k in after["lake"] if k.startswith(f"monitoring/{chain.model}/performance/")] == [
        f"monitoring/{chain.model}/performance/ds={SCORED_DAY}.json"
    ]


def test_decide_retrain_on_performance(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    argv = ["decide-retrain", "--ds", SCORED_DAY, "--reason", "performance", "--run-id", "perf_1"]
    after = _check(chain, argv, monkeypatch, explained=("reasons",))
    records = [k for k in after["lake"] if k.startswith(f"monitoring/{chain.model}/retrains/performance__")]
    assert len(records) == (1 if chain.results["decide-retrain"]["trigger"] else 0)


@pytest.fixture(scope="module")
def airflow_db() -> None:
    """``airflow db migrate`` for the session's AIRFLOW_HOME (SQLite), as the integration tests do."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)


def _dag_run_twice(dag_id: str, logical_date: dt.datetime, conf: dict[str, Any], chain: Chain) -> list[Any]:
    """``dag.test`` twice for one logical date: the second clears the first's task instances and reruns."""
    import time

    from tests.support.airflow import load_dagbag

    runs = []
    started = time.monotonic()
    for _ in range(2):
        with pytest.MonkeyPatch.context() as scoped:
            dag = load_dagbag(scoped, "local").dags[dag_id]
            # The same run_after gives the same run id: the second call clears that run and reruns it.
            run = dag.test(run_after=logical_date, logical_date=logical_date, run_conf=conf)
        states = {ti.task_id: str(ti.state) for ti in run.get_task_instances()}
        assert str(run.state) == "success", states
        runs.append((run.run_id, states, lake_snapshot(chain.lake)))
    FIGURES[f"dag {dag_id} twice"] = round(time.monotonic() - started, 2)
    return runs


def test_batch_scoring_and_drift_dags_cleared_and_rerun(
    chain: Chain, airflow_db: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whole DAG runs on the same lake and champion: a cleared and rerun day changes nothing."""
    prefix = f"predictions/{chain.model}/ds={SCORED_DAY}"
    by_steps = lake_snapshot(chain.lake)[prefix]
    scoring = _dag_run_twice("ml_batch_scoring", dt.datetime(2026, 10, 15, 2, tzinfo=dt.UTC), {}, chain)
    (first_id, _, first), (second_id, _, second) = scoring
    assert first_id == second_id  # the same DAG run, cleared and run again
    assert differences(first, second) == []
    assert (second[prefix]["rows"], second[prefix]["sha256"]) == (by_steps["rows"], by_steps["sha256"])
    assert second[prefix]["manifest"]["dag_run_id"] == second_id

    drift = _dag_run_twice(
        "ml_drift_monitor", dt.datetime(2026, 10, 15, 6, tzinfo=dt.UTC), {"ds": SCORED_DAY}, chain
    )
    assert differences(drift[0][2], drift[1][2]) == []
    first_states, second_states = drift[0][1], drift[1][1]
    triggers = (first_states.pop("trigger_retraining"), second_states.pop("trigger_retraining"))
    assert first_states == second_states
    # One drifted day asks for one ml_training run: the rerun finds it and skips (skip_when_already_exists).
    assert triggers in (("success", "skipped"), ("skipped", "skipped"))
    assert len(_training_runs(f"drift__{SCORED_DAY}")) == (1 if triggers[0] == "success" else 0)


def _training_runs(run_id: str) -> list[str]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun.run_id).where(DagRun.dag_id == "ml_training", DagRun.run_id == run_id)
        return list(session.scalars(query))


def test_figures(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Seconds per step for both runs together (kept as JSON under the pytest temp dir)."""
    path = tmp_path_factory.getbasetemp() / "fault-figures" / "idempotency.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(FIGURES, indent=2))
    print(json.dumps(FIGURES))
