"""Fixtures shared by the fault tests that run whole DAGs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.services import MlflowServer, S3Server


@pytest.fixture
def promoted(
    airflow_db: None,
    mlflow_tracking: MlflowServer,
    s3_env: S3Server,
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> dict[str, Any]:
    """A model whose versions 1 then 2 were promoted by the real step, with its own config file."""
    from tests.steps.training_fixtures import register_stub_versions, unique_model_name, write_config

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_tracking.tracking_uri)
    name = unique_model_name("promoted")
    register_stub_versions(name, 2)
    monkeypatch.setenv("ML_PIPELINE_CONFIG", write_config(tmp_path, name))
    for version, expected in (("1", "none"), ("2", "1")):
        argv = ["promote", "--model-version", version, "--expected-champion", expected]
        process = subprocess.run(
            [sys.executable, "-m", "mlsteps", *argv], capture_output=True, text=True, timeout=300, check=False
        )
        assert process.returncode == 0, process.stderr
    return {"name": name, "lake": local_lake, "tracking_uri": mlflow_tracking.tracking_uri}
