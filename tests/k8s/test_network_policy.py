"""The chart's NetworkPolicies, enforced (tests/k8s/network_policies.py): who may open a connection
to a Dask scheduler's port in the step namespace.

A pod labelled as a Dask pod listens on the scheduler's port (8786); client pods, labelled as the
factory labels a train pod, a score pod, a Dask pod, or carrying no label of ours, try to connect
to it for a while. The policies allow exactly the Dask pods and the train/reproduce pods (see
helm/mlsteps/templates/networkpolicy-dask*.yaml); the others' packets are dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from mlsteps.platform.dask_kubernetes import POD_LABELS
from tests.k8s.network_policies import enforcing
from tests.k8s.node_images import STEP_IMAGE
from tests.k8s.release import Release

pytestmark = pytest.mark.k8s

SCHEDULER_PORT = 8786
#: Marks every pod of this module, for the clean-up.
TEST_LABEL = {"mlsteps.test/module": "network-policy"}
STEP = "app.kubernetes.io/name"
CLIENTS: dict[str, dict[str, str]] = {
    "train": {STEP: "mlsteps", "app.kubernetes.io/component": "train"},
    "score": {STEP: "mlsteps", "app.kubernetes.io/component": "score"},
    "dask": dict(POD_LABELS),
    "unlabelled": {},
}
#: Seconds a client keeps trying: an allowed one connects at once, unless the controller has not
#: yet seen its pod's address (then it retries); a denied one must never connect in all that time.
TRYING_S = 20
#: In a client pod: connect to the scheduler's port until it answers, or say it never did.
CONNECT = f"""
import socket, sys, time
deadline, last = time.monotonic() + {TRYING_S}, None
while time.monotonic() < deadline:
    try:
        socket.create_connection((sys.argv[1], {SCHEDULER_PORT}), timeout=2).close()
        print("connected")
        sys.exit(0)
    except OSError as err:
        last = err
        time.sleep(0.5)
print(f"never connected: {{last}}")
sys.exit(1)
"""


def pod(name: str, labels: dict[str, str], command: list[str]) -> dict[str, Any]:
    """A pod of the step image that the restricted Pod Security Standard admits."""
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {**labels, **TEST_LABEL}},
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "terminationGracePeriodSeconds": 1,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "main",
                    "image": STEP_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command,
                    "workingDir": "/tmp",
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "resources": {
                        "requests": {"cpu": "50m", "memory": "64Mi"},
                        "limits": {"cpu": "1", "memory": "256Mi"},
                    },
                }
            ],
        },
    }


@pytest.fixture(scope="module")
def connections(mlsteps_release: Release) -> Iterator[dict[str, tuple[str, str]]]:
    """Each client's phase and log, all run while the policies are enforced."""
    release, namespace = mlsteps_release, mlsteps_release.step_namespace

    def create(manifest: dict[str, Any]) -> None:
        release.cluster.kubectl("create", "-n", namespace, "-f", "-", input=json.dumps(manifest))

    try:
        with enforcing(release.cluster):
            listen = ["python", "-m", "http.server", str(SCHEDULER_PORT), "--bind", "0.0.0.0"]
            create(pod("netpol-scheduler", dict(POD_LABELS), listen))
            scheduler = release.cluster.wait_for_pod("netpol-scheduler", ("Running",), namespace)
            address = scheduler["status"]["podIP"]
            for client, labels in CLIENTS.items():
                create(pod(f"netpol-{client}", labels, ["python", "-c", CONNECT, address]))
            results = {}
            for client in CLIENTS:
                ended = release.cluster.wait_for_pod(f"netpol-{client}", ("Succeeded", "Failed"), namespace)
                logs = release.cluster.kubectl("logs", f"netpol-{client}", "-n", namespace, check=False)
                results[client] = (ended["status"]["phase"], logs.stdout.strip())
        print(f"\nconnections to a Dask scheduler's port under the chart's policies: {results}")
        yield results
    finally:
        selector = ",".join(f"{key}={value}" for key, value in TEST_LABEL.items())
        cleanup = ["delete", "pods", "-n", namespace, "-l", selector, "--wait=false"]
        release.cluster.kubectl(*cleanup, check=False)


@pytest.mark.parametrize("client", ["train", "dask"])
def test_a_dask_client_reaches_the_scheduler_port(
    connections: dict[str, tuple[str, str]], client: str
) -> None:
    assert connections[client] == ("Succeeded", "connected")


@pytest.mark.parametrize("client", ["score", "unlabelled"])
def test_any_other_pod_is_kept_from_the_scheduler_port(
    connections: dict[str, tuple[str, str]], client: str
) -> None:
    phase, log = connections[client]
    assert (phase, log.startswith("never connected")) == ("Failed", True), log
