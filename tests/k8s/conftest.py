"""Fixtures of the Kubernetes tests: one real cluster per session, the chart installed into it.

Every test here is skipped, with one line saying why, where the cluster cannot run: not root, no
Kubernetes binaries (`make test-k8s` builds them first, with Go), no containerd/etcd and no
apt-get, no Docker engine to build the node's images.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator

import pytest

from tests.k8s import cluster as cluster_module
from tests.k8s.cluster import Cluster, running_cluster
from tests.k8s.release import Release, install


def _skip_reason() -> str | None:
    from tests.containers.engine import docker_engine

    return cluster_module.host_reason() or docker_engine()


@pytest.fixture(scope="session")
def k8s_cluster() -> Iterator[Cluster]:
    """A Ready single-node cluster with the step, sidecar and pause images in its containerd."""
    reason = _skip_reason()
    if reason:
        pytest.skip(reason)
    # Built by `make test-k8s` first (minutes, once): never from inside a test run.
    bin_dir, reason = cluster_module.binaries(build=False)
    if bin_dir is None:
        pytest.skip(reason or "no Kubernetes binaries")
    from tests.k8s.node_images import node_images

    tags = node_images()
    started = time.monotonic()
    with running_cluster(bin_dir, images=tags) as cluster:
        seconds = time.monotonic() - started
        (cluster.logs / "startup-seconds").write_text(f"{seconds:.1f}\n")
        if os.environ.get("ML_K8S_REPORT_STARTUP"):
            print(f"\ncluster Ready with images imported in {seconds:.1f} s (scratch {cluster.scratch})")
        yield cluster


@pytest.fixture(scope="session")
def mlsteps_release(k8s_cluster: Cluster) -> Release:
    """The chart installed with ``helm install`` (no Airflow chart) and the launcher's kubeconfig."""
    return install(k8s_cluster)
