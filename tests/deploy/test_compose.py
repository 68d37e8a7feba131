"""docker-compose.yaml: valid Compose, the official Airflow 3 layout, and settings the steps accept.

Nothing is started here (no Docker engine): the file is validated against the Compose
Specification's JSON Schema (vendored, see compose-spec.SOURCE.md) and read as data.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from repotools.local_airflow import MLFLOW_SERVER_ENV

from step_tasks.settings import FORWARDED_ENV, load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
COMPOSE = REPO_ROOT / "docker-compose.yaml"
KUBERNETES_OVERLAY = REPO_ROOT / "docker" / "compose.kubernetes.yaml"
SCHEMA = Path(__file__).with_name("compose-spec.schema.json")
SCHEMA_SHA256 = "46b7d35f19dd93a05f8fea530291bf84d881c1791ec167ecf0e6fb94e639d496"

AIRFLOW_SERVICES = ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer")
ONE_SHOT = ("airflow-init", "minio-init")
CREDENTIAL = re.compile(r"(PASSWORD|SECRET|SECRET_KEY|ACCESS_KEY|ACCESS_KEY_ID|TOKEN|FERNET_KEY)$", re.I)
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::?-([^}]*))?\}")


def load(path: Path) -> dict[str, Any]:
    return dict(yaml.safe_load(path.read_text()))


def interpolate(value: str, environ: dict[str, str] | None = None) -> str:
    """Compose's ${VAR}, ${VAR:-default} and $$, resolved as with an empty .env file."""
    environ = environ or {}
    resolved = INTERPOLATION.sub(lambda m: environ.get(m[1]) or (m[2] or ""), value)
    return resolved.replace("$$", "$")


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    assert isinstance(env, dict), "environment is written as a mapping"
    return {str(k): str(v) for k, v in env.items()}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load(COMPOSE)


def test_vendored_schema_is_the_recorded_file() -> None:
    assert hashlib.sha256(SCHEMA.read_bytes()).hexdigest() == SCHEMA_SHA256


@pytest.mark.parametrize("path", [COMPOSE, KUBERNETES_OVERLAY], ids=lambda p: p.name)
def test_valid_against_the_compose_specification(path: Path) -> None:
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(load(path)), key=str)
    assert not errors, "\n".join(f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)


def test_schema_catches_a_broken_file(compose: dict[str, Any]) -> None:
    # The validation has teeth: an unknown key and a bad depends_on condition are refused.
    schema = json.loads(SCHEMA.read_text())
    broken = json.loads(json.dumps(compose))
    broken["services"]["mlflow"]["restart_policy"] = "always"
    broken["services"]["mlflow"]["depends_on"]["postgres"]["condition"] = "service_ready"
    assert len(list(jsonschema.Draft7Validator(schema).iter_errors(broken))) >= 2


def test_services_follow_the_official_airflow_3_layout(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {*AIRFLOW_SERVICES, "airflow-init", "postgres", "redis", "minio", "minio-init", "mlflow"}
    assert expected <= set(services)
    commands = {name: services[name]["command"] for name in AIRFLOW_SERVICES}
    assert commands == {
        "airflow-apiserver": "api-server",
        "airflow-scheduler": "scheduler",
        "airflow-dag-processor": "dag-processor",
        "airflow-triggerer": "triggerer",
    }
    envs = [env_of(services[name]) for name in AIRFLOW_SERVICES]
    assert all(env == envs[0] for env in envs), "Airflow containers must share one configuration"
    env = envs[0]
    assert env["AIRFLOW__CORE__EXECUTOR"] == "LocalExecutor"
    assert env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://airflow-apiserver:8080/execution/"
    assert "8080:8080" in services["airflow-apiserver"]["ports"]
    assert env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"].startswith("postgresql+psycopg2://")
    assert interpolate(env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]).endswith("@postgres/airflow")
    assert env["AIRFLOW__API_AUTH__JWT_SECRET"], "one JWT secret for every component"
    init = services["airflow-init"]
    assert env_of(init)["_AIRFLOW_DB_MIGRATE"] == "true"
    assert init["user"] == "0:0"
    for name in AIRFLOW_SERVICES:
        assert services[name]["user"] == "${AIRFLOW_UID:-50000}:0"
        assert services[name]["build"]["target"] == "airflow-ml", "local mode needs the ML stack"


def test_long_running_services_have_healthchecks_and_one_shots_do_not_restart(
    compose: dict[str, Any],
) -> None:
    for name, service in compose["services"].items():
        if name in ONE_SHOT:
            assert service.get("restart") == "no", name
            continue
        check = service.get("healthcheck")
        assert check, f"{name} has no healthcheck"
        assert check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert service.get("restart") == "always", name


def test_dependencies_wait_for_the_right_condition(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for name, service in services.items():
        for target, spec in (service.get("depends_on") or {}).items():
            assert target in services, f"{name} depends on unknown service {target}"
            condition = spec["condition"]
            if target in ONE_SHOT:
                assert condition == "service_completed_successfully", f"{name} -> {target}"
            else:
                assert condition == "service_healthy", f"{name} -> {target}"
                assert "healthcheck" in services[target], f"{name} waits for {target}'s health: none"
    for name in AIRFLOW_SERVICES:
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["airflow-init"]["condition"] == "service_completed_successfully"
    # Local-mode steps run in the scheduler: the lake, MLflow and Redis must be up first.
    assert {"minio-init", "mlflow", "redis"} <= set(services["airflow-scheduler"]["depends_on"])
    assert {"postgres", "minio-init"} <= set(services["mlflow"]["depends_on"])
    assert services["minio-init"]["depends_on"]["minio"]["condition"] == "service_healthy"


def test_mlflow_uses_postgres_and_minio_artifacts(compose: dict[str, Any]) -> None:
    mlflow = compose["services"]["mlflow"]
    args = [interpolate(a) for a in mlflow["command"]]
    options = dict(a.split("=", 1) for a in args if a.startswith("--"))
    assert options["--backend-store-uri"] == "postgresql+psycopg2://mlflow:mlflow@postgres/mlflow"
    bucket = options["--artifacts-destination"].removeprefix("s3://").split("/")[0]
    assert bucket in _buckets_created(compose)
    assert env_of(mlflow)["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    # MLflow refuses Host headers it does not know: the containers call it mlflow:5000.
    assert "mlflow:*" in options["--allowed-hosts"].split(",")
    postgres_env = env_of(compose["services"]["postgres"])
    assert {"MLFLOW_DB_USER", "MLFLOW_DB_PASSWORD"} <= set(postgres_env)
    init = REPO_ROOT / "docker" / "postgres-init" / "10-mlflow-db.sh"
    assert "CREATE DATABASE mlflow" in init.read_text()
    init_mount = "./docker/postgres-init:/docker-entrypoint-initdb.d:ro"
    assert init_mount in compose["services"]["postgres"]["volumes"]


def test_mlflow_runs_with_the_repositorys_mlflow_server_env(compose: dict[str, Any]) -> None:
    assert MLFLOW_SERVER_ENV.items() <= env_of(compose["services"]["mlflow"]).items()


def _buckets_created(compose: dict[str, Any]) -> set[str]:
    script = "\n".join(compose["services"]["minio-init"]["command"])
    (line,) = [line for line in script.splitlines() if line.strip().startswith("mc mb")]
    return {arg.removeprefix("local/") for arg in line.split() if arg.startswith("local/")}


def test_steps_run_locally_against_minio_mlflow_and_redis(compose: dict[str, Any]) -> None:
    env = {k: interpolate(v) for k, v in env_of(compose["services"]["airflow-scheduler"]).items()}
    assert env["ML_EXECUTION_MODE"] == "local"
    assert env["AWS_ENDPOINT_URL"] == "http://minio:9000"
    assert env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    buckets = _buckets_created(compose)
    for uri in (env["ML_LAKE_URI"], env["ML_FEAST_REGISTRY_URI"]):
        assert uri.startswith("s3://"), uri
        assert uri.removeprefix("s3://").split("/")[0] in buckets, uri
    # Every ${VAR} of the production Feast repo config is set.
    store = REPO_ROOT / "include" / "feature_repo" / Path(env["ML_FEAST_STORE_YAML"]).name
    assert env["ML_FEAST_STORE_YAML"] == f"/opt/mlsteps/feature_repo/{store.name}"
    lines = [line for line in store.read_text().splitlines() if not line.lstrip().startswith("#")]
    needed = set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", "\n".join(lines)))
    assert needed
    assert needed <= {k for k, v in env.items() if v}, needed
    assert env["ML_FEAST_REDIS"].split(":")[0] == "redis"
    # The factory accepts these settings as they are.
    settings = load_settings(env)
    assert settings.mode == "local"
    assert {k: settings.step_env[k] for k in ("ML_LAKE_URI", "MLFLOW_TRACKING_URI")} == {
        "ML_LAKE_URI": "s3://lake/ml",
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
    }
    assert set(settings.step_env) <= set(FORWARDED_ENV)


def test_kubernetes_overlay_switches_mode_and_mounts_a_kubeconfig(compose: dict[str, Any]) -> None:
    overlay = load(KUBERNETES_OVERLAY)["services"]
    assert set(overlay) <= set(compose["services"])
    for name in ("airflow-scheduler", "airflow-triggerer"):  # they launch and watch the pods
        merged = {**env_of(compose["services"][name]), **env_of(overlay[name])}
        env = {k: interpolate(v) for k, v in merged.items()}
        settings = load_settings(env)
        assert settings.mode == "kubernetes"
        assert settings.namespace == "ml-steps"
        (volume,) = overlay[name]["volumes"]
        assert volume["target"] == env["KUBECONFIG"]
        assert volume["read_only"] is True
    assert set(AIRFLOW_SERVICES) <= set(overlay), "every Airflow component parses DAGs with the same mode"


def test_no_credentials_beyond_documented_local_dev_defaults(compose: dict[str, Any]) -> None:
    header = COMPOSE.read_text().split("\nname:", 1)[0]
    assert "local development only" in header
    overlay = load(KUBERNETES_OVERLAY)

    def check(where: str, key: str, value: str) -> None:
        if CREDENTIAL.search(key):
            match = INTERPOLATION.fullmatch(value)
            assert match, f"{where}: {key} must come from the environment, as ${{NAME:-default}}"
            assert match[1] in header, f"{where}: {key}'s variable {match[1]} is not documented in the header"
        # user:password in a URL: both parts from the environment
        for user_password in re.findall(r"://([^/@\s]*)@", INTERPOLATION.sub("VAR", value)):
            assert set(user_password.split(":")) <= {"VAR"}, f"{where}: literal credentials in {value}"

    for doc in (compose, overlay):
        for name, service in doc["services"].items():
            for key, value in env_of(service).items():
                check(name, key, value)
            for arg in service.get("command") or []:
                check(name, "", str(arg))
