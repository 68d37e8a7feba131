"""The test cluster itself: a Ready node with the images it needs, running a step pod for real."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.k8s.cluster import NODE_IP, PAUSE_IMAGE, Cluster, reference
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


def _help_pod(name: str, service_account: str) -> dict[str, Any]:
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
                    "command": ["python", "-m", "mlsteps", "--help"],
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


def test_step_image_runs_to_succeeded_in_the_restricted_namespace(mlsteps_release: Release) -> None:
    cluster, kubeconfig = mlsteps_release.cluster, mlsteps_release.launcher_kubeconfig
    pod = _help_pod("mlsteps-help", mlsteps_release.step_service_account)
    cluster.kubectl("create", "-f", "-", kubeconfig=kubeconfig, input=json.dumps(pod))
    try:
        phase = ""
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and phase not in ("Succeeded", "Failed"):
            time.sleep(1)
            phase = cluster.kubectl_json("get", "pod", "mlsteps-help", kubeconfig=kubeconfig)["status"].get(
                "phase", ""
            )
        logs = cluster.kubectl("logs", "mlsteps-help", kubeconfig=kubeconfig, check=False).stdout
        assert (phase, "usage: python -m mlsteps" in logs) == ("Succeeded", True), logs
    finally:
        cluster.kubectl("delete", "pod", "mlsteps-help", "--wait=false", kubeconfig=kubeconfig, check=False)
