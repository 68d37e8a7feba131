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
| `train_on_cpu` / `train_on_gpu` | XGBoost, logged to MLflow and registered as the `challenger` |
| `evaluate` | thresholds, plus challenger vs champion on the same holdout (bootstrap CI) |
| `gate` | skips promotion, visibly, when the evaluation rejects the challenger |
| `promote` | moves the MLflow alias `champion` (check-and-set) and appends to the promotion ledger |

**Trigger with parameters** to train on a GPU (`device`), run an Optuna search, change the window or the
ROC-AUC threshold, and record why you retrained. A rejected challenger is not a failure: the run
succeeds, `promote` is skipped, and `evaluate`'s result says why.

The training window is `[end - training_window_days, end)`, where `end` is the day of the run's
data interval end (or of the trigger time for a run triggered without a logical date).
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.sdk import CronTriggerTimetable, Param, chain, dag, task

from mlsteps.config import load_config
from step_tasks import dag_default_args, step_task, xcom
from step_tasks.templates import END_EXPR

log = logging.getLogger(__name__)
CONFIG = load_config()
TRAIN_TASKS = ["train_on_gpu", "train_on_cpu"]
END = "{{ " + END_EXPR + " | ds }}"
START = "{{ macros.ds_add(" + END_EXPR + " | ds, -params.training_window_days) }}"
# Each pattern ends with `$(?!\n)`: in Python, jsonschema's `$` alone also accepts one trailing newline.
REASON_PATTERN = r"^[A-Za-z0-9 _.,:;()/+=-]*$(?!\n)"


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
        "n_trials": Param(
            CONFIG.model.n_trials,
            type="integer",
            minimum=0,
            maximum=200,
            title="Optuna trials",
            description="Hyper-parameter search trials; 0 trains once with the configured parameters.",
        ),
        "min_roc_auc": Param(
            CONFIG.gates.min_roc_auc,
            type="number",
            minimum=0.5,
            maximum=1.0,
            title="Minimum holdout ROC-AUC",
            description="The challenger is rejected below this ROC-AUC on the holdout.",
        ),
        "training_window_days": Param(
            CONFIG.model.training_window_days,
            type="integer",
            minimum=CONFIG.model.holdout_days + 2,
            maximum=365,
            title="Training window (days)",
            description=f"Days of data before the run date; the last {CONFIG.model.holdout_days} are the holdout.",
        ),
        "ds": Param(
            None,
            type=["null", "string"],
            pattern=r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$(?!\n)",
            title="Drifted day",
            description="Set by ml_drift_monitor when drift triggered this run: the day that drifted.",
        ),
        "drifted_columns": Param(
            [],
            type="array",
            items={"type": "string", "pattern": r"^[A-Za-z_][A-Za-z0-9_]{0,62}$(?!\n)"},
            maxItems=200,
            title="Drifted columns",
            description="Set by ml_drift_monitor: the columns whose drift triggered this run.",
        ),
        "reason": Param(
            "scheduled",
            type="string",
            minLength=1,
            maxLength=200,
            pattern=REASON_PATTERN,
            title="Reason",
            description="Why this run retrains (recorded on the model version and in the promotion ledger). "
            "Letters, digits, spaces and . , : ; ( ) / + = - _ only.",
        ),
    },
)
def ml_training() -> None:
    interval = {"--start": START, "--end": END}
    validate = step_task(
        "validate", options=interval, doc_md="Validate the raw events of the training window."
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
    train_options = {"--training-run": "{{ run_id }}", "--n-trials": "{{ params.n_trials }}"}
    train_on_cpu = step_task("train", task_id="train_on_cpu", options={**train_options, "--device": "cpu"})
    train_on_gpu = step_task(
        "train", task_id="train_on_gpu", options={**train_options, "--device": "cuda"}, profile="gpu"
    )
    evaluate = step_task(
        "evaluate",
        options={
            "--model-version": xcom(TRAIN_TASKS, "model_version"),
            "--training-run": "{{ run_id }}",
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
            "--expected-champion": "{{ (ti.xcom_pull(task_ids='evaluate') or {}).get('champion_version') or 'none' }}",
            "--reason": "{{ params.reason }}",
        },
        doc_md="Move the `champion` alias to the approved challenger (check-and-set) and ledger it.",
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
        return bool(evaluation.get("approved"))

    chain(
        validate,
        build_features,
        materialize,
        build_training_set,
        choose_device(),
        [train_on_cpu, train_on_gpu],
    )
    chain([train_on_cpu, train_on_gpu], evaluate, gate(evaluate.output), promote)


ml_training()
