"""A second, real dataset through the real DAGs: hourly bike-sharing demand with the example config.

The config (include/config/examples/bikeshare.yaml) names every column, the label, the entity and the
class names differently from the demo's, so this also proves that nothing of the demo's use case is
wired into the code: training, promotion, scoring, drift and trace all run from that file alone.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from typing import Any

import pytest
from mlflow import MlflowClient
from repotools.bikeshare import EXAMPLE_CONFIG

from mlsteps.contract.config import load_config
from mlsteps.platform.lake import Lake
from tests.integration.conftest import Pipeline, task_states, xcom_result
from tests.support.airflow import load_dagbag

pytestmark = pytest.mark.slow

CONFIG = load_config(EXAMPLE_CONFIG)
MODEL = CONFIG.model.registered_name
#: Land 2011-02-01 .. 2011-05-01 as 2022-02-01 .. 2022-05-01 (2022 keeps 2011's weekdays).
SKIP_DAYS, LANDED_DAYS = 31, 90
#: The training window is the 56 days before 2022-05-01; the config holds out its last 28.
TRAINED_AT = dt.datetime(2022, 5, 1, 3, tzinfo=dt.UTC)
CONF = {"training_window_days": 56, "n_trials": 0, "reason": "example dataset"}
SCORED_DAY = "2022-05-01"
#: Words of the demo's use case that must not reach a report or a DAG doc of another dataset.
DEMO_WORDS = re.compile(r"\b(fraud|legit|transactions?|cards?|customers?)\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def example(pipeline: Pipeline) -> dict[str, Any]:
    """Land the days, then train, score the next day and judge its drift, each through its DAG."""
    pipeline.monkeypatch.setenv("ML_PIPELINE_CONFIG", str(EXAMPLE_CONFIG))
    loader = [sys.executable, "-m", "repotools.bikeshare"]
    landed = subprocess.run(
        [*loader, "--skip-days", str(SKIP_DAYS), "--days", str(LANDED_DAYS)],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert landed.returncode == 0, landed.stderr
    trained = pipeline.run("ml_training", TRAINED_AT, CONF)
    scored = pipeline.run("ml_batch_scoring", dt.datetime(2022, 5, 2, 2, tzinfo=dt.UTC), {"shard_count": 1})
    drift = pipeline.run("ml_drift_monitor", TRAINED_AT + dt.timedelta(days=1, hours=3), {"ds": SCORED_DAY})
    return {"trained": trained, "scored": scored, "drift": drift}


def test_training_promotes_a_champion_that_beats_the_floor(example: dict[str, Any]) -> None:
    run = example["trained"]
    assert str(run.state) == "success", task_states(run)
    evaluation = xcom_result(run, "evaluate")
    assert evaluation["approved"] is True
    assert evaluation["metrics"]["challenger"]["roc_auc"] >= 0.85
    champion = MlflowClient().get_registered_model(MODEL).aliases["champion"]
    assert str(champion) == str(xcom_result(run, "train_on_cpu")["model_version"])


def test_scoring_commits_every_hour_of_the_day(pipeline: Pipeline, example: dict[str, Any]) -> None:
    run = example["scored"]
    assert str(run.state) == "success", task_states(run)
    manifest = Lake(pipeline.lake).manifest(f"predictions/{MODEL}/ds={SCORED_DAY}")
    assert manifest is not None
    assert manifest["rows_in"] == manifest["rows_out"] == 24  # 2011-05-01 has all its hours


def test_drift_monitor_judges_the_scored_day(pipeline: Pipeline, example: dict[str, Any]) -> None:
    run = example["drift"]
    states = task_states(run)
    assert states["drift"] == "success", states
    result = xcom_result(run, "drift")
    assert result["ds"] == SCORED_DAY
    assert isinstance(result["drift"], bool)
    assert str(result["model_version"]) == str(MlflowClient().get_registered_model(MODEL).aliases["champion"])
    assert Lake(pipeline.lake).exists(f"reports/drift/ds={SCORED_DAY}/report.html")


def test_trace_follows_one_hour_to_the_champion(example: dict[str, Any]) -> None:
    version = str(MlflowClient().get_registered_model(MODEL).aliases["champion"])
    traced = subprocess.run(
        [sys.executable, "-m", "mlsteps", "trace", "--ds", SCORED_DAY, "--row-id", "2022-05-01T08", "--json"],
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert traced.returncode == 0, traced.stdout + traced.stderr
    document = json.loads(traced.stdout[traced.stdout.index("{") :])
    assert f"{MODEL}" in json.dumps(document)
    assert any(str(link.get("version")) == version for link in _links(document))


def _links(document: dict[str, Any]) -> list[dict[str, Any]]:
    return [link.get("facts", link) for link in document.get("links", [])]


def test_evaluation_report_names_the_config_classes_and_no_demo_word(
    pipeline: Pipeline, example: dict[str, Any]
) -> None:
    report = xcom_result(example["trained"], "evaluate")["report_html"].removeprefix(pipeline.lake + "/")
    html = Lake(pipeline.lake).read_bytes(report).decode()
    assert "holdout rows of busy hour (positive)" in html
    assert "holdout rows of quiet hour" in html
    assert DEMO_WORDS.findall(html) == []


def test_dag_docs_carry_no_demo_word(pipeline: Pipeline, example: dict[str, Any]) -> None:
    assert os.environ["ML_PIPELINE_CONFIG"] == str(EXAMPLE_CONFIG)
    with pytest.MonkeyPatch.context() as scoped:
        dags = load_dagbag(scoped, "local").dags
    assert {dag_id: DEMO_WORDS.findall(dag.doc_md or "") for dag_id, dag in dags.items()} == {
        dag_id: [] for dag_id in dags
    }
