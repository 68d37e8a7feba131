"""The test cluster itself: a Ready node with the images it needs, running a step pod for real."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.k8s.cluster import CLUSTER_DOMAIN, NODE_IP, PAUSE_IMAGE, Cluster, reference
from tests.k8s.node_images import SIDECAR_IMAGE, STEP_IMAGE
from tests.k8s.release import Release

pytestmark = pytest.mark.k8s


def test_node_is_ready_with_its_internal_ip_on_the_pod_bridge(k8s_cluster: Cluster) -> None:
    node = k8s_cluster.kubectl_json("get", "node", k8s_cluster.node_name)
    ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
    addresses = {a["type"]: a["address"] for a in node["status"]["addresses"]}
    assert (ready, addresses["InternalIP"]) == ("True", NODE_IP)


@pytest.mark.parametrize(
    "tag", [STEP_IMAGE, SIDECAR_IMAGE, PAUSE_IMAGE], ids=["step", "xcom-sidecar", "pause"]
)
def test_image_is_in_the_nodes_containerd(k8s_cluster: Cluster, tag: str) -> None:
    assert reference(tag) in k8s_cluster.image_names()


def _help_pod(name: str, service_account: str, command: list[str] | None = None) -> dict[str, Any]:
    """A pod meeting the restricted profile, as the factory secures its pods, running ``--help``."""
    container_context = {
        "allowPrivilegeEscalation": False,
        "capabilities": {"drop": ["ALL"]},
        "runAsNonRoot": True,
        "readOnlyRootFilesystem": True,
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app.kubernetes.io/name": "mlsteps"}},
        "spec": {
            "restartPolicy": "Never",
            "serviceAccountName": service_account,
            "automountServiceAccountToken": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "runAsGroup": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "base",
                    "image": STEP_IMAGE,
                    "imagePullPolicy": "IfNotPresent",
                    "command": command or ["python", "-m", "mlsteps", "--help"],
                    "env": [{"name": "HOME", "value": "/tmp"}],
                    "securityContext": container_context,
                    "resources": {
                        "requests": {"cpu": "100m", "memory": "128Mi"},
                        "limits": {"cpu": "1", "memory": "512Mi"},
                    },
                    "volumeMounts": [{"name": "scratch", "mountPath": "/tmp"}],
                }
            ],
            "volumes": [{"name": "scratch", "emptyDir": {}}],
        },
    }


def _run_to_end(release: Release, pod: dict[str, Any]) -> tuple[str, str]:
    """Create ``pod`` as the launcher and wait until it ends: its phase and its log."""
    cluster, kubeconfig, name = release.cluster, release.launcher_kubeconfig, pod["metadata"]["name"]
    cluster.kubectl("create", "-f", "-", kubeconfig=kubeconfig, input=json.dumps(pod))
    try:
        phase = cluster.wait_for_pod(name, ("Succeeded", "Failed"), kubeconfig=kubeconfig)["status"]["phase"]
        return phase, cluster.kubectl("logs", name, kubeconfig=kubeconfig, check=False).stdout
    finally:
        cluster.kubectl("delete", "pod", name, "--wait=false", kubeconfig=kubeconfig, check=False)


def test_step_image_runs_to_succeeded_in_the_restricted_namespace(mlsteps_release: Release) -> None:
    pod = _help_pod("mlsteps-help", mlsteps_release.step_service_account)
    phase, logs = _run_to_end(mlsteps_release, pod)
    assert (phase, "usage: python -m mlsteps" in logs) == ("Succeeded", True), logs


#: In a pod: resolve the API server's Service by its cluster DNS name, connect to it, print the address.
_REACH_THE_API = f"""
import socket
address = socket.getaddrinfo("kubernetes.default.svc.{CLUSTER_DOMAIN}", 443, type=socket.SOCK_STREAM)[0][4][0]
socket.create_connection((address, 443), timeout=10).close()
print("reached", address)
"""


def test_a_pod_reaches_the_api_server_by_its_service_name(mlsteps_release: Release) -> None:
    """Cluster DNS (CoreDNS) resolves the ``kubernetes`` Service and kube-proxy forwards its ClusterIP."""
    service = mlsteps_release.cluster.kubectl_json("get", "service", "kubernetes", "--namespace", "default")
    pod = _help_pod("mlsteps-dns", mlsteps_release.step_service_account, ["python", "-c", _REACH_THE_API])
    phase, logs = _run_to_end(mlsteps_release, pod)
    assert (phase, logs.strip()) == ("Succeeded", f"reached {service['spec']['clusterIP']}"), logs
