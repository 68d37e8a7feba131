"""Whole DAG runs in local mode: a migrated Airflow DB, a real mlflow server and the S3 API on loopback."""

from __future__ import annotations

import datetime as dt
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from mlsteps.contract.config import DEFAULT_CONFIG_PATH
from tests.support.airflow import load_dagbag
from tests.support.services import MlflowServer, S3Server

pytestmark = pytest.mark.slow


@dataclass
class Pipeline:
    """A local-mode deployment of the DAGs against loopback services, for one test module.

    The lake is a prefix in a bucket on the S3 API (moto server), so Feast, scoring and reports all
    go through S3; MLflow artifacts go to the same server.
    """

    lake: str
    state: Path
    monkeypatch: pytest.MonkeyPatch

    def run(
        self, dag_id: str, logical_date: dt.datetime, conf: dict[str, Any] | None = None, **env: str
    ) -> Any:
        """Parse the DAGs with the current environment and run one with ``dag.test()``."""
        with pytest.MonkeyPatch.context() as scoped:  # overrides last for this run only
            for key, value in env.items():
                scoped.setenv(key, value)
            dag = load_dagbag(scoped, "local").dags[dag_id]
            # run_after fixes the run id (manual__<run_after>): the same call again clears and
            # reruns that DAG run, as clearing it in the UI does.
            return dag.test(run_after=logical_date, logical_date=logical_date, run_conf=conf or {})

    def step(self, *argv: str) -> subprocess.CompletedProcess:
        """Run one step CLI directly (e.g. to generate data)."""
        return subprocess.run(
            [sys.executable, "-m", "mlsteps", *argv], capture_output=True, text=True, timeout=600, check=False
        )


@pytest.fixture(scope="module")
def pipeline(
    tmp_path_factory: pytest.TempPathFactory,
    airflow_db: None,
    s3: S3Server,
    mlflow_tracking: MlflowServer,
) -> Iterator[Pipeline]:
    """Environment for a module's DAG runs; module-scoped so runs can build on each other."""
    monkeypatch = pytest.MonkeyPatch()
    state = tmp_path_factory.mktemp("state")
    s3.create_bucket("integration-lake")
    lake = f"s3://integration-lake/{uuid.uuid4().hex[:12]}"  # the lake on the S3 API, as in production
    env = {
        **s3.env,
        "ML_LAKE_URI": lake,
        "ML_STATE_DIR": str(state),
        "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri,
        "ML_PIPELINE_CONFIG": str(DEFAULT_CONFIG_PATH),
    }
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    try:
        yield Pipeline(lake, state, monkeypatch)
    finally:
        monkeypatch.undo()


def task_states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def xcom_result(dag_run: Any, task_id: str, key: str = "return_value") -> Any:
    ti = next(ti for ti in dag_run.get_task_instances() if ti.task_id == task_id)
    return ti.xcom_pull(task_ids=task_id, key=key)


@pytest.fixture(autouse=True)
def _isolated_environment() -> None:
    """Overrides the per-test isolation of tests/conftest.py: here `pipeline` owns the environment."""
