"""Real services on loopback for tests: an S3 API (moto's server mode) and an ``mlflow server``."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from repotools import local_airflow
from repotools.local_airflow import free_port

__all__ = ["MlflowServer", "S3Server", "free_port", "mlflow_server", "s3_server", "wait_for_http"]

#: The S3 API's server script (moto's, with atomic writes).
S3_API = Path(__file__).with_name("s3_api.py")
S3_CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}


def wait_for_http(url: str, timeout: float = 60.0, process: subprocess.Popen | None = None) -> None:
    """Wait until a loopback server answers (the project's one poller, in ``repotools.local_airflow``)."""
    local_airflow.wait_for_http(url, timeout, {"server": process} if process is not None else None)


@dataclass(frozen=True)
class S3Server:
    endpoint: str

    @property
    def env(self) -> dict[str, str]:
        return {**S3_CREDENTIALS, "AWS_ENDPOINT_URL": self.endpoint}

    def create_bucket(self, name: str) -> None:
        import boto3

        client = boto3.client("s3", endpoint_url=self.endpoint, **_boto_credentials())
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=name)


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_CREDENTIALS["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_CREDENTIALS["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_CREDENTIALS["AWS_DEFAULT_REGION"],
    }


@contextlib.contextmanager
def s3_server(host: str = "127.0.0.1") -> Iterator[S3Server]:
    """moto's S3 API with atomic writes (``s3_api.py``), a separate process on ``host`` (loopback)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, str(S3_API), host, str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_http(f"http://{host}:{port}/moto-api/", process=process)
        yield S3Server(f"http://{host}:{port}")
    finally:
        process.terminate()
        process.wait(timeout=10)


@dataclass(frozen=True)
class MlflowServer:
    tracking_uri: str


@contextlib.contextmanager
def mlflow_server(
    workdir: Path,
    s3: S3Server,
    bucket: str = "mlflow-artifacts",
    host: str = "127.0.0.1",
    timeout: float = 120,
) -> Iterator[MlflowServer]:
    """``mlflow server`` on ``host`` with a SQLite backend and artifacts proxied to the S3 API."""
    s3.create_bucket(bucket)
    env = {**os.environ, **s3.env, "MLFLOW_S3_ENDPOINT_URL": s3.endpoint}
    backend, artifacts = f"sqlite:///{workdir / 'mlflow.db'}", ["--artifacts-destination", f"s3://{bucket}/"]
    with local_airflow.mlflow_server(backend, artifacts, env, workdir, host, timeout) as url:
        yield MlflowServer(url)
