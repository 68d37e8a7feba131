"""Airflow outside the cluster in kubernetes mode, and the services its step pods reach.

Airflow's scheduler, triggerer, DAG processor and API server run on this machine (SQLite, the
LocalExecutor, sign-in off on loopback) and launch every step as a pod, as the chart's launcher
ServiceAccount: its token kubeconfig is the ``kubernetes_default`` connection, so the chart's Role is
all that allows it. The pods reach the S3 API (moto server), the MLflow server and Redis (Feast's
online store) on the node's bridge address; nothing leaves the machine. Their credentials are
Secrets in the step namespace, named by the chart's ``ML_STEP_SECRETS``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from repotools.local_airflow import ApiError, LocalAirflow, airflow_env, wait_for_http

from tests.k8s.cluster import Cluster
from tests.k8s.release import Release
from tests.support.services import S3_CREDENTIALS, S3Server, free_port, mlflow_server, s3_server

REPO_ROOT = Path(__file__).resolve().parents[2]
TEST_DAGS = Path(__file__).with_name("dags")
AIRFLOW = str(Path(sys.executable).with_name("airflow"))
LAKE_BUCKET = "ml-lake"
#: Rows per Parquet row group (forwarded to the pods): a day of a few thousand rows still splits
#: into several row groups, so ``plan-scoring`` can hand two shards real work.
ROW_GROUP_ROWS = "500"
#: The profiles' default requests (1 CPU and 2 GiB per pod) would let one step pod at a time onto
#: the 2-CPU node; these keep the limits meaningful and the requests small. The gpu profile still
#: asks for one ``nvidia.com/gpu``, which no node here has.
TEST_RESOURCES = {
    "cpu": {"requests": {"cpu": "100m", "memory": "256Mi"}, "limits": {"cpu": "2", "memory": "3Gi"}},
    "gpu": {
        "requests": {"cpu": "100m", "memory": "256Mi", "nvidia.com/gpu": "1"},
        "limits": {"cpu": "2", "memory": "3Gi", "nvidia.com/gpu": "1"},
    },
}
#: Environment of this process that must not reach Airflow: the tests' local-mode settings. Pods
#: read the pipeline config and Feast's production repo config baked into the step image.
NOT_FORWARDED = (
    "ML_PIPELINE_CONFIG",
    "ML_FEAST_STORE_YAML",
    "ML_STATE_DIR",
    "ML_STEP_RESULT",
    "ML_FEAST_REGISTRY_URI",
    "KUBECONFIG",
    "AWS_ENDPOINT_URL",
    "MLFLOW_TRACKING_URI",
)
FINISHED = ("success", "failed")
TEST_DAG_IDS = (
    "k8s_exit_codes",
    "k8s_gpu_profile",
    "k8s_reattach",
    "k8s_timeout",
    "k8s_kill",
    "k8s_dask_training",
)


@dataclass(frozen=True)
class StepServices:
    """What the step pods talk to, on the node's bridge address."""

    s3: S3Server
    tracking_uri: str
    redis: str  # host:port
    lake: str

    @property
    def host_env(self) -> dict[str, str]:
        """For processes on this machine (data generation, the API server's report pages)."""
        return {**self.s3.env, "ML_LAKE_URI": self.lake, "MLFLOW_TRACKING_URI": self.tracking_uri}


@contextlib.contextmanager
def redis_server(host: str, workdir: Path) -> Iterator[str]:
    """Debian's ``redis-server`` on ``host`` without persistence; installed with apt-get if missing."""
    binary = shutil.which("redis-server") or _apt_install("redis-server", "redis-server")
    port = free_port()
    log = open(workdir / "redis.log", "wb")  # noqa: SIM115 - closed below
    # Protected mode would refuse every client not on loopback, the pods included; it listens on
    # the bridge address only.
    argv = [
        binary,
        "--bind",
        host,
        "--port",
        str(port),
        "--protected-mode",
        "no",
        "--save",
        "",
        "--appendonly",
        "no",
    ]
    process = subprocess.Popen([*argv, "--dir", str(workdir)], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_for_redis(host, port, process)
        yield f"{host}:{port}"
    finally:
        process.terminate()
        process.wait(timeout=10)
        log.close()


def _wait_for_redis(host: str, port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited with {process.returncode}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=2) as sock:
            sock.sendall(b"PING\r\n")
            if sock.recv(16).startswith(b"+PONG"):
                return
        time.sleep(0.3)
    raise TimeoutError(f"redis-server on {host}:{port} did not answer PING within 30 s")


def _apt_install(package: str, binary: str) -> str:
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise RuntimeError(f"{binary} is missing: install Debian's {package} (apt-get install {package})")
    done = subprocess.run(
        ["apt-get", "install", "-y", "-q", package], capture_output=True, text=True, timeout=600, check=False
    )
    found = shutil.which(binary)
    if done.returncode or not found:
        raise RuntimeError(f"apt-get install {package} failed: {done.stderr.strip()[-300:]}")
    return found


@contextlib.contextmanager
def step_services(host: str, workdir: Path) -> Iterator[StepServices]:
    """The S3 API, an MLflow server (artifacts on that S3 API) and Redis, all bound to ``host``."""
    with (
        s3_server(host) as s3,
        mlflow_server(workdir, s3, bucket="k8s-mlflow", host=host, timeout=300) as mlflow,
        redis_server(host, workdir) as redis,
    ):
        s3.create_bucket(LAKE_BUCKET)
        yield StepServices(s3, mlflow.tracking_uri, redis, f"s3://{LAKE_BUCKET}/k8s")


def create_step_secrets(release: Release, services: StepServices) -> tuple[str, ...]:
    """The Secrets the chart names in ``ML_STEP_SECRETS``, created in the step namespace by the admin.

    MLflow runs without authentication here; its Secret still carries credentials, so the path a
    real deployment uses (``envFrom`` a Secret) is the one exercised.
    """
    names = tuple(release.execution_env()["ML_STEP_SECRETS"].split(","))
    contents = {
        "ml-s3-credentials": {
            key: S3_CREDENTIALS[key] for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        },
        "ml-mlflow-credentials": {
            "MLFLOW_TRACKING_USERNAME": "k8s-test",
            "MLFLOW_TRACKING_PASSWORD": secrets.token_urlsafe(16),
        },
        "ml-feast-credentials": {
            "ML_FEAST_REDIS": services.redis,
            "ML_FEAST_REGISTRY_URI": f"{services.lake}/feast/registry.db",
        },
    }
    for name in names:
        literals = [f"--from-literal={key}={value}" for key, value in contents[name].items()]
        release.cluster.kubectl("create", "secret", "generic", name, "-n", release.step_namespace, *literals)
    return names


def generate_raw_data(services: StepServices, *argv: str) -> str:
    """``python -m mlsteps generate-data`` on this machine, into the S3 lake; its stdout."""
    env = {**_clean_environ(), **services.host_env, "ML_PARQUET_ROW_GROUP_ROWS": ROW_GROUP_ROWS}
    done = subprocess.run(
        [sys.executable, "-m", "mlsteps", "generate-data", *argv],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"generate-data {' '.join(argv)} failed: {done.stderr.strip()[-500:]}")
    return done.stdout


def _clean_environ() -> dict[str, str]:
    return {key: value for key, value in os.environ.items() if key not in NOT_FORWARDED}


@dataclass
class RecordedPod:
    """One pod as the watch saw it: every phase it went through, and whether it was deleted."""

    name: str
    uid: str
    labels: dict[str, str]
    spec: Any
    phases: list[str] = field(default_factory=list)
    deleted: bool = False
    #: The main container's exit code once it terminated.
    exit_code: int | None = None
    #: time.monotonic() when the watch first saw the pod, saw it Running, saw it deleted.
    seen_at: float = field(default_factory=time.monotonic)
    running_at: float | None = None
    deleted_at: float | None = None


class PodRecorder:
    """Watches the step namespace in a thread and records every pod it sees, deleted ones included.

    Pods are deleted once their task ends, so a count taken afterwards from the API would miss them;
    the watch does not.
    """

    def __init__(self, kubeconfig: Path, namespace: str) -> None:
        from kubernetes import client, config

        self.namespace = namespace
        self.core = client.CoreV1Api(config.new_client_from_config(config_file=str(kubeconfig)))
        self.pods: dict[str, RecordedPod] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, name="pod-recorder", daemon=True)

    def __enter__(self) -> PodRecorder:
        ready = self.core.list_namespaced_pod(self.namespace)
        for pod in ready.items:
            self._record("ADDED", pod)
        self._resource_version = ready.metadata.resource_version
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=40)

    def _watch(self) -> None:
        from kubernetes import watch
        from kubernetes.client.exceptions import ApiException

        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    self.core.list_namespaced_pod,
                    self.namespace,
                    resource_version=self._resource_version,
                    timeout_seconds=5,
                ):
                    self._record(event["type"], event["object"])
                    self._resource_version = event["object"].metadata.resource_version
                    if self._stop.is_set():
                        break
            except ApiException as err:
                if err.status != 410:
                    raise
                listed = self.core.list_namespaced_pod(self.namespace)  # expired: list again
                for pod in listed.items:
                    self._record("ADDED", pod)
                self._resource_version = listed.metadata.resource_version
            finally:
                stream.stop()

    def _record(self, kind: str, pod: Any) -> None:
        uid = pod.metadata.uid
        seen = self.pods.setdefault(
            uid, RecordedPod(pod.metadata.name, uid, dict(pod.metadata.labels or {}), pod.spec)
        )
        phase = pod.status.phase if pod.status else None
        if phase and (not seen.phases or seen.phases[-1] != phase):
            seen.phases.append(phase)
            if phase == "Running":
                seen.running_at = time.monotonic()
        for status in (pod.status.container_statuses if pod.status else None) or []:
            if status.name == "base" and status.state and status.state.terminated:
                seen.exit_code = status.state.terminated.exit_code
        if kind == "DELETED":
            seen.deleted = True
            seen.deleted_at = time.monotonic()

    def matching(self, **labels: str) -> list[RecordedPod]:
        """Recorded pods carrying all these labels, in the order they were first seen."""
        return [pod for pod in self.pods.values() if all(pod.labels.get(k) == v for k, v in labels.items())]


def _q(value: str) -> str:
    return urllib.parse.quote(value, safe="")


@dataclass
class K8sAirflow:
    """Airflow's four services in kubernetes mode, the REST API, and the cluster as its admin sees it."""

    services: LocalAirflow
    release: Release
    step_services: StepServices
    dags_folder: Path
    started: dict[str, float] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return self.services.url

    @property
    def namespace(self) -> str:
        return self.release.step_namespace

    @property
    def cluster(self) -> Cluster:
        return self.release.cluster

    # --- the REST API ---------------------------------------------------------------------------

    def api(self, path: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
        """One call to ``/api/v2/<path>`` (sign-in is off on this loopback deployment)."""
        return self.services.api(path, method, body)

    def wait_for_dags(self, dag_ids: list[str], timeout: float = 600) -> None:
        """Until the DAG processor has stored ``dag_ids``; names the import errors otherwise."""
        try:
            self.services.wait_for_dags(dag_ids, timeout)
        except TimeoutError as err:
            found = self.api("importErrors")["import_errors"]
            errors = {error["filename"]: error["stack_trace"][-300:] for error in found}
            raise TimeoutError(f"{err}; import errors: {errors}") from None

    def set_paused(self, dag_id: str, paused: bool) -> None:
        self.services.set_paused(dag_id, paused)

    def trigger(
        self,
        dag_id: str,
        conf: Mapping[str, Any] | None = None,
        *,
        logical_date: str | None = None,
        run_id: str | None = None,
    ) -> str:
        """Queue a run through the REST API (``logical_date`` None: a run with no logical date)."""
        body: dict[str, Any] = {"logical_date": logical_date, "conf": dict(conf or {})}
        if run_id:
            body["dag_run_id"] = run_id
        return str(self.api(f"dags/{dag_id}/dagRuns", "POST", body)["dag_run_id"])

    def run(self, dag_id: str, run_id: str) -> dict[str, Any]:
        return dict(self.api(f"dags/{dag_id}/dagRuns/{_q(run_id)}"))

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float) -> dict[str, Any]:
        """Poll until the run is success or failed; Airflow's record of it."""
        deadline = time.monotonic() + timeout
        run: dict[str, Any] = {}
        while time.monotonic() < deadline:
            run = self.run(dag_id, run_id)
            if run["state"] in FINISHED:
                return run
            self._check_alive()
            time.sleep(2)
        states = self.task_states(dag_id, run_id)
        raise TimeoutError(f"{dag_id} run {run_id} still {run.get('state')} after {timeout:.0f} s: {states}")

    def task_instances(self, dag_id: str, run_id: str) -> list[dict[str, Any]]:
        found = self.api(f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances?limit=100")
        return list(found["task_instances"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str]:
        """``task_id`` (``task_id[i]`` for mapped ones) -> state."""
        states = {}
        for ti in self.task_instances(dag_id, run_id):
            key = ti["task_id"] if ti["map_index"] < 0 else f"{ti['task_id']}[{ti['map_index']}]"
            states[key] = str(ti["state"])
        return states

    def task_instance(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, Any]:
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}"
        return dict(self.api(f"{path}/{map_index}" if map_index >= 0 else path))

    def wait_for_task(
        self, dag_id: str, run_id: str, task_id: str, states: tuple[str, ...], timeout: float
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        ti: dict[str, Any] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(ApiError):
                ti = self.task_instance(dag_id, run_id, task_id)
                if ti["state"] in states:
                    return ti
            time.sleep(1)
        raise TimeoutError(f"{dag_id}.{task_id} is {ti.get('state')}, not {states}, after {timeout:.0f} s")

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}"
        self.api(path, "PATCH", {"new_state": state})

    def xcom(
        self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1
    ) -> Any:
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/xcomEntries/{key}"
        return self.api(f"{path}?map_index={map_index}&deserialize=true")["value"]

    def links(self, dag_id: str, run_id: str, task_id: str, map_index: int = -1) -> dict[str, str]:
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/links?map_index={map_index}"
        return {name: url for name, url in dict(self.api(path)["extra_links"]).items() if url}

    def tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/tries"
        return list(self.api(path)["task_instances"])

    def log(self, dag_id: str, run_id: str, task_id: str, try_number: int, map_index: int = -1) -> str:
        """The task's log of one try, one line per record (a record's error details included)."""
        path = f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/logs/{try_number}"
        content = self.api(f"{path}?full_content=true&map_index={map_index}")["content"]
        if isinstance(content, list):
            return "\n".join(json.dumps(line, default=str, ensure_ascii=False) for line in content)
        return str(content)

    def state_store(self, dag_id: str, run_id: str, task_id: str) -> Any:
        return self.api(f"dags/{dag_id}/dagRuns/{_q(run_id)}/taskInstances/{task_id}/state-store")

    # --- the cluster, as its admin sees it -----------------------------------------------------------

    def pods(self, **labels: str) -> list[dict[str, Any]]:
        """Pods in the step namespace with these labels (the KPO labels each with dag_id, task_id, ...)."""
        selector = ",".join(f"{key}={value}" for key, value in labels.items())
        args = ["get", "pods", "-n", self.namespace]
        found = self.cluster.kubectl_json(*args, *(["-l", selector] if selector else []))
        return list(found["items"])

    # --- the services themselves ---------------------------------------------------------------------

    def kill(self, name: str) -> None:
        """SIGKILL one service's whole process group (its supervisor and children) and reap it."""
        process = self.services.processes[name]
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def start(self, name: str) -> None:
        """Start one (killed) service again, its log appended to the same file."""
        argv = [AIRFLOW, name]
        log = (self.services.logs / f"{name}.log").open("ab")
        self.services.processes[name] = subprocess.Popen(
            argv, env=self.services.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self.started[name] = time.monotonic()

    def _check_alive(self) -> None:
        for name, process in self.services.processes.items():
            if process.poll() is not None:
                raise RuntimeError(
                    f"{name} exited with {process.returncode}; see {self.services.logs}/{name}.log"
                )


def airflow_kubernetes_env(
    release: Release, services: StepServices, home: Path, dags_folder: Path, port: int
) -> dict[str, str]:
    """Settings of the four services: the chart's execution ConfigMap, our services' URIs, the launcher."""
    execution = release.execution_env()
    connection = {"conn_type": "kubernetes", "extra": {"kube_config_path": str(release.launcher_kubeconfig)}}
    base = {
        **_clean_environ(),
        **execution,
        **services.host_env,
        "ML_EXECUTION_MODE": "kubernetes",
        "ML_PARQUET_ROW_GROUP_ROWS": ROW_GROUP_ROWS,
        "ML_RESOURCE_PROFILES": json.dumps(TEST_RESOURCES),
        # Through a connection rather than $KUBECONFIG: the provider copies a $KUBECONFIG file's
        # content, token included, into every trigger it stores in the metadata DB.
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(connection),
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__CORE__PARALLELISM": "4",
        # Every run here is triggered through the REST API: no cron or asset-scheduled runs.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        # Importing the provider's Kubernetes models alone takes seconds; on two busy cores, more.
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "180",
        "AIRFLOW__DAG_PROCESSOR__DAG_FILE_PROCESSOR_TIMEOUT": "240",
    }
    env = airflow_env(base, home, port)
    for key in NOT_FORWARDED:
        if key not in ("AWS_ENDPOINT_URL", "MLFLOW_TRACKING_URI"):
            env.pop(key, None)
    return env


def dags_folder(target: Path) -> Path:
    """The project's DAG files and the tests' fault DAGs, copied into one folder."""
    target.mkdir(parents=True, exist_ok=True)
    for source in [*sorted((REPO_ROOT / "dags").glob("*.py")), *sorted(TEST_DAGS.glob("*.py"))]:
        shutil.copy2(source, target / source.name)
    return target


@contextlib.contextmanager
def kubernetes_airflow(release: Release, workdir: Path, timeout: float = 300) -> Iterator[K8sAirflow]:
    """Step services on the bridge, the step Secrets, then Airflow's four services in kubernetes mode."""
    with step_services(release.cluster.host_ip, workdir) as services:
        create_step_secrets(release, services)
        folder = dags_folder(workdir / "dags")
        port = free_port()
        env = airflow_kubernetes_env(release, services, workdir / "airflow", folder, port)
        health = f"http://127.0.0.1:{port}/api/v2/monitor/health"
        airflow = LocalAirflow(env, workdir / "logs", {"triggerer": ([AIRFLOW, "triggerer"], health)})
        try:
            airflow.start(timeout)
            wait_for_http(health, timeout, airflow.processes, ready=lambda body: body.count('"healthy"') >= 4)
            yield K8sAirflow(airflow, release, services, folder)
        finally:
            airflow.stop()


def yesterday() -> dt.date:
    return dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)


def wait_until(what: str, check: Callable[[], bool], timeout: float, interval: float = 1.0) -> float:
    """Poll ``check`` until true; the seconds it took.

    Raises:
        TimeoutError: Still false after ``timeout`` seconds; the message names ``what``.
    """
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"{what}: not within {timeout:.0f} s")
        time.sleep(interval)
    return time.monotonic() - started


@pytest.fixture(scope="session")
def k8s_airflow(mlsteps_release: Release, tmp_path_factory: pytest.TempPathFactory) -> Iterator[K8sAirflow]:
    """One Airflow in kubernetes mode for every DAG run of the session (starting it costs a minute)."""
    with kubernetes_airflow(mlsteps_release, tmp_path_factory.mktemp("k8s-airflow")) as airflow:
        airflow.wait_for_dags(["ml_training", "ml_batch_scoring", "ml_drift_monitor", *TEST_DAG_IDS])
        yield airflow


@pytest.fixture
def step_services_env(k8s_airflow: K8sAirflow, monkeypatch: pytest.MonkeyPatch) -> None:
    """This process reads and writes the lake and MLflow the pods use (the root conftest unsets them)."""
    for key, value in k8s_airflow.step_services.host_env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="session")
def pod_recorder(k8s_airflow: K8sAirflow) -> Iterator[PodRecorder]:
    """Every pod of the step namespace from now on, as the cluster admin watches them."""
    with PodRecorder(k8s_airflow.cluster.admin_kubeconfig, k8s_airflow.namespace) as recorder:
        yield recorder
