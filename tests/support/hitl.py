"""Answering a human-in-the-loop task through Airflow's REST API, as a person does.

Used by the approval tests in local mode (tests/ui) and in pods (tests/k8s).
"""

from __future__ import annotations

import time
import urllib.parse
from typing import Any

from repotools.local_airflow import FINISHED, ApiError, LocalAirflow

#: Seconds between the task waiting for input and the answer. Airflow 3.3.2's scheduler handles the
#: executor's report of the task's first part in its next loop; an answer that resumes the task
#: before that report is handled is taken for an external state change, and the try is failed
#: (README, "Human approval"). A person never answers that fast; a test must wait.
ANSWER_AFTER_S = 10


def task_path(dag_id: str, run_id: str, task_id: str) -> str:
    return f"dags/{dag_id}/dagRuns/{urllib.parse.quote(run_id, safe='')}/taskInstances/{task_id}"


def wait_for_input(
    airflow: LocalAirflow, dag_id: str, run_id: str, task_id: str, timeout: float
) -> dict[str, Any]:
    """Wait until the task waits for input, then ``ANSWER_AFTER_S`` more; return its HITL detail (the form).

    Raises:
        RuntimeError: The run finished before the task asked.
        TimeoutError: The task did not ask within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    state = None
    while time.monotonic() < deadline:
        try:
            state = airflow.api(task_path(dag_id, run_id, task_id)).get("state")
        except ApiError as err:  # not created yet
            if err.status != 404:
                raise
        if state == "awaiting_input":
            time.sleep(ANSWER_AFTER_S)
            return dict(airflow.api(f"{task_path(dag_id, run_id, task_id)}/-1/hitlDetails"))
        run = airflow.run(dag_id, run_id)
        if run is not None and run["state"] in FINISHED:
            raise RuntimeError(f"{run_id} ended {run['state']} before {task_id} asked (it is {state})")
        time.sleep(2)
    raise TimeoutError(f"{run_id}: {task_id} did not wait for input within {timeout:.0f} s (it is {state})")


def answer(
    airflow: LocalAirflow, dag_id: str, run_id: str, task_id: str, option: str, comment: str
) -> dict[str, Any]:
    """Choose ``option`` with a comment; Airflow's record of the answer (``responded_by``, ...)."""
    body = {"chosen_options": [option], "params_input": {"comment": comment}}
    return dict(airflow.api(f"{task_path(dag_id, run_id, task_id)}/-1/hitlDetails", "PATCH", body))
