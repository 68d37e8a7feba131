"""``python -m bench.mlflow_server <backend store URI> <artifact root> <port>``: an ``mlflow server``.

On loopback, with the repository's server settings (``MLFLOW_SERVER_ENV``), over the benchmark
workspace's own store, so that a case talks to MLflow as a deployed step does: over HTTP. Started
as a child of the benchmark (``bench.common.child_env`` puts ``include/`` on the path).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from repotools.local_airflow import MLFLOW_SERVER_ENV


def main(argv: list[str]) -> None:
    backend, artifacts, port = argv
    mlflow = str(Path(sys.executable).with_name("mlflow"))
    argv = [mlflow, "server", "--backend-store-uri", backend, "--default-artifact-root", artifacts]
    argv += ["--host", "127.0.0.1", "--port", port, "--workers", "1"]
    os.execve(mlflow, argv, {**os.environ, **MLFLOW_SERVER_ENV})


if __name__ == "__main__":
    main(sys.argv[1:])
