"""Test DAGs of the Kubernetes fault tests: one step that runs for a while, to act on while its pod runs.

The step is `generate-data` into the pod's own scratch directory (12 days: about a minute on two
busy cores). `k8s_reattach`: the test kills and restarts the triggerer meanwhile. `k8s_timeout`:
the task's `execution_timeout` (and so the pod's `activeDeadlineSeconds`) is far shorter than the
step (120 days, about a minute; 60 days once finished in 25 s on a quiet machine, just before its
30 s timeout; generate-data holds its days in memory, about 2 GB per 100 days).
`k8s_kill`: the test marks the running task (120 days) failed.
"""

from __future__ import annotations

import datetime as dt

from airflow.sdk import dag

from step_tasks import step_task

LONG = {"--lake": "/tmp/lake", "--start": "2001-01-01", "--days": 12, "--rows-per-day": 20000, "--seed": 7}
#: Several times longer: the timed-out and the killed step must still be running when they are stopped.
LONGER = {**LONG, "--days": 120}
#: The timed-out task's limit: shorter than the step, longer than a pod's start.
TIMEOUT = dt.timedelta(seconds=30)


@dag(dag_id="k8s_reattach", doc_md=__doc__, schedule=None, catchup=False, tags=["k8s-test"])
def k8s_reattach() -> None:
    step_task("generate-data", task_id="long_step", options=LONG, retries=0)


@dag(dag_id="k8s_timeout", doc_md=__doc__, schedule=None, catchup=False, tags=["k8s-test"])
def k8s_timeout() -> None:
    step_task("generate-data", task_id="long_step", options=LONGER, retries=0, execution_timeout=TIMEOUT)


@dag(dag_id="k8s_kill", doc_md=__doc__, schedule=None, catchup=False, tags=["k8s-test"])
def k8s_kill() -> None:
    step_task("generate-data", task_id="long_step", options=LONGER, retries=0)


k8s_reattach()
k8s_timeout()
k8s_kill()
