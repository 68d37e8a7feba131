"""
# ml_batch_scoring

Scores each day's events with the champion model and publishes a Parquet partition
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
| `shadow_enabled` | skips the shadow branch, visibly, when the `shadow` Param is off (the default: `scoring.shadow`) |
| `plan_shadow` | pins the latest challenger (approved but not promoted, or rejected); none apart from the champion plans no shards, and the branch skips |
| `shadow_shards`, `score_shadow`, `commit_shadow` | the same scoring and atomic commit, into `shadow/predictions/<model>/ds=YYYY-MM-DD/` |
| `compare_shadow` | champion vs shadow on the same rows: score correlation, decision agreement, flagged rates; HTML report |

A rerun replaces the day's partition atomically: never duplicates, never a half-written day.
`validate` and `build_features` reuse an earlier run's outputs when the day's raw data, code and
config are unchanged (step caching; their summary says `cached from run ...`); tick `force` to run
them again. Scoring itself always runs.
**Shadow scoring** (`shadow` ticked, or `scoring.shadow: true`) scores the latest challenger too,
into a prefix no consumer of the champion's predictions reads: `publish` and the Asset never wait
for it, and its failure never changes them. The champion's branch always scores with the alias
`scoring.alias` of the config; a challenger never takes its place. Raise `shard_count` to fan out
large days. A task that fails for good sends a `scoring_failed` notification (config
`notifications:`), with the step's `ERROR:` line as its summary.
"""

from __future__ import annotations

from typing import Any

from airflow.sdk import CronDataIntervalTimetable, Param, chain, dag, task

from mlsteps.contract.config import ScoringConfig, load_config
from step_tasks import DS, dag_default_args, step_task, xcom
from step_tasks.assets import predictions_asset
from step_tasks.notify import PipelineNotifier
from step_tasks.params import config_param, force_param
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
        "shadow": config_param(
            CONFIG.scoring.shadow,
            ScoringConfig,
            "shadow",
            title="Shadow-score the challenger",
            description="Also score the latest challenger (approved but not promoted, or rejected) into "
            "shadow/predictions/, and compare it with the champion. The default comes from the pipeline "
            "config (scoring.shadow).",
        ),
        "shard_count": Param(
            1,
            type="integer",
            minimum=1,
            maximum=64,
            title="Shards",
            description="Parallel scoring tasks (pods in kubernetes mode); the day is split by row group.",
        ),
        "force": force_param(),
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
    plan, commit = scored_partition(shadow=False)

    @task(task_id="publish", outlets=[PREDICTIONS])
    def publish(committed: dict[str, Any], *, outlet_events: Any = None) -> str:
        """Emit the predictions Asset with the partition's day and location."""
        if outlet_events is not None:
            outlet_events[PREDICTIONS].extra = {
                key: committed.get(key) for key in ("ds", "uri", "rows", "model_version", "positive_rate")
            }
        return str(committed.get("uri"))

    chain(validate, build_features, plan)
    chain(commit, publish(commit.output))

    @task.short_circuit(task_id="shadow_enabled", ignore_downstream_trigger_rules=False)
    def shadow_enabled(params: dict[str, Any] | None = None) -> bool:
        """Run the shadow branch only when the `shadow` Param is ticked; skipped otherwise, visibly."""
        return bool(params and params.get("shadow"))

    shadow_plan, shadow_commit = scored_partition(shadow=True)
    compare = step_task(
        "compare-shadow", options={"--ds": DS}, doc_md="Champion vs shadow on the same rows; HTML report."
    )
    chain(build_features, shadow_enabled(), shadow_plan)
    chain([shadow_commit, commit], compare)


def scored_partition(*, shadow: bool) -> tuple[Any, Any]:
    """One day's partition: pin the model, hand each shard its options, score the shards (mapped),
    commit once all succeeded. The champion's (`predictions/`), or with ``shadow`` the latest
    challenger's (`shadow/predictions/`; no challenger plans no shards and the rest skips)."""
    plan_id, shards_id, score_id, commit_id = (
        ("plan_shadow", "shadow_shards", "score_shadow", "commit_shadow")
        if shadow
        else ("plan_scoring", "shards", "score", "commit_predictions")
    )
    role = {"--shadow": True} if shadow else {}
    whose = "the latest challenger's (shadow/predictions/)" if shadow else "the champion's"
    plan = step_task(
        "plan-scoring",
        task_id=plan_id,
        options={"--ds": DS, **role, "--shard-count": "{{ params.shard_count }}"},
        doc_md=f"Pin {whose} model version once; every shard scores with it.",
    )

    @task(task_id=shards_id)
    def shards(planned: dict[str, Any]) -> list[list[str]]:
        """The per-shard options of the plan (one mapped score task each; none skips them)."""
        return list(planned["shards"])

    score = step_task(
        "score",
        task_id=score_id,
        options={"--ds": DS, **role, "--defer-commit": True},
        map_over=shards(plan.output),
        doc_md=f"Score one shard of the day with {whose} model.",
    )
    commit = step_task(
        "commit-predictions",
        task_id=commit_id,
        options={
            "--ds": DS,
            **role,
            "--model-version": xcom(plan_id, "model_version", step="plan-scoring"),
            "--shard-count": "{{ params.shard_count }}",
        },
        doc_md=f"Publish {whose} partition once every shard succeeded.",
    )
    chain(score, commit)
    return plan, commit


ml_batch_scoring()
