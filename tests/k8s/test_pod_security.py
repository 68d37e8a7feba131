"""Pod Security admission of the chart's step namespace, by the real admission controller."""

from __future__ import annotations

import copy
import json
from typing import Any

import pytest

from tests.k8s.node_images import STEP_IMAGE
from tests.k8s.release import Release
from tests.support.airflow import load_dagbag

pytestmark = pytest.mark.k8s

_COMPLIANT: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Pod",
    "metadata": {"name": "psa-probe"},
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
                "resources": {"limits": {"cpu": "100m", "memory": "64Mi"}},
            }
        ],
    },
}


def _variant(change: str) -> dict[str, Any]:
    pod = copy.deepcopy(_COMPLIANT)
    container = pod["spec"]["containers"][0]
    if change == "privileged":
        # (privileged with allowPrivilegeEscalation false would be invalid before admission)
        container["securityContext"] = {"privileged": True, "capabilities": {"drop": ["ALL"]}}
    elif change == "no-runAsNonRoot":
        del pod["spec"]["securityContext"]["runAsNonRoot"]
        del pod["spec"]["securityContext"]["runAsUser"]
    elif change == "capabilities-kept":
        del container["securityContext"]["capabilities"]
    elif change == "host-network":
        pod["spec"]["hostNetwork"] = True
    return pod


def _dry_run_create(
    release: Release, pod: dict[str, Any], namespace: str, as_admin: bool = True
) -> tuple[int, str]:
    proc = release.cluster.kubectl(
        "create",
        "--dry-run=server",
        "-n",
        namespace,
        "-f",
        "-",
        input=json.dumps(pod),
        check=False,
        kubeconfig=None if as_admin else release.launcher_kubeconfig,
    )
    return proc.returncode, proc.stderr


@pytest.mark.parametrize("change", ["privileged", "no-runAsNonRoot", "capabilities-kept", "host-network"])
def test_pod_violating_restricted_is_refused_in_the_step_namespace(
    mlsteps_release: Release, change: str
) -> None:
    # As cluster-admin: RBAC allows it, so the refusal can only come from admission.
    code, stderr = _dry_run_create(mlsteps_release, _variant(change), mlsteps_release.step_namespace)
    assert code != 0
    assert 'violates PodSecurity "restricted:latest"' in stderr, stderr


@pytest.mark.parametrize("change", ["privileged", "no-runAsNonRoot"])
def test_same_pod_is_admitted_where_no_profile_is_enforced(mlsteps_release: Release, change: str) -> None:
    mlsteps_release.cluster.kubectl("create", "namespace", "psa-free", check=False)
    code, stderr = _dry_run_create(mlsteps_release, _variant(change), "psa-free")
    assert code == 0, stderr


def test_compliant_pod_is_admitted_for_the_launcher(mlsteps_release: Release) -> None:
    code, stderr = _dry_run_create(
        mlsteps_release, _COMPLIANT, mlsteps_release.step_namespace, as_admin=False
    )
    assert code == 0, stderr


def _factory_pods(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, dict[str, Any]]]:
    from kubernetes.client import ApiClient

    bag = load_dagbag(monkeypatch, "kubernetes", ML_STEP_IMAGE=STEP_IMAGE)
    assert bag.import_errors == {}
    pods = []
    for dag in bag.dags.values():
        for task in dag.tasks:
            if hasattr(task, "unmap"):  # a mapped shard: one shard's arguments
                task = task.unmap(
                    {"arguments": ["--model-version", "1", "--shard-index", "0", "--shard-count", "2"]}
                )
            if not hasattr(task, "build_pod_request_obj"):
                continue
            pod = task.build_pod_request_obj(context=None, dry_run=True)
            pods.append((f"{dag.dag_id}.{task.task_id}", ApiClient().sanitize_for_serialization(pod)))
    return pods


def test_every_pod_the_factory_builds_is_admitted_for_the_launcher(
    mlsteps_release: Release, monkeypatch: pytest.MonkeyPatch
) -> None:
    from kubernetes import client, config
    from kubernetes.client.exceptions import ApiException

    api = client.CoreV1Api(
        config.new_client_from_config(config_file=str(mlsteps_release.launcher_kubeconfig))
    )
    pods = _factory_pods(monkeypatch)
    refused = {}
    for task, pod in pods:
        assert pod["metadata"]["namespace"] == mlsteps_release.step_namespace, task
        try:
            # dryRun=All runs authorisation and every admission plugin (PodSecurity, LimitRanger,
            # ResourceQuota) without storing the pod.
            api.create_namespaced_pod(mlsteps_release.step_namespace, pod, dry_run="All")
        except ApiException as err:
            refused[task] = json.loads(err.body or "{}").get("message", str(err))
    assert len(pods) >= 14
    assert refused == {}
