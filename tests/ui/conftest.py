"""Airflow's own services on loopback with fresh state, and Debian's Chromium driven by Playwright.

One Airflow (API server, scheduler, DAG processor; SQLite, LocalExecutor) serves every module here:
it runs the DAGs in local mode against a lake in a temp directory and a real ``mlflow server``, so
the task links point at pages that exist. Starting it and training from scratch once per module
took about six of ``make test``'s minutes. The modules run in file order, each on the state the
ones before left: ``test_approval`` first (it sees no champion), then ``test_browser`` and
``test_manual_triggers``. Nothing is scheduled (``USE_JOB_SCHEDULE`` off): the only runs are the
ones the tests trigger. Screenshots go to ``test-artifacts/ui/`` (``$ML_UI_ARTIFACTS``).
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from repotools.local_airflow import LocalAirflow, airflow_env, running

from mlsteps.contract.config import DEFAULT_CONFIG_PATH
from tests.support.services import S3Server, free_port, mlflow_server

pytestmark = pytest.mark.slow

REPO_ROOT = Path(__file__).resolve().parents[2]
#: Days of raw events before today: the feature look-back (30 days) plus the training window.
HISTORY_DAYS = 40
ROWS_PER_DAY = 1500
SKIP_HINT = (
    "SKIPPED the browser test: Debian's chromium is not installed. `make test` installs it with "
    "apt-get when it can (root or passwordless sudo); or set ML_CHROMIUM to a Chromium binary."
)
#: The approval a run with ``require_approval`` asks for times out after 90 s (tests/ui/test_approval):
#: long enough to answer two runs, short enough to wait for the third.
APPROVAL_TIMEOUT_HOURS = 0.025


def chromium_path() -> str | None:
    """``$ML_CHROMIUM``, else Debian's ``chromium`` on PATH."""
    candidate = os.environ.get("ML_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
    return candidate if candidate and os.access(candidate, os.X_OK) else None


@pytest.fixture(scope="session")
def artifacts() -> Path:
    path = Path(os.environ.get("ML_UI_ARTIFACTS") or REPO_ROOT / "test-artifacts" / "ui")
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class UiAirflow:
    """The running services and what the test needs to reach them."""

    services: LocalAirflow
    tracking_uri: str
    lake: Path

    @property
    def url(self) -> str:
        return self.services.url

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        """One call to the REST API (sign-in is off on this loopback deployment)."""
        return self.services.api(path, method, body)

    def start_run(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> dict[str, Any]:
        """Unpause ``dag_id`` once it is parsed and trigger it with no logical date, as a person does."""
        self.services.wait_for_dags([dag_id])
        self.services.set_paused(dag_id, False)
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return dict(self.api(f"dags/{dag_id}/dagRuns", "POST", body))

    def finished_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Wait for the run to finish; fail the test, naming each task's state, unless it succeeded."""
        run = self.services.wait_for_run(dag_id, run_id, timeout)
        if run["state"] != "success":
            states = self.task_states(dag_id, run_id)
            pytest.fail(f"{dag_id} run {run_id} ended {run['state']}: {states}; logs in {self.services.logs}")
        return run

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        found = self.api(f"dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in found}


def ui_config(directory: Path) -> Path:
    """The default config, with an approval that times out quickly."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["gates"]["approval_timeout_hours"] = APPROVAL_TIMEOUT_HOURS
    path = directory / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="session")
def ui_airflow(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[UiAirflow]:
    """Raw events up to yesterday, a real mlflow server, then Airflow's three services."""
    root = tmp_path_factory.mktemp("ui")
    with mlflow_server(root, s3, bucket="ui-mlflow", timeout=300) as mlflow:  # slow on a busy machine
        base = {
            **os.environ,
            "ML_EXECUTION_MODE": "local",
            "ML_PIPELINE_CONFIG": str(ui_config(root)),
            "ML_LAKE_URI": str(root / "lake"),
            "ML_STATE_DIR": str(root / "state"),
            "MLFLOW_TRACKING_URI": mlflow.tracking_uri,
            "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
            "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        }
        for key in ("AWS_ENDPOINT_URL", "ML_STEP_RESULT", "ML_MLFLOW_UI_URL", "ML_REPORTS_URL"):
            base.pop(key, None)
        first = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=HISTORY_DAYS)
        generate = [sys.executable, "-m", "mlsteps", "generate-data", "--start", first.isoformat()]
        generate += ["--days", str(HISTORY_DAYS), "--rows-per-day", str(ROWS_PER_DAY), "--customers", "600"]
        done = subprocess.run(generate, env=base, capture_output=True, text=True, timeout=600, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        env = airflow_env(base, root / "airflow", free_port())
        with running(env, root / "logs", timeout=240) as services:
            yield UiAirflow(services, mlflow.tracking_uri, root / "lake")


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    executable = chromium_path()
    if executable is None:
        configured = os.environ.get("ML_CHROMIUM")
        hint = f"SKIPPED the browser test: ML_CHROMIUM={configured} is not executable" if configured else ""
        hint = hint or SKIP_HINT
        print(f"\n{hint}", file=sys.stderr)
        pytest.skip(hint)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        try:
            yield launched
        finally:
            launched.close()
