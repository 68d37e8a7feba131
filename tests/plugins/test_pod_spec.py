"""Pod specs the factory builds, rendered without a cluster (one fact per test)."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from step_tasks import step_task
from step_tasks.pod import DASK_STEPS
from step_tasks.settings import ExecutionSettings, load_settings
from tests.support.airflow import load_dagbag

K8S_VERSION = "1.32.0"
KUBE = ExecutionSettings(
    mode="kubernetes", image="registry.example.com/mlsteps:1.2.3", step_env={"ML_LAKE_URI": "s3://lake/ml"}
)


def _pod(task: Any) -> dict[str, Any]:
    pod = task.build_pod_request_obj(context=None, dry_run=True)
    return dict(ApiClient().sanitize_for_serialization(pod))


def _main_container(pod: dict[str, Any]) -> dict[str, Any]:
    return next(c for c in pod["spec"]["containers"] if c["name"] == "base")


def _assert_restricted(pod: dict[str, Any]) -> None:
    """The restricted Pod Security Standard, field by field."""
    spec = pod["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault"
    assert spec.get("hostNetwork") in (None, False)
    for container in spec["containers"]:
        context = container["securityContext"]
        assert context["allowPrivilegeEscalation"] is False, container["name"]
        assert context["capabilities"]["drop"] == ["ALL"], container["name"]
        assert context["runAsNonRoot"] is True, container["name"]
        assert context.get("privileged") in (None, False), container["name"]


@pytest.fixture(scope="module")
def cpu_task() -> Any:
    return step_task("validate", options={"--start": "2026-11-01", "--end": "2026-11-02"}, settings=KUBE)


@pytest.fixture(scope="module")
def cpu_pod(cpu_task: Any) -> dict[str, Any]:
    return _pod(cpu_task)


def test_cpu_pod_is_valid_for_the_kubernetes_schema(cpu_pod: dict[str, Any]) -> None:
    kubernetes_validate.validate(cpu_pod, K8S_VERSION, strict=True)


def test_cpu_pod_meets_the_restricted_standard(cpu_pod: dict[str, Any]) -> None:
    _assert_restricted(cpu_pod)


def test_step_runs_in_exec_form(cpu_pod: dict[str, Any]) -> None:
    assert _main_container(cpu_pod)["command"] == ["python", "-m", "mlsteps"]


def test_options_come_first_then_the_run_identity(cpu_pod: dict[str, Any]) -> None:
    args = _main_container(cpu_pod)["args"]
    assert args[:5] == ["validate", "--start", "2026-11-01", "--end", "2026-11-02"]
    assert {"--run-id", "--dag-id"} <= set(args)


def test_pod_runs_the_configured_image(cpu_pod: dict[str, Any]) -> None:
    assert _main_container(cpu_pod)["image"] == "registry.example.com/mlsteps:1.2.3"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ML_STEP_RESULT", "/airflow/xcom/return.json"),
        ("ML_LAKE_URI", "s3://lake/ml"),
        ("ML_EXECUTION_MODE", "kubernetes"),
    ],
    ids=[
        "result_goes_to_the_xcom_sidecars_file",
        "step_environment_reaches_the_pod",
        "the_step_knows_it_runs_in_a_pod",
    ],
)
def test_the_pod_environment(cpu_pod: dict[str, Any], name: str, value: str) -> None:
    env = {e["name"]: e.get("value") for e in _main_container(cpu_pod)["env"]}
    assert env[name] == value


def test_cpu_pod_asks_for_no_gpu(cpu_pod: dict[str, Any]) -> None:
    container = _main_container(cpu_pod)
    assert "ML_REQUIRE_GPU" not in {e["name"] for e in container["env"]}
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert cpu_pod["spec"].get("nodeSelector") in (None, {})


def test_root_filesystem_is_read_only_with_a_scratch_tmp(cpu_pod: dict[str, Any]) -> None:
    container = _main_container(cpu_pod)
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"mountPath": "/tmp", "name": "scratch"} in container["volumeMounts"]


def test_pod_runs_as_the_step_service_account_in_the_step_namespace(cpu_pod: dict[str, Any]) -> None:
    assert cpu_pod["spec"]["serviceAccountName"] == "ml-steps"
    assert cpu_pod["metadata"]["namespace"] == "ml-steps"


def test_cpu_pod_deadline_is_the_task_timeout(cpu_pod: dict[str, Any]) -> None:
    assert cpu_pod["spec"]["activeDeadlineSeconds"] == 3600


def test_task_defers_and_pushes_the_result(cpu_task: Any) -> None:
    assert cpu_task.deferrable is True
    assert cpu_task.do_xcom_push is True


def test_trigger_checks_a_running_pod_every_five_seconds_by_default(cpu_task: Any) -> None:
    assert cpu_task.poll_interval == 5  # not the provider's 2: see ExecutionSettings.poll_interval_seconds


def test_task_deletes_its_pod_when_done(cpu_task: Any) -> None:
    assert cpu_task.on_finish_action.value == "delete_pod"


def test_task_retries_crashes_with_backoff(cpu_task: Any) -> None:
    assert cpu_task.retries == 2
    assert cpu_task.retry_exponential_backoff


def test_gpu_profile_adds_limit_selector_and_tolerations() -> None:
    pod = _pod(step_task("train", options={"--device": "cuda"}, profile="gpu", settings=KUBE))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    container = _main_container(pod)
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    assert container["resources"]["requests"]["nvidia.com/gpu"] == "1"
    assert pod["spec"]["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["spec"][
        "tolerations"
    ]
    assert {"name": "ML_REQUIRE_GPU", "value": "1"} in container["env"]
    assert pod["spec"]["activeDeadlineSeconds"] == 4 * 3600


def test_credentials_come_only_from_secret_refs() -> None:
    pod = _pod(step_task("train", settings=KUBE))
    container = _main_container(pod)
    assert [ref["secretRef"]["name"] for ref in container["envFrom"]] == [
        "ml-s3-credentials",
        "ml-mlflow-credentials",
    ]
    names = {e["name"] for e in container["env"]}
    assert not names & {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_TRACKING_PASSWORD"}


def test_secret_values_in_the_worker_environment_never_reach_the_pod_spec() -> None:
    canary = "canary-3c1f9e-secret"
    settings = load_settings(
        {
            "ML_EXECUTION_MODE": "kubernetes",
            "AWS_SECRET_ACCESS_KEY": canary,
            "MLFLOW_TRACKING_PASSWORD": canary,
            "ML_LAKE_URI": "s3://lake/x",
        }  # fmt: skip
    )
    assert canary not in json.dumps(_pod(step_task("score", settings=settings)))


def test_keep_failed_pods_setting() -> None:
    settings = load_settings({"ML_EXECUTION_MODE": "kubernetes", "ML_KEEP_FAILED_PODS": "true"})
    assert step_task("validate", settings=settings).on_finish_action.value == "delete_succeeded_pod"


def test_poll_interval_setting() -> None:
    settings = load_settings({"ML_EXECUTION_MODE": "kubernetes", "ML_POD_POLL_INTERVAL": "2"})
    assert step_task("validate", settings=settings).poll_interval == 2


def test_pod_waits_for_a_node_only_the_schedule_timeout() -> None:
    settings = load_settings({"ML_EXECUTION_MODE": "kubernetes", "ML_POD_SCHEDULE_TIMEOUT": "45"})
    task = step_task("train", profile="gpu", settings=settings)
    assert task.schedule_timeout_seconds == 45
    assert task.startup_timeout_seconds == 600


def test_failed_step_log_tail_is_the_termination_message() -> None:
    container = _main_container(_pod(step_task("validate", settings=KUBE)))
    assert container["terminationMessagePolicy"] == "FallbackToLogsOnError"


def test_resource_profiles_setting_replaces_requests_and_limits() -> None:
    profiles = {"cpu": {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}}
    settings = load_settings(
        {"ML_EXECUTION_MODE": "kubernetes", "ML_RESOURCE_PROFILES": json.dumps(profiles)}
    )
    resources = _main_container(_pod(step_task("validate", settings=settings)))["resources"]
    assert resources == {"requests": {"cpu": "250m", "memory": "256Mi"}, "limits": {"memory": "1Gi"}}
    gpu = _main_container(_pod(step_task("train", profile="gpu", settings=settings)))["resources"]
    assert gpu["limits"]["nvidia.com/gpu"] == "1"


def test_every_task_of_every_dag_renders_a_valid_restricted_pod(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = load_dagbag(monkeypatch, "kubernetes", ML_STEP_IMAGE="registry.example.com/mlsteps:1.2.3")
    assert bag.import_errors == {}
    rendered, rendered_steps = 0, set()
    for dag in bag.dags.values():
        for task in dag.tasks:
            if hasattr(task, "unmap"):  # a mapped shard: render it with one shard's arguments
                task = task.unmap(
                    {"arguments": ["--model-version", "1", "--shard-index", "0", "--shard-count", "2"]}
                )
            if not hasattr(task, "build_pod_request_obj"):
                continue  # branch, gate and trigger tasks are orchestration, not steps
            pod = _pod(task)
            kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
            _assert_restricted(pod)
            container = _main_container(pod)
            assert container["command"][:3] == ["python", "-m", "mlsteps"]
            assert all(isinstance(arg, str) for arg in container["command"] + container["args"])
            rendered += 1
            rendered_steps.add((container["command"] + container["args"])[3])
    assert rendered >= 14
    assert {
        "validate",
        "train",
        "evaluate",
        "promote",
        "score",
        "commit-predictions",
        "drift",
    } <= rendered_steps


# --- the Dask service account (model.engine: dask in kubernetes mode) ---------------------------

DASK = dataclasses.replace(
    KUBE,
    namespace="training",
    service_account="steps",
    dask_service_account="steps-dask",
    secret_names=("s3-keys", "mlflow-token"),
)


def _env(pod: dict[str, Any]) -> dict[str, str | None]:
    return {e["name"]: e.get("value") for e in _main_container(pod)["env"]}


@pytest.mark.parametrize("step", sorted(DASK_STEPS))
def test_a_dask_step_runs_as_the_dask_account(step: str) -> None:
    assert _pod(step_task(step, settings=DASK))["spec"]["serviceAccountName"] == "steps-dask"


@pytest.mark.parametrize("step", sorted(DASK_STEPS))
def test_a_dask_step_gets_an_api_token(step: str) -> None:
    assert _pod(step_task(step, settings=DASK))["spec"]["automountServiceAccountToken"] is True


@pytest.mark.parametrize("step", ["validate", "evaluate", "promote", "score", "drift"])
def test_other_steps_keep_the_step_account_without_a_token(step: str) -> None:
    spec = _pod(step_task(step, settings=DASK))["spec"]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("steps", False)


@pytest.mark.parametrize("step", sorted(DASK_STEPS))
def test_without_a_dask_account_a_dask_step_has_no_token(step: str) -> None:
    spec = _pod(step_task(step, settings=KUBE))["spec"]
    assert (spec["serviceAccountName"], spec["automountServiceAccountToken"]) == ("ml-steps", False)


def test_a_dask_step_learns_where_and_how_its_workers_run() -> None:
    env = _env(_pod(step_task("train", settings=DASK)))
    assert {name: env.get(name) for name in ("ML_NAMESPACE", "ML_SERVICE_ACCOUNT", "ML_STEP_SECRETS")} == {
        "ML_NAMESPACE": "training",
        "ML_SERVICE_ACCOUNT": "steps",
        "ML_STEP_SECRETS": "s3-keys,mlflow-token",
    }


def test_other_steps_are_not_told_the_deployment() -> None:
    env = _env(_pod(step_task("validate", settings=DASK)))
    assert not {"ML_NAMESPACE", "ML_SERVICE_ACCOUNT", "ML_STEP_SECRETS"} & set(env)


def test_without_a_dask_account_the_train_step_is_not_told_the_deployment() -> None:
    env = _env(_pod(step_task("train", settings=KUBE)))
    assert not {"ML_NAMESPACE", "ML_SERVICE_ACCOUNT", "ML_STEP_SECRETS"} & set(env)


def test_a_dask_step_pod_is_still_valid_and_restricted() -> None:
    pod = _pod(step_task("train", profile="gpu", settings=DASK))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    _assert_restricted(pod)


def test_the_dask_account_is_read_from_its_variable() -> None:
    settings = load_settings({"ML_EXECUTION_MODE": "kubernetes", "ML_DASK_SERVICE_ACCOUNT": "ml-steps-dask"})
    assert _pod(step_task("reproduce", settings=settings))["spec"]["serviceAccountName"] == "ml-steps-dask"


def test_an_empty_dask_account_is_off() -> None:
    settings = load_settings({"ML_EXECUTION_MODE": "kubernetes", "ML_DASK_SERVICE_ACCOUNT": ""})
    assert _pod(step_task("train", settings=settings))["spec"]["automountServiceAccountToken"] is False
