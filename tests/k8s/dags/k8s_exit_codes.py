"""
# k8s_exit_codes

Test DAG of the Kubernetes fault tests: the step contract's exit codes, in pods built by the real
factory. `bad_input` validates a day with no data (exit 2: fails at once, never retried); `crash`
makes `generate-data` crash on an unreadable setting (exit 1: retried).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

from airflow.sdk import dag

from step_tasks import load_settings, step_task

SETTINGS = load_settings()
#: One retry, a second later: enough to tell "retried" from "not retried" quickly.
RETRY = {"retries": 1, "retry_delay": dt.timedelta(seconds=1), "max_retry_delay": dt.timedelta(seconds=2)}


@dag(dag_id="k8s_exit_codes", doc_md=__doc__, schedule=None, catchup=False, tags=["k8s-test"])
def k8s_exit_codes() -> None:
    step_task(
        "validate", task_id="bad_input", options={"--start": "2001-01-01", "--end": "2001-01-02"}, **RETRY
    )
    crashing = dataclasses.replace(
        SETTINGS, step_env={**SETTINGS.step_env, "ML_PARQUET_ROW_GROUP_ROWS": "not-a-number"}
    )
    step_task(
        "generate-data",
        task_id="crash",
        options={"--lake": "/tmp/lake", "--start": "2001-01-01", "--days": 1, "--rows-per-day": 10},
        settings=crashing,
        **RETRY,
    )


k8s_exit_codes()
