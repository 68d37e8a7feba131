"""``make demo``: the whole loop on one machine in local mode, through real Airflow DAG runs.

It generates raw events, starts Airflow's scheduler, DAG processor and API server over the demo's
state (SQLite, LocalExecutor, steps as subprocesses: what ``make ui`` runs), and asks for each run
through the REST API with a stable id (``demo__<logical date>``) and logical date. The scheduler
runs them, including the retrain that ``ml_drift_monitor`` triggers (``drift__<ds>``), so the UI
shows the real queued and running times. Each run's outcome is read back from Airflow's records,
never from logs. Then it prints what a user would look for: the champion, its metrics, the reports,
the scored partition, and the notifications the runs sent (to a webhook receiver the demo runs on
loopback, ``repotools.demo_webhook``). Running it again is safe: a run of the same id or logical
date is replaced, every step is idempotent, and a second training run meets the champion at the
gate.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mlsteps.contract.layout import REPORTS_ROOT, drift_report_prefix, report_kind_prefix
from repotools.demo_webhook import demo_webhook, notifying_env
from repotools.local_airflow import FINISHED, LocalAirflow, airflow_env, free_port, running

FIRST_DAY = dt.date(2026, 9, 8)  # 30 days of history before the training window
DAYS = 59  # 2026-09-08 .. 2026-11-05
TRAINING_RUN_AT = "2026-11-05T03:00:00+00:00"  # window [2026-10-08, 2026-11-05)
SCORING_LOGICAL_DATE = "2026-11-06T02:00:00+00:00"  # the 02:00 run scores the day before: ds=2026-11-05
SCORED_DAY = dt.date(2026, 11, 5)
DRIFTED_DAY = dt.date(2026, 11, 6)  # generated with shifted amount, distance and merchant mix
RETRAIN_RUN_AT = "2026-11-07T03:00:00+00:00"
ROWS_PER_DAY = 5_000
DAG_IDS = ("ml_training", "ml_batch_scoring", "ml_performance_monitor", "ml_drift_monitor")
RUN_TIMEOUT_S = 1200  # one DAG run, scheduler included
#: Where ``make ui`` serves the MLflow UI; the demo's task links point there.
DEMO_MLFLOW_UI_URL = "http://127.0.0.1:5000"


def main() -> int:
    root = Path.cwd()
    env = demo_environment(root)
    logs = Path(env["ML_STATE_DIR"]) / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    _say(f"1/7 generating {DAYS} days x {ROWS_PER_DAY} raw card transactions into {env['ML_LAKE_URI']}")
    _generate(env, logs / "generate-data.log", FIRST_DAY, DAYS)
    _say(f"    starting Airflow: scheduler, DAG processor, API server (logs: {logs / 'airflow'})")
    with (
        demo_webhook() as webhook,
        demo_airflow(
            notifying_env(env, webhook.port, Path(env["ML_STATE_DIR"]) / "demo"), logs / "airflow"
        ) as airflow,
    ):
        airflow.wait_for_dags(list(DAG_IDS))
        try:
            _say("2/7 running DAG ml_training (validate, features, Feast, train, evaluate, promote)")
            execute_run(airflow, "ml_training", TRAINING_RUN_AT)
            _say("3/7 running DAG ml_batch_scoring for ds=" + SCORED_DAY.isoformat())
            execute_run(airflow, "ml_batch_scoring", SCORING_LOGICAL_DATE)
            _performance_check(env, airflow)
            _summary(env)
            _drift_loop(env, logs, airflow)
        finally:
            for dag_id in DAG_IDS:  # as `make ui` finds them: nothing starts until a user unpauses
                airflow.set_paused(dag_id, True)
        left = report_runs(airflow)
        messages = webhook.received()
    _summary(env)
    _say_notifications(messages, webhook.port)
    if left:
        raise SystemExit(f"{len(left)} run(s) were left queued or running; see the Airflow UI (`make ui`)")
    return 0


def _performance_check(env: dict[str, str], airflow: LocalAirflow) -> None:
    """The scored day's labels are in (the generator writes them): the performance monitor judges it."""
    day = SCORED_DAY.isoformat()
    _say(f"4/7 labels arrived for ds={day}: running DAG ml_performance_monitor (realized vs evaluated)")
    execute_run(airflow, "ml_performance_monitor", f"{day}T07:00:00+00:00", conf={"ds": day})
    from mlsteps.contract.layout import performance_report_prefix
    from mlsteps.platform.lake import Lake

    report = Lake(env["ML_LAKE_URI"]).read_json(f"{performance_report_prefix(day)}/report.json")
    _say(f"    performance verdict: {report['summary']}")


def _drift_loop(env: dict[str, str], logs: Path, airflow: LocalAirflow) -> None:
    """A drifted day: scored, detected by the monitor, which asks for a retrain that the scheduler runs."""
    day = DRIFTED_DAY.isoformat()
    _say(f"5/7 generating a drifted day ds={day} and scoring it")
    _generate(env, logs / "generate-drifted-day.log", DRIFTED_DAY, 1, "--drift-from", day)
    next_day = (DRIFTED_DAY + dt.timedelta(days=1)).isoformat()
    execute_run(airflow, "ml_batch_scoring", f"{next_day}T02:00:00+00:00")
    _say(f"6/7 running DAG ml_drift_monitor for ds={day}")
    execute_run(airflow, "ml_drift_monitor", f"{day}T06:00:00+00:00", conf={"ds": day})
    from mlsteps.platform.lake import Lake

    report = Lake(env["ML_LAKE_URI"]).read_json(f"{drift_report_prefix(day)}/report.json")
    _say(
        f"    drift verdict: {report['drift']}; "
        f"drifted columns: {', '.join(report['drifted_columns']) or 'none'}"
    )
    from mlsteps.steps.retrain_policy import run_id_for

    run_id = run_id_for(DRIFTED_DAY)
    retrain = airflow.run("ml_training", run_id)
    if retrain is None:
        _say("    no retrain was requested (cooldown or weekly budget); see the decide_retrain task log")
        return
    _say(
        f"7/7 ml_drift_monitor triggered ml_training run {run_id} with conf {json.dumps(retrain['conf'])}; "
        "the scheduler runs it"
    )
    finished = airflow.wait_for_run("ml_training", run_id, RUN_TIMEOUT_S)
    _say_run(finished)
    _fail_unless_success(airflow, finished)
    _say("")
    _say(
        "The loop: ml_training (champion) -> ml_batch_scoring (predictions) -> ml_drift_monitor (drift) "
        "and ml_performance_monitor (labels) -> ml_training (retrain, gated against the champion)"
    )


def demo_airflow_env(base: dict[str, str], port: int) -> dict[str, str]:
    """``make ui``'s services, except that the scheduler starts only the runs someone asked for.

    Without cron or Asset schedules (``use_job_schedule`` off), unpausing a DAG to run the demo's
    runs never adds a run of its own (``ml_batch_scoring`` would otherwise start yesterday's).
    """
    return {
        **airflow_env(base, Path(base["AIRFLOW_HOME"]), port),
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
    }


@contextmanager
def demo_airflow(base: dict[str, str], logs: Path) -> Iterator[LocalAirflow]:
    """Airflow's three services over the demo's state, for as long as the demo runs."""
    with running(demo_airflow_env(base, free_port()), logs, timeout=300) as airflow:
        yield airflow


def demo_run_id(logical_date: str) -> str:
    """The demo's run id for a logical date: stable, and says who started the run and for when."""
    return f"demo__{logical_date}"


def execute_run(
    airflow: LocalAirflow,
    dag_id: str,
    logical_date: str,
    conf: dict[str, Any] | None = None,
    timeout: float = RUN_TIMEOUT_S,
) -> dict[str, Any]:
    """Queue a run of ``dag_id`` for ``logical_date`` and let the scheduler run it; Airflow's record of it.

    The DAG is unpaused (the scheduler starts no run of a paused DAG). The outcome printed and
    checked is the run's state in the metadata DB, read through the REST API.

    Raises:
        SystemExit: The run failed; the message names the failed tasks.
    """
    run_id = demo_run_id(logical_date)
    airflow.trigger(dag_id, run_id, logical_date, conf)
    airflow.set_paused(dag_id, False)
    finished = airflow.wait_for_run(dag_id, run_id, timeout)
    _say_run(finished)
    _fail_unless_success(airflow, finished)
    return finished


def run_times(run: dict[str, Any]) -> tuple[float, float]:
    """(seconds queued, seconds running) of a finished run, from Airflow's record: what the UI shows."""
    queued, started, ended = (
        dt.datetime.fromisoformat(run[key]) for key in ("queued_at", "start_date", "end_date")
    )
    return (started - queued).total_seconds(), (ended - started).total_seconds()


def report_runs(airflow: LocalAirflow) -> list[dict[str, Any]]:
    """Print every run of the demo's DAGs as Airflow records it; return those still queued or running."""
    _say("")
    _say("Airflow's record of the runs (REST API):")
    for dag_id in DAG_IDS:
        for run in airflow.api(f"dags/{dag_id}/dagRuns?order_by=run_after&limit=100")["dag_runs"]:
            _say_run(run)
    left = airflow.unfinished_runs()
    for run in left:
        _say(f"    still {run['state']}: {run['dag_id']} {run['dag_run_id']}")
    if not left:
        _say("    no run is queued or running")
    return left


def _say_run(run: dict[str, Any]) -> None:
    timing = ""
    if run["state"] in FINISHED and run.get("start_date") and run.get("end_date"):
        queued, ran = run_times(run)
        timing = f", queued {queued:.0f} s, ran {ran:.0f} s"
    logical = (run.get("logical_date") or "none")[:16]
    _say(f"    {run['dag_id']:<17} {run['dag_run_id']:<36} logical {logical}: {run['state']}{timing}")


def _fail_unless_success(airflow: LocalAirflow, run: dict[str, Any]) -> None:
    if run["state"] != "success":
        failed = airflow.failed_tasks(run["dag_id"], run["dag_run_id"])
        raise SystemExit(
            f"{run['dag_id']} run {run['dag_run_id']} finished {run['state']} (failed tasks: "
            f"{', '.join(failed) or 'none'}); task logs are under {airflow.env['AIRFLOW_HOME']}/logs"
        )


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


def _generate(env: dict[str, str], log: Path, start: dt.date, days: int, *extra: str) -> None:
    """``generate-data`` of ``days`` days from ``start`` at the demo's volume."""
    argv = [
        "generate-data",
        "--start",
        start.isoformat(),
        "--days",
        str(days),
        "--rows-per-day",
        str(ROWS_PER_DAY),
    ]
    _run([sys.executable, "-m", "mlsteps", *argv, *extra], env, log)


def _run(argv: list[str], env: dict[str, str], log: Path, check: bool = True) -> None:
    with log.open("w") as handle:
        process = subprocess.run(argv, env=env, stdout=handle, stderr=subprocess.STDOUT)
    if check and process.returncode != 0:
        tail = "\n".join(log.read_text().splitlines()[-15:])
        raise SystemExit(f"{' '.join(argv[:4])} failed (exit {process.returncode}); see {log}\n{tail}")


def _summary(env: dict[str, str]) -> None:
    os.environ.update({k: env[k] for k in ("ML_LAKE_URI", "MLFLOW_TRACKING_URI", "ML_STATE_DIR")})
    from mlflow import MlflowClient

    from mlsteps.contract.config import load_config
    from mlsteps.contract.layout import predictions_prefix
    from mlsteps.platform.lake import Lake

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
    for kind in lake.list_dir(REPORTS_ROOT):
        for day in lake.list_dir(report_kind_prefix(kind))[-2:]:
            for path in _html_files(lake, f"{report_kind_prefix(kind)}/{day}"):
                _say(f"    {lake.url(path)}")
    scored = predictions_prefix(config.model.registered_name, SCORED_DAY)
    manifest: dict[str, Any] | None = lake.manifest(scored)
    if manifest:
        rate = manifest["positives"] / max(manifest["rows_out"], 1)
        _say(
            f"Predictions: {lake.url(scored)} "
            f"({manifest['rows_out']} rows, {rate:.2%} flagged, model v{manifest['model_version']})"
        )
    _say(f"UIs: `make ui` serves Airflow on http://127.0.0.1:8080 and MLflow on {DEMO_MLFLOW_UI_URL}")


def _say_notifications(messages: list[dict[str, Any]], port: int) -> None:
    """What the pipeline announced (config ``notifications:``); the demo's channel is a loopback webhook."""
    _say(f"Notifications ({len(messages)}, to the demo's webhook receiver on 127.0.0.1:{port}):")
    for message in messages:
        _say(f"    {str(message.get('text', '')).splitlines()[0]}")


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
