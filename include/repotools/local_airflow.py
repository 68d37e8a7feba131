"""Airflow's own services on this machine: the API server (the UI), the scheduler and the DAG processor.

``make ui`` runs them over the demo's state so a user can click through a finished demo run, and
the browser test runs them over a scratch state. SQLite and the LocalExecutor; everything listens
on loopback. Sign-in is off (every visitor is an admin), which is only right on loopback.

    python -m repotools.local_airflow --port 8080   # what `make ui` runs
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SERVICES = ("api-server", "scheduler", "dag-processor")
REPO_ROOT = Path(__file__).resolve().parents[2]
#: A DAG run in one of these states is over.
FINISHED = ("success", "failed")
#: The environment of every ``mlflow server`` (and ``mlflow ui``) this repository starts: the demo's
#: UI, the tests' servers, docker-compose.yaml (checked by tests/deploy/test_compose.py). MLflow 3's
#: job runner, about eight huey consumers of ~180 MB that import mlflow, serves GenAI jobs this
#: package never starts; off, it leaves the cores and about 1.4 GB to the pipeline.
MLFLOW_SERVER_ENV = {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


def mlflow_server_command(
    backend_store_uri: str, artifacts: list[str], port: int, host: str = "127.0.0.1"
) -> list[str]:
    """``mlflow server`` as this repository runs one on a machine: one worker on ``host`` (loopback).

    ``artifacts`` names where artifacts go (``--artifacts-destination URI`` to proxy them, or
    ``--default-artifact-root DIR``). Run it with :data:`MLFLOW_SERVER_ENV` in its environment.
    """
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    command = [mlflow, "server", "--backend-store-uri", backend_store_uri, *artifacts]
    return [*command, "--host", host, "--port", str(port), "--workers", "1"]


@contextmanager
def mlflow_server(
    backend_store_uri: str,
    artifacts: list[str],
    env: Mapping[str, str],
    workdir: Path,
    host: str = "127.0.0.1",
    timeout: float = 120,
) -> Iterator[str]:
    """A running :func:`mlflow_server_command` for a ``with`` block; yields its URL.

    It runs in ``workdir`` with ``env`` plus :data:`MLFLOW_SERVER_ENV`, logs to
    ``workdir/mlflow-server.log`` and is stopped (then killed, if it must be) on the way out.

    Raises:
        RuntimeError: The server exited before it answered.
        TimeoutError: It did not answer within ``timeout`` seconds.
    """
    port = free_port()
    log_file = workdir / "mlflow-server.log"
    with log_file.open("ab") as log:
        server = subprocess.Popen(  # noqa: S603 - our own arguments
            mlflow_server_command(backend_store_uri, artifacts, port, host),
            env={**env, **MLFLOW_SERVER_ENV},
            cwd=workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://{host}:{port}"
    try:
        wait_for_http(f"{url}/health", timeout, {f"mlflow server (log: {log_file})": server})
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def airflow_env(base: Mapping[str, str], airflow_home: Path, port: int) -> dict[str, str]:
    """``base`` plus what the three services need to run together on loopback."""
    url = f"http://127.0.0.1:{port}"
    secret = base.get("AIRFLOW__API_AUTH__JWT_SECRET") or secrets.token_urlsafe(32)
    return {
        **base,
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": base.get("AIRFLOW__CORE__DAGS_FOLDER") or str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": base.get("AIRFLOW__CORE__PLUGINS_FOLDER")
        or str(REPO_ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": base.get("AIRFLOW__CORE__PARALLELISM") or "2",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{url}/execution/",
        "AIRFLOW__API__BASE_URL": url,
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API_AUTH__JWT_SECRET": secret,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT / "plugins"), base.get("PYTHONPATH")])),
    }


@dataclass
class LocalAirflow:
    """The running services; ``url`` is the UI."""

    env: dict[str, str]
    logs: Path
    #: More processes to run alongside: name -> (argv, URL that answers once it is up).
    companions: dict[str, tuple[list[str], str]] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.env["AIRFLOW__API__BASE_URL"]

    def start(self, timeout: float = 180) -> None:
        airflow = str(Path(sys.executable).with_name("airflow"))
        self.logs.mkdir(parents=True, exist_ok=True)
        with (self.logs / "db-migrate.log").open("wb") as log:
            subprocess.run(
                [airflow, "db", "migrate"], env=self.env, stdout=log, stderr=subprocess.STDOUT, check=True
            )
        commands = {name: argv for name, (argv, _) in self.companions.items()}
        for service in SERVICES:
            commands[service] = [airflow, service]
            if service == "api-server":
                commands[service] += ["--host", "127.0.0.1", "--port", self.env["AIRFLOW__API__PORT"]]
        for name, argv in commands.items():
            log_file = (self.logs / f"{name}.log").open("wb")
            self.processes[name] = subprocess.Popen(
                argv, env=self.env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.wait_healthy(timeout)
        for _, url in self.companions.values():
            wait_for_http(url, timeout, self.processes)

    def wait_healthy(self, timeout: float) -> None:
        """Wait until the API server reports a healthy metadatabase, scheduler and DAG processor."""
        health = f"{self.url}/api/v2/monitor/health"
        wait_for_http(health, timeout, self.processes, ready=lambda body: body.count('"healthy"') >= 3)

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        """One call to the REST API (``/api/v2/<path>``); sign-in is off on this loopback deployment.

        Raises:
            ApiError: Airflow answered with an HTTP error (its ``status`` and ``detail``).
        """
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}/api/v2/{path}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                text = response.read().decode()
        except urllib.error.HTTPError as err:
            raise ApiError(
                err.code, f"{method} {path}: {err.code} {err.read().decode(errors='replace')[:300]}"
            ) from None
        return json.loads(text) if text else None

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 180) -> None:
        """Wait until the DAG processor has parsed ``dag_ids`` into the metadata DB."""
        deadline = time.monotonic() + timeout
        missing = list(dag_ids)
        while time.monotonic() < deadline:
            missing = [dag_id for dag_id in dag_ids if not self._dag_known(dag_id)]
            if not missing:
                return
            self._check_alive()
            time.sleep(1)
        raise TimeoutError(f"the DAG processor did not parse {', '.join(missing)} within {timeout:.0f} s")

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.api(f"dags/{dag_id}", "PATCH", {"is_paused": paused})

    def trigger(
        self, dag_id: str, run_id: str, logical_date: str | None, conf: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """Queue a run with this id and logical date; a run left from before with either is deleted first
        (stopped first if it is still queued or running).

        ``run_after`` is the logical date too (when given), so runs sort and are labelled by the dates
        they are about. What the UI measures is real: ``queued_at`` is now, and the scheduler sets
        ``start_date`` and ``end_date`` when it really starts and finishes the run.
        """
        stale = {run_id} if self.run(dag_id, run_id) else set()
        if logical_date is not None:
            same_date = self.api(
                f"dags/{dag_id}/dagRuns?logical_date_gte={_q(logical_date)}&logical_date_lte={_q(logical_date)}"
            )
            stale |= {run["dag_run_id"] for run in same_date["dag_runs"]}
        for old in sorted(stale):
            path = f"dags/{dag_id}/dagRuns/{_q(old)}"
            if self.api(path)["state"] not in FINISHED:  # Airflow deletes no queued or running run
                self.api(path, "PATCH", {"state": "failed"})
            self.api(path, "DELETE")
        body = {
            "dag_run_id": run_id,
            "logical_date": logical_date,
            "run_after": logical_date,
            "conf": conf or {},
        }
        return dict(self.api(f"dags/{dag_id}/dagRuns", "POST", body))

    def run(self, dag_id: str, run_id: str) -> dict[str, Any] | None:
        """The run as Airflow records it, or None when there is no such run."""
        try:
            return dict(self.api(f"dags/{dag_id}/dagRuns/{_q(run_id)}"))
        except ApiError as err:
            if err.status == 404:
                return None
            raise

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll the run until the scheduler has finished it (success or failed); return Airflow's record.

        Raises:
            TimeoutError: Still not finished after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        run: dict[str, Any] | None = None
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run is not None and run["state"] in FINISHED:
                return run
            self._check_alive()
            time.sleep(1)
        state = run["state"] if run else "absent"
        raise TimeoutError(f"{dag_id} run {run_id} is still {state} after {timeout:.0f} s")

    def unfinished_runs(self) -> list[dict[str, Any]]:
        """Every run of every DAG that is queued or running."""
        found = self.api("dags/~/dagRuns?state=queued&state=running&limit=100")
        return list(found["dag_runs"])

    def failed_tasks(self, dag_id: str, run_id: str) -> list[str]:
        found = self.api(f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances?state=failed")
        return sorted(ti["task_id"] for ti in found["task_instances"])

    def _dag_known(self, dag_id: str) -> bool:
        try:
            self.api(f"dags/{dag_id}")
        except ApiError as err:
            if err.status == 404:
                return False
            raise
        return True

    def _check_alive(self) -> None:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}; see {self.logs / name}.log")

    def stop(self) -> None:
        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


class ApiError(RuntimeError):
    """Airflow's REST API answered with an HTTP error."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(
    url: str,
    timeout: float,
    processes: Mapping[str, subprocess.Popen[bytes]] | None = None,
    ready: Callable[[str], bool] = lambda body: True,
) -> None:
    """Poll ``url`` until it answers with a body ``ready`` accepts.

    Raises:
        RuntimeError: One of ``processes`` (the servers behind it) exited first.
        TimeoutError: Nothing acceptable within ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        for name, process in (processes or {}).items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode} before {url} answered")
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                last = response.read().decode(errors="replace")
            if ready(last):
                return
        except OSError as err:  # URLError is an OSError
            last = str(err)
        time.sleep(0.5)
    raise TimeoutError(f"{url} did not answer as expected within {timeout:.0f} s (last: {last[:200]})")


@contextmanager
def running(
    env: dict[str, str],
    logs: Path,
    timeout: float = 180,
    companions: dict[str, tuple[list[str], str]] | None = None,
) -> Iterator[LocalAirflow]:
    """The three services (and any companions) for the duration of a ``with`` block."""
    services = LocalAirflow(env, logs, dict(companions or {}))
    try:
        services.start(timeout)
        yield services
    finally:
        services.stop()


def mlflow_ui_companion(base: Mapping[str, str]) -> dict[str, tuple[list[str], str]]:
    """``mlflow ui`` over a local tracking store, where the task links expect it (``ML_MLFLOW_UI_URL``).

    Nothing when the tracking URI is already an HTTP server or the links point off this machine.
    """
    tracking, url = base["MLFLOW_TRACKING_URI"], base.get("ML_MLFLOW_UI_URL", "")
    if not url.startswith("http://127.0.0.1:") or tracking.startswith(("http://", "https://")):
        return {}
    port = url.rsplit(":", 1)[1].strip("/")
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    server_env = [f"{name}={value}" for name, value in MLFLOW_SERVER_ENV.items()]
    argv = ["env", *server_env, mlflow, "ui", "--backend-store-uri", tracking, "--host", "127.0.0.1"]
    return {"mlflow-ui": ([*argv, "--port", port], url)}


def main(argv: list[str] | None = None) -> None:
    """``make ui``: the UI over the demo's state (``make demo`` first) until Ctrl-C."""
    from repotools.demo import demo_environment

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    base = demo_environment(REPO_ROOT)
    env = airflow_env(base, Path(base["AIRFLOW_HOME"]), args.port)
    logs = Path(base["ML_STATE_DIR"]) / "logs" / "ui"
    if not (Path(base["AIRFLOW_HOME"]) / "airflow.db").exists():
        print("No demo state yet: run `make demo` first; the UI starts empty.", flush=True)
    companions = mlflow_ui_companion(base)
    with running(env, logs, companions=companions) as services:
        for _, url in companions.values():
            print(f"MLflow UI:  {url}", flush=True)
        print(f"Airflow UI: {services.url}  (logs: {logs}; Ctrl-C stops it)", flush=True)
        try:
            while all(process.poll() is None for process in services.processes.values()):
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", flush=True)


def stop_on_sigterm() -> None:
    """Make SIGTERM (``kill``, ``timeout``, a CI runner stopping a job) unwind this process as Ctrl-C
    does, so that every ``with`` block stops the servers it started instead of leaving them running."""
    signal.signal(signal.SIGTERM, _interrupt)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    main()
