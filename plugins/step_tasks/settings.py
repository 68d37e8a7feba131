"""Deployment settings, read once from the environment into one validated object.

Nothing in ``dags/`` reads these: the factory does, so the same DAG files run in both modes.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

from mlsteps.contract.settings import (
    CONFIG_ENV_VAR,
    DASK_SERVICE_ACCOUNT_ENV_VAR,
    DASK_WORKER_RESOURCES_ENV_VAR,
    LAKE_ENV_VAR,
    NAMESPACE_ENV_VAR,
    REGION_ENV_VARS,
    REGISTRY_ENDPOINT_ENV_VAR,
    REGISTRY_URI_ENV_VAR,
    ROW_GROUP_ROWS_ENV_VAR,
    SERVICE_ACCOUNT_ENV_VAR,
    STATE_DIR_ENV_VAR,
    STEP_IMAGE_ENV_VAR,
    STEP_SECRETS_ENV_VAR,
    STORE_YAML_ENV_VAR,
    TRACKING_URI_ENV_VAR,
    parse_worker_resources,
)

Mode = Literal["local", "kubernetes"]
Profile = Literal["cpu", "gpu"]
PROFILES: tuple[Profile, ...] = ("cpu", "gpu")
REPO_ROOT = Path(__file__).resolve().parents[2]

#: Non-secret variables the worker passes to every step (its own values, read once); the names are
#: the steps' (``mlsteps.contract.settings``).
FORWARDED_ENV = (
    LAKE_ENV_VAR,
    CONFIG_ENV_VAR,
    STATE_DIR_ENV_VAR,
    STORE_YAML_ENV_VAR,
    TRACKING_URI_ENV_VAR,
    "AWS_ENDPOINT_URL",
    *REGION_ENV_VARS,
    REGISTRY_URI_ENV_VAR,
    REGISTRY_ENDPOINT_ENV_VAR,
    ROW_GROUP_ROWS_ENV_VAR,
    DASK_WORKER_RESOURCES_ENV_VAR,
)


#: Kubernetes' rule for object names such as a service account's (a DNS-1123 subdomain).
_DNS_1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")

#: Where the Airflow API server serves the lake's HTML reports (the ``ml_ui`` plugin).
REPORTS_ROUTE = "/ml-reports"


class SettingsError(ValueError):
    """A deployment setting is invalid; the message names the variable."""


@dataclass(frozen=True)
class Resources:
    """Requests and limits of one resource profile."""

    requests: Mapping[str, str]
    limits: Mapping[str, str]
    execution_timeout: timedelta


DEFAULT_RESOURCES: dict[Profile, Resources] = {
    "cpu": Resources({"cpu": "1", "memory": "2Gi"}, {"cpu": "2", "memory": "4Gi"}, timedelta(hours=1)),
    "gpu": Resources(
        {"cpu": "4", "memory": "16Gi", "nvidia.com/gpu": "1"},
        {"cpu": "8", "memory": "32Gi", "nvidia.com/gpu": "1"},
        timedelta(hours=4),
    ),
}


@dataclass(frozen=True)
class ExecutionSettings:
    """How step tasks run: as local subprocesses or as Kubernetes pods."""

    mode: Mode = "local"
    # kubernetes mode
    image: str = "mlsteps:0.1.0"
    image_pull_policy: str = "IfNotPresent"
    namespace: str = "ml-steps"
    service_account: str = "ml-steps"
    #: The account, with an API token, of the pods of steps that create a DaskCluster (``DASK_STEPS``
    #: in ``step_tasks.pod``); empty: those pods run like every other, without a token.
    dask_service_account: str = ""
    secret_names: tuple[str, ...] = ("ml-s3-credentials", "ml-mlflow-credentials")
    gpu_node_selector: Mapping[str, str] = field(default_factory=lambda: {"nvidia.com/gpu.present": "true"})
    gpu_tolerations: tuple[Mapping[str, str], ...] = (
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"},
    )
    keep_failed_pods: bool = False
    startup_timeout_seconds: int = 600
    #: A pod no node can take within this time fails at once, naming what no node has (no retry).
    schedule_timeout_seconds: int = 300
    #: Seconds between the trigger's checks of a running pod (the provider's default is 2). A step
    #: that ends within a check or two of deferring races Airflow's scheduler: if the trigger fires
    #: before the scheduler has taken in the executor's "success" for the worker's exit on defer,
    #: that stale event fails the resumed try (apache/airflow#66374, #72716; seen in CI with a 2 s
    #: promote step and a scheduler 5 s behind). Checking less often leaves the scheduler that time,
    #: for a few seconds more per step.
    poll_interval_seconds: int = 5
    resources: Mapping[Profile, Resources] = field(default_factory=lambda: dict(DEFAULT_RESOURCES))
    # both modes
    retries: int = 2
    retry_delay: timedelta = timedelta(minutes=1)
    max_retry_delay: timedelta = timedelta(minutes=30)
    step_env: Mapping[str, str] = field(default_factory=dict)
    # links in the Airflow UI
    mlflow_ui_url: str = ""
    reports_url: str = REPORTS_ROUTE
    # local mode
    python: str = sys.executable
    workdir: str = str(REPO_ROOT)

    def __post_init__(self) -> None:
        if self.mode not in ("local", "kubernetes"):
            raise SettingsError(f"ML_EXECUTION_MODE={self.mode!r} is not one of: local, kubernetes")
        for name, seconds in (
            ("ML_POD_STARTUP_TIMEOUT", self.startup_timeout_seconds),
            ("ML_POD_SCHEDULE_TIMEOUT", self.schedule_timeout_seconds),
            ("ML_POD_POLL_INTERVAL", self.poll_interval_seconds),
        ):
            if seconds < 1:
                raise SettingsError(f"{name}={seconds} must be a positive number of seconds")
        if self.retries < 0 or self.retries > 10:
            raise SettingsError(f"ML_STEP_RETRIES={self.retries} must be between 0 and 10")
        if self.mode == "kubernetes" and not self.image:
            raise SettingsError(f"{STEP_IMAGE_ENV_VAR} must name the step image in kubernetes mode")
        self._check_dask_service_account()
        try:
            parse_worker_resources(self.step_env.get(DASK_WORKER_RESOURCES_ENV_VAR, ""))
        except ValueError as err:
            raise SettingsError(str(err)) from None
        for name, value in self.step_env.items():
            _refuse_password(name, value)
        for name, value in (("ML_MLFLOW_UI_URL", self.mlflow_ui_url), ("ML_REPORTS_URL", self.reports_url)):
            _refuse_password(name, value)
            if value and not value.startswith(("http://", "https://", "/")):
                raise SettingsError(f"{name}={value!r} must be an http(s) URL or a path starting with /")

    def _check_dask_service_account(self) -> None:
        account = self.dask_service_account
        if not account:
            return
        if len(account) > 253 or not _DNS_1123_SUBDOMAIN.fullmatch(account):
            raise SettingsError(
                f"{DASK_SERVICE_ACCOUNT_ENV_VAR}={account!r} is not a service account name: lower-case "
                "letters, digits, '-' and '.', starting and ending with a letter or digit"
            )
        if account == self.service_account:
            raise SettingsError(
                f"{DASK_SERVICE_ACCOUNT_ENV_VAR}={account!r} is also the step account "
                f"({SERVICE_ACCOUNT_ENV_VAR}), which every step pod uses without an API token; name the "
                "account bound to the DaskCluster Role (chart: dask.serviceAccount.name), or unset "
                f"{DASK_SERVICE_ACCOUNT_ENV_VAR}"
            )


def load_settings(environ: Mapping[str, str] | None = None) -> ExecutionSettings:
    """Read the settings from environment variables (documented in the README).

    Raises:
        SettingsError: A variable has an invalid value; the message names it.
    """
    env = os.environ if environ is None else environ
    defaults = ExecutionSettings()
    return ExecutionSettings(
        mode=env.get("ML_EXECUTION_MODE", defaults.mode),  # type: ignore[arg-type]
        image=env.get(STEP_IMAGE_ENV_VAR, defaults.image),
        image_pull_policy=env.get("ML_IMAGE_PULL_POLICY", defaults.image_pull_policy),
        namespace=env.get(NAMESPACE_ENV_VAR, defaults.namespace),
        service_account=env.get(SERVICE_ACCOUNT_ENV_VAR, defaults.service_account),
        dask_service_account=env.get(DASK_SERVICE_ACCOUNT_ENV_VAR, "").strip(),
        secret_names=_names(env, STEP_SECRETS_ENV_VAR, defaults.secret_names),
        gpu_node_selector=_json(env, "ML_GPU_NODE_SELECTOR", defaults.gpu_node_selector, dict),
        gpu_tolerations=tuple(_json(env, "ML_GPU_TOLERATIONS", list(defaults.gpu_tolerations), list)),
        keep_failed_pods=_flag(env, "ML_KEEP_FAILED_PODS", defaults.keep_failed_pods),
        startup_timeout_seconds=_int(env, "ML_POD_STARTUP_TIMEOUT", defaults.startup_timeout_seconds),
        schedule_timeout_seconds=_int(env, "ML_POD_SCHEDULE_TIMEOUT", defaults.schedule_timeout_seconds),
        poll_interval_seconds=_int(env, "ML_POD_POLL_INTERVAL", defaults.poll_interval_seconds),
        resources=_resources(env, "ML_RESOURCE_PROFILES", defaults.resources),
        retries=_int(env, "ML_STEP_RETRIES", defaults.retries),
        step_env={name: env[name] for name in FORWARDED_ENV if env.get(name)},
        mlflow_ui_url=env.get("ML_MLFLOW_UI_URL") or _http_only(env.get("MLFLOW_TRACKING_URI", "")),
        reports_url=(env.get("ML_REPORTS_URL") or defaults.reports_url).rstrip("/"),
        python=env.get("ML_STEP_PYTHON", defaults.python),
        workdir=env.get("ML_STEP_WORKDIR", defaults.workdir),
    )


def _resources(
    env: Mapping[str, str], name: str, default: Mapping[Profile, Resources]
) -> dict[Profile, Resources]:
    """Per-profile ``requests``/``limits`` from JSON, each replacing the default's when given.

    ``{"cpu": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}}``
    """
    overrides = _json(env, name, {}, dict)
    unknown = sorted(set(overrides) - set(PROFILES))
    if unknown:
        raise SettingsError(f"{name} names unknown profile(s) {unknown}; use {', '.join(PROFILES)}")
    profiles = dict(default)
    for profile, override in overrides.items():
        if not isinstance(override, dict) or set(override) - {"requests", "limits"}:
            raise SettingsError(f'{name}["{profile}"] must be a JSON dict with "requests" and/or "limits"')
        quantities = {}
        for kind in ("requests", "limits"):
            value = override.get(kind, dict(getattr(default[profile], kind)))
            if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
                raise SettingsError(
                    f'{name}["{profile}"]["{kind}"] must map resource names to quantity strings, e.g. "500m"'
                )
            quantities[kind] = value
        profiles[profile] = Resources(
            quantities["requests"], quantities["limits"], default[profile].execution_timeout
        )
    return profiles


def _refuse_password(name: str, value: str) -> None:
    """Forwarded values are stored with each task (serialized DAG, pod spec): no credentials there."""
    from urllib.parse import urlsplit

    try:
        password = urlsplit(value).password
    except ValueError:
        password = None
    if password:
        raise SettingsError(
            f"{name} holds a password in its URL, which would be stored with every step task (the "
            "serialized DAG, the pod spec); remove it from the URL and pass the credential as its own "
            "variable (e.g. MLFLOW_TRACKING_PASSWORD), from a Secret named in "
            f"{STEP_SECRETS_ENV_VAR} for pods"
        )


def _http_only(uri: str) -> str:
    """A tracking URI that is also the MLflow UI (an HTTP server), else ``""``."""
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else ""


def _names(env: Mapping[str, str], name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    if name not in env:
        return default
    return tuple(part.strip() for part in env[name].split(",") if part.strip())


def _json(env: Mapping[str, str], name: str, default: Any, kind: type) -> Any:
    if name not in env:
        return default
    try:
        value = json.loads(env[name])
    except json.JSONDecodeError as err:
        raise SettingsError(
            f"{name} is not valid JSON ({err.msg}); expected a JSON {kind.__name__}"
        ) from None
    if not isinstance(value, kind):
        raise SettingsError(f"{name} must be a JSON {kind.__name__}, got {type(value).__name__}")
    return value


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env.get(name, default))
    except ValueError:
        raise SettingsError(f"{name}={env[name]!r} is not an integer") from None


def _flag(env: Mapping[str, str], name: str, default: bool) -> bool:
    value = env.get(name)
    if value is None:
        return default
    if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
        raise SettingsError(f"{name}={value!r} must be true or false")
    return value.lower() in ("1", "true", "yes")
