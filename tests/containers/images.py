"""Images for the container tests: pulled when a registry answers, else built here from Debian.

Base images that cannot be pulled are built locally under their official names (DESIGN.md), so the
repository's Dockerfiles build unchanged: ``debian:bookworm`` from ``debootstrap --variant=minbase``
and ``docker import``, and ``python:3.11.14-slim-trixie`` from Debian bookworm's Python 3.11
packages. Every image built here carries the label ``org.mlsteps.standin`` saying what it stands in
for. The product images (step, MLflow) then build from ``docker/`` with the base passed as a build
arg and the host's CA bundle as ``EXTRA_CA_CERTS`` (a TLS-intercepting proxy sits between builds
and PyPI here). Builds use the engine's layer cache, so a second run takes seconds.
"""

from __future__ import annotations

import functools
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from pathlib import Path

from tests.containers.engine import BUILD_ENV, DockerError, apt_install, docker, image_exists

REPO_ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_DIR = Path(__file__).resolve().parent
STANDINS_DIR = CONTAINERS_DIR / "standins"
DOCKER_DIR = REPO_ROOT / "docker"

#: The CA bundle handed to builds as ``EXTRA_CA_CERTS`` (override with ``ML_BUILD_CA_BUNDLE``; an
#: empty value passes none); see ``extra_ca_certs``.
HOST_CA_BUNDLE = Path(os.environ.get("ML_BUILD_CA_BUNDLE", "/etc/ssl/certs/ca-certificates.crt"))

DEBIAN_IMAGE = "debian:bookworm"
#: The Dockerfiles' default ``PYTHON_IMAGE``: the stand-in is built under this name.
PYTHON_IMAGE = "python:3.11.14-slim-trixie"
STEP_IMAGE = "mlsteps:containers-test"
MLFLOW_IMAGE = "mlsteps-mlflow:local"
S3_IMAGE = "mlsteps-standin/s3-moto:local"
#: docker-compose.yaml's Redis image: the stand-in is Debian bookworm's redis-server.
REDIS_IMAGE = "redis:7.2-bookworm"

DEBIAN_MIRROR = os.environ.get("ML_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBIAN_SECURITY_MIRROR = os.environ.get("ML_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")

#: Each build's output, one file per tag (the last lines also end up in a failed build's error).
BUILD_LOG_DIR = Path(tempfile.gettempdir()) / "mlsteps-image-builds"

_DEBOOTSTRAP_TIMEOUT = 1200
_BUILD_TIMEOUT = 3000


def extra_ca_certs() -> str:
    """The PEM text passed to builds as ``EXTRA_CA_CERTS`` (empty when there is nothing to add).

    Only the certificates of the host bundle that Debian's ca-certificates package does not ship
    (a proxy's CA, locally added ones): the base images carry the public roots already, and the
    whole bundle would not fit in one argument.
    """
    if not str(HOST_CA_BUNDLE) or not HOST_CA_BUNDLE.is_file():
        return ""
    blocks = _PEM_BLOCK.findall(HOST_CA_BUNDLE.read_text())
    packaged = {
        "".join(block.split())
        for crt in Path("/usr/share/ca-certificates").rglob("*.crt")
        for block in _PEM_BLOCK.findall(crt.read_text(errors="replace"))
    }
    return "\n".join(block for block in blocks if "".join(block.split()) not in packaged)


_PEM_BLOCK = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", re.DOTALL)


def build(
    dockerfile: str | Path,
    tag: str,
    *,
    target: str | None = None,
    build_args: Mapping[str, str] | None = None,
    context: str | Path = REPO_ROOT,
    extra_ca: bool = True,
) -> str:
    """Build ``dockerfile`` into ``tag`` with the classic builder, reusing the engine's cache.

    Args:
        dockerfile: path of the Dockerfile (absolute, or relative to the repository root).
        tag: the image name to tag the result with.
        target: the multi-stage target, if any.
        build_args: ``--build-arg`` values; ``EXTRA_CA_CERTS`` is added from the host bundle
            unless given here or ``extra_ca`` is False.
        context: the build context directory (default: the repository root).
        extra_ca: pass the host CA bundle as ``EXTRA_CA_CERTS``.

    Returns:
        ``tag``.

    Raises:
        DockerError: the build failed (the message ends with the build's last output lines).
    """
    path = Path(dockerfile)
    if not path.is_absolute():
        path = REPO_ROOT / path
    args = dict(build_args or {})
    env = {}
    if extra_ca and "EXTRA_CA_CERTS" not in args:
        # Given by name only, so the CLI reads the value from its environment (not from argv).
        env["EXTRA_CA_CERTS"] = extra_ca_certs()
    cmd = ["build", "--file", str(path), "--tag", tag, "--label", "org.mlsteps.test-build=1"]
    if target:
        cmd += ["--target", target]
    for key, value in args.items():
        cmd += ["--build-arg", f"{key}={value}"]
    if env:
        cmd += ["--build-arg", "EXTRA_CA_CERTS"]
    cmd.append(str(context))
    log_path = BUILD_LOG_DIR / (re.sub(r"[^A-Za-z0-9_.-]+", "_", tag) + ".log")
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("w") as log:
        proc = subprocess.run(
            ["docker", *cmd],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, **BUILD_ENV, **env},
            timeout=_BUILD_TIMEOUT,
            check=False,
        )
    if proc.returncode != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-30:])
        raise DockerError(cmd[:4], proc.returncode, f"{tail}\n(full log: {log_path})")
    return tag


def _pull(image: str) -> bool:
    """Try ``docker pull`` once; False when no registry answers (the usual case here)."""
    try:
        return docker("pull", "--quiet", image, check=False, timeout=120).returncode == 0
    except subprocess.TimeoutExpired:
        return False


def _pulled_or_present(image: str) -> bool:
    return image_exists(image) or _pull(image)


def _debootstrap_rootfs(rootfs: Path) -> None:
    if shutil.which("debootstrap") is None and (reason := apt_install("debootstrap")) is not None:
        raise RuntimeError(f"{DEBIAN_IMAGE} cannot be pulled and debootstrap is missing ({reason})")
    subprocess.run(
        ["debootstrap", "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
        check=True,
        capture_output=True,
        timeout=_DEBOOTSTRAP_TIMEOUT,
    )
    (rootfs / "etc/apt/sources.list").write_text(
        f"deb {DEBIAN_MIRROR} bookworm main\n"
        f"deb {DEBIAN_MIRROR} bookworm-updates main\n"
        f"deb {DEBIAN_SECURITY_MIRROR} bookworm-security main\n"
    )
    # As in the official image: no package caches, and apt keeps none from builds.
    (rootfs / "etc/apt/apt.conf.d/docker-clean").write_text(
        'DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb || true"; };\n'
        'Binary::apt::APT::Keep-Downloaded-Packages "false";\n'
    )
    for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for entry in (rootfs / leftover).glob("*"):
            if entry.is_file():
                entry.unlink()


@functools.cache
def debian_base() -> str:
    """``debian:bookworm``: pulled, already present, or built with debootstrap and ``docker import``."""
    if _pulled_or_present(DEBIAN_IMAGE):
        return DEBIAN_IMAGE
    with tempfile.TemporaryDirectory(prefix="debootstrap-") as tmp:
        rootfs = Path(tmp) / "rootfs"
        _debootstrap_rootfs(rootfs)
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        imported = subprocess.run(
            [
                "docker",
                "import",
                "--change",
                'CMD ["bash"]',
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "--change",
                "LABEL org.mlsteps.standin=debian:bookworm-debootstrap-minbase",
                "-",
                DEBIAN_IMAGE,
            ],
            stdin=tar.stdout,
            capture_output=True,
            text=True,
            check=False,
        )
        if tar.stdout is not None:
            tar.stdout.close()
        tar.wait()
        if imported.returncode != 0 or tar.returncode != 0:
            raise DockerError(["import"], imported.returncode, imported.stderr)
    return DEBIAN_IMAGE


@functools.cache
def python_base() -> str:
    """``python:3.11.14-slim-trixie``: pulled, present, or a stand-in with Debian bookworm's Python 3.11."""
    if _pulled_or_present(PYTHON_IMAGE):
        return PYTHON_IMAGE
    return build(
        STANDINS_DIR / "python" / "Dockerfile",
        PYTHON_IMAGE,
        build_args={"DEBIAN_IMAGE": debian_base()},
        context=STANDINS_DIR / "python",
        extra_ca=False,
    )


@functools.cache
def step_image(variant: str = "cpu") -> str:
    """The step image from ``docker/step.Dockerfile`` (``variant``: ``cpu`` or ``gpu``)."""
    tag = STEP_IMAGE if variant == "cpu" else f"{STEP_IMAGE}-{variant}"
    return build(
        "docker/step.Dockerfile",
        tag,
        build_args={"PYTHON_IMAGE": python_base(), "XGBOOST_VARIANT": variant, "GIT_SHA": _git_sha()},
    )


@functools.cache
def mlflow_image() -> str:
    """The MLflow server image from ``docker/mlflow.Dockerfile``."""
    return build("docker/mlflow.Dockerfile", MLFLOW_IMAGE, build_args={"PYTHON_IMAGE": python_base()})


@functools.cache
def s3_image() -> str:
    """An S3 API: moto's server (the version the unit tests use) on port 9000."""
    return build(
        STANDINS_DIR / "s3" / "Dockerfile",
        S3_IMAGE,
        build_args={"PYTHON_IMAGE": python_base(), "MOTO_VERSION": _pinned("moto")},
        context=STANDINS_DIR / "s3",
    )


@functools.cache
def redis_image() -> str:
    """``redis:7.2-bookworm``: pulled, present, or a stand-in running Debian bookworm's redis-server."""
    if _pulled_or_present(REDIS_IMAGE):
        return REDIS_IMAGE
    return build(
        STANDINS_DIR / "redis" / "Dockerfile",
        REDIS_IMAGE,
        build_args={"DEBIAN_IMAGE": debian_base()},
        context=STANDINS_DIR / "redis",
        extra_ca=False,
    )


def _pinned(package: str) -> str:
    """The version ``constraints.txt`` pins ``package`` to."""
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        name, sep, rest = line.partition("==")
        if sep and name.strip().lower() == package:
            return rest.split()[0]
    raise LookupError(f"{package} is not pinned in constraints.txt")


def _git_sha() -> str:
    proc = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unknown"
