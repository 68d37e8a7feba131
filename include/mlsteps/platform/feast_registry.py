"""Feast's S3 registry store, pointed at the lake's S3-compatible endpoint (MinIO, moto) explicitly.

Feast's own store takes its endpoint only from ``$FEAST_S3_ENDPOINT_URL``. The repo config names
this class instead (see :func:`mlsteps.platform.feature_store.load_repo_config`), so the steps never
have to write that variable into their own environment. Feast imports this module by name, only
when the registry is on S3.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import boto3
from feast.infra.registry.s3 import S3RegistryStore
from feast.repo_config import RegistryConfig

from mlsteps.contract.settings import StepSettings


def registry_endpoint(settings: StepSettings) -> str | None:
    """``$FEAST_S3_ENDPOINT_URL`` when set and not empty, else the lake's S3 endpoint (None: AWS itself)."""
    return settings.registry_endpoint or settings.s3_endpoint


class EndpointS3RegistryStore(S3RegistryStore):
    """:class:`S3RegistryStore` with the endpoint from the step's settings rather than Feast's variable."""

    def __init__(self, registry_config: RegistryConfig, repo_path: Path) -> None:
        # Feast's __init__ would build its client from $FEAST_S3_ENDPOINT_URL (an empty value included).
        uri = urlparse(registry_config.path)
        self._uri = uri
        self._bucket = uri.hostname
        self._key = uri.path.lstrip("/")
        self._boto_extra_args = registry_config.s3_additional_kwargs or {}
        self.s3_client = boto3.resource("s3", endpoint_url=registry_endpoint(StepSettings.from_env()))
