"""Manual triggers without a logical date, through the REST API and the CLI, run to success.

Airflow 3 triggers without a logical date by default (``airflow dags trigger``, and the REST API
with ``"logical_date": null``); such a run has no data interval in its template context. Here the
real services (API server, scheduler, DAG processor; tests/ui/conftest.py) run ``ml_training``
triggered through the REST API, then ``ml_batch_scoring`` triggered with the ``airflow`` CLI
against the same ``AIRFLOW_HOME``, and every step renders its days from the run's ``run_after``.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import UiAirflow

#: Two DAG runs one after the other (and the services start when this module runs alone): more
#: than the suite's per-test default.
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1800)]

RUN_TIMEOUT_S = 600
TRAINING_CONF = {
    "training_window_days": 10,
    "n_trials": 0,
    "min_roc_auc": 0.5,
    "reason": "manual trigger test",
}


def rendered_options(airflow: UiAirflow, dag_id: str, run_id: str, task_id: str) -> dict[str, str]:
    """``--flag value`` pairs of a step task's rendered arguments, as Airflow stored them."""
    task = airflow.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}")
    arguments = [str(a) for a in task["rendered_fields"]["arguments"]]
    return {
        flag: value for flag, value in zip(arguments, arguments[1:], strict=False) if flag.startswith("--")
    }


def run_after_day(run: dict[str, Any]) -> dt.date:
    return dt.datetime.fromisoformat(run["run_after"]).astimezone(dt.UTC).date()


@pytest.fixture(scope="module")
def rest_run(ui_airflow: UiAirflow) -> dict[str, Any]:
    """``ml_training`` triggered through the REST API with ``"logical_date": null``, finished."""
    created = ui_airflow.start_run("ml_training", TRAINING_CONF)
    assert created["logical_date"] is None
    assert created["data_interval_end"] is None
    return ui_airflow.finished_run("ml_training", created["dag_run_id"], RUN_TIMEOUT_S)


@pytest.fixture(scope="module")
def cli_run(ui_airflow: UiAirflow, rest_run: dict[str, Any]) -> dict[str, Any]:
    """``ml_batch_scoring``, scoring with the REST run's champion, triggered by ``airflow dags trigger``."""
    ui_airflow.services.wait_for_dags(["ml_batch_scoring"])
    ui_airflow.services.set_paused("ml_batch_scoring", False)
    airflow = str(Path(sys.executable).with_name("airflow"))
    argv = [airflow, "dags", "trigger", "ml_batch_scoring", "--output", "json"]
    done = subprocess.run(argv, env=ui_airflow.services.env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    # Airflow may log warnings (e.g. "[warning  ] Could not import graphviz") before the JSON.
    created = json.loads(
        done.stdout[done.stdout.rindex("\n[") + 1 :] if "\n[" in done.stdout else done.stdout
    )[0]
    assert created["logical_date"] is None
    return ui_airflow.finished_run("ml_batch_scoring", created["dag_run_id"], RUN_TIMEOUT_S)


def test_rest_trigger_without_logical_date_succeeds(rest_run: dict[str, Any]) -> None:
    assert rest_run["state"] == "success"
    assert rest_run["logical_date"] is None


def test_rest_run_promotes_a_champion(ui_airflow: UiAirflow, rest_run: dict[str, Any]) -> None:
    promote = ui_airflow.api(f"dags/ml_training/dagRuns/{rest_run['dag_run_id']}/taskInstances/promote")
    assert promote["state"] == "success"


def test_rest_run_trains_on_the_window_ending_on_its_trigger_day(
    ui_airflow: UiAirflow, rest_run: dict[str, Any]
) -> None:
    end = run_after_day(rest_run)
    options = rendered_options(ui_airflow, "ml_training", rest_run["dag_run_id"], "validate")
    assert (options["--start"], options["--end"]) == (str(end - dt.timedelta(days=10)), str(end))


def test_cli_trigger_without_logical_date_succeeds(cli_run: dict[str, Any]) -> None:
    assert cli_run["state"] == "success"
    assert cli_run["logical_date"] is None


def test_cli_run_scores_the_day_before_its_trigger(ui_airflow: UiAirflow, cli_run: dict[str, Any]) -> None:
    day = run_after_day(cli_run) - dt.timedelta(days=1)
    options = rendered_options(ui_airflow, "ml_batch_scoring", cli_run["dag_run_id"], "commit_predictions")
    assert options["--ds"] == str(day)
    assert (ui_airflow.lake / "predictions").exists()
