"""
# ml_training

Retrains the model on a schedule (cron from the pipeline config, weekly by default) or on demand,
and promotes it only if it passes the evaluation gate.

| step | what it does |
|---|---|
| `validate` | checks the raw events of the training window (schema, nulls, ranges, categories, duplicates, volume, freshness) |
| `build_features` | computes the feature table for the window (Feast's offline source) |
| `materialize` | loads exactly that window into the Feast online store |
| `build_training_set` | point-in-time join, then a time split: the holdout is the latest days and is never trained on |
| `train_on_cpu` / `train_on_gpu` | XGBoost, logged to MLflow and registered as the `challenger`; a drift retrain's `ds` and `drifted_columns` become its `mlsteps.retrain.*` tags (and, once promoted, the ledger entry's `retrain`) |
| `evaluate` | thresholds, plus challenger vs champion on the same holdout (bootstrap CI) |
| `gate` | skips promotion, visibly, when the evaluation rejects the challenger |
| `approval_wanted` | skips `approval`, visibly, when this run needs no human approval (`require_approval` off) |
| `approval` | asks a person in the UI (*Required actions*): Approve or Reject, with a comment |
| `promote` | moves the MLflow alias `champion` (check-and-set) and appends to the promotion ledger |
| `record_rejection` | records a rejected (or unanswered) approval beside the ledger; nothing is promoted |

**Trigger with parameters** to train on a GPU (`device`) or on a Dask cluster (`engine`), run an Optuna search, change the window or the
ROC-AUC threshold, and record why you retrained. A rejected challenger is not a failure: the run
succeeds, `promote` is skipped, and `evaluate`'s result says why.

**Approval.** With `gates.require_approval: true` in the pipeline config, or the `require_approval`
parameter ticked for one run, a challenger the gate approved waits in `approval` (state
*awaiting input*) for a person. The form shows the evaluation summary, champion and challenger
metrics, why the run retrained, and the report link. *Approve* runs `promote`, which records who,
when and the comment in the ledger entry and as `mlsteps.approval.*` tags on the version. *Reject*
runs `record_rejection` instead: nothing is promoted and the run succeeds. No answer within
`gates.approval_timeout_hours` takes `gates.approval_on_timeout` (reject by default), recorded the
same way. `promote`'s check-and-set still applies: if the champion changed while the approval
waited, promotion is refused.

**Notifications** (config `notifications:`) go out when the gate rejects, an approval is asked,
approved or rejected, a champion is promoted, a drift-triggered retrain starts, or validation fails.

**Step caching.** `validate`, `build_features`, `build_training_set`, the train task and `evaluate`
reuse an earlier successful run's outputs when their inputs (data, code, config, options) are
unchanged: their summary then starts with `cached from run ...`. Tick `force` to run them all again.
`materialize`, `promote` and `record_rejection` always run.

The training window is `[end - training_window_days, end)`, where `end` is the day of the run's
data interval end (or of the trigger time for a run triggered without a logical date).
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any, cast

from airflow.sdk import CronTriggerTimetable, Param, chain, dag, get_current_context, task

from mlsteps.contract.config import GatesConfig, ModelConfig, load_config
from step_tasks import dag_default_args, step_task, xcom
from step_tasks.approval import DECISION_KEY, PromotionApproval
from step_tasks.notify import PipelineNotifier, notify_event
from step_tasks.params import config_param, day_param, force_param, reason_param
from step_tasks.templates import END_EXPR

log = logging.getLogger(__name__)
CONFIG = load_config()
TRAIN_TASKS = ["train_on_gpu", "train_on_cpu"]
END = "{{ " + END_EXPR + " | ds }}"
START = "{{ macros.ds_add(" + END_EXPR + " | ds, -params.training_window_days) }}"


def decision(field: str, filters: str = "") -> str:
    """A field of the approval's decision (``""`` when no approval ran): one argv element."""
    pulled = f"ti.xcom_pull(task_ids='approval', key='{DECISION_KEY}')"
    return "{{ ((" + pulled + " or {}).get('" + field + "', '')" + filters + ") }}"


def drift_triggered(context: Any) -> bool:
    """The run was triggered by the drift monitor (it passes the drifted day)."""
    return bool((context.get("params") or {}).get("ds"))


@dag(
    dag_id="ml_training",
    doc_md=__doc__,
    schedule=CronTriggerTimetable(CONFIG.training.schedule, timezone="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["ml", "training", CONFIG.name],
    default_args=dag_default_args(),
    params={
        "device": Param(
            "cpu",
            type="string",
            enum=["cpu", "cuda"],
            values_display={"cpu": "CPU (profile cpu)", "cuda": "NVIDIA GPU (profile gpu)"},
            title="Training device",
            description="Where XGBoost trains. cuda runs the train step on the gpu profile (a GPU node in "
            "kubernetes mode) and fails rather than fall back to CPU if no GPU is usable.",
        ),
        "engine": config_param(
            CONFIG.model.engine,
            ModelConfig,
            "engine",
            enum=["single", "dask"],
            title="Training engine",
            description=f"single: XGBoost in the train task's own process; dask: xgboost.dask on a Dask cluster "
            f"of {CONFIG.model.dask.workers} workers (model.dask), made for the task and closed after: local "
            "worker processes, or in kubernetes mode a DaskCluster of the dask-kubernetes operator. The "
            "default comes from model.engine.",
        ),
        "n_trials": config_param(
            CONFIG.model.n_trials,
            ModelConfig,
            "n_trials",
            title="Optuna trials",
            description="Hyper-parameter search trials; 0 trains once with the configured parameters.",
        ),
        "min_roc_auc": config_param(
            CONFIG.gates.min_roc_auc,
            GatesConfig,
            "min_roc_auc",
            title="Minimum holdout ROC-AUC",
            description="The challenger is rejected below this ROC-AUC on the holdout.",
        ),
        "training_window_days": config_param(
            CONFIG.model.training_window_days,
            ModelConfig,
            "training_window_days",
            minimum=CONFIG.model.holdout_days + 1,  # the config's own rule: longer than the holdout
            title="Training window (days)",
            description=f"Days of data before the run date; the last {CONFIG.model.holdout_days} are the holdout.",
        ),
        "ds": day_param(
            "Drifted day", "Set by ml_drift_monitor when drift triggered this run: the day that drifted."
        ),
        "drifted_columns": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,62}$(?!\n)"},
            maxItems=200,
            title="Drifted columns",
            description="Set by ml_drift_monitor: the columns whose drift triggered this run.",
        ),
        "reason": reason_param(
            "scheduled", "Why this run retrains (recorded on the model version and in the promotion ledger)."
        ),
        "require_approval": Param(
            CONFIG.gates.require_approval,
            type="boolean",
            title="Require human approval",
            description="Ask a person (the approval task's form) before promoting an approved challenger. "
            "The default comes from the pipeline config (gates.require_approval).",
        ),
        "force": force_param(),
    },
)
def ml_training() -> None:
    interval = {"--start": START, "--end": END}
    validate = step_task(
        "validate",
        options=interval,
        doc_md="Validate the raw events of the training window.",
        on_execute_callback=PipelineNotifier("retrain_triggered", when=drift_triggered),
        on_failure_callback=PipelineNotifier("validation_failed"),
    )
    build_features = step_task("build-features", options=interval, doc_md="Compute features for the window.")
    materialize = step_task("materialize", options=interval, doc_md="Load the window into the online store.")
    build_training_set = step_task(
        "build-training-set",
        options={
            "--end": END,
            "--window-days": "{{ params.training_window_days }}",
            "--training-run": "{{ run_id }}",
        },
        doc_md="Point-in-time join and time split into `training/<run>/`.",
    )
    train_options = {
        # The snapshot build_training_set made, or reused from an earlier run (step caching).
        "--training-run": xcom("build_training_set", "training_run"),
        "--n-trials": "{{ params.n_trials }}",
        "--engine": "{{ params.engine }}",
        # A drift retrain's day and columns, recorded on the model version (empty on other runs).
        "--retrain-ds": "{{ params.ds or '' }}",
        "--drifted-columns": "{{ (params.drifted_columns or []) | join(',') }}",
    }
    train_on_cpu = step_task("train", task_id="train_on_cpu", options={**train_options, "--device": "cpu"})
    train_on_gpu = step_task(
        "train", task_id="train_on_gpu", options={**train_options, "--device": "cuda"}, profile="gpu"
    )
    evaluate = step_task(
        "evaluate",
        options={
            "--model-version": xcom(TRAIN_TASKS, "model_version", step="train"),
            "--training-run": xcom(TRAIN_TASKS, "training_run", step="train"),
            "--min-roc-auc": "{{ params.min_roc_auc }}",
            "--ds": END,
        },
        trigger_rule="none_failed_min_one_success",
        doc_md="Gate the challenger: thresholds and champion vs challenger on the same holdout.",
    )
    promote = step_task(
        "promote",
        options={
            "--model-version": xcom("evaluate", "model_version"),
            "--expected-champion": xcom("evaluate", "champion_version", default="none"),
            "--reason": "{{ params.reason }}",
            "--approved-by": decision("by"),
            "--approved-at": decision("at"),
            "--approval-comment": decision("comment"),
        },
        trigger_rule="none_failed_min_one_success",
        doc_md="Move the `champion` alias to the approved challenger (check-and-set) and ledger it.",
        on_success_callback=PipelineNotifier("promoted"),
    )
    record_rejection = step_task(
        "record-decision",
        task_id="record_rejection",
        options={
            "--model-version": xcom("evaluate", "model_version"),
            "--decision": "rejected",
            "--decided-by": decision("by"),
            "--decided-at": decision("at"),
            "--comment": decision("comment"),
            "--timed-out": decision("timed_out", " | string | lower"),
            "--reason": "{{ params.reason }}",
        },
        doc_md="Record the rejected promotion (who, when, why) beside the ledger; nothing is promoted.",
    )
    approval = PromotionApproval(
        task_id="approval",
        promote_task="promote",
        reject_task="record_rejection",
        evaluate_task="evaluate",
        response_timeout=dt.timedelta(hours=CONFIG.gates.approval_timeout_hours),
        on_timeout=CONFIG.gates.approval_on_timeout,
        doc_md="Approve or reject promoting the challenger (the task's Required actions).",
    )

    @task.branch(task_id="choose_device")
    def choose_device(params: dict[str, Any] | None = None) -> str:
        """Send training to the GPU profile when the `device` parameter is `cuda`."""
        return "train_on_gpu" if params and params.get("device") == "cuda" else "train_on_cpu"

    @task.short_circuit(task_id="gate", ignore_downstream_trigger_rules=True)
    def gate(evaluation: dict[str, Any]) -> bool:
        """Let promotion run only for an approved challenger; log why otherwise."""
        for reason in evaluation.get("reasons", []):
            log.info("gate: %s", reason)
        if not evaluation.get("approved"):
            notify_event("gate_rejected", get_current_context(), result=evaluation)
        return bool(evaluation.get("approved"))

    @task.short_circuit(task_id="approval_wanted", ignore_downstream_trigger_rules=False)
    def approval_wanted(params: dict[str, Any] | None = None) -> bool:
        """Skip the approval (and only it) when this run needs none; promote then runs directly."""
        wanted = bool((params or {}).get("require_approval"))
        log.info("approval_wanted: human approval is %s for this run", "on" if wanted else "off")
        return wanted

    chain(
        validate,
        build_features,
        materialize,
        build_training_set,
        choose_device(),
        [train_on_cpu, train_on_gpu],
    )
    checked = gate(cast(dict[str, Any], evaluate.output))
    chain([train_on_cpu, train_on_gpu], evaluate, checked, promote)
    chain(checked, approval_wanted(), approval, [promote, record_rejection])


ml_training()
