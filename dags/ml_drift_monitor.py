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

from typing import Any

from airflow.sdk import chain, dag, task
from airflow.sdk.exceptions import AirflowFailException

from mlsteps.contract.config import load_config
from step_tasks import dag_default_args, step_task
from step_tasks.assets import predictions_asset
from step_tasks.params import day_param
from step_tasks.retrain import retrain_trigger

CONFIG = load_config()
PREDICTIONS = predictions_asset(CONFIG.name, CONFIG.model.registered_name)
DAY = "ti.xcom_pull(task_ids='resolve_ds')"
DS = "{{ " + DAY + " }}"


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

    request, trigger_retraining = retrain_trigger(decide, DAY, "drift")
    chain(resolve_ds(), drift, decide, request, trigger_retraining)


ml_drift_monitor()
