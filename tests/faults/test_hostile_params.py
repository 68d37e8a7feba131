"""Hostile Params: refused by the schema when triggered, or carried to the step as one inert argv element.

Every level a Param value passes through is exercised for real: the Params schema as the
scheduler validates a trigger (the serialized DAG's ``create_dagrun`` path), the rendered
templates of every step task in local and kubernetes mode, the step CLI in a real interpreter,
and whole ``dag.test`` runs. Payloads that would ``touch`` a canary file must leave none.
"""

from __future__ import annotations

import copy
import datetime as dt
import json
import math
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from tests.support.airflow import load_dagbag

#: Replaced by a per-test canary path: a payload that ran would create that file.
CANARY = "@CANARY@"

#: 76 hostile strings: shell, Jinja, size, unicode, traversal, option injection, out-of-range text.
HOSTILE: list[str] = [
    # shell metacharacters and substitutions
    f"; touch {CANARY}",
    f"x; touch {CANARY}",
    f"x && touch {CANARY}",
    f"x || touch {CANARY}",
    f"x | touch {CANARY}",
    f"x & touch {CANARY}",
    f"$(touch {CANARY})",
    f"`touch {CANARY}`",
    f"${{IFS}}touch${{IFS}}{CANARY}",
    f"x > {CANARY}",
    f"x >> {CANARY}",
    "x < /etc/passwd",
    f"x\ntouch {CANARY}",
    f"x\r\ntouch {CANARY}",
    "scheduled\n",
    f"\ttouch {CANARY}",
    f"x\x00touch {CANARY}",
    "$HOME",
    "${PATH}",
    f"'; touch {CANARY}; '",
    f'"; touch {CANARY}; "',
    f'x; python -c \'open("{CANARY}", "w")\'',
    f"(touch {CANARY})",
    f"drift on amount; touch {CANARY} (2026-11-01)",
    "*",
    "~/.ssh/id_rsa",
    "!!",
    # Jinja: a value is data, never a template
    "{{ 7 * 7 }}",
    "{{ var.value.get('secret') }}",
    "{{ conn.ml_s3.password }}",
    "{% for x in range(3) %}x{% endfor %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{# comment #}",
    "{{ params }}",
    "{{ macros.datetime.now() }}",
    # size and emptiness
    "x" * 10_240,
    "a" * 201,
    "",
    " ",
    # unicode
    "café résumé",
    "\u202etxt.exe",
    "zero\u200bwidth",
    f"fullwidth\uff1btouch {CANARY}",
    "emoji \U0001f680",
    "\uff43\uff48\uff41\uff4d\uff50\uff49\uff4f\uff4e",
    "\u0661\u0662\u0663",
    "\u00b2",
    "\u03a9\u2248\u00e7\u221a",
    # traversal and foreign locations
    f"../../../../../../..{CANARY}",
    "..\\..\\windows\\system32",
    "/etc/passwd",
    "s3://other-bucket/../lake",
    "file:///etc/shadow",
    # option injection
    "--lake=/tmp/evil",
    "--lake /tmp/evil",
    "-h",
    "--help",
    f"--config={CANARY}",
    # numbers, dates and keywords out of range or in the wrong form
    "-1",
    "0",
    "1e308",
    "NaN",
    "inf",
    "999999999999",
    "0x10",
    "1_000",
    "7 ",
    f"previous; touch {CANARY}",
    "champion\n",
    "2026-11-01\n",
    f"2026-11-01; touch {CANARY}",
    "2026-02-30",
    "9999-99-99",
    "null",
    "None",
    "true",
]

#: Characters that a shell or Jinja would act on: no accepted string Param may contain any of them.
ACTIVE = re.compile(r"[$`{}|&<>\n\r\x00*~!'\"\\]")

#: Typed Params, with values out of range (the config field's limits: step_tasks/params.py) or of the
#: wrong type; every one must be refused.
BAD_TYPED: dict[tuple[str, str], list[Any]] = {
    ("ml_training", "device"): ["gpu", "CUDA", "cuda\n", 1, True, None, "cpu; touch x"],
    ("ml_training", "n_trials"): [-1, 501, 10**9, 2.5, "5", True, None, math.inf],
    ("ml_training", "min_roc_auc"): [-0.01, 1.01, math.inf, -math.inf, "0.9", True, None, 1e308],
    ("ml_training", "training_window_days"): [4, 3651, 0, -5, "30", 2.5],
    ("ml_training", "drifted_columns"): [["a b"], ["x"] * 201, "amount", [1], ["$(id)"], ["amount\n"]],
    ("ml_training", "ds"): ["2026-11-01\n", "2026-1-1", "yesterday", 20261101],
    ("ml_training", "engine"): ["Dask", "dask\n", "ray", "", 1, True, None, "dask; touch x"],
    ("ml_training", "force"): ["true", "yes", 1, 0, None, "--force"],
    ("ml_batch_scoring", "force"): ["true", "yes", 1, 0, None, "--force"],
    ("ml_batch_scoring", "shard_count"): [0, 65, -1, 2.5, "4", 10**12, None],
    ("ml_drift_monitor", "ds"): ["2026-11-01\n", "2026-11-01; touch x", "../2026-11-01"],
    ("ml_performance_monitor", "ds"): ["2026-11-01\n", "2026-11-01; touch x", "../2026-11-01"],
}

#: Where each string Param lands: (dag, param) -> (task, flag) of every step that receives it.
STRING_PARAMS: dict[tuple[str, str], list[tuple[str, str]]] = {
    ("ml_training", "reason"): [("promote", "--reason"), ("record_rejection", "--reason")],
    ("ml_rollback", "reason"): [("rollback", "--reason")],
    ("ml_rollback", "version"): [("rollback", "--version")],
    ("ml_drift_monitor", "ds"): [("drift", "--ds"), ("decide_retrain", "--ds")],
    ("ml_performance_monitor", "ds"): [("monitor_performance", "--ds"), ("decide_retrain", "--ds")],
}


def arm(value: str, canary: Path) -> str:
    return value.replace(CANARY, str(canary))


@pytest.fixture(scope="module")
def bags() -> Iterator[dict[str, Any]]:
    """The DAGs parsed in each mode, plus their serialized (scheduler-side) form."""
    from airflow.serialization.serialized_objects import DagSerialization

    parsed: dict[str, Any] = {}
    with pytest.MonkeyPatch.context() as patch:
        for mode in ("local", "kubernetes"):
            bag = load_dagbag(patch, mode)
            assert bag.import_errors == {}
            parsed[mode] = bag.dags
    parsed["serialized"] = {
        dag_id: DagSerialization.deserialize_dag(DagSerialization.serialize_dag(dag))
        for dag_id, dag in parsed["local"].items()
    }
    return parsed


def trigger_refuses(serialized_dag: Any, conf: dict[str, Any]) -> bool:
    """What the scheduler does with a trigger's conf (``create_dagrun``): merge, then validate."""
    from airflow.sdk.exceptions import ParamValidationError

    try:
        serialized_dag.params.deep_merge(conf).validate()
    except ParamValidationError:
        return True
    return False


# --- level 1: the Params schema at trigger time ---------------------------------------------------


def test_there_are_enough_hostile_strings() -> None:
    assert len(HOSTILE) >= 50
    assert len(set(HOSTILE)) == len(HOSTILE)


@pytest.mark.parametrize(("dag_id", "name"), sorted({*STRING_PARAMS, ("ml_training", "ds")}))
def test_string_params_refuse_every_active_value(
    bags: dict[str, Any], tmp_path: Path, dag_id: str, name: str
) -> None:
    dag = bags["serialized"][dag_id]
    schema = dag.params.get_param(name).schema
    accepted = [value for value in HOSTILE if not trigger_refuses(dag, {name: arm(value, tmp_path / "c")})]
    for value in accepted:
        # Python's `$` also matches before a trailing newline: the pattern must not let one through.
        assert trigger_refuses(dag, {name: value + "\n"}), f"{dag_id}.{name} accepts {value!r} + newline"
        assert len(value) <= schema.get("maxLength", 200), repr(value)
        assert not ACTIVE.search(value), f"{dag_id}.{name} accepts {value!r}"
    refused = set(HOSTILE) - set(accepted)
    must_refuse = [v for v in HOSTILE if ACTIVE.search(v) or len(v) > 200]
    assert set(must_refuse) <= refused
    assert len(refused) >= 40, f"{dag_id}.{name} accepts {len(accepted)} of {len(HOSTILE)} hostile strings"


@pytest.mark.parametrize(("dag_id", "name"), sorted(BAD_TYPED))
def test_typed_params_refuse_out_of_range_values(bags: dict[str, Any], dag_id: str, name: str) -> None:
    dag = bags["serialized"][dag_id]
    assert not trigger_refuses(dag, {}), "the defaults must be valid"
    for value in BAD_TYPED[(dag_id, name)]:
        assert trigger_refuses(dag, {name: value}), f"{dag_id}.{name} accepts {value!r}"


def test_nan_passes_json_schema_but_the_step_refuses_it(bags: dict[str, Any], tmp_path: Path) -> None:
    """JSON Schema's minimum/maximum cannot see NaN; ``evaluate`` refuses it before touching anything."""
    assert not trigger_refuses(bags["serialized"]["ml_training"], {"min_roc_auc": math.nan})
    outcome = run_cli([["evaluate", "--model-version", "1", "--training-run", "r", "--min-roc-auc", "nan"]])
    assert outcome[0]["code"] == 2
    assert outcome[0]["error"] == "--min-roc-auc must be between 0 and 1, got nan"


# --- level 2: rendered templates, local and kubernetes ---------------------------------------------


class XComStub:
    """The upstream results a template pulls; ``resolve_ds`` is the DAG's own callable."""

    def __init__(self, results: dict[str, Any]) -> None:
        self.results = results

    def xcom_pull(self, task_ids: str | None = None, key: str = "return_value", **_: Any) -> Any:
        return self.results.get(task_ids or "")


def render_argv(task: Any, context: dict[str, Any], mode: str, pod: bool = True) -> list[str]:
    """The exact argv a task runs after Airflow renders its templates (``pod``: read from the pod spec)."""
    if not pod:  # the templated argument list alone: quicker, for tasks a value must not reach
        rendered = task.render_template(task.arguments, context, task.dag.get_template_env())
        return [str(argument) for argument in rendered]
    task = copy.deepcopy(task)
    task.render_template_fields(context, task.dag.get_template_env())
    if mode == "local":
        return list(task.argv)
    pod = task.build_pod_request_obj(context=None, dry_run=True)
    container = next(c for c in pod.spec.containers if c.name == "base")
    return [*container.command, *container.args]


def step_tasks(dag: Any) -> list[Any]:
    return [t for t in dag.tasks if hasattr(t, "argv") or hasattr(t, "build_pod_request_obj")]


def template_context(dag: Any, params: dict[str, Any]) -> dict[str, Any]:
    from airflow.sdk.execution_time.task_runner import MacrosAccessor

    instant = dt.datetime(2026, 11, 2, tzinfo=dt.UTC)
    results: dict[str, Any] = {
        "evaluate": {"model_version": "3", "champion_version": "2"},
        "train_on_cpu": {"model_version": "3"},
        "plan_scoring": {"model_version": "3"},
    }
    if "resolve_ds" in dag.task_dict and params.get("ds"):
        results["resolve_ds"] = dag.get_task("resolve_ds").python_callable(params=params)
    return {
        "dag": dag,
        "params": params,
        "run_id": "manual__2026-11-02T00:00:00+00:00",
        "ti": XComStub(results),
        "dag_run": SimpleNamespace(run_after=instant, conf={}),
        "data_interval_start": instant - dt.timedelta(days=1),
        "data_interval_end": instant,
        "logical_date": instant,
        "macros": MacrosAccessor(),
    }


def defaults(dag: Any) -> dict[str, Any]:
    return {name: dag.params[name] for name in dag.params}


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
@pytest.mark.parametrize(("dag_id", "name"), sorted(STRING_PARAMS))
def test_every_hostile_value_renders_into_exactly_one_argv_element(
    bags: dict[str, Any], tmp_path: Path, mode: str, dag_id: str, name: str
) -> None:
    """Even a value the schema would refuse (validation bypassed here) stays one inert element."""
    dag = bags[mode][dag_id]
    canary = tmp_path / "canary"
    receivers = dict(STRING_PARAMS[(dag_id, name)])
    context = template_context(dag, defaults(dag))
    benign = {
        task.task_id: render_argv(task, context, mode, pod=task.task_id in receivers)
        for task in step_tasks(dag)
    }
    for raw in HOSTILE:
        value = arm(raw, canary)
        if name == "ds" and not value:
            continue  # an empty day is "no parameter": the monitor then reads the asset event instead
        context = template_context(dag, {**defaults(dag), name: value})
        for task in step_tasks(dag):
            argv = render_argv(task, context, mode, pod=task.task_id in receivers)
            assert len(argv) == len(benign[task.task_id]), (task.task_id, value[:80])
            if task.task_id in receivers:
                flag = receivers[task.task_id]
                assert argv[argv.index(flag) + 1] == value, (task.task_id, value[:80])
                # An empty value is no payload; other options (the approval's, when none was given)
                # render empty too.
                assert not value or argv.count(value) == 1
            else:
                assert argv == benign[task.task_id], (task.task_id, value[:80])
    assert not canary.exists()


# --- level 3: the step CLI in a real interpreter ---------------------------------------------------

DRIVER = textwrap.dedent(
    """
    import contextlib, io, json, logging, sys
    logging.basicConfig(stream=sys.__stderr__)
    from mlsteps.cli import main
    outcomes = []
    for argv in json.load(sys.stdin):
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            try:
                code = main(argv)
            except SystemExit as exit:
                code = exit.code
        outcomes.append({"code": code, "stderr": err.getvalue()})
    print("@@" + json.dumps(outcomes))
    """
)


def run_cli(argvs: list[list[str]], cwd: Path | None = None) -> list[dict[str, Any]]:
    """Run ``mlsteps.cli.main`` on each argv in one fresh interpreter; exit code, stderr, ERROR line."""
    process = subprocess.run(
        [sys.executable, "-c", DRIVER],
        input=json.dumps(argvs),
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    outcomes = json.loads(process.stdout.split("@@", 1)[1])
    for outcome in outcomes:
        lines = outcome["stderr"].rstrip("\n").splitlines()
        last = lines[-1] if lines else ""
        outcome["error"] = last.removeprefix("ERROR: ") if last.startswith("ERROR: ") else None
        outcome["error_lines"] = sum(line.startswith("ERROR:") for line in lines)
    return list(outcomes)


def _is_version(value: str) -> bool:
    return re.fullmatch(r"v?[1-9][0-9]*", value.strip()) is not None


#: step argv with ``{}`` where the hostile value goes, and which values are legitimate there.
CLI_CASES: list[tuple[list[str], Any]] = [
    (["rollback", "--version", "{}", "--reason", "r"], lambda v: _is_version(v) or v.strip() == "previous"),
    (["promote", "--model-version", "{}", "--expected-champion", "none"], _is_version),
    (["evaluate", "--model-version", "{}", "--training-run", "r"], _is_version),
    (["plan-scoring", "--ds", "{}"], lambda v: False),  # a valid day still finds no features: refused
    (["plan-scoring", "--ds", "2026-11-01", "--shard-count", "{}"], lambda v: False),
    (["plan-scoring", "--ds", "2026-11-01", "--alias", "{}"], lambda v: False),
    (["score", "--ds", "2026-11-01", "--shard-index", "{}"], lambda v: False),
    (
        ["evaluate", "--model-version", "1", "--training-run", "r", "--min-roc-auc", "{}"],
        lambda v: _is_float_in(v, 0.0, 1.0),
    ),
    (["train", "--training-run", "r", "--n-trials", "{}"], lambda v: False),  # no snapshot "r": refused
    (["build-training-set", "--end", "{}"], lambda v: False),
    (["decide-retrain", "--ds", "{}"], lambda v: False),
]


def _is_float_in(value: str, low: float, high: float) -> bool:
    try:
        return low <= float(value) <= high
    except ValueError:
        return False


def test_step_cli_refuses_each_hostile_value_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str
) -> None:
    canary = tmp_path / "canary"
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing may get that far
    before = {p for p in tmp_path.rglob("*") if p.is_file()}
    argvs, cases = [], []
    for template, legitimate in CLI_CASES:
        for raw in HOSTILE:
            value = arm(raw, canary)
            if "\x00" in value or legitimate(value):
                continue  # an OS argv cannot hold NUL (the schema refuses it); legitimate values would run
            argvs.append([value if part == "{}" else part for part in template])
            cases.append((template[0], value))

    outcomes = run_cli(argvs, cwd=cwd)

    assert len(outcomes) >= 500
    for (step, value), outcome in zip(cases, outcomes, strict=True):
        where = f"{step} with {value[:60]!r}"
        assert outcome["code"] == 2, f"{where}: exit {outcome['code']}\n{outcome['stderr'][-1500:]}"
        assert "Traceback" not in outcome["stderr"], where
        assert outcome["error"], f"{where}: no ERROR line last\n{outcome['stderr'][-500:]}"
        assert outcome["error_lines"] == 1, where
    assert not canary.exists()
    assert list(cwd.iterdir()) == []
    written = {p for p in tmp_path.rglob("*") if p.is_file()} - before
    outside = [p for p in written if not p.is_relative_to(Path(local_lake))]
    assert outside == [], f"written outside the lake: {outside}"


@pytest.mark.parametrize(
    "payload",
    [f"$(touch {CANARY})", f"2026-11-01; touch {CANARY}", f"`touch {CANARY}`", "\u00b2", "\u0661"],
)
def test_python_m_mlsteps_keeps_a_payload_inert(tmp_path: Path, local_lake: str, payload: str) -> None:
    """The exact entry point a pod runs, once per payload kind."""
    canary = tmp_path / "canary"
    value = arm(payload, canary)
    for argv in (["plan-scoring", "--ds", value], ["rollback", "--version", value]):
        process = subprocess.run(
            [sys.executable, "-m", "mlsteps", *argv], capture_output=True, text=True, timeout=120, check=False
        )
        assert process.returncode == 2, process.stderr
        assert "Traceback" not in process.stderr
        assert process.stderr.rstrip("\n").splitlines()[-1].startswith("ERROR: ")
    assert not canary.exists()


# --- level 4: whole DAG runs ----------------------------------------------------------------------


def _states(dag_run: Any) -> dict[str, str]:
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


@pytest.mark.faults
def test_dag_run_carries_an_allowed_hostile_reason_inertly(
    promoted: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ml_rollback: a shell payload the reason pattern allows is recorded verbatim; nothing runs."""
    from airflow.sdk.exceptions import ParamValidationError

    from mlsteps.platform.lake import Lake
    from mlsteps.platform.ledger import read_ledger

    canary = tmp_path / "canary"
    reason = f"x; touch {canary} (../../../..{canary})"
    dag = load_dagbag(monkeypatch, "local").dags["ml_rollback"]

    with pytest.raises(ParamValidationError):  # refused at trigger time: no run, no task
        dag.test(
            logical_date=dt.datetime(2026, 11, 1, tzinfo=dt.UTC), run_conf={"reason": f"$(touch {canary})"}
        )
    assert [e["action"] for e in read_ledger(Lake(promoted["lake"]), promoted["name"])] == ["promote"] * 2

    run = dag.test(
        logical_date=dt.datetime(2026, 11, 2, tzinfo=dt.UTC),
        run_conf={"version": "previous", "reason": reason},
    )

    assert _states(run) == {"rollback": "success"}
    ledger = read_ledger(Lake(promoted["lake"]), promoted["name"])
    assert ledger[-1]["action"] == "rollback"
    assert ledger[-1]["reason"] == reason
    assert not canary.exists()
    assert not any(Path(promoted["lake"]).rglob("canary*"))
