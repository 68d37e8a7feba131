"""DagBag integrity: every DAG parses in both modes, cheaply, with the conventions we promise."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.airflow import BASELINE_DAG, load_dagbag, parse_in_fresh_process

MODES = ["local", "kubernetes"]
EXPECTED_DAGS = {
    "ml_training",
    "ml_rollback",
    "ml_batch_scoring",
    "ml_drift_monitor",
    "ml_performance_monitor",
}


@pytest.fixture(scope="module", params=MODES)
def parsed(request: pytest.FixtureRequest) -> dict:
    return parse_in_fresh_process(request.param)


@pytest.fixture(scope="module")
def airflow_baseline(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    """Heavy modules Airflow loads by itself (its amazon provider's asset handlers import boto3)."""
    folder: Path = tmp_path_factory.mktemp("baseline_dags")
    (folder / "baseline.py").write_text(BASELINE_DAG)
    parsed = parse_in_fresh_process("local", folder)
    assert parsed["errors"] == {}
    return set(parsed["heavy"])


def test_dags_parse_without_errors_or_ml_imports(parsed: dict, airflow_baseline: set[str]) -> None:
    assert parsed["errors"] == {}
    assert EXPECTED_DAGS <= set(parsed["dag_ids"])
    ours = sorted(set(parsed["heavy"]) - airflow_baseline)
    assert ours == [], f"ML libraries imported while parsing DAGs (beyond Airflow's own): {ours}"
    assert not {"pandas", "numpy", "mlflow", "xgboost", "feast", "evidently"} & set(parsed["heavy"])


@pytest.mark.parametrize("dag_file", sorted(EXPECTED_DAGS))
def test_dag_files_are_ascii(dag_file: str) -> None:
    """doc_md and Param texts land in the metadata database, whose encoding may be SQL_ASCII: a '…'
    there made the compose stack's DAG processor fail to store ml_batch_scoring."""
    text = (Path(__file__).resolve().parents[2] / "dags" / f"{dag_file}.py").read_text(encoding="utf-8")

    assert text.isascii(), [line for line in text.splitlines() if not line.isascii()]


@pytest.mark.parametrize("mode", MODES)
def test_dag_conventions(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    bag = load_dagbag(monkeypatch, mode)
    assert bag.import_errors == {}
    for dag_id, dag in bag.dags.items():
        assert dag.fileloc.endswith(f"/{dag_id}.py"), f"{dag_id} must live in {dag_id}.py"
        assert dag.doc_md, f"{dag_id} needs doc_md"
        assert dag.doc_md.strip().startswith(f"# {dag_id}")
        assert dag.tags
        assert "ml" in dag.tags
        assert dag.catchup is False
        assert dag.timetable is not None
        assert dag.default_args.get("owner") == "ml-platform"
        for task in dag.tasks:
            assert task.retries >= 2, f"{dag_id}.{task.task_id} retries {task.retries}"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id} has no retry backoff"
            assert task.doc_md or task.doc, f"{dag_id}.{task.task_id} has no docs for the UI"
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.description, f"{dag_id} param {name} has no description for the trigger form"
            assert param.schema.get("title"), f"{dag_id} param {name} has no title for the trigger form"


def test_step_tasks_document_their_step_and_carry_links(monkeypatch: pytest.MonkeyPatch) -> None:
    from step_tasks.local import LocalStepOperator

    bag = load_dagbag(monkeypatch, "local")
    steps = [task for dag in bag.dags.values() for task in dag.tasks if isinstance(task, LocalStepOperator)]
    assert len(steps) >= 10
    for task in steps:
        assert f"python -m mlsteps {task.step}" in task.doc_md
        assert [link.name for link in task.operator_extra_links] == ["MLflow run", "Model version", "Report"]
    training = bag.dags["ml_training"]
    assert training.get_task("evaluate").doc_md.startswith("Gate the challenger")  # the DAG's own line wins
    assert training.get_task("train_on_cpu").doc_md.startswith("Train XGBoost on a snapshot")  # the step's


def test_training_graph(monkeypatch: pytest.MonkeyPatch) -> None:
    dag = load_dagbag(monkeypatch, "local").dags["ml_training"]
    edges = {(task.task_id, down) for task in dag.tasks for down in task.downstream_task_ids}
    assert edges == {
        ("validate", "build_features"),
        ("build_features", "materialize"),
        ("materialize", "build_training_set"),
        ("build_training_set", "choose_device"),
        ("choose_device", "train_on_cpu"),
        ("choose_device", "train_on_gpu"),
        ("train_on_cpu", "evaluate"),
        ("train_on_gpu", "evaluate"),
        ("evaluate", "gate"),
        ("gate", "promote"),
        ("gate", "approval_wanted"),
        ("approval_wanted", "approval"),
        ("approval", "promote"),
        ("approval", "record_rejection"),
    }
    assert dag.max_active_runs == 1
    assert dag.get_task("evaluate").trigger_rule == "none_failed_min_one_success"
    assert dag.get_task("promote").trigger_rule == "none_failed_min_one_success"


def test_approval_off_skips_only_the_approval_task(monkeypatch: pytest.MonkeyPatch) -> None:
    """With approval off, promote still runs: the short-circuit must not skip everything downstream."""
    dag = load_dagbag(monkeypatch, "local").dags["ml_training"]
    assert dag.get_task("approval_wanted").ignore_downstream_trigger_rules is False


def test_approval_is_airflows_hitl_branch_with_reject_as_the_timeout_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.standard.operators.hitl import HITLBranchOperator

    dag = load_dagbag(monkeypatch, "local").dags["ml_training"]
    approval = dag.get_task("approval")
    assert isinstance(approval, HITLBranchOperator)
    assert approval.options_mapping == {"Approve": "promote", "Reject": "record_rejection"}
    assert approval.defaults == ["Reject"]
    assert list(approval.params) == ["comment"]
    assert dag.params["require_approval"] is False


def test_scoring_graph_has_a_shadow_branch_that_publish_never_waits_for(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dag = load_dagbag(monkeypatch, "local").dags["ml_batch_scoring"]
    edges = {(task.task_id, down) for task in dag.tasks for down in task.downstream_task_ids}
    assert {
        ("build_features", "shadow_enabled"),
        ("shadow_enabled", "plan_shadow"),
        ("plan_shadow", "shadow_shards"),
        ("shadow_shards", "score_shadow"),
        ("score_shadow", "commit_shadow"),
        ("commit_shadow", "compare_shadow"),
        ("commit_predictions", "compare_shadow"),
    } <= edges
    shadow_tasks = {"shadow_enabled", "plan_shadow", "shadow_shards", "score_shadow", "commit_shadow"}
    assert not shadow_tasks & dag.get_task("publish").get_flat_relative_ids(upstream=True)
    assert not shadow_tasks & dag.get_task("commit_predictions").get_flat_relative_ids(upstream=True)
    # Param off: only plan_shadow is skipped directly; the rest of the branch follows by trigger rule.
    assert dag.get_task("shadow_enabled").ignore_downstream_trigger_rules is False
    assert dag.params["shadow"] is False  # the pipeline config's scoring.shadow
    assert dag.params.get_param("shadow").schema["type"] == "boolean"
    assert "--shadow" in dag.get_task("commit_shadow").arguments


@pytest.mark.parametrize(
    ("name", "good", "bad"),
    [
        ("device", "cuda", "gpu"),
        ("device", "cpu", True),
        ("engine", "dask", "ray"),
        ("n_trials", 20, 1000),
        ("n_trials", 0, -1),
        ("min_roc_auc", 0.9, 1.5),
        ("training_window_days", 30, 2),
        ("reason", "drift on amount (2026-11-01)", "$(rm -rf /)"),
        ("reason", "weekly", "x" * 201),
        ("reason", "manual retrain", "line\nbreak"),
        ("reason", "manual", "{{ var.value.secret }}"),
    ],
)
def test_training_params_are_validated(
    monkeypatch: pytest.MonkeyPatch, name: str, good: object, bad: object
) -> None:
    from airflow.sdk.exceptions import ParamValidationError

    dag = load_dagbag(monkeypatch, "local").dags["ml_training"]
    param = dag.params.get_param(name)
    assert param.resolve(good) == good
    assert param.description, f"param {name} needs a description for the trigger form"
    assert param.schema.get("title"), f"param {name} needs a title for the trigger form"
    with pytest.raises(ParamValidationError):
        param.resolve(bad)


def test_bad_execution_mode_is_a_clear_import_error(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = load_dagbag(monkeypatch, "docker")
    message = " ".join(str(e) for e in bag.import_errors.values())
    assert "ML_EXECUTION_MODE='docker' is not one of: local, kubernetes" in message
