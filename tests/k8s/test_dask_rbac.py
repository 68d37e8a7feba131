"""The chart's dask Role, as the real RBAC authoriser applies it to the train pods' service account.

The account (``dask.enabled``) may do exactly what ``KubeCluster`` does to run a DaskCluster in the
step namespace, and nothing else: the operator, not the train step, creates the pods. Each question
is a SubjectAccessReview naming the API group itself, so the answer does not depend on whether the
operator's CRDs are installed yet (``kubectl auth can-i`` resolves a resource through discovery and
asks about the wrong group when it cannot).
"""

from __future__ import annotations

import json

import pytest

from tests.k8s.release import Release

pytestmark = pytest.mark.k8s

STEP = "step namespace"
DASK = "kubernetes.dask.org"

# (verb, resource, subresource) in the step namespace: all allowed.
NEEDED = [
    ("create", f"daskclusters.{DASK}", ""),
    ("get", f"daskclusters.{DASK}", ""),
    ("list", f"daskclusters.{DASK}", ""),
    ("delete", f"daskclusters.{DASK}", ""),
    ("get", f"daskworkergroups.{DASK}", ""),
    ("list", f"daskworkergroups.{DASK}", ""),
    ("get", "pods", ""),
    ("list", "pods", ""),
    ("get", "pods", "log"),
    ("get", "services", ""),
    ("list", "services", ""),
]

# (verb, resource, subresource, namespace): all refused.
REFUSED = [
    ("patch", f"daskclusters.{DASK}", "", STEP),
    ("watch", f"daskclusters.{DASK}", "", STEP),
    ("patch", f"daskworkergroups.{DASK}", "", STEP),
    ("create", f"daskjobs.{DASK}", "", STEP),
    ("create", "pods", "", STEP),
    ("delete", "pods", "", STEP),
    ("create", "pods", "exec", STEP),
    ("create", "services", "", STEP),
    ("get", "secrets", "", STEP),
    ("create", f"daskclusters.{DASK}", "", "default"),
    ("list", "pods", "", "airflow"),
    ("list", "namespaces", "", ""),
]


def _can_i(release: Release, verb: str, resource: str, subresource: str, namespace: str) -> str:
    account = release.values["dask"]["serviceAccount"]["name"]
    name, _, group = resource.partition(".")
    attributes = {"verb": verb, "group": group, "resource": name, "subresource": subresource}
    if namespace:
        attributes["namespace"] = release.step_namespace if namespace == STEP else namespace
    review = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": f"system:serviceaccount:{release.step_namespace}:{account}",
            "groups": [
                "system:serviceaccounts",
                f"system:serviceaccounts:{release.step_namespace}",
                "system:authenticated",
            ],
            "resourceAttributes": attributes,
        },
    }
    answer = release.cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(review))
    return "yes" if json.loads(answer.stdout)["status"].get("allowed") else "no"


@pytest.mark.parametrize(("verb", "resource", "subresource"), NEEDED, ids=lambda v: v or "-")
def test_dask_account_may(mlsteps_release: Release, verb: str, resource: str, subresource: str) -> None:
    assert _can_i(mlsteps_release, verb, resource, subresource, STEP) == "yes"


@pytest.mark.parametrize(("verb", "resource", "subresource", "namespace"), REFUSED, ids=lambda v: v or "-")
def test_dask_account_may_not(
    mlsteps_release: Release, verb: str, resource: str, subresource: str, namespace: str
) -> None:
    assert _can_i(mlsteps_release, verb, resource, subresource, namespace) == "no"
