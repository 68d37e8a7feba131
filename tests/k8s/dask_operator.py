"""The dask-kubernetes operator, installed for real with ``helm install`` into the test cluster.

From the chart its wheel ships (the one its Helm repository serves, which cannot be reached here),
with the CRDs, into a namespace of its own, watching all namespaces; the controller runs the
stand-in image tests/k8s/node_images.py builds under the upstream name.
"""

from __future__ import annotations

import contextlib
import json
import urllib.request
from pathlib import Path

from tests.k8s.airflow_services import wait_until
from tests.k8s.cluster import Cluster
from tests.k8s.node_images import DASK_OPERATOR_IMAGE
from tests.k8s.release import helm

RELEASE = "dask-operator"
NAMESPACE = "dask-operator"


def chart() -> Path:
    import dask_kubernetes

    return (
        Path(dask_kubernetes.__file__).parent
        / "operator"
        / "deployment"
        / "helm"
        / "dask-kubernetes-operator"
    )


def install_operator(cluster: Cluster, timeout: float = 300) -> None:
    """``helm install`` the operator and wait until kopf itself reports it alive.

    The chart's pod is Ready as soon as its container starts; kopf serves its liveness endpoint only
    once the operator runs (on two busy cores, its imports alone take a while).
    """
    name, tag = DASK_OPERATOR_IMAGE.rsplit(":", 1)
    values = {
        "image": {"name": name, "tag": tag, "pullPolicy": "IfNotPresent"},
        # The chart's root filesystem is read-only: Python and kopf get a writable /tmp (HOME).
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "1Gi"}},
    }
    values_file = cluster.scratch / "dask-operator-values.json"
    values_file.write_text(json.dumps(values))
    helm(
        cluster,
        "install",
        RELEASE,
        str(chart()),
        "--namespace",
        NAMESPACE,
        "--create-namespace",
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "4m",
        timeout=330,
    )
    wait_until("the dask-kubernetes operator to report itself alive", lambda: _alive(cluster), timeout, 2)


def _alive(cluster: Cluster) -> bool:
    pods = cluster.kubectl_json("get", "pods", "-n", NAMESPACE)["items"]
    addresses = [pod["status"].get("podIP") for pod in pods if pod["status"].get("phase") == "Running"]
    for address in filter(None, addresses):
        with contextlib.suppress(OSError):
            if urllib.request.urlopen(f"http://{address}:8080/healthz", timeout=3).status == 200:  # noqa: S310
                return True
    return False


def operator_logs(cluster: Cluster, lines: int = 40) -> str:
    """The controller's last log lines (a failure message quotes them)."""
    proc = cluster.kubectl(
        "logs",
        "-n",
        NAMESPACE,
        f"deployment/{RELEASE}-dask-kubernetes-operator",
        f"--tail={lines}",
        check=False,
    )
    return proc.stdout + proc.stderr
