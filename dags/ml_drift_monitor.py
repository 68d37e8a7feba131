"""
# ml_drift_monitor

Runs whenever `ml_batch_scoring` publishes a predictions partition (the predictions Asset), and
closes the loop from monitoring to retraining.

| step | what it does |
|---|---|
| `resolve_ds` | the day to check: the `ds` parameter, else the `ds` of the predictions event that started the run |
| `drift` | Evidently per-column drift tests (by type) of the day's features and scores against the champion's reference sample; fails clearly if the day's `_SUCCESS.json` marker is missing |
| `decide_retrain` | retrain only if **all three** hold: the verdict is drift, the cooldown since the last drift retrain has passed, and the weekly retrain budget is not spent |
| `retrain_request` | skipped, with the reason in its log, when there is nothing to do |
| `trigger_retraining` | triggers `ml_training` with conf `{reason: "drift", ds, drifted_columns}` and the run id `drift__<ds>` |

The run id is the same for the same day, so a replayed or duplicated predictions event can never
start a second retrain. Reports land in `reports/drift/ds=YYYY-MM-DD/` and in the MLflow
monitoring experiment.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import chain, dag, task
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from mlsteps.contract.config import load_config
from step_tasks import dag_default_args, step_task
from step_tasks.assets import predictions_asset
from step_tasks.params import day_param

log = logging.getLogger(__name__)
CONFIG = load_config()
PREDICTIONS = predictions_asset(CONFIG.name, CONFIG.model.registered_name)
DS = "{{ ti.xcom_pull(task_ids='resolve_ds') }}"


class TriggerRetraining(TriggerDagRunOperator):
    """``TriggerDagRunOperator`` whose ``run_after`` is a template too.

    Airflow infers a triggered run's data interval from its ``run_after``, not its logical date.
    """

    template_fields = (*TriggerDagRunOperator.template_fields, "run_after")


#: The end of the checked day: the retrain's logical date and run_after, so its training window
#: ([end - window, end)) includes that day, and a late or replayed check trains on the same window.
DAY_END = "{{ macros.ds_add(ti.xcom_pull(task_ids='resolve_ds'), 1) }}T00:00:00+00:00"


@dag(
    dag_id="ml_drift_monitor",
    doc_md=__doc__,
    schedule=[PREDICTIONS],
    catchup=False,
    max_active_runs=1,
    tags=["ml", "monitoring", CONFIG.name],
    default_args=dag_default_args(),
    params={
        "ds": day_param(
            "Day to check", "YYYY-MM-DD of a scored day. Leave empty when a predictions event starts the run."
        ),
    },
)
def ml_drift_monitor() -> None:
    @task(task_id="resolve_ds")
    def resolve_ds(params: dict[str, Any] | None = None, triggering_asset_events: Any = None) -> str:
        """The scored day: the `ds` parameter, else the newest predictions event's `ds`."""
        if params and params.get("ds"):
            return str(params["ds"])
        events = list(triggering_asset_events[PREDICTIONS]) if triggering_asset_events else []
        for event in reversed(events):
            if (event.extra or {}).get("ds"):
                return str(event.extra["ds"])
        raise AirflowFailException(
            "no day to check: trigger with the `ds` parameter, or let ml_batch_scoring's predictions event start the run"
        )

    drift = step_task(
        "drift", options={"--ds": DS}, doc_md="Per-column drift against the champion's reference."
    )
    decide = step_task(
        "decide-retrain", options={"--ds": DS}, doc_md="Drift verdict, cooldown and weekly budget."
    )

    @task(task_id="retrain_request", multiple_outputs=True)
    def retrain_request(decision: dict[str, Any]) -> dict[str, Any]:
        """Pass the trigger on, or skip visibly with the reasons."""
        for reason in decision.get("reasons", []):
            log.info("decide_retrain: %s", reason)
        if not decision.get("trigger"):
            raise AirflowSkipException("no retrain: " + "; ".join(decision.get("reasons", [])))
        return {"run_id": decision["run_id"], "conf": decision["conf"]}

    request = retrain_request(decide.output)
    trigger_retraining = TriggerRetraining(
        task_id="trigger_retraining",
        trigger_dag_id="ml_training",
        trigger_run_id=request["run_id"],
        conf=request["conf"],
        logical_date=DAY_END,
        run_after=DAY_END,
        skip_when_already_exists=True,
        wait_for_completion=False,
        doc_md="Start `ml_training` for this drifted day (once: the run id is `drift__<ds>`).",
    )
    chain(resolve_ds(), drift, decide, request, trigger_retraining)


ml_drift_monitor()
