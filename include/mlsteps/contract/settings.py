"""The environment a step runs in: every variable the steps read, read once into one typed object.

The variable names are the contract between the task factory (``plugins/step_tasks``), which sets
them, and the steps, which read them; both sides import the names from here. Variables that a
library reads for itself (``MLFLOW_*``, ``AWS_ACCESS_KEY_ID`` and the like) stay with the library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from mlsteps.errors import StepError

RESULT_ENV_VAR = "ML_STEP_RESULT"
LAKE_ENV_VAR = "ML_LAKE_URI"
CONFIG_ENV_VAR = "ML_PIPELINE_CONFIG"
STATE_DIR_ENV_VAR = "ML_STATE_DIR"
STORE_YAML_ENV_VAR = "ML_FEAST_STORE_YAML"
ROW_GROUP_ROWS_ENV_VAR = "ML_PARQUET_ROW_GROUP_ROWS"
STEP_IMAGE_ENV_VAR = "ML_STEP_IMAGE"
REQUIRE_GPU_ENV_VAR = "ML_REQUIRE_GPU"
#: ``kubernetes`` in a step pod (the factory sets it); unset or ``local`` for a local subprocess.
EXECUTION_MODE_ENV_VAR = "ML_EXECUTION_MODE"
#: Where step pods run, as whom, and the Secrets they get (``envFrom``): the factory reads these, and
#: gives them to a step that creates a Dask cluster, whose scheduler and workers then run alike.
NAMESPACE_ENV_VAR = "ML_NAMESPACE"
SERVICE_ACCOUNT_ENV_VAR = "ML_SERVICE_ACCOUNT"
STEP_SECRETS_ENV_VAR = "ML_STEP_SECRETS"
#: Read by the factory only: the service account, with an API token, of the train and reproduce
#: pods, which create a DaskCluster in kubernetes mode; unset, no step pod gets a token.
DASK_SERVICE_ACCOUNT_ENV_VAR = "ML_DASK_SERVICE_ACCOUNT"
GIT_SHA_ENV_VAR = "ML_GIT_SHA"
CODE_VERSION_ENV_VAR = "ML_CODE_VERSION"
#: Feast's S3 registry reads only this variable for its endpoint; the steps pass it explicitly.
REGISTRY_ENDPOINT_ENV_VAR = "FEAST_S3_ENDPOINT_URL"
#: Read by the Feast repo config (``${ML_FEAST_REGISTRY_URI}``) and forwarded by the factory.
REGISTRY_URI_ENV_VAR = "ML_FEAST_REGISTRY_URI"
#: The standard AWS variables the steps read themselves, to point pyarrow and boto3 at S3.
S3_ENDPOINT_ENV_VARS = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
REGION_ENV_VARS = ("AWS_REGION", "AWS_DEFAULT_REGION")
TRACKING_URI_ENV_VAR = "MLFLOW_TRACKING_URI"
#: Optional: the Dask worker pods' ``{"requests": {...}, "limits": {...}}`` (JSON), over the defaults
#: derived from ``model.dask`` (one CPU per thread, memory_limit plus the nanny).
DASK_WORKER_RESOURCES_ENV_VAR = "ML_DASK_WORKER_RESOURCES"
#: What a Dask worker pod needs of the step's environment to read the lake (the credentials come
#: from the step Secrets, by reference).
WORKER_ENV_VARS = (LAKE_ENV_VAR, *S3_ENDPOINT_ENV_VARS, *REGION_ENV_VARS, ROW_GROUP_ROWS_ENV_VAR)


def parse_worker_resources(text: str) -> dict[str, dict[str, str]]:
    """``ML_DASK_WORKER_RESOURCES``: ``{"requests": {...}, "limits": {...}}``, each key optional; blank: {}.

    Read by the step (exit 2) and checked by the factory on load, so a malformed value fails the
    DAG's parse, not a train task hours later.

    Raises:
        ValueError: Not JSON of that shape, with quantity strings.
    """
    if not text.strip():
        return {}
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{DASK_WORKER_RESOURCES_ENV_VAR} is not JSON: {err}") from None
    if (
        not isinstance(value, dict)
        or set(value) - {"requests", "limits"}
        or not all(
            isinstance(v, dict) and all(isinstance(q, str) for q in v.values()) for v in value.values()
        )
    ):
        raise ValueError(
            f'{DASK_WORKER_RESOURCES_ENV_VAR} must be {{"requests": {{...}}, "limits": {{...}}}} with '
            'quantity strings, e.g. {"requests": {"cpu": "500m"}}'
        )
    return value


DEFAULT_ROW_GROUP_ROWS = 65536
DEFAULT_STEP_IMAGE = "local"
DEFAULT_REGION = "us-east-1"
UNKNOWN_CODE_VERSION = "unknown"
_TRUE, _FALSE = ("1", "true", "yes"), ("", "0", "false", "no")


@dataclass(frozen=True)
class StepSettings:
    """What the environment tells a step, validated; build it with :meth:`from_env`.

    Optional paths stay ``None`` when unset: their defaults depend on the working directory, which
    the accessors resolve when asked.
    """

    result_path: str | None = None
    lake_uri: str | None = None
    config_file: str | None = None
    state_dir_path: str | None = None
    store_yaml: str | None = None
    row_group_rows: int = DEFAULT_ROW_GROUP_ROWS
    step_image: str = DEFAULT_STEP_IMAGE
    require_gpu: bool = False
    #: ``local`` (a subprocess) or ``kubernetes`` (a pod): decides how a Dask cluster is made.
    execution_mode: str = "local"
    code_version: str | None = None
    registry_endpoint: str | None = None
    s3_endpoint: str | None = None
    region: str = DEFAULT_REGION
    #: The whole environment as it was read, for ``${VAR}`` in the Feast repo config.
    environ: Mapping[str, str] = field(
        default_factory=lambda: MappingProxyType({}), repr=False, compare=False, hash=False
    )

    def __post_init__(self) -> None:
        if self.execution_mode not in ("local", "kubernetes"):
            raise StepError(
                f"{EXECUTION_MODE_ENV_VAR}={self.execution_mode!r} is not one of: local, kubernetes"
            )
        if self.row_group_rows < 1:
            raise StepError(
                f"{ROW_GROUP_ROWS_ENV_VAR}={self.row_group_rows} must be a positive number of rows; "
                f"unset it for the default {DEFAULT_ROW_GROUP_ROWS}"
            )

    @classmethod
    def from_env(cls, environ: Mapping[str, str] = os.environ) -> StepSettings:
        """Read and validate every variable the steps use; ``environ`` is only read.

        Raises:
            StepError: A variable has a value the steps cannot use; the message names it.
        """
        return cls(
            result_path=environ.get(RESULT_ENV_VAR) or None,
            lake_uri=environ.get(LAKE_ENV_VAR) or None,
            config_file=environ.get(CONFIG_ENV_VAR) or None,
            state_dir_path=environ.get(STATE_DIR_ENV_VAR) or None,
            store_yaml=environ.get(STORE_YAML_ENV_VAR) or None,
            row_group_rows=_int(environ, ROW_GROUP_ROWS_ENV_VAR, DEFAULT_ROW_GROUP_ROWS),
            step_image=environ.get(STEP_IMAGE_ENV_VAR, DEFAULT_STEP_IMAGE),
            require_gpu=_flag(environ, REQUIRE_GPU_ENV_VAR),
            execution_mode=environ.get(EXECUTION_MODE_ENV_VAR) or "local",
            code_version=_code_version(environ),
            registry_endpoint=environ.get(REGISTRY_ENDPOINT_ENV_VAR) or None,
            s3_endpoint=_first(environ, S3_ENDPOINT_ENV_VARS),
            region=_first(environ, REGION_ENV_VARS) or DEFAULT_REGION,
            environ=MappingProxyType(dict(environ)),
        )

    def lake(self) -> str:
        """``$ML_LAKE_URI``, else ``.lake/`` under the current directory (the project root in local mode)."""
        return self.lake_uri or str(Path.cwd() / ".lake")

    def state_dir(self) -> Path:
        """Local Feast state (registry, SQLite online store): ``$ML_STATE_DIR``, else ``.state/`` here."""
        return Path(self.state_dir_path or Path.cwd() / ".state").resolve()


def _first(environ: Mapping[str, str], names: tuple[str, ...]) -> str | None:
    return next((environ[name] for name in names if environ.get(name)), None)


def _code_version(environ: Mapping[str, str]) -> str | None:
    for name in (GIT_SHA_ENV_VAR, CODE_VERSION_ENV_VAR):
        value = environ.get(name, "").strip()
        if value and value != UNKNOWN_CODE_VERSION:
            return value
    return None


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    text = environ.get(name)
    if text is None:
        return default
    try:
        return int(text)
    except ValueError:
        raise StepError(
            f"{name}={text!r} is not an integer; set a whole number, or unset it for the default {default}"
        ) from None


def _flag(environ: Mapping[str, str], name: str) -> bool:
    text = environ.get(name, "").strip().lower()
    if text not in _TRUE + _FALSE:
        raise StepError(f"{name}={environ[name]!r} must be 1, true or yes (or 0, false, no, unset)")
    return text in _TRUE
