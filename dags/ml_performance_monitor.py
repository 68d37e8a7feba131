"""
# ml_performance_monitor

Judges the model on delayed labels, and is the second trigger of retraining (after drift). Each
run judges the scored day whose labels are due: `performance.label_delay_days` before the run's
day (a run triggered without a logical date: before the day before the trigger), or the `ds`
parameter.

| step | what it does |
|---|---|
| `monitor_performance` | joins the day's committed predictions with the labels known so far (by row id), computes realized ROC-AUC, PR-AUC, log loss, expected calibration error, base rate and flagged rate with bootstrap intervals, and compares the judged metric with the level the scoring version reached at evaluation; a day with too few labels is *waiting for labels*, not a failure |
| `publish` | emits the performance Asset with the day's status and verdict |
| `decide_retrain` | retrain only if **all three** hold: a significant drop (`performance.consecutive_days` judged days in a row beyond `performance.tolerance`), the cooldown since the last monitor retrain has passed, and the weekly retrain budget is not spent (shared with the drift monitor) |
| `retrain_request` | skipped, with the reason in its log, when there is nothing to do |
| `trigger_retraining` | triggers `ml_training` with conf `{reason: "performance", ds}` and the run id `performance__<ds>` |

Records land in `monitoring/<model>/performance/ds=YYYY-MM-DD.json`, reports in
`reports/performance/ds=YYYY-MM-DD/` and in the MLflow monitoring experiment.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, chain, dag, task

from mlsteps.contract.config import load_config
from step_tasks import dag_default_args, step_task
from step_tasks.assets import performance_asset
from step_tasks.params import day_param
from step_tasks.retrain import retrain_trigger
from step_tasks.templates import START_EXPR

CONFIG = load_config()
PERFORMANCE = performance_asset(CONFIG.name, CONFIG.model.registered_name)
#: The judged day: the `ds` parameter, else the run's day less the label delay.
DAY = f"(params.ds or macros.ds_add({START_EXPR} | ds, -{CONFIG.performance.label_delay_days}))"
DS = "{{ " + DAY + " }}"


@dag(
    dag_id="ml_performance_monitor",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable(CONFIG.performance.schedule, timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ml", "monitoring", CONFIG.name],
    default_args=dag_default_args(),
    params={
        "ds": day_param(
            "Day to judge",
            "YYYY-MM-DD of a scored day whose labels are in. Leave empty to judge the day whose labels are due.",
        ),
    },
)
def ml_performance_monitor() -> None:
    monitor = step_task(
        "monitor-performance",
        options={"--ds": DS},
        doc_md="Realized performance on the labels known so far, against the evaluation level.",
    )

    @task(task_id="publish", outlets=[PERFORMANCE])
    def publish(judged: dict[str, Any], *, outlet_events: Any = None) -> str:
        """Emit the performance Asset with the day's status and verdict."""
        if outlet_events is not None:
            outlet_events[PERFORMANCE].extra = {
                key: judged.get(key) for key in ("ds", "model_version", "status", "significant")
            }
        return str(judged.get("status"))

    decide = step_task(
        "decide-retrain",
        options={"--ds": DS, "--reason": "performance"},
        doc_md="Significant drop, cooldown and weekly budget.",
    )
    request, trigger_retraining = retrain_trigger(decide, DAY, "performance")
    chain(monitor, publish(monitor.output), decide, request, trigger_retraining)


ml_performance_monitor()
