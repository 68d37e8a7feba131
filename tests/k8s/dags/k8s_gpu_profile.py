"""
# k8s_gpu_profile

Test DAG of the Kubernetes fault tests: the `gpu` profile on a node without a GPU. The node
selector is left out, as on a node pool labelled for GPUs whose GPUs are all taken, so the
scheduler's reason is the missing resource itself. The pod must fail within the schedule timeout,
naming `nvidia.com/gpu`, and not be retried.
"""

from __future__ import annotations

import dataclasses

from airflow.sdk import dag

from step_tasks import load_settings, step_task

#: Seconds a pod may wait for a node before its task fails.
SCHEDULE_TIMEOUT = 20
SETTINGS = dataclasses.replace(
    load_settings(), gpu_node_selector={}, schedule_timeout_seconds=SCHEDULE_TIMEOUT, retries=2
)


@dag(dag_id="k8s_gpu_profile", doc_md=__doc__, schedule=None, catchup=False, tags=["k8s-test"])
def k8s_gpu_profile() -> None:
    step_task(
        "train",
        task_id="train_on_gpu",
        options={"--training-run": "none", "--device": "cuda"},
        profile="gpu",
        settings=SETTINGS,
    )


k8s_gpu_profile()
