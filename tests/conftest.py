"""Shared fixtures: real services on loopback, and isolated lakes and configs."""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

# Airflow reads its configuration on import: give the test session its own home before that.
os.environ["AIRFLOW_HOME"] = tempfile.mkdtemp(prefix="airflow-home-")
atexit.register(shutil.rmtree, os.environ["AIRFLOW_HOME"], ignore_errors=True)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO_ROOT / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO_ROOT / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.pop("ML_EXECUTION_MODE", None)

import pytest  # noqa: E402

from tests.support.services import MlflowServer, S3Server, mlflow_server, s3_server  # noqa: E402

DEFAULT_CONFIG = REPO_ROOT / "include" / "config" / "pipeline.yaml"


@pytest.fixture(scope="session")
def s3() -> Iterator[S3Server]:
    """A real S3 API (moto server mode) on 127.0.0.1."""
    with s3_server() as server:
        yield server


@pytest.fixture(scope="session")
def mlflow_tracking(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> Iterator[MlflowServer]:
    """A real ``mlflow server`` on 127.0.0.1, SQLite backend, artifacts on the S3 API."""
    with mlflow_server(tmp_path_factory.mktemp("mlflow"), s3) as server:
        yield server


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """``airflow db migrate`` once for the session's AIRFLOW_HOME (SQLite)."""
    airflow = Path(sys.executable).with_name("airflow")
    subprocess.run([str(airflow), "db", "migrate"], check=True, capture_output=True, timeout=300)


@pytest.fixture
def s3_env(s3: S3Server, monkeypatch: pytest.MonkeyPatch) -> S3Server:
    """Point boto3/pyarrow in this process (and child processes) at the loopback S3 API."""
    for key, value in s3.env.items():
        monkeypatch.setenv(key, value)
    return s3


@pytest.fixture
def tracking(mlflow_tracking: MlflowServer, s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """This process (and its children) log to the session's ``mlflow server``; its tracking URI."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking.tracking_uri)
    return str(mlflow_tracking.tracking_uri)


@pytest.fixture
def local_lake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh local-directory lake, exported as ML_LAKE_URI."""
    uri = str(tmp_path / "lake")
    monkeypatch.setenv("ML_LAKE_URI", uri)
    return uri


@pytest.fixture
def s3_lake(s3_env: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh lake prefix in a bucket on the loopback S3 API, exported as ML_LAKE_URI."""
    s3_env.create_bucket("lake")
    uri = f"s3://lake/{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("ML_LAKE_URI", uri)
    return uri


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Tests never touch the developer's .lake, .state or MLflow store."""
    monkeypatch.setenv("ML_PIPELINE_CONFIG", str(DEFAULT_CONFIG))
    monkeypatch.setenv("ML_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'state' / 'mlflow.db'}")
    for key in ("ML_LAKE_URI", "AWS_ENDPOINT_URL", "ML_STEP_RESULT"):
        if key in os.environ:
            monkeypatch.delenv(key)
