"""Test DAG of the Kubernetes Dask test: the train step with engine dask in a pod, then reproduce.

The test commits a training snapshot, built from raw data by the pipeline's own steps, to the lake
and passes its name. The train pod runs as the chart's dask service account and creates a
DaskCluster (the dask-kubernetes operator's) of model.dask.workers workers in the step namespace,
trains with xgboost.dask, registers the version and deletes the cluster. The reproduce pod then
rebuilds that version from its records, retraining it on a fresh DaskCluster of the recorded
worker count, and reports the verdict.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from step_tasks import step_task, xcom


@dag(
    dag_id="k8s_dask_training",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["k8s-test"],
    params={"training_run": Param("", type="string", minLength=1)},
)
def k8s_dask_training() -> None:
    train = step_task(
        "train",
        options={"--training-run": "{{ params.training_run }}", "--engine": "dask", "--n-trials": 0},
        retries=0,
    )
    reproduce = step_task("reproduce", options={"--model-version": xcom("train", "model_version")}, retries=0)
    train >> reproduce


k8s_dask_training()
