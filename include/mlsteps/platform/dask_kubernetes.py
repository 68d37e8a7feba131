"""Kubernetes mode of ``model.engine: dask``: a DaskCluster of the dask-kubernetes operator.

The train step (and ``reproduce`` of a Dask-trained version) creates the cluster through the API with
the operator's own client, :class:`dask_kubernetes.operator.KubeCluster`, from the spec
:func:`cluster_spec` writes, and deletes it when done. The operator (installed with its own chart)
turns it into a scheduler Deployment and Service and one worker Deployment.

The spec is the operator's :func:`~dask_kubernetes.operator.make_cluster_spec` made to hold to what
step pods hold to: the step image, the restricted Pod Security Standard, no API token, the step
Secrets through ``envFrom`` (never a value in the resource), ``/tmp`` the only writable path, and
memory limits from ``model.dask.memory_limit``. Three nets keep a cluster from outliving its step:
``shutdown_on_close``, an owner reference to the step's own pod (deleting the pod deletes the
cluster), and the operator's ``idleTimeout``.
"""

from __future__ import annotations

import logging
import os
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import memory_bytes
from mlsteps.contract.settings import (
    DASK_WORKER_RESOURCES_ENV_VAR,
    DEFAULT_STEP_IMAGE,
    NAMESPACE_ENV_VAR,
    SERVICE_ACCOUNT_ENV_VAR,
    STEP_SECRETS_ENV_VAR,
    WORKER_ENV_VARS,
    parse_worker_resources,
)
from mlsteps.errors import StepError
from mlsteps.platform.dask_engine import scheduler_env

if TYPE_CHECKING:
    from dask_kubernetes.operator import KubeCluster

    from mlsteps.contract.config import DaskConfig
    from mlsteps.contract.settings import StepSettings

log = logging.getLogger(__name__)

#: The label every scheduler and worker pod carries (the chart's NetworkPolicy selects it).
POD_LABELS = {"app.kubernetes.io/name": "mlsteps-dask", "app.kubernetes.io/part-of": "mlsteps"}
RUN_AS = 10001
SCRATCH = "/tmp"
#: Above a worker's ``memory_limit``: its nanny process, so that Dask (which pauses, then restarts
#: a worker near the limit) acts before the kernel's OOM killer does.
NANNY_OVERHEAD_BYTES = 256 * 2**20
#: Limits are explicit: a namespace LimitRange's default CPU limit (the chart's is 100m) would
#: otherwise throttle a training worker to a fraction of a core.
SCHEDULER_RESOURCES = {
    "requests": {"cpu": "100m", "memory": "256Mi"},
    "limits": {"cpu": "1", "memory": "1Gi"},
}
#: Seconds the operator waits on an idle scheduler before it deletes the cluster: the last net
#: when a step pod dies without closing its cluster and without being deleted.
IDLE_TIMEOUT_S = 900
#: How long the step waits for the operator to act on the resource and for the scheduler pod.
RESOURCE_TIMEOUT_S = 300
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


@dataclass(frozen=True)
class PodPlacement:
    """What the step's pod tells the cluster's pods: where, as whom, and with which Secrets."""

    namespace: str
    image: str
    service_account: str
    secrets: tuple[str, ...]
    env: Mapping[str, str]
    worker_resources: Mapping[str, Mapping[str, str]]

    @classmethod
    def from_settings(cls, settings: StepSettings) -> PodPlacement:
        """Read from the environment the factory gives a train or reproduce pod.

        Raises:
            StepError: The pod cannot create a cluster (no API token, no namespace, no image), or
                ``ML_DASK_WORKER_RESOURCES`` is not a valid resources object.
        """
        environ = settings.environ
        if not (SERVICE_ACCOUNT_DIR / "token").exists() and not environ.get("KUBECONFIG"):
            raise StepError(
                "model.engine dask in kubernetes mode creates a DaskCluster through the Kubernetes API, and "
                "this pod has no API token: set the chart's dask.enabled (ML_DASK_SERVICE_ACCOUNT), or train "
                "with engine single"
            )
        namespace = environ.get(NAMESPACE_ENV_VAR) or _own_namespace()
        if not namespace:
            raise StepError(f"{NAMESPACE_ENV_VAR} is not set: the namespace of the Dask cluster is unknown")
        if settings.step_image == DEFAULT_STEP_IMAGE:
            raise StepError("ML_STEP_IMAGE is not set: the Dask pods run the step's own image")
        return cls(
            namespace=namespace,
            image=settings.step_image,
            service_account=environ.get(SERVICE_ACCOUNT_ENV_VAR, ""),
            secrets=tuple(n for n in environ.get(STEP_SECRETS_ENV_VAR, "").split(",") if n),
            env={name: environ[name] for name in WORKER_ENV_VARS if environ.get(name)},
            worker_resources=worker_resources_override(environ.get(DASK_WORKER_RESOURCES_ENV_VAR, "")),
        )


def worker_resources_override(text: str) -> dict[str, dict[str, str]]:
    """``ML_DASK_WORKER_RESOURCES`` as the contract reads it (:func:`parse_worker_resources`).

    Raises:
        StepError: Not that shape.
    """
    try:
        return parse_worker_resources(text)
    except ValueError as err:
        raise StepError(str(err)) from None


def worker_resources(
    dask: DaskConfig, override: Mapping[str, Mapping[str, str]]
) -> dict[str, dict[str, str]]:
    """A worker's requests and limits: one CPU per thread, memory_limit plus the nanny, then the override."""
    memory = str(memory_bytes(dask.memory_limit) + NANNY_OVERHEAD_BYTES)
    cpu = str(dask.threads_per_worker)
    resources = {"requests": {"cpu": cpu, "memory": memory}, "limits": {"cpu": cpu, "memory": memory}}
    for kind, quantities in override.items():
        resources[kind] = {**resources[kind], **quantities}
    return resources


def cluster_name(prefix: str = "mlsteps-train") -> str:
    """A fresh DNS-1123 name (the operator adds ``-scheduler`` and ``-default`` to it)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


def cluster_spec(
    name: str, dask: DaskConfig, placement: PodPlacement, owner: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The ``DaskCluster`` resource: the operator's spec, hardened as the factory hardens step pods."""
    from dask_kubernetes.operator import make_cluster_spec

    env = [{"name": key, "value": value} for key, value in sorted(placement.env.items())]
    env += [
        {"name": "HOME", "value": SCRATCH},
        {"name": "DASK_TEMPORARY_DIRECTORY", "value": f"{SCRATCH}/dask"},
    ]
    worker_command = [
        "dask",
        "worker",
        "--nthreads",
        str(dask.threads_per_worker),
        "--memory-limit",
        str(memory_bytes(dask.memory_limit)),
    ]
    spec: dict[str, Any] = make_cluster_spec(
        name=name,
        image=placement.image,
        n_workers=dask.workers,
        env=env,
        worker_command=worker_command,
        idle_timeout=IDLE_TIMEOUT_S,
    )
    metadata = spec["metadata"]
    metadata["labels"] = dict(POD_LABELS)
    if owner:
        metadata["ownerReferences"] = [
            {"apiVersion": "v1", "kind": "Pod", **owner, "blockOwnerDeletion": False}
        ]
    worker = spec["spec"]["worker"]["spec"]
    scheduler = spec["spec"]["scheduler"]["spec"]
    # The operator's default is the `dask-scheduler` script, which distributed no longer installs.
    scheduler["containers"][0]["args"] = ["dask", "scheduler", "--host", "0.0.0.0"]  # noqa: S104 - in its pod
    scheduler["containers"][0]["env"] += [{"name": k, "value": v} for k, v in sorted(scheduler_env().items())]
    _harden(worker, placement, worker_resources(dask, placement.worker_resources))
    _harden(scheduler, placement, SCHEDULER_RESOURCES)
    return spec


def _harden(pod: dict[str, Any], placement: PodPlacement, resources: Mapping[str, Any]) -> None:
    """The restricted Pod Security Standard, no token, Secrets by reference, a writable /tmp only."""
    pod["serviceAccountName"] = placement.service_account or "default"
    pod["automountServiceAccountToken"] = False
    pod["securityContext"] = {
        "runAsNonRoot": True,
        "runAsUser": RUN_AS,
        "runAsGroup": RUN_AS,
        "fsGroup": RUN_AS,
        "seccompProfile": {"type": "RuntimeDefault"},
    }
    pod["volumes"] = [{"name": "scratch", "emptyDir": {"sizeLimit": "10Gi"}}]
    for container in pod["containers"]:
        container["imagePullPolicy"] = "IfNotPresent"
        container["resources"] = {kind: dict(values) for kind, values in resources.items()}
        container["envFrom"] = [{"secretRef": {"name": name}} for name in placement.secrets]
        container["volumeMounts"] = [{"name": "scratch", "mountPath": SCRATCH}]
        container["securityContext"] = {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "capabilities": {"drop": ["ALL"]},
            "seccompProfile": {"type": "RuntimeDefault"},
        }


def _own_namespace() -> str:
    path = SERVICE_ACCOUNT_DIR / "namespace"
    return path.read_text().strip() if path.exists() else ""


def _own_pod(namespace: str) -> dict[str, str] | None:
    """This pod's name and uid, for the cluster's owner reference; None where it cannot be read."""
    name = os.environ.get("HOSTNAME", "")
    if not name:
        return None
    try:
        import kr8s
        from kr8s.objects import Pod

        pod = Pod.get(name, namespace=namespace)
        return {"name": pod.name, "uid": pod.metadata.uid}
    except (kr8s.NotFoundError, kr8s.ServerError, OSError) as err:
        log.warning("the Dask cluster gets no owner reference (this pod %s could not be read: %s)", name, err)
        return None


def kube_cluster(dask: DaskConfig, settings: StepSettings) -> KubeCluster:
    """Create the DaskCluster (``shutdown_on_close``: closing the returned cluster deletes it).

    Raises:
        StepError: The operator is not there (no CRD, or nothing acts on the resource in time), or
            this pod's account may not create the resource: retrying cannot help.
    """
    import httpx

    placement = PodPlacement.from_settings(settings)
    # kr8s logs each of its many polls of the API at INFO through httpx: only problems, please.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    name = cluster_name()
    spec = cluster_spec(name, dask, placement, owner=_own_pod(placement.namespace))
    log.info("creating DaskCluster %s/%s: %d workers", placement.namespace, name, dask.workers)
    try:
        return kube_cluster_class()(
            custom_cluster_spec=spec,
            namespace=placement.namespace,
            shutdown_on_close=True,
            resource_timeout=RESOURCE_TIMEOUT_S,
            quiet=True,
        )
    except httpx.HTTPStatusError as err:
        if err.response.status_code == 403:
            raise StepError(
                f"this pod's service account may not create DaskClusters in {placement.namespace}: give the "
                "train step the chart's dask service account (dask.enabled)"
            ) from None
        raise
    except RuntimeError as err:
        if "Custom Resource Definitions" in str(err):
            raise StepError(
                "the DaskCluster resource is unknown to this cluster: install the dask-kubernetes operator "
                "(its chart brings the CRDs) before training with engine dask"
            ) from None
        raise
    except TimeoutError:
        raise StepError(
            f"no dask-kubernetes operator acted on DaskCluster {name} within {RESOURCE_TIMEOUT_S} s: is the "
            "operator running and watching this namespace?"
        ) from None


#: The DaskCluster ``status.phase`` values the operator sets once it has created the cluster's
#: scheduler and workers.
COMPONENTS_CREATED = ("Pending", "Running")


def kube_cluster_class() -> type[KubeCluster]:
    """``KubeCluster``, waiting for the operator to have created the cluster's components (phase
    :data:`COMPONENTS_CREATED`) instead of for phase ``Running`` alone.

    The released operator (2026.3.0) can leave a healthy cluster at ``Pending`` for good: its
    scheduler Service's handler sets ``Running``, and the create handler's own ``Pending``, applied
    after it, overwrites it (dask/dask-kubernetes#968; fixed by #977, in no release yet). CI's k8s
    suite saw it twice: the train step waited 300 s while the operator's timers ran on a cluster
    that was up. What the step needs next, the scheduler pod ready, its Service and a connection,
    ``KubeCluster`` waits for right after this. Drop this once a release has #977.
    """
    import asyncio
    import time

    from dask_kubernetes.operator import KubeCluster
    from dask_kubernetes.operator._objects import DaskCluster

    class ComponentsKubeCluster(KubeCluster):
        async def _wait_for_controller(self) -> None:
            cluster = await DaskCluster.get(self.name, namespace=self.namespace, timeout=30)
            deadline = time.monotonic() + self._resource_timeout
            while time.monotonic() < deadline:
                await cluster.async_refresh()
                if cluster.raw.get("status", {}).get("phase") in COMPONENTS_CREATED:
                    return
                await asyncio.sleep(0.25)
            raise TimeoutError(f"DaskCluster {self.name} not actioned within {self._resource_timeout} s")

    return ComponentsKubeCluster
