"""``make ui`` and the browser test's Airflow: the environment they run with, and the MLflow UI beside it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
from repotools.demo import DEMO_MLFLOW_UI_URL, demo_airflow_env, demo_environment
from repotools.local_airflow import (
    MLFLOW_SERVER_ENV,
    airflow_env,
    mlflow_server,
    mlflow_ui_companion,
    wait_for_http,
)


def test_demo_ui_runs_mlflow_where_the_demo_links_point(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for key in ("ML_STATE_DIR", "MLFLOW_TRACKING_URI", "ML_MLFLOW_UI_URL", "AIRFLOW_HOME"):
        monkeypatch.delenv(key, raising=False)
    base = demo_environment(tmp_path)
    companion = mlflow_ui_companion(base)
    argv, url = companion["mlflow-ui"]
    assert url == DEMO_MLFLOW_UI_URL
    # MLflow's job runner stays off, as in every mlflow server of this repository.
    server_env = ["env", *(f"{name}={value}" for name, value in MLFLOW_SERVER_ENV.items())]
    assert argv[: len(server_env)] == server_env
    command = argv[len(server_env) :]
    assert command[0].endswith("/mlflow")
    assert command[1:5] == [
        "ui",
        "--backend-store-uri",
        f"sqlite:///{tmp_path / '.state' / 'mlflow.db'}",
        "--host",
    ]
    assert command[-2:] == ["--port", "5000"]
    # An HTTP tracking server is its own UI: nothing to start.
    assert mlflow_ui_companion({**base, "MLFLOW_TRACKING_URI": "http://mlflow:5000"}) == {}


def test_airflow_runs_on_loopback_with_the_repo_dags_and_plugins(tmp_path: Path) -> None:
    env = airflow_env({"PYTHONPATH": "/elsewhere"}, tmp_path / "airflow", 8123)
    assert env["AIRFLOW__API__BASE_URL"] == "http://127.0.0.1:8123"
    assert env["AIRFLOW__API__HOST"] == "127.0.0.1"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:8123/execution/"
    assert env["AIRFLOW__CORE__DAGS_FOLDER"].endswith("/dags")
    assert env["AIRFLOW__CORE__PLUGINS_FOLDER"].endswith("/plugins")
    assert env["PYTHONPATH"].endswith(":/elsewhere")
    # Every service must sign the same tokens.
    assert (
        env["AIRFLOW__API_AUTH__JWT_SECRET"]
        == airflow_env(env, tmp_path / "airflow", 8123)["AIRFLOW__API_AUTH__JWT_SECRET"]
    )


def test_waiting_stops_when_the_server_behind_the_url_exits() -> None:
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    process.wait()
    with pytest.raises(RuntimeError, match="server exited with 3"):
        wait_for_http("http://127.0.0.1:9/", 10, {"server": process})


def test_waiting_accepts_only_a_ready_answer() -> None:
    answers = iter(["starting", "starting", "ready"])

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's naming
            body = next(answers, "ready").encode()
            self.send_response(200)
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        wait_for_http(f"http://127.0.0.1:{server.server_port}/", 20, ready=lambda body: body == "ready")
        assert next(answers, None) is None  # it asked until the third answer
        with pytest.raises(TimeoutError, match="did not answer as expected"):
            wait_for_http(f"http://127.0.0.1:{server.server_port}/", 1.5, ready=lambda body: body == "never")
    finally:
        server.shutdown()


def test_an_mlflow_server_answers_in_the_block_and_is_gone_after_it(tmp_path: Path) -> None:
    backend, artifacts = f"sqlite:///{tmp_path / 'mlflow.db'}", ["--default-artifact-root", str(tmp_path)]
    with mlflow_server(backend, artifacts, os.environ, tmp_path) as url:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            assert response.status == 200
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(f"{url}/health", timeout=5)


SERVER_UNTIL_STOPPED = """
import os, sys, time
from pathlib import Path
from repotools.local_airflow import mlflow_server, stop_on_sigterm
stop_on_sigterm()
work = Path(sys.argv[1])
backend, artifacts = f"sqlite:///{work / 'mlflow.db'}", ["--default-artifact-root", str(work)]
with mlflow_server(backend, artifacts, os.environ, work) as url:
    print(url, flush=True)
    time.sleep(600)
"""


def test_a_process_stopped_with_sigterm_stops_the_mlflow_server_it_started(tmp_path: Path) -> None:
    """``make bench`` and ``make ui`` stopped with ``kill`` (or ``timeout``) leave no server behind."""
    process = subprocess.Popen(
        [sys.executable, "-c", SERVER_UNTIL_STOPPED, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    url = process.stdout.readline().strip()
    process.terminate()
    process.wait(timeout=60)
    with pytest.raises(urllib.error.URLError, match="Connection refused"):
        urllib.request.urlopen(f"{url}/health", timeout=5)


def test_an_mlflow_server_that_cannot_start_names_its_log(tmp_path: Path) -> None:
    with (
        pytest.raises(RuntimeError, match="mlflow-server.log"),
        mlflow_server("nosuchdb://x", ["--default-artifact-root", str(tmp_path)], os.environ, tmp_path),
    ):
        pass


def test_the_demo_scheduler_starts_only_asked_for_runs_and_make_ui_keeps_schedules(tmp_path: Path) -> None:
    base = {"AIRFLOW_HOME": str(tmp_path / "airflow")}
    demo = demo_airflow_env(base, 8124)
    assert demo["AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE"] == "False"  # no cron or Asset runs of its own
    assert demo["AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION"] == "True"
    assert demo["AIRFLOW_HOME"] == str(tmp_path / "airflow")
    assert "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE" not in airflow_env(base, tmp_path / "airflow", 8124)
