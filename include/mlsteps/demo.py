"""``make demo``: the whole loop on one machine in local mode, through real Airflow DAG runs.

It generates raw events, runs ``ml_training`` and ``ml_batch_scoring`` with ``airflow dags test``
(real scheduler logic, SQLite metadata DB, steps as subprocesses), then prints what a user would
look for: the champion, its metrics, the reports and the scored partition. Running it again is
safe: every step is idempotent, and a second training run meets the champion at the gate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

FIRST_DAY = dt.date(2026, 9, 8)  # 30 days of history before the training window
DAYS = 59  # 2026-09-08 .. 2026-11-05
TRAINING_RUN_AT = "2026-11-05T03:00:00+00:00"  # window [2026-10-08, 2026-11-05)
SCORING_LOGICAL_DATE = "2026-11-06T02:00:00+00:00"  # the 02:00 run scores the day before: ds=2026-11-05
SCORED_DAY = dt.date(2026, 11, 5)
DRIFTED_DAY = dt.date(2026, 11, 6)  # generated with shifted amount, distance and merchant mix
RETRAIN_RUN_AT = "2026-11-07T03:00:00+00:00"
ROWS_PER_DAY = 5_000
#: Where ``make ui`` serves the MLflow UI; the demo's task links point there.
DEMO_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def main() -> int:
    root = Path.cwd()
    env = demo_environment(root)
    logs = Path(env["ML_STATE_DIR"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _airflow_db(env, logs)
    _say(f"1/6 generating {DAYS} days x {ROWS_PER_DAY} raw card transactions into {env['ML_LAKE_URI']}")
    _run(
        [
            sys.executable,
            "-m",
            "mlsteps",
            "generate-data",
            "--start",
            FIRST_DAY.isoformat(),
            "--days",
            str(DAYS),
            "--rows-per-day",
            str(ROWS_PER_DAY),
        ],  # fmt: skip
        env,
        logs / "generate-data.log",
    )
    _say("2/6 running DAG ml_training (validate, features, Feast, train, evaluate, promote)")
    _dag_test("ml_training", TRAINING_RUN_AT, env, logs)
    _say("3/6 running DAG ml_batch_scoring for ds=" + SCORED_DAY.isoformat())
    _dag_test("ml_batch_scoring", SCORING_LOGICAL_DATE, env, logs)
    _summary(env)
    _drift_loop(env, logs)
    return 0


def _drift_loop(env: dict[str, str], logs: Path) -> None:
    """A drifted day: scored, detected by the monitor, which asks for a retrain that then runs."""
    day = DRIFTED_DAY.isoformat()
    _say(f"4/6 generating a drifted day ds={day} and scoring it")
    _run(
        [
            sys.executable,
            "-m",
            "mlsteps",
            "generate-data",
            "--start",
            day,
            "--days",
            "1",
            "--rows-per-day",
            str(ROWS_PER_DAY),
            "--drift-from",
            day,
        ],  # fmt: skip
        env,
        logs / "generate-drifted-day.log",
    )
    next_day = (DRIFTED_DAY + dt.timedelta(days=1)).isoformat()
    _dag_test("ml_batch_scoring", f"{next_day}T02:00:00+00:00", env, logs, name="ml_batch_scoring-drifted")
    _say(f"5/6 running DAG ml_drift_monitor for ds={day}")
    _dag_test("ml_drift_monitor", f"{day}T06:00:00+00:00", env, logs, conf={"ds": day})
    from mlsteps.config import load_config
    from mlsteps.lake import Lake
    from mlsteps.retrain_policy import retrains_prefix

    lake = Lake(env["ML_LAKE_URI"])
    report = lake.read_json(f"reports/drift/ds={day}/report.json")
    record_path = f"{retrains_prefix(load_config().model.registered_name)}/{day}.json"
    _say(
        f"    drift verdict: {report['drift']}; "
        f"drifted columns: {', '.join(report['drifted_columns']) or 'none'}"
    )
    if not lake.exists(record_path):
        _say("    no retrain was requested (cooldown or weekly budget); see the decide_retrain task log")
        return
    record = lake.read_json(record_path)
    _say(
        f"    ml_drift_monitor triggered ml_training run {record['run_id']} "
        f"with conf {json.dumps(record['conf'])}"
    )
    _say("6/6 running that retrain (what the scheduler would do with the queued run)")
    _dag_test("ml_training", RETRAIN_RUN_AT, env, logs, conf=record["conf"], name="ml_training-retrain")
    _say("")
    _say(
        "The loop: ml_training (champion) -> ml_batch_scoring (predictions) -> ml_drift_monitor (drift) "
        "-> ml_training (retrain, gated against the champion)"
    )
    _summary(env)


def demo_environment(root: Path) -> dict[str, str]:
    """Local-mode defaults; values already set (e.g. by the Makefile) win.

    Task links to MLflow point at ``ML_MLFLOW_UI_URL``, which ``make ui`` serves (``mlflow ui``
    over the demo's SQLite tracking store).
    """
    state = Path(os.environ.get("ML_STATE_DIR") or root / ".state")
    defaults = {
        "ML_EXECUTION_MODE": "local",
        "ML_LAKE_URI": str(root / ".lake"),
        "ML_STATE_DIR": str(state),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        "AIRFLOW_HOME": str(state / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(root / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "ML_MLFLOW_UI_URL": DEMO_MLFLOW_UI_URL,
        "PYTHONPATH": str(root / "plugins"),
    }
    return {**os.environ, **{k: v for k, v in defaults.items() if not os.environ.get(k)}}


def _airflow_db(env: dict[str, str], logs: Path) -> None:
    if not (Path(env["AIRFLOW_HOME"]) / "airflow.db").exists():
        _say("0/6 creating the Airflow metadata database (SQLite)")
    _run([_airflow(), "db", "migrate"], env, logs / "airflow-db-migrate.log")


def _airflow() -> str:
    return str(Path(sys.executable).with_name("airflow"))


def _dag_test(
    dag_id: str,
    logical_date: str,
    env: dict[str, str],
    logs: Path,
    conf: dict[str, Any] | None = None,
    name: str | None = None,
) -> None:
    log = logs / f"{name or dag_id}.log"
    argv = [_airflow(), "dags", "test", dag_id, logical_date]
    if conf:
        argv += ["--conf", json.dumps(conf)]
    _run(argv, env, log, check=False)
    state = _last_run_state(dag_id, env)
    if state != "success":
        tail = "\n".join(log.read_text().splitlines()[-25:])
        raise SystemExit(f"{dag_id} finished in state {state!r}; see {log}\n{tail}")
    _say(f"    {dag_id}: success (log: {log})")


def _last_run_state(dag_id: str, env: dict[str, str]) -> str:
    out = subprocess.run(
        [_airflow(), "dags", "list-runs", dag_id, "--output", "json"],
        env=env, capture_output=True, text=True, check=True,
    )  # fmt: skip
    listing = next((line for line in out.stdout.splitlines() if line.startswith("[")), "[]")
    runs: list[dict[str, Any]] = json.loads(listing)
    latest: dict[str, Any] = max(runs, key=lambda run: run.get("end_date") or "", default={})
    return str(latest.get("state"))


def _run(argv: list[str], env: dict[str, str], log: Path, check: bool = True) -> None:
    with log.open("w") as handle:
        process = subprocess.run(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if check and process.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"{' '.join(argv[:4])} failed (exit {process.returncode}); see {log}\n{tail}")


def _summary(env: dict[str, str]) -> None:
    os.environ.update({k: env[k] for k in ("ML_LAKE_URI", "MLFLOW_TRACKING_URI", "ML_STATE_DIR")})
    from mlflow import MlflowClient

    from mlsteps.config import load_config
    from mlsteps.lake import Lake
    from mlsteps.scoring import predictions_prefix

    config, lake = load_config(), Lake()
    client = MlflowClient()
    name = config.model.registered_name
    champion = client.get_model_version_by_alias(name, "champion")
    metrics = client.get_run(str(champion.run_id)).data.metrics
    _say("")
    _say(f"Champion: models:/{name}@champion = version {champion.version} (run {champion.run_id})")
    for key in sorted(metrics):
        if any(word in key for word in ("auc", "loss", "f1", "brier")) and "_ci_" not in key:
            _say(f"    {key:<28} {metrics[key]:.4f}")
    _say("Reports:")
    for kind in lake.list_dir("reports"):
        for day in lake.list_dir(f"reports/{kind}")[-2:]:
            for path in _html_files(lake, f"reports/{kind}/{day}"):
                _say(f"    {lake.url(path)}")
    manifest: dict[str, Any] | None = lake.manifest(predictions_prefix(config, SCORED_DAY))
    if manifest:
        rate = manifest["positives"] / max(manifest["rows_out"], 1)
        _say(
            f"Predictions: {lake.url(predictions_prefix(config, SCORED_DAY))} "
            f"({manifest['rows_out']} rows, {rate:.2%} flagged, model v{manifest['model_version']})"
        )
    _say(f"UIs: `make ui` serves Airflow on http://127.0.0.1:8080 and MLflow on {DEMO_MLFLOW_UI_URL}")


def _html_files(lake: Any, prefix: str) -> list[str]:
    found = []
    for name in lake.list_dir(prefix):
        if name.endswith(".html"):
            found.append(f"{prefix}/{name}")
        elif "." not in name:
            found += [
                f"{prefix}/{name}/{inner}"
                for inner in lake.list_dir(f"{prefix}/{name}")
                if inner.endswith(".html")
            ]
    return found


def _say(text: str) -> None:
    print(text, flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
