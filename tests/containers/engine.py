"""A reachable Docker engine for the container tests: found, or installed and started when we may."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

#: The classic builder: BuildKit on this engine would need the buildx plugin, and without `# syntax`
#: lines the classic builder handles every Dockerfile here (multi-stage, `--target`).
BUILD_ENV = {"DOCKER_BUILDKIT": "0"}

_ENGINE_START_TIMEOUT = 90.0


def docker(
    *args: str,
    check: bool = True,
    capture: bool = True,
    timeout: float | None = None,
    input: str | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the ``docker`` CLI with ``args``.

    Args:
        *args: the CLI arguments, e.g. ``("run", "--rm", image, "true")``.
        check: raise ``DockerError`` (with the command's stderr) on a non-zero exit.
        capture: capture stdout/stderr as text; otherwise they go to this process's own.
        timeout: seconds before the command is killed (``subprocess.TimeoutExpired``).
        input: text fed to the command's stdin.
        env: extra environment for the CLI (e.g. ``BUILD_ENV``).

    Returns:
        The completed process (``stdout``/``stderr`` are ``None`` when not captured).
    """
    full_env = {**os.environ, **BUILD_ENV, **(env or {})}
    proc = subprocess.run(
        ["docker", *args],
        capture_output=capture,
        text=True,
        timeout=timeout,
        input=input,
        env=full_env,
        check=False,
    )
    if check and proc.returncode != 0:
        raise DockerError(args, proc.returncode, proc.stderr or "")
    return proc


class DockerError(RuntimeError):
    """A docker CLI call failed; the message carries the command and the tail of its stderr."""

    def __init__(self, args: Sequence[str], returncode: int, stderr: str) -> None:
        tail = "\n".join(stderr.strip().splitlines()[-20:])
        super().__init__(f"docker {' '.join(args[:3])} ... exited {returncode}:\n{tail}")
        self.returncode = returncode
        self.stderr = stderr


def engine_answers() -> bool:
    """True when the ``docker`` CLI exists and its engine answers ``docker info``."""
    if shutil.which("docker") is None:
        return False
    try:
        proc = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return False
    return proc.returncode == 0 and bool(proc.stdout.strip())


def apt_install(*packages: str) -> str | None:
    """apt-get install Debian packages (as root); a one-line reason when that cannot be done."""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return f"cannot install {' '.join(packages)}: not root, or no apt-get"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, check=False, timeout=900)
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["(no output)"])[-1]
            return f"`{' '.join(cmd)}` failed: {last}"
    return None


def _install_docker_io() -> str | None:
    """apt-get install Debian's docker.io; a one-line reason when that fails."""
    reason = apt_install("docker.io")
    return f"no Docker engine: {reason}" if reason else None


def _start_dockerd(dockerd: str) -> str | None:
    """Start dockerd in the background (log under a temp dir) and wait for it to answer."""
    log_dir = Path(tempfile.mkdtemp(prefix="dockerd-"))
    log_path = log_dir / "dockerd.log"
    with log_path.open("ab") as log:
        proc = subprocess.Popen(  # noqa: S603 - a fixed binary path
            [dockerd],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    deadline = time.monotonic() + _ENGINE_START_TIMEOUT
    while time.monotonic() < deadline:
        if engine_answers():
            return None
        if proc.poll() is not None:
            break
        time.sleep(1.0)
    return f"no Docker engine: dockerd did not answer within {_ENGINE_START_TIMEOUT:.0f} s (log: {log_path})"


def docker_engine() -> str | None:
    """Make sure a Docker engine answers; install and start Debian's when none does and we may.

    Returns:
        None when ``docker info`` answers, else a one-line reason to skip the container tests.
    """
    if engine_answers():
        return None
    if os.geteuid() != 0:
        return "no Docker engine answers and we are not root, so none can be installed or started here"
    dockerd = shutil.which("dockerd") or ("/usr/sbin/dockerd" if Path("/usr/sbin/dockerd").exists() else None)
    if dockerd is None or shutil.which("docker") is None:
        if shutil.which("apt-get") is None:
            return "no Docker engine answers, and neither dockerd nor apt-get (for docker.io) is here"
        reason = _install_docker_io()
        if reason:
            return reason
        dockerd = shutil.which("dockerd") or "/usr/sbin/dockerd"
        if not Path(dockerd).exists() or shutil.which("docker") is None:
            return "no Docker engine: docker.io installed but dockerd or the docker CLI is missing"
    return _start_dockerd(dockerd)


def image_exists(tag: str) -> bool:
    """True when the engine holds an image under ``tag``."""
    return docker("image", "inspect", "--format", "{{.Id}}", tag, check=False).returncode == 0


def image_size(tag: str) -> int:
    """The image's size in bytes, as ``docker image inspect`` reports it."""
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout.strip())
