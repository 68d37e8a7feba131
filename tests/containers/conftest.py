"""Container tests: a Docker engine (installed and started when we may), or the folder is skipped."""

from __future__ import annotations

import pytest

from tests.containers.engine import docker_engine


@pytest.fixture(scope="session", autouse=True)
def docker_ready() -> None:
    """Skip every test in this folder, with one line saying why, when no Docker engine can run."""
    reason = docker_engine()
    if reason is not None:
        pytest.skip(reason)
