"""Kubernetes-mode faults, with real pods built by the real factory (test DAGs in tests/k8s/dags/).

Exit codes (2: no retry; 1: retried), a task timeout and a kill (the pod is deleted), the gpu
profile on a node without a GPU (fails within the schedule timeout, naming the resource), run at
the same time; then durable reattach: the triggerer is killed while a pod runs and started again.
"""

from __future__ import annotations

import datetime as dt
import time
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.k8s.airflow_services import K8sAirflow, PodRecorder, RecordedPod, wait_until

#: The module fixture runs the DAGs (many minutes on two busy cores); it counts against the first test.
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(3600)]
#: The session fixtures `k8s_airflow` and `pod_recorder` (one Airflow for both modules).
pytest_plugins = ["tests.k8s.airflow_services"]

RUN_TIMEOUT = 600
#: The test DAGs' limits (tests/k8s/dags/).
TASK_TIMEOUT_SECONDS = 30
GPU_SCHEDULE_TIMEOUT = 20


@dataclass
class Faults:
    run_ids: dict[str, str] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: Seconds from marking the running task failed to its pod's deletion.
    kill_to_deletion: float | None = None
    #: The reattach run: its pod's name when the triggerer was killed.
    pod_when_killed: str = ""


def _pods(recorder: PodRecorder, dag_id: str, task_id: str = "long_step") -> list[RecordedPod]:
    return recorder.matching(dag_id=dag_id, task_id=task_id)


def _running_pod(recorder: PodRecorder, dag_id: str, timeout: float = 300) -> RecordedPod:
    def running() -> bool:
        return any(pod.running_at and not pod.deleted for pod in _pods(recorder, dag_id))

    wait_until(f"a running pod of {dag_id}", running, timeout)
    return next(pod for pod in _pods(recorder, dag_id) if pod.running_at and not pod.deleted)


@pytest.fixture(scope="module")
def faults(k8s_airflow: K8sAirflow, pod_recorder: PodRecorder) -> Faults:
    """The fault DAGs' runs; the kill and the triggerer restart happen while their pods run."""
    result = Faults()
    for dag_id in ("k8s_exit_codes", "k8s_gpu_profile", "k8s_timeout", "k8s_kill"):
        result.run_ids[dag_id] = k8s_airflow.trigger(dag_id, run_id=f"fault__{dag_id}")
    pod = _running_pod(pod_recorder, "k8s_kill")
    time.sleep(3)  # the step is under way
    k8s_airflow.set_task_state("k8s_kill", result.run_ids["k8s_kill"], "long_step", "failed")
    marked = time.monotonic()
    wait_until("the killed task's pod is deleted", lambda: pod.deleted, timeout=120)
    result.kill_to_deletion = (pod.deleted_at or marked) - marked
    for dag_id in ("k8s_exit_codes", "k8s_gpu_profile", "k8s_timeout", "k8s_kill"):
        result.records[dag_id] = k8s_airflow.wait_for_run(dag_id, result.run_ids[dag_id], RUN_TIMEOUT)

    # Durable reattach, alone: nothing else may be deferred while the triggerer is down.
    result.run_ids["k8s_reattach"] = k8s_airflow.trigger("k8s_reattach", run_id="fault__k8s_reattach")
    k8s_airflow.wait_for_task(
        "k8s_reattach", result.run_ids["k8s_reattach"], "long_step", ("deferred",), timeout=300
    )
    result.pod_when_killed = _running_pod(pod_recorder, "k8s_reattach").name
    k8s_airflow.kill("triggerer")
    time.sleep(5)
    k8s_airflow.start("triggerer")
    result.records["k8s_reattach"] = k8s_airflow.wait_for_run(
        "k8s_reattach", result.run_ids["k8s_reattach"], RUN_TIMEOUT
    )
    return result


def _ti(airflow: K8sAirflow, faults: Faults, dag_id: str, task_id: str) -> dict[str, Any]:
    return airflow.task_instance(dag_id, faults.run_ids[dag_id], task_id)


def _seconds(ti: dict[str, Any]) -> float:
    start, end = (dt.datetime.fromisoformat(ti[key]) for key in ("start_date", "end_date"))
    return (end - start).total_seconds()


# --- exit codes -----------------------------------------------------------------------------------


def test_exit_2_fails_the_task_without_retry(
    k8s_airflow: K8sAirflow, pod_recorder: PodRecorder, faults: Faults
) -> None:
    ti = _ti(k8s_airflow, faults, "k8s_exit_codes", "bad_input")
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    assert [pod.exit_code for pod in _pods(pod_recorder, "k8s_exit_codes", "bad_input")] == [2]


def test_exit_2_failure_names_the_steps_reason(k8s_airflow: K8sAirflow, faults: Faults) -> None:
    log = k8s_airflow.log("k8s_exit_codes", faults.run_ids["k8s_exit_codes"], "bad_input", 1)
    assert "ERROR: validation of transactions" in log
    assert "no data landed" in log


def test_exit_1_is_retried(k8s_airflow: K8sAirflow, pod_recorder: PodRecorder, faults: Faults) -> None:
    ti = _ti(k8s_airflow, faults, "k8s_exit_codes", "crash")
    assert (ti["state"], ti["try_number"]) == ("failed", 2)
    try:  # the pod watch can lag the API on two busy cores
        wait_until("a pod of each try", lambda: len(_pods(pod_recorder, "k8s_exit_codes", "crash")) >= 2, 120)
    except TimeoutError:
        log = k8s_airflow.log("k8s_exit_codes", faults.run_ids["k8s_exit_codes"], "crash", 2)
        pytest.fail("try 2 of crash ran no pod; its log ends:\n" + "\n".join(log.splitlines()[-30:]))
    pods = _pods(pod_recorder, "k8s_exit_codes", "crash")
    assert sorted(pod.labels["try_number"] for pod in pods) == ["1", "2"]
    assert [pod.exit_code for pod in pods] == [1, 1]


# --- timeout and kill ------------------------------------------------------------------------------


def test_timed_out_pod_carries_the_task_timeout_as_its_deadline(
    pod_recorder: PodRecorder, faults: Faults
) -> None:
    [pod] = _pods(pod_recorder, "k8s_timeout")
    assert pod.spec.active_deadline_seconds == TASK_TIMEOUT_SECONDS


def test_timed_out_task_fails_and_its_pod_is_deleted(
    k8s_airflow: K8sAirflow, pod_recorder: PodRecorder, faults: Faults
) -> None:
    ti = _ti(k8s_airflow, faults, "k8s_timeout", "long_step")
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    # The step alone runs for minutes; the worker's start and the DAG parse before and after the
    # deferral take up to a minute each on two busy cores.
    assert _seconds(ti) < TASK_TIMEOUT_SECONDS + 150
    [pod] = _pods(pod_recorder, "k8s_timeout")
    # Deleted by the task's cleanup, which may finish just after the run is marked failed.
    wait_until(f"the timed-out pod {pod.name} is deleted (phases {pod.phases})", lambda: pod.deleted, 120)
    # Stopped by its deadline before the 120-day step could finish. The phase says so; the base
    # container's recorded exit code does not (the watch saw 0 for a pod failed by its deadline).
    assert pod.phases[-1] == "Failed"


def test_killed_task_deletes_its_running_pod(
    k8s_airflow: K8sAirflow, pod_recorder: PodRecorder, faults: Faults
) -> None:
    ti = _ti(k8s_airflow, faults, "k8s_kill", "long_step")
    assert ti["state"] == "failed"
    [pod] = _pods(pod_recorder, "k8s_kill")
    assert pod.deleted
    # Stopped while the step ran: the phase says so. As for the deadline above, the recorded exit
    # code of the base container is not to be trusted (one clean-clone run saw 0 for this pod).
    assert pod.phases[-1] == "Failed"
    assert faults.kill_to_deletion is not None
    assert faults.kill_to_deletion < 60


# --- the gpu profile without a GPU -----------------------------------------------------------------


def test_gpu_task_fails_fast_without_retry(k8s_airflow: K8sAirflow, faults: Faults) -> None:
    ti = _ti(k8s_airflow, faults, "k8s_gpu_profile", "train_on_gpu")
    assert (ti["state"], ti["try_number"]) == ("failed", 1)
    # Not the 600 s start-up timeout: the schedule timeout, plus the worker's start and the DAG
    # parse before and after the deferral (up to a minute each on two busy cores).
    assert _seconds(ti) < GPU_SCHEDULE_TIMEOUT + 180


def test_gpu_failure_names_the_missing_resource(k8s_airflow: K8sAirflow, faults: Faults) -> None:
    log = k8s_airflow.log("k8s_gpu_profile", faults.run_ids["k8s_gpu_profile"], "train_on_gpu", 1)
    assert f"was not scheduled within {GPU_SCHEDULE_TIMEOUT} s" in log
    assert "Insufficient nvidia.com/gpu" in log


def test_unscheduled_gpu_pod_is_deleted(pod_recorder: PodRecorder, faults: Faults) -> None:
    [pod] = _pods(pod_recorder, "k8s_gpu_profile", "train_on_gpu")
    assert pod.phases == ["Pending"]
    assert pod.deleted


# --- durable reattach ------------------------------------------------------------------------------


def test_reattached_task_succeeds_on_its_first_try(k8s_airflow: K8sAirflow, faults: Faults) -> None:
    ti = _ti(k8s_airflow, faults, "k8s_reattach", "long_step")
    assert (ti["state"], ti["try_number"]) == ("success", 1)


def test_reattach_keeps_the_same_pod(pod_recorder: PodRecorder, faults: Faults) -> None:
    pods = _pods(pod_recorder, "k8s_reattach")
    assert [pod.name for pod in pods] == [faults.pod_when_killed]
    assert pods[0].exit_code == 0
    # Deleted as the task ends; the watch hears of it moments later.
    wait_until("the reattached task's pod is deleted", lambda: pods[0].deleted, timeout=60)


def test_reattached_task_has_the_pods_result(k8s_airflow: K8sAirflow, faults: Faults) -> None:
    run_id = faults.run_ids["k8s_reattach"]
    result = k8s_airflow.xcom("k8s_reattach", run_id, "long_step")
    assert k8s_airflow.xcom("k8s_reattach", run_id, "long_step", key="pod_name") == faults.pod_when_killed
    # The step's own last line, read from the pod's log, is the result's summary.
    log = k8s_airflow.log("k8s_reattach", run_id, "long_step", 1)
    assert f"generate-data: {result['summary']}" in log
    assert len(result["days"]) == 12
