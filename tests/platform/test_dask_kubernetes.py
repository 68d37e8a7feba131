"""The DaskCluster the train step asks the dask-kubernetes operator for: pure functions over the spec.

The real cluster (the operator acting on this spec) is under test in tests/k8s/test_dask_training.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteps.contract.config import DaskConfig, memory_bytes
from mlsteps.contract.settings import StepSettings
from mlsteps.errors import StepError
from mlsteps.platform.dask_kubernetes import (
    NANNY_OVERHEAD_BYTES,
    POD_LABELS,
    PodPlacement,
    cluster_spec,
    kube_cluster_class,
    worker_resources,
    worker_resources_override,
)

pytest.importorskip("dask_kubernetes")

DASK = DaskConfig(workers=3, threads_per_worker=2, memory_limit="1GiB")
PLACEMENT = PodPlacement(
    namespace="ml-steps",
    image="registry.example.com/mlsteps:0.1.0",
    service_account="ml-steps",
    secrets=("ml-s3-credentials", "ml-mlflow-credentials"),
    env={"ML_LAKE_URI": "s3://lake/prod", "AWS_ENDPOINT_URL": "http://minio:9000"},
    worker_resources={},
)
OWNER = {"name": "mlsteps-train-abc", "uid": "0f6f1c2e-0000-4000-8000-000000000000"}


def spec() -> dict[str, Any]:
    return cluster_spec("mlsteps-train-0123456789", DASK, PLACEMENT, owner=OWNER)


def pods(resource: dict[str, Any]) -> list[dict[str, Any]]:
    return [resource["spec"]["worker"]["spec"], resource["spec"]["scheduler"]["spec"]]


def crd_schema() -> dict[str, Any]:
    import dask_kubernetes

    crds = (
        Path(dask_kubernetes.__file__).parent
        / "operator"
        / "deployment"
        / "helm"
        / "dask-kubernetes-operator"
        / "crds"
    )
    crd = yaml.safe_load((crds / "daskcluster.yaml").read_text())
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def test_the_spec_is_valid_against_the_operators_own_crd_schema() -> None:
    import jsonschema

    jsonschema.validate(spec(), crd_schema())


def test_the_worker_group_has_the_configured_worker_count() -> None:
    assert spec()["spec"]["worker"]["replicas"] == DASK.workers


def test_every_pod_meets_the_restricted_pod_security_standard() -> None:
    contexts = [c["securityContext"] for pod in pods(spec()) for c in pod["containers"]]
    assert all(
        c["allowPrivilegeEscalation"] is False
        and c["runAsNonRoot"] is True
        and c["capabilities"] == {"drop": ["ALL"]}
        and c["seccompProfile"] == {"type": "RuntimeDefault"}
        for c in contexts
    )


def test_no_pod_gets_an_api_token() -> None:
    assert [pod["automountServiceAccountToken"] for pod in pods(spec())] == [False, False]


def test_credentials_come_from_the_step_secrets_by_reference() -> None:
    refs = [c["envFrom"] for pod in pods(spec()) for c in pod["containers"]]
    assert (
        refs
        == [[{"secretRef": {"name": "ml-s3-credentials"}}, {"secretRef": {"name": "ml-mlflow-credentials"}}]]
        * 2
    )


def test_workers_get_the_lake_settings_as_values() -> None:
    (worker,) = spec()["spec"]["worker"]["spec"]["containers"]
    env = {item["name"]: item["value"] for item in worker["env"]}
    assert {k: env[k] for k in PLACEMENT.env} == dict(PLACEMENT.env)


def test_the_worker_process_is_limited_to_the_configured_memory() -> None:
    (worker,) = spec()["spec"]["worker"]["spec"]["containers"]
    limit = worker["args"][worker["args"].index("--memory-limit") + 1]
    assert int(limit) == memory_bytes(DASK.memory_limit)


def test_the_worker_container_leaves_room_for_the_nanny() -> None:
    (worker,) = spec()["spec"]["worker"]["spec"]["containers"]
    assert int(worker["resources"]["limits"]["memory"]) == memory_bytes("1GiB") + NANNY_OVERHEAD_BYTES


def test_the_scheduler_runs_the_dask_cli() -> None:
    (scheduler,) = spec()["spec"]["scheduler"]["spec"]["containers"]
    assert scheduler["args"][:2] == ["dask", "scheduler"]


def test_the_scheduler_reads_the_steps_scheduler_settings_from_its_environment() -> None:
    import dask

    (scheduler,) = spec()["spec"]["scheduler"]["spec"]["containers"]
    read = dask.config.collect_env({item["name"]: item["value"] for item in scheduler["env"]})

    assert dask.config.get("distributed.scheduler.work-stealing", config=read) is False


def test_the_cluster_carries_the_label_the_network_policy_selects() -> None:
    assert spec()["metadata"]["labels"] == POD_LABELS


def test_the_cluster_is_owned_by_the_step_pod() -> None:
    (reference,) = spec()["metadata"]["ownerReferences"]
    assert (reference["kind"], reference["name"], reference["uid"]) == ("Pod", OWNER["name"], OWNER["uid"])


def test_an_override_replaces_only_the_quantities_it_names() -> None:
    resources = worker_resources(DASK, {"requests": {"cpu": "500m"}})
    assert resources["requests"] == {
        "cpu": "500m",
        "memory": str(memory_bytes("1GiB") + NANNY_OVERHEAD_BYTES),
    }


def test_a_worker_requests_one_cpu_per_thread_by_default() -> None:
    assert worker_resources(DASK, {})["requests"]["cpu"] == "2"


def test_a_worker_may_use_one_cpu_per_thread_whatever_a_limit_range_says() -> None:
    assert worker_resources(DASK, {"requests": {"cpu": "100m"}})["limits"]["cpu"] == "2"


@pytest.mark.parametrize(
    "text", ["{", '{"requests": "1"}', '{"limit": {"cpu": "1"}}', '{"limits": {"cpu": 1}}']
)
def test_a_malformed_worker_resources_override_is_refused(text: str) -> None:
    with pytest.raises(StepError, match="ML_DASK_WORKER_RESOURCES"):
        worker_resources_override(text)


def test_a_pod_without_an_api_token_cannot_create_a_cluster() -> None:
    settings = StepSettings.from_env({"ML_EXECUTION_MODE": "kubernetes", "ML_STEP_IMAGE": "mlsteps:0.1.0"})
    with pytest.raises(StepError, match="no API token"):
        PodPlacement.from_settings(settings)


def test_the_wait_the_workaround_replaces_is_still_kubeclusters_own() -> None:
    """The operator-race workaround (dask/dask-kubernetes#968) overrides this method: if an upgrade
    renames it, the override would silently stop applying."""
    from dask_kubernetes.operator import KubeCluster

    cluster_class = kube_cluster_class()
    assert (
        "_wait_for_controller" in vars(KubeCluster),
        cluster_class._wait_for_controller is not KubeCluster._wait_for_controller,
    ) == (True, True)
