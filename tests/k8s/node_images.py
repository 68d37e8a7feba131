"""Images the test node needs and no registry can give here: pause, the XCom sidecar, the step image
and the dask-kubernetes operator's controller.

The sandbox (pause) image and the stand-in of KubernetesPodOperator's XCom sidecar image are built
locally under the names containerd and the operator ask for; the step image is the one
``make test-containers`` builds (tests/containers/images.py), imported under the name the factory
uses (ML_STEP_IMAGE's default). The operator's controller image is the step image (which installs
dask-kubernetes at the pinned version) with the upstream image's entrypoint, under the upstream name.
"""

from __future__ import annotations

import functools
import importlib.metadata
import os
import subprocess
import tempfile
from pathlib import Path

from airflow.providers.cncf.kubernetes.utils.xcom_sidecar import XCOM_SIDECAR_IMAGE

from step_tasks.settings import ExecutionSettings
from tests.containers import images
from tests.containers.engine import docker, image_exists
from tests.k8s.cluster import PAUSE_IMAGE

#: The name the factory gives step pods by default (ML_STEP_IMAGE).
STEP_IMAGE = ExecutionSettings().image
SIDECAR_IMAGE = XCOM_SIDECAR_IMAGE
#: The name the operator's chart asks for (its image.name, with the release as tag).
DASK_OPERATOR_IMAGE = f"ghcr.io/dask/dask-kubernetes-operator:{importlib.metadata.version('dask-kubernetes')}"
_CACHE = Path(os.environ.get("ML_K8S_CACHE", Path.home() / ".cache" / "mlsteps" / "k8s"))

_PAUSE_GO = """package main

// The pod sandbox: holds the namespaces, reaps orphans, exits on SIGINT or SIGTERM.
import (
\t"os"
\t"os/signal"
\t"syscall"
)

func main() {
\tsignals := make(chan os.Signal, 4)
\tsignal.Notify(signals, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
\tfor sig := range signals {
\t\tif sig != syscall.SIGCHLD {
\t\t\treturn
\t\t}
\t\tfor {
\t\t\tvar status syscall.WaitStatus
\t\t\tif pid, _ := syscall.Wait4(-1, &status, syscall.WNOHANG, nil); pid <= 0 {
\t\t\t\tbreak
\t\t\t}
\t\t}
\t}
}
"""


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None) -> None:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, env=env, check=False, timeout=600)
    if proc.returncode:
        raise RuntimeError(f"`{' '.join(cmd)}` failed: {(proc.stderr or proc.stdout).strip()[-400:]}")


@functools.cache
def pause_image() -> str:
    """``registry.k8s.io/pause``: a static Go binary in an image FROM scratch, like the real one."""
    if image_exists(PAUSE_IMAGE):
        return PAUSE_IMAGE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "main.go").write_text(_PAUSE_GO)
        env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local"}
        _run(["go", "mod", "init", "mlsteps.local/pause"], work, env)
        _run(["go", "build", "-trimpath", "-ldflags", "-s -w", "-o", "pause", "."], work, env)
        (work / "Dockerfile").write_text(
            'FROM scratch\nCOPY pause /pause\nUSER 65535:65535\nENTRYPOINT ["/pause"]\n'
            "LABEL org.mlsteps.standin=1\n"
        )
        docker("build", "--tag", PAUSE_IMAGE, str(work), timeout=600)
    return PAUSE_IMAGE


def _busybox() -> Path:
    """Debian's static busybox, fetched once with apt-get download (not installed on the host)."""
    target = _CACHE / "busybox-static" / "bin" / "busybox"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _run(["apt-get", "download", "busybox-static"], work)
        (deb,) = work.glob("busybox-static_*.deb")
        _run(["dpkg-deb", "-x", str(deb), "root"], work)
        target.parent.mkdir(parents=True, exist_ok=True)
        (work / "root" / "bin" / "busybox").replace(target)
    return target


@functools.cache
def sidecar_image() -> str:
    """A stand-in for the operator's XCom sidecar image (``alpine``): busybox's sh, sleep, cat, kill.

    Like alpine it names no USER: the pod's security context decides who runs it.
    """
    if image_exists(SIDECAR_IMAGE):
        return SIDECAR_IMAGE
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "busybox").write_bytes(_busybox().read_bytes())
        (work / "busybox").chmod(0o755)
        (work / "Dockerfile").write_text(
            "FROM scratch\nCOPY busybox /bin/busybox\n"
            'RUN ["/bin/busybox", "mkdir", "-p", "/usr/bin", "/sbin", "/usr/sbin", "/tmp"]\n'
            'RUN ["/bin/busybox", "--install", "-s"]\n'
            'CMD ["/bin/sh"]\nLABEL org.mlsteps.standin=1\n'
        )
        docker("build", "--tag", SIDECAR_IMAGE, str(work), timeout=600)
    return SIDECAR_IMAGE


@functools.cache
def step_image() -> str:
    """The step image of the container tests (built or reused), tagged with the factory's name."""
    built = images.step_image()
    if built != STEP_IMAGE:
        docker("tag", built, STEP_IMAGE)
    return STEP_IMAGE


@functools.cache
def dask_operator_image() -> str:
    """The controller, started as upstream's Dockerfile starts it (kopf run, the operator's module)."""
    base = step_image()
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "Dockerfile").write_text(
            f"FROM {base}\n"
            # Upstream's image runs as its user 1000 (the chart's runAsUser), which kopf looks up.
            "USER root\nRUN useradd --system --no-log-init --uid 1000 --home-dir /tmp dask\nUSER 1000\n"
            'ENTRYPOINT ["kopf", "run", "-m", "dask_kubernetes.operator.controller"]\n'
            'CMD ["--liveness=http://0.0.0.0:8080/healthz", "--all-namespaces"]\n'
            "LABEL org.mlsteps.standin=1\n"
        )
        docker("build", "--tag", DASK_OPERATOR_IMAGE, tmp, timeout=600)
    return DASK_OPERATOR_IMAGE


def node_images() -> list[str]:
    """Every image the node needs, built or reused in the Docker engine: pause, sidecar, step, operator."""
    return [pause_image(), sidecar_image(), step_image(), dask_operator_image()]
