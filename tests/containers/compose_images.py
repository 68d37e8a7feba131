"""The images docker-compose.yaml asks for by name: used when present, else built here as stand-ins.

No registry can be pulled on these machines, so each public image the compose file names
(Postgres, Redis, MinIO, MinIO's client and the Airflow base image) is built under its official name
from Debian packages or PyPI, from the Dockerfiles in tests/containers/standins/. The compose file
itself is never changed. A stand-in is built only when the official image is absent and cannot be
pulled; the tag then makes a second run reuse it.
"""

from __future__ import annotations

import functools
import shutil
import tempfile
from pathlib import Path

import yaml

from tests.containers.engine import docker
from tests.containers.images import (
    REPO_ROOT,
    STANDINS_DIR,
    _pinned,
    _pulled_or_present,
    build,
    debian_base,
    python_base,
    redis_image,
)

COMPOSE_FILE = REPO_ROOT / "docker-compose.yaml"
AIRFLOW_DOCKERFILE = REPO_ROOT / "docker" / "airflow.Dockerfile"


def _compose_image(service: str) -> str:
    """The image docker-compose.yaml names for ``service`` (with no variables set)."""
    services = yaml.safe_load(COMPOSE_FILE.read_text())["services"]
    return str(services[service]["image"])


def airflow_base_name() -> str:
    """The ``FROM`` default of docker/airflow.Dockerfile (``apache/airflow:<version>-python3.11``)."""
    for line in AIRFLOW_DOCKERFILE.read_text().splitlines():
        if line.startswith("ARG AIRFLOW_IMAGE="):
            return line.partition("=")[2].strip()
    raise LookupError("docker/airflow.Dockerfile has no `ARG AIRFLOW_IMAGE=<default>` line")


def _ensure(name: str, build_standin: functools.partial[str]) -> str:
    return name if _pulled_or_present(name) else build_standin()


def standin_of(image: str) -> str:
    """What stands in for ``image`` (its ``org.mlsteps.standin`` label), or "" for the real one."""
    proc = docker(
        "image", "inspect", "--format", '{{ index .Config.Labels "org.mlsteps.standin" }}', image, check=False
    )
    label = (proc.stdout or "").strip()
    return "" if label in ("", "<no value>") else label


@functools.cache
def postgres_image() -> str:
    """``postgres:16``: Debian's PostgreSQL behind the official image's entrypoint contract."""
    name = _compose_image("postgres")
    standin = STANDINS_DIR / "postgres"
    return _ensure(
        name,
        functools.partial(
            build,
            standin / "Dockerfile",
            name,
            build_args={"DEBIAN_IMAGE": debian_base()},
            context=standin,
            extra_ca=False,
        ),
    )


def _minio_target(service: str, target: str) -> str:
    name = _compose_image(service)
    standin = STANDINS_DIR / "minio"
    return _ensure(
        name,
        functools.partial(
            build,
            standin / "Dockerfile",
            name,
            target=target,
            build_args={"PYTHON_IMAGE": python_base(), "MOTO_VERSION": _pinned("moto")},
            context=standin,
        ),
    )


@functools.cache
def minio_image() -> str:
    """``minio/minio``: moto's S3 server on :9000, with ``mc ready local`` for the healthcheck."""
    return _minio_target("minio", "minio")


@functools.cache
def mc_image() -> str:
    """``minio/mc``: a boto3 script with ``alias set``, ``mb --ignore-existing`` and ``ready``."""
    return _minio_target("minio-init", "mc")


@functools.cache
def airflow_base_image() -> str:
    """``apache/airflow:<version>-python3.11``: Debian's Python 3.11 with Airflow from PyPI."""
    name = airflow_base_name()

    def build_standin() -> str:
        # The context is a scratch folder: the stand-in's files plus the repository's lock file.
        with tempfile.TemporaryDirectory(prefix="airflow-standin-") as tmp:
            context = Path(tmp)
            for path in (STANDINS_DIR / "airflow").iterdir():
                shutil.copy2(path, context / path.name)
            shutil.copy2(REPO_ROOT / "constraints.txt", context / "constraints.txt")
            return build(
                context / "Dockerfile",
                name,
                build_args={"PYTHON_IMAGE": python_base(), "AIRFLOW_VERSION": _pinned("apache-airflow")},
                context=context,
            )

    return _ensure(name, functools.partial(build_standin))


def compose_images() -> dict[str, str]:
    """Every public image docker-compose.yaml needs, present or built; name -> what stands in ("" if real).

    The images compose builds itself (Airflow, MLflow) need their bases: the Airflow base here
    and the Python base of docker/mlflow.Dockerfile.
    """
    names = [python_base(), postgres_image(), redis_image(), minio_image(), mc_image(), airflow_base_image()]
    return {name: standin_of(name) for name in names}
