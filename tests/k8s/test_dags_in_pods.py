"""The project's DAGs end to end with every step in a pod on the real cluster.

Airflow runs outside the cluster in kubernetes mode (tests/k8s/airflow_services.py). The module
triggers, through the REST API: ``ml_training`` for the day before yesterday's end (cpu profile,
with human approval: the test approves through the REST API, then ``promote`` runs in its pod),
``ml_batch_scoring`` with no logical date (it scores yesterday, a drifted day, in two mapped shards),
then ``ml_drift_monitor`` for yesterday, which asks ``ml_training`` for a retrain. ``ml_training`` is
paused by then, so the requested retrain stays queued; its request is what is checked.
"""

from __future__ import annotations

import datetime as dt
import time
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from mlsteps.contract.config import load_config
from tests.k8s.airflow_services import K8sAirflow, PodRecorder, generate_raw_data, wait_until, yesterday
from tests.support import hitl

#: The module fixture runs the DAGs (many minutes on two busy cores); it counts against the first test.
pytestmark = [pytest.mark.k8s, pytest.mark.timeout(3600), pytest.mark.usefixtures("step_services_env")]
#: The session fixtures `k8s_airflow` and `pod_recorder` (one Airflow for both modules).
pytest_plugins = ["tests.k8s.airflow_services"]

CONFIG = load_config()
MODEL = CONFIG.model.registered_name
WINDOW_DAYS = 8
#: Days of raw events before the training window: the features' 30-day look-back, and a margin.
LOOK_BACK_DAYS = 30
TRAINING_CONF = {
    "training_window_days": WINDOW_DAYS,
    "min_roc_auc": 0.6,
    "reason": "k8s end to end",
    "require_approval": True,
}
APPROVAL_COMMENT = "approved in the k8s test"
TRAINING_STEPS = {
    "validate",
    "build_features",
    "materialize",
    "build_training_set",
    "train_on_cpu",
    "evaluate",
}
SCORING_STEPS = {"validate", "build_features", "plan_scoring", "commit_predictions"}
RUN_TIMEOUT = 1200


@dataclass
class Runs:
    """The module's DAG runs: run ids, how long each took, and the day they are about."""

    day: dt.date
    run_ids: dict[str, str] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    records: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: The approval task's answer (the REST API's HITL detail).
    approval: dict[str, Any] = field(default_factory=dict)

    @property
    def window_start(self) -> dt.date:
        return self.day - dt.timedelta(days=WINDOW_DAYS)


@pytest.fixture(scope="module")
def runs(k8s_airflow: K8sAirflow, pod_recorder: PodRecorder) -> Runs:
    """Raw data up to a drifted yesterday, then the three DAG runs one after the other."""
    result = Runs(day=yesterday())
    first = result.window_start - dt.timedelta(days=LOOK_BACK_DAYS)
    services = k8s_airflow.step_services
    generate_raw_data(
        services, "--start", first.isoformat(), "--days", str(LOOK_BACK_DAYS), "--rows-per-day", "500",
        "--customers", "300",
    )  # fmt: skip
    # The window and the scored day with enough rows for a few positives in every split.
    generate_raw_data(
        services, "--start", result.window_start.isoformat(), "--days", str(WINDOW_DAYS + 1),
        "--rows-per-day", "2000", "--customers", "300", "--drift-from", result.day.isoformat(),
    )  # fmt: skip
    logical = f"{result.day.isoformat()}T03:00:00+00:00"
    _run(k8s_airflow, result, "ml_training", TRAINING_CONF, logical_date=logical, approve=True)
    k8s_airflow.set_paused("ml_training", True)  # the retrain the monitor asks for stays queued
    _run(k8s_airflow, result, "ml_batch_scoring", {"shard_count": 2}, logical_date=None)
    _run(k8s_airflow, result, "ml_drift_monitor", {"ds": result.day.isoformat()}, logical_date=None)
    return result


def _run(
    airflow: K8sAirflow,
    runs: Runs,
    dag_id: str,
    conf: dict[str, Any],
    logical_date: str | None,
    approve: bool = False,
) -> None:
    started = time.monotonic()
    run_id = airflow.trigger(dag_id, conf, logical_date=logical_date)
    runs.run_ids[dag_id] = run_id
    if approve:
        hitl.wait_for_input(airflow.services, dag_id, run_id, "approval", RUN_TIMEOUT)
        runs.approval = hitl.answer(airflow.services, dag_id, run_id, "approval", "Approve", APPROVAL_COMMENT)
    runs.records[dag_id] = airflow.wait_for_run(dag_id, run_id, RUN_TIMEOUT)
    runs.seconds[dag_id] = time.monotonic() - started
    print(f"\n{dag_id} run {run_id}: {runs.records[dag_id]['state']} in {runs.seconds[dag_id]:.0f} s")


def _xcom(airflow: K8sAirflow, runs: Runs, dag_id: str, task_id: str, key: str = "return_value") -> Any:
    return airflow.xcom(dag_id, runs.run_ids[dag_id], task_id, key)


def test_training_run_succeeds_on_the_cpu_profile(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    states = k8s_airflow.task_states("ml_training", runs.run_ids["ml_training"])
    assert runs.records["ml_training"]["state"] == "success", states
    assert states["train_on_cpu"] == "success"
    assert states["train_on_gpu"] == "skipped"
    assert states["promote"] == "success"


def test_approved_promotion_records_the_approver_in_the_ledger(runs: Runs) -> None:
    from mlsteps.platform.lake import Lake
    from mlsteps.platform.ledger import read_ledger

    (entry,) = read_ledger(Lake(), MODEL)
    assert entry["approval"]["comment"] == APPROVAL_COMMENT
    assert entry["approval"]["by"] == runs.approval["responded_by"]["name"]


def test_each_training_step_ran_in_its_own_pod_and_exited_0(pod_recorder: PodRecorder, runs: Runs) -> None:
    pods = pod_recorder.matching(dag_id="ml_training")
    by_task = {pod.labels["task_id"]: pod for pod in pods}
    assert set(by_task) == TRAINING_STEPS | {"promote"}
    assert len(pods) == len(by_task)  # no step needed a second pod
    assert {task: pod.exit_code for task, pod in by_task.items()} == dict.fromkeys(by_task, 0)


def test_champion_is_the_version_trained_in_the_pod(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    from mlflow import MlflowClient

    trained = _xcom(k8s_airflow, runs, "ml_training", "train_on_cpu")["model_version"]
    champion = MlflowClient().get_model_version_by_alias(MODEL, "champion")
    assert str(champion.version) == str(trained)


def test_scoring_run_has_no_logical_date_and_scores_yesterday(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    record = runs.records["ml_batch_scoring"]
    assert record["state"] == "success", k8s_airflow.task_states("ml_batch_scoring", record["dag_run_id"])
    assert record["logical_date"] is None
    assert _xcom(k8s_airflow, runs, "ml_batch_scoring", "commit_predictions")["ds"] == runs.day.isoformat()


def test_scoring_ran_two_mapped_shards_in_two_pods(
    k8s_airflow: K8sAirflow, pod_recorder: PodRecorder, runs: Runs
) -> None:
    states = k8s_airflow.task_states("ml_batch_scoring", runs.run_ids["ml_batch_scoring"])
    assert states["score[0]"] == states["score[1]"] == "success"
    shards = pod_recorder.matching(dag_id="ml_batch_scoring", task_id="score")
    assert sorted(pod.labels.get("map_index", "") for pod in shards) == ["0", "1"]
    assert [pod.exit_code for pod in shards] == [0, 0]


def test_predictions_partition_is_committed_with_the_champion(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    from mlflow import MlflowClient

    from mlsteps.contract.layout import predictions_prefix
    from mlsteps.platform.lake import Lake

    manifest = Lake().manifest(predictions_prefix(CONFIG.model.registered_name, runs.day))
    assert manifest is not None, "no _SUCCESS.json for the scored day"
    plan = _xcom(k8s_airflow, runs, "ml_batch_scoring", "plan_scoring")
    assert str(manifest["model_version"]) == str(plan["model_version"])
    assert str(manifest["model_version"]) == str(
        MlflowClient().get_model_version_by_alias(MODEL, "champion").version
    )
    assert manifest["rows_out"] == manifest["rows_in"] > 0
    assert manifest["dag_run_id"] == runs.run_ids["ml_batch_scoring"]


def test_reports_are_in_the_lake(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    from mlsteps.platform.lake import Lake

    lake = Lake()
    root = lake.uri.rstrip("/") + "/"
    evaluation = _xcom(k8s_airflow, runs, "ml_training", "evaluate")["report_html"]
    drift = _xcom(k8s_airflow, runs, "ml_drift_monitor", "drift")["report_html"]
    expected = [
        f"reports/validation/ds={runs.window_start.isoformat()}/training/report.html",
        evaluation.removeprefix(root),
        drift.removeprefix(root),
    ]
    assert [path for path in expected if not lake.exists(path)] == []


def test_drifted_day_asks_for_one_retrain(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    assert runs.records["ml_drift_monitor"]["state"] == "success"
    states = k8s_airflow.task_states("ml_drift_monitor", runs.run_ids["ml_drift_monitor"])
    assert states["trigger_retraining"] == "success", states
    retrain = k8s_airflow.run("ml_training", f"drift__{runs.day.isoformat()}")
    assert retrain["conf"]["reason"] == "drift"
    assert retrain["conf"]["ds"] == runs.day.isoformat()
    assert retrain["conf"]["drifted_columns"]


def test_every_step_task_has_its_summary_xcom(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    step_tasks = {
        "ml_training": TRAINING_STEPS | {"promote"},
        "ml_batch_scoring": SCORING_STEPS,
        "ml_drift_monitor": {"drift", "decide_retrain"},
    }
    missing = []
    for dag_id, task_ids in step_tasks.items():
        for task_id in sorted(task_ids):
            result = _xcom(k8s_airflow, runs, dag_id, task_id)
            summary = _xcom(k8s_airflow, runs, dag_id, task_id, key="summary")
            if not result.get("summary") or summary != result["summary"]:
                missing.append(f"{dag_id}.{task_id}: {summary!r}")
    assert missing == []


def test_train_task_links_to_its_mlflow_run_and_model_version(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    links = k8s_airflow.links("ml_training", runs.run_ids["ml_training"], "train_on_cpu")
    tracking = k8s_airflow.step_services.tracking_uri
    result = _xcom(k8s_airflow, runs, "ml_training", "train_on_cpu")
    assert links["MLflow run"].startswith(tracking)
    assert result["mlflow_run_id"] in links["MLflow run"]
    assert links["Model version"].startswith(tracking)
    assert links["Model version"].endswith(f"/{result['model_version']}")


def test_evaluate_report_link_opens_from_the_api_server(k8s_airflow: K8sAirflow, runs: Runs) -> None:
    link = k8s_airflow.links("ml_training", runs.run_ids["ml_training"], "evaluate")["Report"]
    with urllib.request.urlopen(f"{k8s_airflow.url}{link}", timeout=60) as response:
        body = response.read().decode(errors="replace")
    assert response.status == 200
    assert "<html" in body.lower()


def test_every_pod_is_deleted_at_the_end(
    k8s_airflow: K8sAirflow, pod_recorder: PodRecorder, runs: Runs
) -> None:
    # Every pod the factory builds carries this label (other tests' probe pods do not).
    factory_pods = {"app.kubernetes.io/name": "mlsteps"}
    wait_until("no step pod is left", lambda: not k8s_airflow.pods(**factory_pods), timeout=120)
    ours = [pod for pod in pod_recorder.pods.values() if pod.labels.get("dag_id", "").startswith("ml_")]
    assert len(ours) >= len(TRAINING_STEPS) + 1 + len(SCORING_STEPS) + 2 + 2
    assert [pod.name for pod in ours if not pod.deleted] == []
