"""Test DAG of the Kubernetes Dask test: the train step with engine dask, in a pod.

The test commits a small training snapshot to the lake and passes its name. The train pod runs as
the chart's dask service account and creates a DaskCluster (the dask-kubernetes operator's) of
model.dask.workers workers in the step namespace, trains with xgboost.dask, registers the version
and deletes the cluster.
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from step_tasks import step_task


@dag(
    dag_id="k8s_dask_training",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    tags=["k8s-test"],
    params={"training_run": Param("", type="string", minLength=1)},
)
def k8s_dask_training() -> None:
    step_task(
        "train",
        options={"--training-run": "{{ params.training_run }}", "--engine": "dask", "--n-trials": 0},
        retries=0,
    )


k8s_dask_training()
