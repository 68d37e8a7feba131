"""The task factory: settings, argv and local subprocess behaviour (pod specs: test_pod_spec.py)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from step_tasks import step_task
from step_tasks.factory import to_argv
from step_tasks.settings import ExecutionSettings, SettingsError, load_settings
from tests.support.airflow import RecordingTaskInstance


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"ML_EXECUTION_MODE": "docker"}, "ML_EXECUTION_MODE='docker' is not one of"),
        ({"ML_STEP_RETRIES": "many"}, "ML_STEP_RETRIES='many' is not an integer"),
        ({"ML_GPU_TOLERATIONS": "{not json"}, "ML_GPU_TOLERATIONS is not valid JSON"),
        ({"ML_GPU_NODE_SELECTOR": "[]"}, "ML_GPU_NODE_SELECTOR must be a JSON dict"),
        ({"ML_KEEP_FAILED_PODS": "maybe"}, "ML_KEEP_FAILED_PODS='maybe' must be true or false"),
        ({"ML_POD_SCHEDULE_TIMEOUT": "0"}, "ML_POD_SCHEDULE_TIMEOUT=0 must be a positive number"),
        ({"ML_POD_POLL_INTERVAL": "0"}, "ML_POD_POLL_INTERVAL=0 must be a positive number"),
        ({"ML_RESOURCE_PROFILES": '{"tpu": {}}'}, "ML_RESOURCE_PROFILES names unknown profile"),
        (
            {"ML_RESOURCE_PROFILES": '{"cpu": {"requests": {"cpu": 1}}}'},
            "must map resource names to quantity strings",
        ),
        ({"ML_DASK_SERVICE_ACCOUNT": "Steps_Dask"}, "ML_DASK_SERVICE_ACCOUNT='Steps_Dask' is not a service"),
        (
            {"ML_DASK_SERVICE_ACCOUNT": "ml-steps"},
            "ML_DASK_SERVICE_ACCOUNT='ml-steps' is also the step account",
        ),
        (
            {"ML_SERVICE_ACCOUNT": "trainer", "ML_DASK_SERVICE_ACCOUNT": "trainer"},
            "ML_DASK_SERVICE_ACCOUNT='trainer' is also the step account",
        ),
        ({"ML_DASK_WORKER_RESOURCES": '{"requests": "1"}'}, 'ML_DASK_WORKER_RESOURCES must be {"requests"'),
        ({"ML_DASK_WORKER_RESOURCES": "{cpu: 1}"}, "ML_DASK_WORKER_RESOURCES is not JSON"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message.replace("(", r"\(")):
        load_settings(env)


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
        # As Airflow does before execute: the lineage options and `--force false`.
        context = {"params": {}, "dag": SimpleNamespace(dag_id="ml_training"), "run_id": "manual__factory"}
        validate.render_template_fields(context)
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
