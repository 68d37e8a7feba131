"""Helpers to load the project's DAGs in a chosen execution mode."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
DAGS = REPO_ROOT / "dags"
PLUGINS = REPO_ROOT / "plugins"
HEAVY_MODULES = (
    "pandas",
    "numpy",
    "pyarrow",
    "sklearn",
    "xgboost",
    "mlflow",
    "feast",
    "evidently",
    "boto3",
    "optuna",
)


def load_dagbag(monkeypatch: pytest.MonkeyPatch, mode: str, **env: str) -> Any:
    """A DagBag of ``dags/`` parsed with ``ML_EXECUTION_MODE=mode`` (settings re-read)."""
    from airflow.dag_processing.dagbag import DagBag

    from step_tasks import factory

    monkeypatch.setenv("ML_EXECUTION_MODE", mode)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    factory._settings.cache_clear()
    try:
        return DagBag(str(DAGS))
    finally:
        factory._settings.cache_clear()


def parse_in_fresh_process(mode: str, dags: Path = DAGS) -> dict[str, Any]:
    """Parse ``dags/`` in a new interpreter; report import errors, DAG ids and loaded heavy modules."""
    code = f"""
import json, sys
from airflow.dag_processing.dagbag import DagBag
bag = DagBag({str(dags)!r})
print("@@" + json.dumps({{
    "errors": {{k: str(v) for k, v in bag.import_errors.items()}},
    "dag_ids": sorted(bag.dag_ids),
    "heavy": sorted(m for m in {HEAVY_MODULES!r} if m in sys.modules),
}}))
"""
    env = {**os.environ, "ML_EXECUTION_MODE": mode, "PYTHONPATH": str(PLUGINS)}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(line for line in out.stdout.splitlines() if line.startswith("@@"))
    return dict(json.loads(line[2:]))


#: A DAG that uses only Airflow itself: whatever it loads is Airflow's cost, not ours.
BASELINE_DAG = """
from airflow.sdk import Asset, dag, task

ASSET = Asset(name="baseline", uri="mlsteps://baseline/predictions")


@dag(schedule=None)
def baseline():
    @task(outlets=[ASSET])
    def publish():
        return 1

    publish()


baseline()
"""


class RecordingTaskInstance:
    """Stands in for Airflow's ``ti`` in an operator's context: records what the operator pushes."""

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value
