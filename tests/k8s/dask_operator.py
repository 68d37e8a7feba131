"""The dask-kubernetes operator, installed for real with ``helm install`` into the test cluster.

From the chart its wheel ships (the one its Helm repository serves, which cannot be reached here),
with the CRDs, into a namespace of its own, watching all namespaces; the controller runs the
stand-in image tests/k8s/node_images.py builds under the upstream name.
"""

from __future__ import annotations

import json
from pathlib import Path

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


def install_operator(cluster: Cluster) -> None:
    """``helm install`` the operator and wait until its controller is Ready."""
    name, tag = DASK_OPERATOR_IMAGE.rsplit(":", 1)
    values = {
        "image": {"name": name, "tag": tag, "pullPolicy": "IfNotPresent"},
        # The chart's root filesystem is read-only: Python and kopf get a writable /tmp (HOME).
        "volumes": [{"name": "tmp", "emptyDir": {}}],
        "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
        "resources": {"requests": {"cpu": "50m", "memory": "128Mi"}, "limits": {"memory": "512Mi"}},
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
