"""A step pod's exit code decides retry, as for a local step: 2 fails for good, anything else retries.

The operator is the factory's own ``StepPodOperator``, with its real Kubernetes client; the pods
are real ``V1Pod`` objects as the API returns them for a finished pod. The provider's cleanup
reads, labels and deletes the pod and lists its events through that client, so a loopback HTTP
server answers those calls with the pod itself (the real-cluster run is tests/k8s).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException
from kubernetes.client import ApiClient, Configuration, CoreV1Api
from kubernetes.client import models as k8s

from step_tasks import step_task
from step_tasks.exit_codes import EXIT_USER_ERROR
from step_tasks.settings import ExecutionSettings

KUBE = ExecutionSettings(mode="kubernetes", image="registry.example.com/mlsteps:1.2.3")
#: The step's log tail, as Kubernetes stores it with ``FallbackToLogsOnError``.
LOG_TAIL = (
    "INFO: reading raw/transactions\n"
    "ERROR: a first problem\n"
    "ERROR: the window 2026-11-01..2026-11-01 is empty: --end must be after --start\n"
)


def _status(container: k8s.V1Container, ready: bool, state: k8s.V1ContainerState) -> k8s.V1ContainerStatus:
    return k8s.V1ContainerStatus(
        name=container.name, image=container.image, image_id="", ready=ready, restart_count=0, state=state
    )


def finished_pod(exit_code: int, message: str | None = LOG_TAIL) -> k8s.V1Pod:
    """A pod whose base container terminated with ``exit_code`` (and its XCom sidecar still ran)."""
    terminated = k8s.V1ContainerStateTerminated(exit_code=exit_code, message=message, reason="Error")
    base = k8s.V1Container(name="base", image="registry.example.com/mlsteps:1.2.3")
    sidecar = k8s.V1Container(name="airflow-xcom-sidecar", image="alpine")
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(name="validate-abc123", namespace="ml", annotations={}, labels={}),
        spec=k8s.V1PodSpec(containers=[base, sidecar]),
        status=k8s.V1PodStatus(
            phase="Failed" if exit_code else "Succeeded",
            container_statuses=[
                _status(base, False, k8s.V1ContainerState(terminated=terminated)),
                _status(sidecar, True, k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())),
            ],
        ),
    )


class PodApi(BaseHTTPRequestHandler):
    """Answers the pod calls of the provider's cleanup with ``pod``; lists no events."""

    pod: dict[str, Any] = {}

    def _answer(self) -> None:
        body = {"kind": "EventList", "items": []} if "/events" in self.path else self.pod
        data = json.dumps(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_PATCH = do_DELETE = _answer

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture(scope="module")
def api_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), PodApi)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def cleanup(api_url: str, pod: k8s.V1Pod) -> Any:
    """The provider's cleanup of a finished ``pod``, as the task runs it at the end of a step."""
    PodApi.pod = ApiClient().sanitize_for_serialization(pod)
    task = step_task("validate", settings=KUBE)
    task.__dict__["client"] = CoreV1Api(ApiClient(Configuration(host=api_url)))
    return task.cleanup(pod=pod, remote_pod=pod, xcom_result=None, context=None)


def test_the_contract_is_the_steps_own() -> None:
    from mlsteps.errors import EXIT_USER_ERROR as STEPS_EXIT_USER_ERROR

    assert EXIT_USER_ERROR == STEPS_EXIT_USER_ERROR == 2


def test_exit_2_fails_without_retry(api_url: str) -> None:
    with pytest.raises(AirflowFailException):
        cleanup(api_url, finished_pod(2))


def test_exit_2_fails_with_the_steps_last_error_line(api_url: str) -> None:
    with pytest.raises(AirflowFailException) as raised:
        cleanup(api_url, finished_pod(2))
    assert str(raised.value) == "the window 2026-11-01..2026-11-01 is empty: --end must be after --start"


def test_exit_1_fails_and_may_retry(api_url: str) -> None:
    with pytest.raises(AirflowException) as raised:
        cleanup(api_url, finished_pod(1))
    assert not isinstance(raised.value, AirflowFailException)


def test_exit_1_without_an_error_line_names_the_step_and_code(api_url: str) -> None:
    with pytest.raises(AirflowException, match=r"^step validate exited with code 1$"):
        cleanup(api_url, finished_pod(1, message="Traceback (most recent call last):\nMemoryError"))


def test_exit_0_succeeds(api_url: str) -> None:
    assert cleanup(api_url, finished_pod(0)) is None
