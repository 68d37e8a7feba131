"""The task factory: pod specs rendered without a cluster, and local subprocess behaviour."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from kubernetes.client import ApiClient

from step_tasks import step_task
from step_tasks.factory import to_argv
from step_tasks.settings import ExecutionSettings, SettingsError, load_settings
from tests.support.airflow import RecordingTaskInstance, load_dagbag

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


def test_cpu_pod_spec_is_exec_form_hardened_and_valid() -> None:
    task = step_task("validate", options={"--start": "2026-11-01", "--end": "2026-11-02"}, settings=KUBE)
    pod = _pod(task)
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    container = _main_container(pod)
    assert container["command"] == ["python", "-m", "mlsteps"]
    assert container["args"][:5] == ["validate", "--start", "2026-11-01", "--end", "2026-11-02"]
    assert "--run-id" in container["args"]
    assert "--dag-id" in container["args"]
    assert container["image"] == "registry.example.com/mlsteps:1.2.3"
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["ML_STEP_RESULT"] == "/airflow/xcom/return.json"
    assert env["ML_LAKE_URI"] == "s3://lake/ml"
    assert "ML_REQUIRE_GPU" not in env
    assert container["resources"]["limits"] == {"cpu": "2", "memory": "4Gi"}
    assert "nvidia.com/gpu" not in container["resources"]["limits"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert {"mountPath": "/tmp", "name": "scratch"} in container["volumeMounts"]
    assert pod["spec"]["serviceAccountName"] == "ml-steps"
    assert pod["metadata"]["namespace"] == "ml-steps"
    assert pod["spec"].get("nodeSelector") in (None, {})
    assert pod["spec"]["activeDeadlineSeconds"] == 3600
    _assert_restricted(pod)
    assert task.deferrable is True
    assert task.do_xcom_push is True
    assert task.on_finish_action.value == "delete_pod"
    assert task.retries == 2
    assert task.retry_exponential_backoff


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


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ML_EXECUTION_MODE": "docker"}, "ML_EXECUTION_MODE='docker' is not one of"),
        ({"ML_STEP_RETRIES": "many"}, "ML_STEP_RETRIES='many' is not an integer"),
        ({"ML_GPU_TOLERATIONS": "{not json"}, "ML_GPU_TOLERATIONS is not valid JSON"),
        ({"ML_GPU_NODE_SELECTOR": "[]"}, "ML_GPU_NODE_SELECTOR must be a JSON dict"),
        ({"ML_KEEP_FAILED_PODS": "maybe"}, "ML_KEEP_FAILED_PODS='maybe' must be true or false"),
        ({"ML_POD_SCHEDULE_TIMEOUT": "0"}, "ML_POD_SCHEDULE_TIMEOUT=0 must be a positive number"),
        ({"ML_RESOURCE_PROFILES": '{"tpu": {}}'}, "ML_RESOURCE_PROFILES names unknown profile"),
        (
            {"ML_RESOURCE_PROFILES": '{"cpu": {"requests": {"cpu": 1}}}'},
            "must map resource names to quantity strings",
        ),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(env)


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


def test_to_argv_keeps_each_value_one_element() -> None:
    hostile = "x; rm -rf / && echo $(whoami) `id` \n --lake s3://evil"
    assert to_argv({"--reason": hostile, "--flag": True, "--off": False, "--none": None, "--n": 3}) == [
        "--reason", hostile, "--flag", "--n", "3",
    ]  # fmt: skip
    with pytest.raises(ValueError, match="must look like --name"):
        to_argv({"--a b": 1})


class TestLocalMode:
    """The local operator runs the real step CLI as a child process."""

    def _operator(self, tmp_path: Path, *arguments: str) -> Any:
        from step_tasks.local import LocalStepOperator

        settings = ExecutionSettings(step_env={"ML_LAKE_URI": str(tmp_path / "lake")})
        task = step_task("generate-data", options=None, settings=settings)
        assert isinstance(task, LocalStepOperator)
        task.arguments = list(arguments)
        return task

    def test_returns_the_step_result(self, tmp_path: Path) -> None:
        task = self._operator(
            tmp_path, "--start", "2026-11-01", "--days", "1", "--rows-per-day", "50", "--customers", "20"
        )
        result = task.execute(context={})
        assert result["rows"] >= 50
        assert result["days"] == ["2026-11-01"]
        assert (tmp_path / "lake" / "raw" / "transactions" / "ds=2026-11-01" / "_SUCCESS.json").exists()

    def test_user_error_fails_without_retry_and_with_the_reason(self, tmp_path: Path) -> None:
        from airflow.sdk.exceptions import AirflowFailException

        task = self._operator(tmp_path, "--start", "2026-11-01", "--days", "0")
        with pytest.raises(AirflowFailException, match="--days must be between 1 and 3650, got 0"):
            task.execute(context={})

    def test_failed_validation_still_publishes_its_report(self, tmp_path: Path) -> None:
        """The report explaining a failure is the task's return_value, so the task's Report link works."""
        from airflow.sdk.exceptions import AirflowFailException

        generate = self._operator(
            tmp_path, "--start", "2026-11-01", "--days", "1", "--rows-per-day", "50", "--customers", "20"
        )
        generate.execute(context={})  # 50 rows: under the config's minimum rows per day
        settings = ExecutionSettings(step_env={"ML_LAKE_URI": str(tmp_path / "lake")})
        validate = step_task(
            "validate", options={"--start": "2026-11-01", "--end": "2026-11-02"}, settings=settings
        )
        ti = RecordingTaskInstance()
        with pytest.raises(AirflowFailException, match="validation of transactions"):
            validate.execute(context={"ti": ti})
        result = ti.pushed["return_value"]
        assert result["failed"] is True
        assert result["valid"] is False
        assert Path(result["report_html"]).is_file()
        assert ti.pushed["summary"].startswith("FAILED: validation of transactions")

    def test_hostile_argument_is_inert(self, tmp_path: Path) -> None:
        marker = tmp_path / "pwned"
        task = self._operator(tmp_path, "--start", f"2026-11-01; touch {marker}", "--days", "1")
        with pytest.raises(Exception, match="is not an ISO date"):
            task.execute(context={})
        assert not marker.exists()


def test_unschedulable_reason_is_the_schedulers_own_message() -> None:
    from kubernetes.client import models as k8s

    from step_tasks.pod import unschedulable_reason

    message = "0/1 nodes are available: 1 Insufficient nvidia.com/gpu. preemption: 0/1 nodes are available."
    pending = k8s.V1Pod(
        spec=k8s.V1PodSpec(containers=[]),
        status=k8s.V1PodStatus(
            phase="Pending",
            conditions=[k8s.V1PodCondition(type="PodScheduled", status="False", message=message)],
        ),
    )
    events = k8s.CoreV1EventList(
        items=[
            k8s.CoreV1Event(
                involved_object=k8s.V1ObjectReference(),
                metadata=k8s.V1ObjectMeta(),
                reason="FailedScheduling",
                message=message,
            )
        ]
    )
    assert unschedulable_reason(pending, events) == "0/1 nodes are available: 1 Insufficient nvidia.com/gpu."
    pending.status.conditions[0].status = "True"
    assert unschedulable_reason(pending, events) is None
