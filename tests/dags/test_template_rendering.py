"""Every task's templated fields render, with the right days, for every kind of run Airflow makes.

The template context is the one Airflow's task runner builds (``RuntimeTaskInstance``'s
``get_template_context`` from the run the API server hands the worker), for three kinds of run:

- ``scheduled``: the run the scheduler creates from the DAG's timetable;
- ``logical_date``: a manual run with a logical date (its interval inferred by the timetable);
- ``no_logical_date``: Airflow 3's default manual trigger (``airflow dags trigger``, or the REST
  API with ``"logical_date": null``): no ``data_interval_*``, ``logical_date``, ``ds``, ``ts`` keys.

Only ``ti`` is replaced, by a stand-in that returns fixed upstream results, since pulling XComs
needs a running supervisor.
"""

from __future__ import annotations

import copy
import datetime as dt
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from tests.support.airflow import load_dagbag

MODES = ["local", "kubernetes"]
KINDS = ["scheduled", "logical_date", "no_logical_date"]
#: When a manual run is triggered (after the 02:00 scoring schedule); the earliest a scheduled run starts.
TRIGGERED = dt.datetime(2026, 11, 2, 10, 0, tzinfo=dt.UTC)
EARLIEST = dt.datetime(2026, 10, 31, 12, 0, tzinfo=dt.UTC)
#: What upstream tasks returned (``(task_id, key)`` for a ``multiple_outputs`` task's keys).
UPSTREAM: dict[Any, Any] = {
    "evaluate": {"model_version": "3", "champion_version": "2", "approved": True, "reasons": []},
    "train_on_cpu": {"model_version": "3"},
    "plan_scoring": {"model_version": "3", "shards": [["--shard-index", "0", "--shard-count", "1"]]},
    "commit_predictions": {"ds": "2026-11-01", "uri": "lake://predictions/ds=2026-11-01"},
    "resolve_ds": "2026-11-01",
    "monitor_performance": {"ds": "2026-10-25", "status": "dropped", "significant": True},
    "decide_retrain": {"trigger": True, "run_id": "drift__2026-11-01", "conf": {"reason": "drift"}},
    ("retrain_request", "run_id"): "drift__2026-11-01",
    ("retrain_request", "conf"): {"reason": "drift", "ds": "2026-11-01"},
}
#: The days each DAG's step tasks must receive, per kind of run.
EXPECTED = {
    # weekly CronTriggerTimetable "0 3 * * 0": the window ends on the day of the run's instant
    ("ml_training", "scheduled"): {"--end": "2026-11-01", "--start": "2026-10-04"},
    ("ml_training", "logical_date"): {"--end": "2026-11-02", "--start": "2026-10-05"},
    ("ml_training", "no_logical_date"): {"--end": "2026-11-02", "--start": "2026-10-05"},
    # daily CronDataIntervalTimetable "0 2 * * *": the day is the interval's start
    ("ml_batch_scoring", "scheduled"): {"--start": "2026-11-01", "--end": "2026-11-02", "--ds": "2026-11-01"},
    ("ml_batch_scoring", "logical_date"): {
        "--start": "2026-11-01",
        "--end": "2026-11-02",
        "--ds": "2026-11-01",
    },
    ("ml_batch_scoring", "no_logical_date"): {
        "--start": "2026-11-01",
        "--end": "2026-11-02",
        "--ds": "2026-11-01",
    },
}


class UpstreamResults:
    """Stands in for ``ti`` where templates pull XComs: returns :data:`UPSTREAM`."""

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        if key == "return_value":
            return UPSTREAM.get(task_ids)
        return UPSTREAM.get((task_ids, key))


@pytest.fixture(scope="module")
def dags() -> Iterator[dict[str, Any]]:
    with pytest.MonkeyPatch.context() as patch:
        parsed = {}
        for mode in MODES:
            bag = load_dagbag(patch, mode)
            assert bag.import_errors == {}
            parsed[mode] = bag.dags
        yield parsed


def server_dag_run(dag: Any, kind: str) -> Any:
    """The run as the API server describes it to the worker (``TIRunContext.dag_run``)."""
    import pendulum
    from airflow.sdk.api.datamodels._generated import DagRun
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction
    from airflow.timetables.simple import NullTimetable

    timetable = coerce_to_core_timetable(dag.timetable)
    run_after = pendulum.instance(TRIGGERED)
    logical_date = start = end = None
    run_type = "manual"
    if kind == "scheduled":
        earliest = pendulum.instance(EARLIEST)
        restriction = TimeRestriction(earliest=earliest, latest=None, catchup=True)
        info = timetable.next_dagrun_info(last_automated_data_interval=None, restriction=restriction)
        if info is None:  # not time-based: the scheduler's own runs are asset-triggered, without a date
            if isinstance(timetable, NullTimetable):
                pytest.skip(f"{dag.dag_id} has no schedule")
            run_type = "asset_triggered"
        else:
            assert info.data_interval is not None
            run_type, run_after, logical_date = "scheduled", info.run_after, info.logical_date
            start, end = info.data_interval.start, info.data_interval.end
    elif kind == "logical_date":
        logical_date = run_after
        interval = timetable.infer_manual_data_interval(run_after=logical_date)
        start, end = interval.start, interval.end
    return DagRun(
        dag_id=dag.dag_id,
        run_id=f"{run_type}__{run_after.isoformat()}",
        logical_date=logical_date,
        data_interval_start=start,
        data_interval_end=end,
        run_after=run_after,
        start_date=run_after,
        end_date=None,
        run_type=run_type,
        state="running",
        conf={},
        consumed_asset_events=[],
        partition_key=None,
    )


def template_context(task: Any, kind: str) -> dict[str, Any]:
    """The context Airflow's task runner gives ``task`` in a run of ``kind``."""
    from airflow.sdk.api.datamodels._generated import TIRunContext
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    dag_run = server_dag_run(task.dag, kind)
    ti = RuntimeTaskInstance.model_construct(
        id=uuid.uuid4(),
        task_id=task.task_id,
        dag_id=task.dag_id,
        run_id=dag_run.run_id,
        try_number=1,
        map_index=-1,
        task=task,
        max_tries=task.retries,
        start_date=dt.datetime.now(dt.UTC),
    )
    ti._ti_context_from_server = TIRunContext(dag_run=dag_run, max_tries=task.retries)
    context = dict(ti.get_template_context())
    context["ti"] = context["task_instance"] = UpstreamResults()
    return context


def render(task: Any, kind: str) -> Any:
    """``task`` with every templated field rendered (a mapped task: its shared templated fields)."""
    context = template_context(task, kind)
    env = task.dag.get_template_env()
    if hasattr(task, "partial_kwargs"):  # a mapped task: the fields every map index shares
        fields = [name for name in task.template_fields if name in task.partial_kwargs]
        return {name: task.render_template(task.partial_kwargs[name], context, env) for name in fields}
    rendered = copy.deepcopy(task)
    rendered.render_template_fields(context, env)
    return rendered


def options(arguments: list[Any]) -> dict[str, str]:
    """``--flag value`` pairs of an argument list (flags without a value map to '')."""
    pairs: dict[str, str] = {}
    for index, argument in enumerate(arguments):
        if str(argument).startswith("--"):
            following = arguments[index + 1] if index + 1 < len(arguments) else ""
            pairs[str(argument)] = "" if str(following).startswith("--") else str(following)
    return pairs


def test_a_run_without_a_logical_date_has_no_interval_keys(dags: dict[str, Any]) -> None:
    """The premise: Airflow leaves these keys out entirely (StrictUndefined then raises on them)."""
    context = template_context(dags["local"]["ml_training"].get_task("validate"), "no_logical_date")
    assert not {"data_interval_start", "data_interval_end", "logical_date", "ds", "ts"} & set(context)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "dag_id", ["ml_training", "ml_batch_scoring", "ml_drift_monitor", "ml_performance_monitor", "ml_rollback"]
)
def test_every_task_renders(dags: dict[str, Any], mode: str, kind: str, dag_id: str) -> None:
    dag = dags[mode][dag_id]
    for task in dag.tasks:
        render(task, kind)  # raises (jinja2.UndefinedError) if any field reads a key the run lacks


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("dag_id", ["ml_training", "ml_batch_scoring"])
def test_step_tasks_get_the_right_days(dags: dict[str, Any], mode: str, kind: str, dag_id: str) -> None:
    expected = EXPECTED[(dag_id, kind)]
    checked = 0
    for task in dags[mode][dag_id].tasks:
        rendered = render(task, kind)
        if isinstance(rendered, dict):  # mapped: local mode maps extra_arguments, kubernetes arguments
            arguments = rendered.get("arguments") if mode == "local" else rendered.get("cmds")
        else:
            arguments = getattr(rendered, "arguments", None)
        if not isinstance(arguments, list):
            continue
        given = options(arguments)
        for flag, day in expected.items():
            if flag in given and not (dag_id == "ml_training" and task.task_id == "evaluate"):
                assert given[flag] == day, f"{dag_id}.{task.task_id} {flag}"
                checked += 1
    assert checked >= 5, f"only {checked} dated options found in {dag_id}"


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_gets_the_window_end_as_its_day(dags: dict[str, Any], kind: str) -> None:
    rendered = render(dags["local"]["ml_training"].get_task("evaluate"), kind)
    assert options(rendered.arguments)["--ds"] == EXPECTED[("ml_training", kind)]["--end"]


def test_shared_interval_snippets_render_for_a_run_without_a_logical_date(dags: dict[str, Any]) -> None:
    """The factory's exported snippets: such a run is about ``[run_after - 1 day, run_after)``."""
    from step_tasks.templates import DS, INTERVAL_END, INTERVAL_START

    task = dags["local"]["ml_batch_scoring"].get_task("validate")
    context = template_context(task, "no_logical_date")
    env = task.dag.get_template_env()
    rendered = [task.render_template(snippet, context, env) for snippet in (INTERVAL_START, INTERVAL_END, DS)]
    assert rendered == ["2026-11-01T10:00:00+00:00", "2026-11-02T10:00:00+00:00", "2026-11-01"]


@pytest.mark.parametrize("kind", KINDS)
def test_the_performance_monitor_judges_the_day_whose_labels_are_due(dags: dict[str, Any], kind: str) -> None:
    from mlsteps.contract.config import load_config

    task = dags["local"]["ml_performance_monitor"].get_task("monitor_performance")
    run = server_dag_run(task.dag, kind)
    run_day = (run.data_interval_start or run.run_after - dt.timedelta(days=1)).date()
    due = run_day - dt.timedelta(days=load_config().performance.label_delay_days)
    assert options(render(task, kind).arguments)["--ds"] == due.isoformat()


def test_the_performance_monitors_ds_param_names_the_judged_day(dags: dict[str, Any]) -> None:
    task = dags["local"]["ml_performance_monitor"].get_task("decide_retrain")
    context = template_context(task, "no_logical_date")
    context["params"] = {**context["params"], "ds": "2026-09-30"}
    rendered = copy.deepcopy(task)
    rendered.render_template_fields(context, task.dag.get_template_env())
    assert options(rendered.arguments)["--ds"] == "2026-09-30"


@pytest.mark.parametrize("mode", MODES)
def test_train_gets_the_drift_that_triggered_the_retrain(dags: dict[str, Any], mode: str) -> None:
    """``ds`` and ``drifted_columns`` reach train as options; on other runs they render empty."""
    task = dags[mode]["ml_training"].get_task("train_on_cpu")
    env = task.dag.get_template_env()
    context = template_context(task, "scheduled")

    def train_options(params: dict[str, Any]) -> dict[str, str]:
        rendered = copy.deepcopy(task)
        rendered.render_template_fields({**context, "params": {**context["params"], **params}}, env)
        return options(rendered.arguments)

    scheduled = train_options({})
    assert (scheduled["--retrain-ds"], scheduled["--drifted-columns"]) == ("", "")
    drift = train_options({"ds": "2026-11-01", "drifted_columns": ["amount", "country"]})
    assert (drift["--retrain-ds"], drift["--drifted-columns"]) == ("2026-11-01", "amount,country")


@pytest.mark.parametrize("mode", MODES)
def test_the_force_param_reaches_the_cacheable_steps_only(dags: dict[str, Any], mode: str) -> None:
    """``force`` renders into ``--force true|false`` (one argv element) for cacheable steps, in both modes."""
    dag = dags[mode]["ml_training"]
    env = dag.get_template_env()

    def rendered(task_id: str, params: dict[str, Any]) -> list[str]:
        task = copy.deepcopy(dag.get_task(task_id))
        context = template_context(task, "scheduled")
        task.render_template_fields({**context, "params": {**context["params"], **params}}, env)
        return [str(argument) for argument in task.arguments]

    assert options(rendered("train_on_cpu", {}))["--force"] == "false"
    assert options(rendered("validate", {"force": True}))["--force"] == "true"
    assert "--force" not in rendered("promote", {"force": True})
