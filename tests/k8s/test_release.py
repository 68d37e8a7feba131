"""What ``helm install`` of the chart really creates in the cluster, and what the API then enforces."""

from __future__ import annotations

import json

import pytest

from tests.k8s.node_images import STEP_IMAGE
from tests.k8s.release import Release

pytestmark = pytest.mark.k8s


def test_release_is_deployed(mlsteps_release: Release) -> None:
    status = json.loads(
        mlsteps_release.helm(
            "status", mlsteps_release.name, "-n", mlsteps_release.namespace, "-o", "json"
        ).stdout
    )
    assert status["info"]["status"] == "deployed"


def test_step_namespace_enforces_the_restricted_profile(mlsteps_release: Release) -> None:
    namespace = mlsteps_release.cluster.kubectl_json("get", "namespace", mlsteps_release.step_namespace)
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_step_service_account_mounts_no_token(mlsteps_release: Release) -> None:
    account = mlsteps_release.cluster.kubectl_json(
        "get", "serviceaccount", mlsteps_release.step_service_account, "-n", mlsteps_release.step_namespace
    )
    assert account["automountServiceAccountToken"] is False


def test_launcher_role_binding_names_the_launcher_account(mlsteps_release: Release) -> None:
    bindings = mlsteps_release.cluster.kubectl_json(
        "get", "rolebindings", "-n", mlsteps_release.step_namespace
    )
    subjects = {
        (subject["kind"], subject["namespace"], subject["name"])
        for binding in bindings["items"]
        for subject in binding["subjects"]
    }
    assert ("ServiceAccount", mlsteps_release.namespace, mlsteps_release.launcher_account) in subjects


def test_network_policy_isolates_the_step_pods(mlsteps_release: Release) -> None:
    policies = mlsteps_release.cluster.kubectl_json(
        "get", "networkpolicies", "-n", mlsteps_release.step_namespace
    )
    # The policy selecting every step pod (the dask launcher policy selects two steps' pods only).
    isolating = [
        policy["spec"]["policyTypes"]
        for policy in policies["items"]
        if policy["spec"]["podSelector"] == {"matchLabels": {"app.kubernetes.io/name": "mlsteps"}}
    ]
    assert isolating == [["Ingress", "Egress"]]


def test_gpu_quota_is_live(mlsteps_release: Release) -> None:
    quotas = mlsteps_release.cluster.kubectl_json(
        "get", "resourcequotas", "-n", mlsteps_release.step_namespace
    )
    # status.hard is filled in by the quota controller: the quota is enforced, not just stored.
    hard = {
        key: value
        for quota in quotas["items"]
        for key, value in quota.get("status", {}).get("hard", {}).items()
    }
    assert hard.get("requests.nvidia.com/gpu") == "4"


def test_pod_asking_more_gpus_than_the_quota_is_refused(mlsteps_release: Release) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "too-many-gpus"},
        "spec": {
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": 10001,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": "base",
                    "image": STEP_IMAGE,
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                    "resources": {"limits": {"nvidia.com/gpu": "5", "cpu": "1", "memory": "1Gi"}},
                }
            ],
        },
    }
    proc = mlsteps_release.cluster.kubectl(
        "create",
        "--dry-run=server",
        "-f",
        "-",
        kubeconfig=mlsteps_release.launcher_kubeconfig,
        input=json.dumps(pod),
        check=False,
    )
    assert proc.returncode != 0
    assert "exceeded quota" in proc.stderr, proc.stderr
    assert "requests.nvidia.com/gpu" in proc.stderr, proc.stderr
