"""The project's Helm chart, installed for real with ``helm install`` into the test cluster.

The official Airflow chart (the dependency) cannot be fetched here, so a copy of the chart without
the dependency is installed (``airflowChart.enabled=false``), as tests/helm renders it. Airflow
runs outside the cluster: it talks to the API as the launcher ServiceAccount the Airflow chart would
create (the scheduler's, with a LocalExecutor), through a token-based kubeconfig, so the chart's
launcher Role and RoleBinding are what authorise it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.k8s.cluster import Cluster, ClusterError
from tests.k8s.node_images import STEP_IMAGE

CHART = Path(__file__).resolve().parents[2] / "helm" / "mlsteps"
RELEASE_NAME = "prod"
RELEASE_NAMESPACE = "airflow"
#: The official chart names its scheduler's account <release>-airflow-scheduler; a LocalExecutor
#: runs tasks there, so the chart's default launcher subjects include it.
LAUNCHER_ACCOUNT = f"{RELEASE_NAME}-airflow-scheduler"
TOKEN_DURATION = "24h"


@dataclass(frozen=True)
class Release:
    """An installed release and the identity Airflow uses to launch step pods."""

    cluster: Cluster
    name: str
    namespace: str
    step_namespace: str
    step_service_account: str
    launcher_account: str
    #: Token-based kubeconfig of the launcher ServiceAccount (namespace: the step namespace).
    launcher_kubeconfig: Path
    values: dict[str, Any]

    def execution_env(self) -> dict[str, str]:
        """The chart's execution ConfigMap: the factory's settings, as Airflow's extraEnvFrom gives them."""
        name = f"{self.name}-mlsteps-execution"
        data = self.cluster.kubectl_json("get", "configmap", name, "-n", self.namespace)["data"]
        return {str(key): str(value) for key, value in data.items()}

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        return helm(self.cluster, *args)


def helm(cluster: Cluster, *args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the built helm as cluster-admin, its cache and config under the scratch directory."""
    home = cluster.scratch / "helm"
    env = {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "HOME": str(home),
        "HELM_CACHE_HOME": str(home / "cache"),
        "HELM_CONFIG_HOME": str(home / "config"),
        "HELM_DATA_HOME": str(home / "data"),
        "KUBECONFIG": str(cluster.admin_kubeconfig),
    }
    cmd = [str(cluster.bin_dir / "helm"), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    if proc.returncode:
        raise ClusterError(f"helm {' '.join(args[:2])} exited {proc.returncode}: {proc.stderr.strip()}")
    return proc


def chart_without_dependency(target: Path) -> Path:
    """A copy of helm/mlsteps whose Chart.yaml lists no dependency (it cannot be fetched here)."""
    shutil.copytree(CHART, target, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    metadata = yaml.safe_load((target / "Chart.yaml").read_text())
    metadata.pop("dependencies", None)
    (target / "Chart.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    return target


def install_values() -> dict[str, Any]:
    """Values of the test install: no Airflow chart; the step image under the factory's name."""
    repository, tag = STEP_IMAGE.rsplit(":", 1)
    return {
        "airflowChart": {"enabled": False},
        "airflow": {"executor": "LocalExecutor"},
        # Imported into the node, never pulled.
        "stepImage": {"repository": repository, "tag": tag, "pullPolicy": "IfNotPresent"},
        # The train pods get the dask service account (tests/k8s/test_dask_training.py). A Dask
        # worker requests one CPU by default: two of them, the scheduler and the train pod would not
        # fit on the 2-CPU node (the limit stays one CPU each).
        "dask": {"enabled": True, "workerResources": {"requests": {"cpu": "100m"}}},
    }


def install(cluster: Cluster, values: dict[str, Any] | None = None) -> Release:
    """``helm install`` the chart, create the launcher account and write its token kubeconfig."""
    values = values or install_values()
    work = cluster.scratch / "release"
    work.mkdir(exist_ok=True)
    chart = chart_without_dependency(work / "mlsteps")
    values_file = work / "values.json"
    values_file.write_text(json.dumps(values))
    helm(
        cluster,
        "install",
        RELEASE_NAME,
        str(chart),
        "--namespace",
        RELEASE_NAMESPACE,
        "--create-namespace",
        "--values",
        str(values_file),
        "--wait",
        "--timeout",
        "2m",
    )
    merged = yaml.safe_load(
        helm(cluster, "get", "values", RELEASE_NAME, "-n", RELEASE_NAMESPACE, "--all").stdout
    )
    step_namespace = merged["stepNamespace"]["name"]
    # Stands in for the official chart, which creates this account (not installed here).
    cluster.kubectl("create", "serviceaccount", LAUNCHER_ACCOUNT, "-n", RELEASE_NAMESPACE)
    token = cluster.kubectl(
        "create", "token", LAUNCHER_ACCOUNT, "-n", RELEASE_NAMESPACE, f"--duration={TOKEN_DURATION}"
    ).stdout.strip()
    kubeconfig = cluster.write_kubeconfig(
        work / "launcher.kubeconfig", {"token": token}, namespace=step_namespace
    )
    return Release(
        cluster=cluster,
        name=RELEASE_NAME,
        namespace=RELEASE_NAMESPACE,
        step_namespace=step_namespace,
        step_service_account=merged["stepServiceAccount"]["name"],
        launcher_account=LAUNCHER_ACCOUNT,
        launcher_kubeconfig=kubeconfig,
        values=merged,
    )
