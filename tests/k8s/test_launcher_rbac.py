"""The chart's launcher Role, as the real RBAC authoriser applies it to Airflow's token identity."""

from __future__ import annotations

import pytest

from tests.k8s.release import Release

pytestmark = pytest.mark.k8s

STEP = "step namespace"

# (verb, resource, subresource) the operator uses in the step namespace: all allowed.
NEEDED = [
    ("create", "pods", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("watch", "pods", ""),
    ("delete", "pods", ""),
    ("patch", "pods", ""),
    ("get", "pods", "log"),
    ("create", "pods", "exec"),
    ("get", "pods", "exec"),
    ("list", "events", ""),
]

# (verb, resource, subresource, namespace): all refused.
REFUSED = [
    ("get", "secrets", "", STEP),
    ("list", "secrets", "", STEP),
    ("create", "secrets", "", STEP),
    ("update", "pods", "", STEP),
    ("create", "pods", "attach", STEP),
    ("create", "serviceaccounts", "token", STEP),
    ("create", "rolebindings", "", STEP),
    ("create", "pods", "", "airflow"),
    ("list", "pods", "", "airflow"),
    ("get", "secrets", "", "airflow"),
    ("create", "pods", "", "default"),
    ("list", "pods", "", "kube-system"),
    ("list", "namespaces", "", ""),
    ("list", "nodes", "", ""),
]


def _can_i(release: Release, verb: str, resource: str, subresource: str, namespace: str) -> str:
    args = ["auth", "can-i", verb, resource]
    if subresource:
        args.append(f"--subresource={subresource}")
    namespace = release.step_namespace if namespace == STEP else namespace
    args += ["--namespace", namespace] if namespace else ["--all-namespaces"]
    proc = release.cluster.kubectl(*args, kubeconfig=release.launcher_kubeconfig, check=False)
    return proc.stdout.strip()


@pytest.mark.parametrize(("verb", "resource", "subresource"), NEEDED, ids=lambda v: v or "-")
def test_launcher_may(mlsteps_release: Release, verb: str, resource: str, subresource: str) -> None:
    assert _can_i(mlsteps_release, verb, resource, subresource, STEP) == "yes"


@pytest.mark.parametrize(("verb", "resource", "subresource", "namespace"), REFUSED, ids=lambda v: v or "-")
def test_launcher_may_not(
    mlsteps_release: Release, verb: str, resource: str, subresource: str, namespace: str
) -> None:
    assert _can_i(mlsteps_release, verb, resource, subresource, namespace) == "no"


def test_the_launcher_identity_is_the_service_account_token(mlsteps_release: Release) -> None:
    review = mlsteps_release.cluster.kubectl_json(
        "auth", "whoami", kubeconfig=mlsteps_release.launcher_kubeconfig
    )
    user = review["status"]["userInfo"]
    expected = f"system:serviceaccount:{mlsteps_release.namespace}:{mlsteps_release.launcher_account}"
    assert (user["username"], "system:masters" in user.get("groups", [])) == (expected, False)


def test_reading_a_secret_in_the_step_namespace_is_forbidden(mlsteps_release: Release) -> None:
    cluster = mlsteps_release.cluster
    cluster.kubectl(
        "create",
        "secret",
        "generic",
        "rbac-probe",
        "-n",
        mlsteps_release.step_namespace,
        "--from-literal=token=not-for-the-launcher",
        check=False,
    )
    proc = cluster.kubectl(
        "get",
        "secret",
        "rbac-probe",
        "-n",
        mlsteps_release.step_namespace,
        kubeconfig=mlsteps_release.launcher_kubeconfig,
        check=False,
    )
    assert proc.returncode != 0
    assert 'cannot get resource "secrets"' in proc.stderr, proc.stderr


def test_creating_a_pod_in_another_namespace_is_forbidden(mlsteps_release: Release) -> None:
    manifest = (
        '{"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "elsewhere"},'
        ' "spec": {"containers": [{"name": "c", "image": "mlsteps:0.1.0"}]}}'
    )
    proc = mlsteps_release.cluster.kubectl(
        "create",
        "-n",
        "default",
        "-f",
        "-",
        kubeconfig=mlsteps_release.launcher_kubeconfig,
        input=manifest,
        check=False,
    )
    assert proc.returncode != 0
    assert 'cannot create resource "pods" in API group "" in the namespace "default"' in proc.stderr, (
        proc.stderr
    )
