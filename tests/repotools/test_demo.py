"""``make demo``'s runs: through Airflow's real scheduler, with real durations, outcomes from Airflow.

The demo's run executor (``repotools.demo.execute_run`` over ``demo_airflow``: scheduler, DAG
processor and API server on loopback) drives three small DAGs shaped like the demo's: a daily DAG
that triggers another by run id for the day after its own (as ``ml_drift_monitor`` triggers
``drift__<ds>``), the triggered DAG, and a DAG whose task logs "success" and then fails.
"""

from __future__ import annotations

import datetime as dt
import os
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from repotools.demo import demo_airflow, demo_run_id, execute_run, run_times
from repotools.local_airflow import LocalAirflow

pytestmark = pytest.mark.slow

PARENT_LOGICAL_DATE = "2026-01-05T06:00:00+00:00"  # weeks before any test run: only durations are "now"
TRIGGERED_RUN_ID = "drift__2026-01-05"
TASK_SECONDS = 4

PROBE_DAGS = f'''
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import CronDataIntervalTimetable, dag, task


class TriggerRun(TriggerDagRunOperator):
    template_fields = (*TriggerDagRunOperator.template_fields, "run_after")


DAY_AFTER = "{{{{ macros.ds_add(ds, 1) }}}}T00:00:00+00:00"


@dag(dag_id="probe_monitor", schedule=CronDataIntervalTimetable("0 2 * * *", timezone="UTC"), catchup=False)
def probe_monitor():
    @task
    def check():
        import time

        time.sleep({TASK_SECONDS})

    check() >> TriggerRun(
        task_id="trigger_retrain",
        trigger_dag_id="probe_retrain",
        trigger_run_id="{TRIGGERED_RUN_ID}",
        logical_date=DAY_AFTER,
        run_after=DAY_AFTER,
        skip_when_already_exists=True,
    )


@dag(dag_id="probe_retrain", schedule=None)
def probe_retrain():
    @task
    def retrain():
        import time

        time.sleep({TASK_SECONDS})

    retrain()


@dag(dag_id="probe_failing", schedule=None)
def probe_failing():
    @task
    def boom():
        print("state: success")  # what a log reader would believe
        raise RuntimeError("the run fails after logging success")

    boom()


probe_monitor()
probe_retrain()
probe_failing()
'''


@dataclass
class Executed:
    airflow: LocalAirflow
    monitor: dict[str, Any]
    retrain: dict[str, Any]
    asked_at: dt.datetime
    done_at: dt.datetime


@pytest.fixture(scope="module")
def demo_services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalAirflow]:
    root = tmp_path_factory.mktemp("demo-runs")
    (root / "dags").mkdir()
    (root / "dags" / "probe.py").write_text(textwrap.dedent(PROBE_DAGS))
    base = {
        **os.environ,
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
    }
    with demo_airflow(base, root / "logs") as airflow:
        airflow.wait_for_dags(["probe_monitor", "probe_retrain", "probe_failing"])
        yield airflow


@pytest.fixture(scope="module")
def executed(demo_services: LocalAirflow) -> Executed:
    """The monitor run for a past day, then the run it triggered, both run by the scheduler."""
    asked_at = dt.datetime.now(dt.UTC)
    demo_services.set_paused("probe_retrain", False)
    monitor = execute_run(demo_services, "probe_monitor", PARENT_LOGICAL_DATE, timeout=300)
    retrain = demo_services.wait_for_run("probe_retrain", TRIGGERED_RUN_ID, timeout=300)
    return Executed(demo_services, monitor, retrain, asked_at, dt.datetime.now(dt.UTC))


def _at(run: dict[str, Any], key: str) -> dt.datetime:
    return dt.datetime.fromisoformat(run[key])


def test_a_run_keeps_its_stable_id_and_past_logical_date(executed: Executed) -> None:
    assert (
        executed.monitor["dag_run_id"] == demo_run_id(PARENT_LOGICAL_DATE) == f"demo__{PARENT_LOGICAL_DATE}"
    )
    assert _at(executed.monitor, "logical_date") == dt.datetime.fromisoformat(PARENT_LOGICAL_DATE)
    assert executed.monitor["data_interval_start"][:10] == "2026-01-04"  # the day before, as cron says
    assert executed.monitor["run_after"] == executed.monitor["logical_date"]


def test_queued_and_running_times_are_what_happened(executed: Executed) -> None:
    slack = dt.timedelta(seconds=2)  # Airflow's clock and ours are the same clock; allow rounding
    for run in (executed.monitor, executed.retrain):
        queued_at, start, end = _at(run, "queued_at"), _at(run, "start_date"), _at(run, "end_date")
        assert executed.asked_at - slack <= queued_at <= start <= end <= executed.done_at + slack, run
        queued, ran = run_times(run)
        assert ran >= TASK_SECONDS, f"{run['dag_id']} ran {ran:.1f} s, shorter than its {TASK_SECONDS} s task"
        total = (executed.done_at - executed.asked_at).total_seconds()
        assert queued + ran <= total + 2, (
            f"{run['dag_id']}: {queued:.0f} + {ran:.0f} s > {total:.0f} s measured"
        )


def test_the_triggered_run_is_the_one_that_executed(executed: Executed) -> None:
    assert executed.retrain["state"] == "success"
    assert executed.retrain["dag_run_id"] == TRIGGERED_RUN_ID
    # Its dates are the day after the checked day, not "now": its data interval (the window it
    # works on) is stable, and only its durations are today's.
    assert executed.retrain["logical_date"].startswith("2026-01-06T00:00:00")
    assert executed.retrain["data_interval_end"].startswith("2026-01-06T00:00:00")
    runs = executed.airflow.api("dags/probe_retrain/dagRuns")["dag_runs"]
    assert [run["dag_run_id"] for run in runs] == [TRIGGERED_RUN_ID]
    # It started only after the monitor run had asked for it, so its times are its own.
    assert _at(executed.retrain, "queued_at") >= _at(executed.monitor, "start_date")


def test_no_run_is_left_queued_and_no_schedule_adds_one(executed: Executed) -> None:
    time.sleep(3)  # a few scheduler loops with the daily DAG unpaused
    assert executed.airflow.unfinished_runs() == []
    runs = executed.airflow.api("dags/probe_monitor/dagRuns")["dag_runs"]
    assert [run["dag_run_id"] for run in runs] == [demo_run_id(PARENT_LOGICAL_DATE)]


def test_the_outcome_comes_from_airflow_not_the_log(demo_services: LocalAirflow) -> None:
    logical_date = "2026-01-07T00:00:00+00:00"
    with pytest.raises(SystemExit, match=r"probe_failing run demo__2026-01-07\S+ finished failed .*boom"):
        execute_run(demo_services, "probe_failing", logical_date, timeout=300)
    run = demo_services.run("probe_failing", demo_run_id(logical_date))
    assert run is not None
    assert run["state"] == "failed"


def test_asking_again_replaces_the_run(demo_services: LocalAirflow) -> None:
    logical_date = "2026-01-08T00:00:00+00:00"
    demo_services.set_paused("probe_retrain", True)  # queued, not started: a stand-in for an old run
    demo_services.trigger("probe_retrain", "manual__old", logical_date)
    replaced = execute_run(demo_services, "probe_retrain", logical_date, timeout=300)
    ids = {run["dag_run_id"] for run in demo_services.api("dags/probe_retrain/dagRuns")["dag_runs"]}
    assert replaced["state"] == "success"
    assert "manual__old" not in ids
    assert demo_run_id(logical_date) in ids
