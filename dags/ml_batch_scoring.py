"""
# ml_batch_scoring

Scores each day's transactions with the champion model and publishes a Parquet partition
`predictions/<model>/ds=YYYY-MM-DD/` in the lake (S3 in production). The run that starts at
02:00 UTC scores the day before: `ds` is the start of the run's data interval. A run triggered
without a logical date scores the day before the trigger.

| step | what it does |
|---|---|
| `validate` | checks the day's raw events (the label may be absent: it is not known yet) |
| `build_features` | the **same** feature code as training, with the look-back window before `ds` |
| `plan_scoring` | pins `models:/<model>@<alias>` to one concrete version and checks the input matches its signature |
| `shards` | hands each shard its options |
| `score` | one mapped task per shard (one pod each in kubernetes mode); streams batches through the booster |
| `commit_predictions` | publishes the partition with `_SUCCESS.json` (model version, rows, checksums, lineage) once every shard succeeded |
| `publish` | emits the predictions Asset, which starts `ml_drift_monitor` |

A rerun replaces the day's partition atomically: never duplicates, never a half-written day.
Trigger with `alias=challenger` to shadow-score a challenger. Raise `shard_count` to fan out
large days. A task that fails for good sends a `scoring_failed` notification (config
`notifications:`), with the step's `ERROR:` line as its summary.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, chain, dag, task

from mlsteps.contract.config import load_config
from step_tasks import DS, dag_default_args, step_task, xcom
from step_tasks.assets import predictions_asset
from step_tasks.notify import PipelineNotifier
from step_tasks.templates import START_EXPR

CONFIG = load_config()
PREDICTIONS = predictions_asset(CONFIG.name, CONFIG.model.registered_name)
NEXT_DAY = "{{ macros.ds_add(" + START_EXPR + " | ds, 1) }}"


@dag(
    dag_id="ml_batch_scoring",
    doc_md=__doc__,
    schedule=CronDataIntervalTimetable(CONFIG.scoring.schedule, timezone="UTC"),
    catchup=False,
    max_active_runs=3,
    tags=["ml", "scoring", CONFIG.name],
    # Any task failing for good (after its retries) sends `scoring_failed` to the pipeline's channels.
    default_args={**dag_default_args(), "on_failure_callback": PipelineNotifier("scoring_failed")},
    params={
        "alias": Param(
            CONFIG.scoring.alias,
            type="string",
            enum=sorted({CONFIG.scoring.alias, "champion", "challenger"}),
            values_display={"champion": "champion (production)", "challenger": "challenger (shadow scoring)"},
            title="Model alias",
            description="Registered-model alias to score with: 'champion' for production, "
            "'challenger' to shadow-score the latest trained version.",
        ),
        "shard_count": Param(
            1,
            type="integer",
            minimum=1,
            maximum=64,
            title="Shards",
            description="Parallel scoring tasks (pods in kubernetes mode); the day is split by row group.",
        ),
    },
)
def ml_batch_scoring() -> None:
    day = {"--start": DS, "--end": NEXT_DAY}
    validate = step_task(
        "validate", options={**day, "--without-label": True}, doc_md="Validate the day's raw events."
    )
    build_features = step_task(
        "build-features", options=day, doc_md="The training feature code, for one day."
    )
    plan = step_task(
        "plan-scoring",
        options={"--ds": DS, "--alias": "{{ params.alias }}", "--shard-count": "{{ params.shard_count }}"},
        doc_md="Pin the model version once; every shard scores with it.",
    )

    @task(task_id="shards")
    def shards(planned: dict[str, Any]) -> list[list[str]]:
        """The per-shard options planned by `plan_scoring` (one mapped `score` task each)."""
        return list(planned["shards"])

    score = step_task(
        "score",
        options={"--ds": DS, "--defer-commit": True},
        map_over=shards(plan.output),
        doc_md="Score one shard of the day.",
    )
    commit = step_task(
        "commit-predictions",
        options={
            "--ds": DS,
            "--model-version": xcom("plan_scoring", "model_version"),
            "--alias": "{{ params.alias }}",
            "--shard-count": "{{ params.shard_count }}",
        },
        doc_md="Publish the partition once every shard succeeded.",
    )

    @task(task_id="publish", outlets=[PREDICTIONS])
    def publish(committed: dict[str, Any], *, outlet_events: Any = None) -> str:
        """Emit the predictions Asset with the partition's day and location."""
        if outlet_events is not None:
            outlet_events[PREDICTIONS].extra = {
                key: committed.get(key) for key in ("ds", "uri", "rows", "model_version", "positive_rate")
            }
        return str(committed.get("uri"))

    chain(validate, build_features, plan)
    chain(score, commit, publish(commit.output))


ml_batch_scoring()
