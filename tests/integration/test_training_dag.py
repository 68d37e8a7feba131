"""ml_training, ml_rollback and ml_batch_scoring end to end with dag.test() in local mode.

Real services: an ``mlflow server`` on loopback (SQLite backend, artifacts on the moto S3 API),
Feast with SQLite, XGBoost, and the steps as subprocesses. The runs build on each other.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml
from mlflow import MlflowClient

from mlsteps.contract.config import DEFAULT_CONFIG_PATH, load_config
from mlsteps.contract.layout import shadow_predictions_prefix
from mlsteps.platform.lake import Lake
from tests.integration.conftest import Pipeline, task_states, xcom_result

pytestmark = pytest.mark.slow

RUN_AT = dt.datetime(2026, 11, 5, 3, tzinfo=dt.UTC)
CONF = {"training_window_days": 14, "reason": "integration test"}
MODEL = load_config().model.registered_name


@pytest.fixture(scope="module")
def trained(pipeline: Pipeline) -> dict[str, Any]:
    """Raw data for 30 days of history plus the window, then one training run."""
    generated = pipeline.step(
        "generate-data",
        "--start",
        "2026-09-22",
        "--days",
        "45",
        "--rows-per-day",
        "2000",
        "--customers",
        "800",
    )
    assert generated.returncode == 0, generated.stderr
    run = pipeline.run("ml_training", RUN_AT, CONF)
    return {"run": run, "states": task_states(run)}


def _champion() -> str:
    return str(MlflowClient().get_registered_model(MODEL).aliases["champion"])


def _ledger(pipeline: Pipeline) -> list[dict[str, Any]]:
    lake = Lake(pipeline.lake)
    return [lake.read_json(f"ledger/{MODEL}/{name}") for name in lake.list_dir(f"ledger/{MODEL}")]


def test_training_run_promotes_a_champion(pipeline: Pipeline, trained: dict[str, Any]) -> None:
    run, states = trained["run"], trained["states"]
    assert str(run.state) == "success", states
    assert states["train_on_cpu"] == "success"
    assert states["train_on_gpu"] == "skipped"
    assert states["promote"] == "success"

    trained_version = xcom_result(run, "train_on_cpu")["model_version"]
    evaluation = xcom_result(run, "evaluate")
    assert evaluation["approved"] is True
    assert evaluation["metrics"]["challenger"]["roc_auc"] >= load_config().gates.min_roc_auc
    assert _champion() == str(trained_version)

    ledger = _ledger(pipeline)
    assert len(ledger) == 1
    assert str(ledger[0]["version"]) == str(trained_version)
    assert ledger[0]["dag_run_id"] == run.run_id

    lake = Lake(pipeline.lake)
    window_start = (RUN_AT.date() - dt.timedelta(days=CONF["training_window_days"])).isoformat()
    assert lake.exists(f"reports/validation/ds={window_start}/training/report.html")
    assert lake.exists(evaluation["report_html"].removeprefix(pipeline.lake + "/"))
    assert lake.manifest(f"reference/{MODEL}/{trained_version}") is not None

    version = MlflowClient().get_model_version(MODEL, str(trained_version))
    assert version.tags["mlsteps.pipeline"] == load_config().name


def test_step_tasks_publish_their_summary_and_links(pipeline: Pipeline, trained: dict[str, Any]) -> None:
    """What the UI shows: each step's summary as its own XCom, and the links Airflow stored."""
    import os

    run = trained["run"]
    mlflow_ui = os.environ["MLFLOW_TRACKING_URI"]
    for task_id in (
        "validate",
        "build_features",
        "materialize",
        "build_training_set",
        "train_on_cpu",
        "evaluate",
    ):
        assert xcom_result(run, task_id, "summary") == xcom_result(run, task_id)["summary"]
    trained_model = xcom_result(run, "train_on_cpu")
    assert xcom_result(run, "train_on_cpu", "_link_MlflowRunLink") == (
        f"{mlflow_ui}/#/experiments/{trained_model['experiment_id']}/runs/{trained_model['mlflow_run_id']}"
    )
    assert xcom_result(run, "train_on_cpu", "_link_ModelVersionLink") == (
        f"{mlflow_ui}/#/models/{MODEL}/versions/{trained_model['model_version']}"
    )
    evaluation = xcom_result(run, "evaluate")
    report = evaluation["report_html"].removeprefix(pipeline.lake + "/")
    assert xcom_result(run, "evaluate", "_link_ReportLink") == f"/ml-reports/{report}"
    validation = xcom_result(run, "validate")["report_html"].removeprefix(pipeline.lake + "/")
    assert xcom_result(run, "validate", "_link_ReportLink") == f"/ml-reports/{validation}"
    assert xcom_result(run, "promote", "_link_ModelVersionLink").endswith(
        f"/versions/{evaluation['model_version']}"
    )


def test_clearing_and_rerunning_the_training_run_changes_nothing(
    pipeline: Pipeline, trained: dict[str, Any]
) -> None:
    """The same DAG run cleared and run again: no new version, no new ledger entry, same champion."""
    first = trained["run"]
    version = str(xcom_result(first, "train_on_cpu")["model_version"])
    versions_before = sorted(v.version for v in MlflowClient().search_model_versions(f"name='{MODEL}'"))
    ledger_before = _ledger(pipeline)

    rerun = pipeline.run("ml_training", RUN_AT, CONF)

    assert rerun.run_id == first.run_id
    assert str(rerun.state) == "success", task_states(rerun)
    assert str(xcom_result(rerun, "train_on_cpu")["model_version"]) == version
    versions_after = sorted(v.version for v in MlflowClient().search_model_versions(f"name='{MODEL}'"))
    assert versions_after == versions_before
    assert _ledger(pipeline) == ledger_before
    assert _champion() == version


def test_worse_challenger_is_rejected_and_champion_unchanged(
    pipeline: Pipeline, trained: dict[str, Any], tmp_path: Path
) -> None:
    champion_before = _champion()
    raw = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    raw["model"].update(num_boost_round=1, early_stopping_rounds=1, params={"max_depth": 1})
    raw["gates"]["min_roc_auc"] = 0.5  # only the champion comparison can reject it
    weak = tmp_path / "weak.yaml"
    weak.write_text(yaml.safe_dump(raw))

    run = pipeline.run(
        "ml_training",
        RUN_AT + dt.timedelta(hours=1),
        {**CONF, "min_roc_auc": 0.5},
        ML_PIPELINE_CONFIG=str(weak),
    )
    states = task_states(run)
    assert str(run.state) == "success", states
    assert states["gate"] == "success"
    assert states["promote"] == "skipped"
    evaluation = xcom_result(run, "evaluate")
    assert evaluation["approved"] is False
    assert str(evaluation["champion_version"]) == champion_before
    assert any("champion" in reason.lower() for reason in evaluation["reasons"])
    assert _champion() == champion_before
    assert len(_ledger(pipeline)) == 1


def test_equal_retrain_is_promoted_then_rolled_back(pipeline: Pipeline, trained: dict[str, Any]) -> None:
    first = _champion()
    # Same window, data and config as the first run: without `force` the step cache would reuse its version.
    retrain = pipeline.run(
        "ml_training", RUN_AT + dt.timedelta(hours=2), {**CONF, "reason": "weekly retrain", "force": True}
    )
    assert str(retrain.state) == "success", task_states(retrain)
    assert task_states(retrain)["promote"] == "success"
    second = _champion()
    assert second != first
    assert xcom_result(retrain, "promote")["previous_champion"] in (first, int(first))

    run = pipeline.run(
        "ml_rollback", RUN_AT + dt.timedelta(hours=3), {"version": "previous", "reason": "bad model"}
    )
    assert str(run.state) == "success", task_states(run)
    assert _champion() == first
    ledger = _ledger(pipeline)
    assert len(ledger) == 3
    assert str(ledger[-1]["version"]) == first

    rejected = max(int(v.version) for v in MlflowClient().search_model_versions(f"name='{MODEL}'")) - 1
    for version in ("999", str(rejected)):  # never registered; registered but rejected by the gate
        refused = pipeline.run(
            "ml_rollback", RUN_AT + dt.timedelta(hours=4), {"version": version, "reason": "typo"}
        )
        assert task_states(refused)["rollback"] == "failed"
        assert _champion() == first
    assert len(_ledger(pipeline)) == 3


def test_batch_scoring_publishes_a_partition(pipeline: Pipeline, trained: dict[str, Any]) -> None:
    # A nightly run scores the day before: this manual run's data interval is [11-05 02:00, 11-06 02:00).
    scoring_day = dt.datetime(2026, 11, 6, 2, tzinfo=dt.UTC)
    run = pipeline.run("ml_batch_scoring", scoring_day, {"shard_count": 1})
    states = task_states(run)
    assert str(run.state) == "success", states
    assert states["plan_shadow"] == "skipped"  # shadow scoring is off by default (scoring.shadow)
    manifest = Lake(pipeline.lake).manifest(f"predictions/{MODEL}/ds=2026-11-05")
    assert manifest is not None
    assert manifest["rows_out"] == manifest["rows_in"] > 1000
    assert str(manifest["model_version"]) == _champion()
    assert manifest["dag_run_id"] == run.run_id


def test_shadow_scoring_commits_the_challenger_apart_and_compares(
    pipeline: Pipeline, trained: dict[str, Any]
) -> None:
    challenger = str(MlflowClient().get_registered_model(MODEL).aliases["challenger"])
    assert challenger != _champion()  # the gate rejected the last trained version: there is one to shadow
    lake = Lake(pipeline.lake)

    run = pipeline.run("ml_batch_scoring", dt.datetime(2026, 11, 6, 2, tzinfo=dt.UTC), {"shadow": True})

    assert str(run.state) == "success", task_states(run)
    champion = lake.manifest(f"predictions/{MODEL}/ds=2026-11-05")
    shadow = lake.manifest(shadow_predictions_prefix(MODEL, "2026-11-05"))
    assert champion is not None
    assert shadow is not None
    assert (str(champion["model_version"]), champion["dag_run_id"]) == (_champion(), run.run_id)
    assert (shadow["role"], str(shadow["model_version"])) == ("shadow", challenger)
    assert shadow["rows_out"] == champion["rows_out"]
    compared = xcom_result(run, "compare_shadow")
    assert compared["status"] == "compared"
    assert compared["comparison"]["rows"] == champion["rows_out"]


def _training_runs(run_id: str) -> list[Any]:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        query = select(DagRun).where(DagRun.dag_id == "ml_training", DagRun.run_id == run_id)
        runs = list(session.scalars(query))
        return [(run.run_id, dict(run.conf or {})) for run in runs]


def test_undrifted_day_does_not_trigger_retraining(pipeline: Pipeline, trained: dict[str, Any]) -> None:
    run = pipeline.run("ml_drift_monitor", RUN_AT + dt.timedelta(hours=5), {"ds": "2026-11-05"})
    states = task_states(run)
    assert states["drift"] == "success", states
    assert xcom_result(run, "drift")["drift"] is False
    assert states["retrain_request"] == "skipped"
    assert states["trigger_retraining"] == "skipped"
    assert _training_runs("drift__2026-11-05") == []
    html = Lake(pipeline.lake).read_bytes("reports/drift/ds=2026-11-05/report.html").decode()
    assert html.startswith("<!doctype html>")


def test_drifted_day_triggers_exactly_one_retrain(pipeline: Pipeline, trained: dict[str, Any]) -> None:
    generated = pipeline.step(
        "generate-data", "--start", "2026-11-06", "--days", "1", "--rows-per-day", "2000",
        "--customers", "800", "--drift-from", "2026-11-06",
    )  # fmt: skip
    assert generated.returncode == 0, generated.stderr
    scored = pipeline.run("ml_batch_scoring", dt.datetime(2026, 11, 7, 2, tzinfo=dt.UTC), {"shard_count": 2})
    assert str(scored.state) == "success", task_states(scored)

    first = pipeline.run("ml_drift_monitor", RUN_AT + dt.timedelta(hours=6), {"ds": "2026-11-06"})
    states = task_states(first)
    assert states["trigger_retraining"] == "success", states
    drift = xcom_result(first, "drift")
    assert drift["drift"] is True
    # The drift task links to its report, its monitoring run and the model version it judged.
    report = drift["report_html"].removeprefix(pipeline.lake + "/")
    assert xcom_result(first, "drift", "_link_ReportLink") == f"/ml-reports/{report}"
    assert f"/runs/{drift['mlflow_run_id']}" in xcom_result(first, "drift", "_link_MlflowRunLink")
    assert xcom_result(first, "drift", "_link_ModelVersionLink").endswith(
        f"/versions/{drift['model_version']}"
    )
    runs = _training_runs("drift__2026-11-06")
    assert len(runs) == 1
    assert runs[0][1]["reason"] == "drift"
    assert runs[0][1]["ds"] == "2026-11-06"
    assert runs[0][1]["drifted_columns"] == drift["drifted_columns"]

    replay = pipeline.run("ml_drift_monitor", RUN_AT + dt.timedelta(hours=7), {"ds": "2026-11-06"})
    assert str(replay.state) == "success", task_states(replay)
    assert len(_training_runs("drift__2026-11-06")) == 1
