"""Training with ``model.engine: dask`` in kubernetes mode, on the real cluster.

The dask-kubernetes operator is installed from its chart (tests/k8s/dask_operator.py); the module
commits a small training snapshot to the S3 lake, then triggers ``k8s_dask_training``: the train
step's pod, running as the chart's dask service account, creates a DaskCluster of the pipeline's
``model.dask.workers`` workers, trains on it with xgboost.dask, registers the version and deletes
the cluster.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import pytest

from mlsteps.contract.config import load_config
from tests.k8s.airflow_services import ROW_GROUP_ROWS, K8sAirflow, PodRecorder, RecordedPod, wait_until
from tests.k8s.dask_operator import install_operator, operator_logs

pytestmark = [pytest.mark.k8s, pytest.mark.timeout(1800), pytest.mark.usefixtures("step_services_env")]
pytest_plugins = ["tests.k8s.airflow_services"]

CONFIG = load_config()
DAG_ID = "k8s_dask_training"
TRAINING_RUN = "k8s_dask_snapshot"
RUN_TIMEOUT = 900
DASK_LABEL = {"app.kubernetes.io/name": "mlsteps-dask"}


@dataclass
class DaskRun:
    run_id: str
    record: dict[str, Any]
    result: dict[str, Any]
    train_pod: RecordedPod
    dask_pods: list[RecordedPod]


@pytest.fixture(scope="module")
def dask_run(k8s_airflow: K8sAirflow, pod_recorder: PodRecorder) -> DaskRun:
    from tests.steps.training_fixtures import build_snapshot

    install_operator(k8s_airflow.cluster)
    services = k8s_airflow.step_services
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**services.host_env, "ML_PARQUET_ROW_GROUP_ROWS": ROW_GROUP_ROWS}.items():
            patch.setenv(key, value)
        build_snapshot(services.lake, TRAINING_RUN)  # several row groups: every worker reads some
    started = time.monotonic()
    run_id = k8s_airflow.trigger(DAG_ID, {"training_run": TRAINING_RUN})
    record = k8s_airflow.wait_for_run(DAG_ID, run_id, RUN_TIMEOUT)
    print(f"\n{DAG_ID} run {run_id}: {record['state']} in {time.monotonic() - started:.0f} s")
    result = k8s_airflow.xcom(DAG_ID, run_id, "train") if record["state"] == "success" else {}
    if record["state"] != "success":
        print(f"\ndask-kubernetes operator log:\n{operator_logs(k8s_airflow.cluster)}")
    (train_pod,) = pod_recorder.matching(dag_id=DAG_ID)
    return DaskRun(run_id, record, result, train_pod, pod_recorder.matching(**DASK_LABEL))


def test_the_train_task_succeeds(k8s_airflow: K8sAirflow, dask_run: DaskRun) -> None:
    log = k8s_airflow.log(DAG_ID, dask_run.run_id, "train", 1)
    errors = {line[line.index("ERROR: ") :][:300] for line in log.splitlines() if "ERROR: " in line}
    assert dask_run.record["state"] == "success", errors


def test_the_version_is_registered_as_trained_on_the_configured_dask_workers(dask_run: DaskRun) -> None:
    from mlflow import MlflowClient

    from mlsteps.steps.train import ENGINE_TAG, WORKERS_TAG

    version = MlflowClient().get_model_version(CONFIG.model.registered_name, dask_run.result["model_version"])
    assert (version.tags[ENGINE_TAG], version.tags[WORKERS_TAG]) == ("dask", str(CONFIG.model.dask.workers))


def test_every_worker_reports_its_peak_memory_under_its_limit(dask_run: DaskRun) -> None:
    from mlsteps.contract.config import memory_bytes

    metrics = dask_run.result["metrics"]
    peaks = [metrics[f"worker_{i}_peak_rss_mib"] for i in range(CONFIG.model.dask.workers)]
    assert 0 < max(peaks) < memory_bytes(CONFIG.model.dask.memory_limit) / 2**20


def test_the_operator_ran_one_scheduler_and_the_configured_workers_as_pods(dask_run: DaskRun) -> None:
    components = sorted(pod.labels.get("dask.org/component", "") for pod in dask_run.dask_pods)
    assert components == ["scheduler"] + ["worker"] * CONFIG.model.dask.workers


def test_the_cluster_is_gone_once_the_step_ends(k8s_airflow: K8sAirflow, dask_run: DaskRun) -> None:
    cluster, namespace = k8s_airflow.cluster, k8s_airflow.namespace

    def gone() -> bool:
        left = cluster.kubectl_json(
            "get", "daskclusters,pods", "-n", namespace, "-l", "app.kubernetes.io/name=mlsteps-dask"
        )
        return not left["items"]

    wait_until("the DaskCluster and its pods to be deleted", gone, timeout=120)


def test_the_train_pod_runs_as_the_dask_service_account_with_a_token(
    k8s_airflow: K8sAirflow, dask_run: DaskRun
) -> None:
    expected = k8s_airflow.release.values["dask"]["serviceAccount"]["name"]
    spec = dask_run.train_pod.spec
    assert (spec.service_account_name, spec.automount_service_account_token) == (expected, True)


def test_the_dask_pods_run_as_the_plain_step_account_without_a_token(
    k8s_airflow: K8sAirflow, dask_run: DaskRun
) -> None:
    plain = k8s_airflow.release.step_service_account
    accounts = {
        (pod.spec.service_account_name, pod.spec.automount_service_account_token)
        for pod in dask_run.dask_pods
    }
    assert accounts == {(plain, False)}
