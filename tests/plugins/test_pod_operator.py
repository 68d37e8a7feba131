"""``StepPodOperator`` keeps a step's result when the provider re-enters at once and drops it, and a
retry never adopts the ended pod of an earlier try.

cncf.kubernetes 10.25: a retry whose pod has already finished calls ``trigger_reentry`` from
``invoke_defer_method`` and throws its return value away, so ``execute`` returns None and the
task's XCom is empty (found in tests/k8s: a retried ``commit_predictions`` left ``publish`` with
None). The provider's two methods are replaced here by that exact sequence; the operator and its
summary publishing are the real ones.
"""

from __future__ import annotations

from typing import Any

import pytest
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from kubernetes.client import models as k8s

from step_tasks import step_task
from step_tasks.pod_operator import ended_in_earlier_try
from step_tasks.settings import ExecutionSettings
from tests.support.airflow import RecordingTaskInstance

KUBE = ExecutionSettings(mode="kubernetes", image="registry.example.com/mlsteps:1.2.3")
RESULT = {"summary": "2008 rows scored", "uri": "s3://lake/predictions/m/ds=2026-11-27"}
SUCCEEDED = {"status": "success", "name": "mlsteps-commit-predictions-1", "namespace": "ml-steps"}


def reenters_at_once(operator: Any, context: Any) -> None:
    """What the provider's ``execute`` does when the pod it finds has already terminated."""
    operator.trigger_reentry(context=context, event=SUCCEEDED)


@pytest.fixture
def provider(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KubernetesPodOperator, "execute", reenters_at_once)
    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", lambda self, context, event: dict(RESULT))


@pytest.mark.usefixtures("provider")
def test_an_immediate_reentry_returns_the_steps_result() -> None:
    task = step_task("commit-predictions", settings=KUBE)
    assert task.execute({"ti": RecordingTaskInstance()}) == RESULT


@pytest.mark.usefixtures("provider")
def test_an_immediate_reentry_publishes_the_summary() -> None:
    ti = RecordingTaskInstance()
    step_task("commit-predictions", settings=KUBE).execute({"ti": ti})
    assert ti.pushed == {"summary": RESULT["summary"]}


def test_a_deferred_reentry_returns_the_steps_result(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(KubernetesPodOperator, "trigger_reentry", lambda self, context, event: dict(RESULT))
    task = step_task("commit-predictions", settings=KUBE)  # a fresh instance, as after a deferral
    assert task.trigger_reentry({"ti": RecordingTaskInstance()}, SUCCEEDED) == RESULT


# --- a retry and the pod an earlier try left ------------------------------------------------------


def pod_of_try(try_number: int, step_state: k8s.V1ContainerState) -> k8s.V1Pod:
    """A pod as the API returns it: the step container in ``step_state``, the XCom sidecar running."""
    running = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())
    return k8s.V1Pod(
        metadata=k8s.V1ObjectMeta(
            name=f"mlsteps-generate-data-{try_number}", labels={"try_number": str(try_number)}
        ),
        status=k8s.V1PodStatus(
            phase="Running",
            container_statuses=[
                k8s.V1ContainerStatus(
                    name="base", state=step_state, image="i", image_id="", ready=False, restart_count=0
                ),
                k8s.V1ContainerStatus(
                    name="airflow-xcom-sidecar",
                    state=running,
                    image="i",
                    image_id="",
                    ready=True,
                    restart_count=0,
                ),
            ],
        ),
    )


ENDED = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=1))
RUNNING = k8s.V1ContainerState(running=k8s.V1ContainerStateRunning())


def test_a_retry_does_not_adopt_the_ended_pod_of_the_try_before() -> None:
    assert ended_in_earlier_try(pod_of_try(1, ENDED), "base", try_number=2)


def test_a_retry_reattaches_to_a_pod_whose_step_still_runs() -> None:
    assert not ended_in_earlier_try(pod_of_try(1, RUNNING), "base", try_number=2)


def test_a_restarted_try_reattaches_to_its_own_ended_pod() -> None:
    assert not ended_in_earlier_try(pod_of_try(2, ENDED), "base", try_number=2)
