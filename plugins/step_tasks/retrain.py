"""The end of every monitor DAG: pass a ``decide-retrain`` decision on to ``ml_training``, once.

Both monitors (drift and performance) end the same way: a skip with the reasons when there is
nothing to do, else a trigger of ``ml_training`` with the decision's deterministic run id, so a
replayed event can never start a second retrain.
"""

from __future__ import annotations

import logging
from typing import Any, cast

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import BaseOperator, task
from airflow.sdk.exceptions import AirflowSkipException

log = logging.getLogger(__name__)


class TriggerRetraining(TriggerDagRunOperator):
    """``TriggerDagRunOperator`` whose ``run_after`` is a template too.

    Airflow infers a triggered run's data interval from its ``run_after``, not its logical date.
    """

    template_fields = (*TriggerDagRunOperator.template_fields, "run_after")


@task(task_id="retrain_request", multiple_outputs=True)
def retrain_request(decision: dict[str, Any]) -> dict[str, Any]:
    """Pass the trigger on, or skip visibly with the reasons."""
    for reason in decision.get("reasons", []):
        log.info("decide_retrain: %s", reason)
    if not decision.get("trigger"):
        raise AirflowSkipException("no retrain: " + "; ".join(decision.get("reasons", [])))
    return {"run_id": decision["run_id"], "conf": decision["conf"]}


def retrain_trigger(decide: BaseOperator, day_expr: str, what: str) -> tuple[Any, TriggerRetraining]:
    """The request and trigger tasks after ``decide`` (a ``decide-retrain`` step task).

    Args:
        decide: The step task whose result is the decision.
        day_expr: A Jinja expression (no braces) for the decided day, ``YYYY-MM-DD``. The end of
            that day is the retrain's logical date and run_after, so its training window
            ``[end - window, end)`` includes the day, and a late or replayed decision trains on
            the same window.
        what: The monitor, for the trigger's docs (``drift``, ``performance``).
    """
    day_end = "{{ macros.ds_add(" + day_expr + ", 1) }}T00:00:00+00:00"
    request: Any = retrain_request(cast(Any, decide.output))
    trigger = TriggerRetraining(
        task_id="trigger_retraining",
        trigger_dag_id="ml_training",
        trigger_run_id=request["run_id"],
        conf=request["conf"],
        logical_date=day_end,
        run_after=day_end,
        skip_when_already_exists=True,
        wait_for_completion=False,
        doc_md=f"Start `ml_training` for this day (once: the run id is `{what}__<ds>`).",
    )
    return request, trigger
