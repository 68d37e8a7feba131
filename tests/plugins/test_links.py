"""Task links and summaries: URLs built from a step's result, and the settings behind them."""

from __future__ import annotations

import pytest

from step_tasks.links import STEP_LINKS, mlflow_run_url, model_version_url, publish_summary, report_url
from step_tasks.settings import ExecutionSettings, SettingsError, load_settings
from tests.support.airflow import RecordingTaskInstance

MLFLOW = "http://mlflow.example.com:5000"
LOCAL = ExecutionSettings(mlflow_ui_url=MLFLOW, step_env={"ML_LAKE_URI": "/srv/lake"})
S3 = ExecutionSettings(
    reports_url="https://airflow.example.com/ml-reports", step_env={"ML_LAKE_URI": "s3://bucket/ml/"}
)


def test_mlflow_run_link_needs_the_run_and_its_experiment() -> None:
    result = {"mlflow_run_id": "abc123", "experiment_id": "7"}
    assert mlflow_run_url(result, LOCAL) == f"{MLFLOW}/#/experiments/7/runs/abc123"
    assert mlflow_run_url({"mlflow_run_id": "abc123"}, LOCAL) == ""
    # Airflow's own run_id is another thing: a result's MLflow run is only ever ``mlflow_run_id``.
    assert mlflow_run_url({"run_id": "abc123", "experiment_id": "7"}, LOCAL) == ""
    assert mlflow_run_url(result, ExecutionSettings()) == ""  # no MLflow UI known: no link


def test_model_version_link_quotes_the_model_name() -> None:
    result = {"model_name": "fraud model/eu", "model_version": "12"}
    assert model_version_url(result, LOCAL) == f"{MLFLOW}/#/models/fraud%20model%2Feu/versions/12"
    assert model_version_url({"model_name": "m"}, LOCAL) == ""


@pytest.mark.parametrize(
    ("settings", "report", "expected"),
    [
        (
            LOCAL,
            "/srv/lake/reports/evaluation/ds=2026-11-05/m-v1/report.html",
            "/ml-reports/reports/evaluation/ds=2026-11-05/m-v1/report.html",
        ),
        (
            S3,
            "s3://bucket/ml/reports/drift/ds=2026-11-06/report.html",
            "https://airflow.example.com/ml-reports/reports/drift/ds=2026-11-06/report.html",
        ),
        (LOCAL, "/elsewhere/reports/x/report.html", ""),  # not in this lake: no link
        (LOCAL, "/srv/lake-other/reports/x/report.html", ""),
        (LOCAL, "", ""),
    ],
)
def test_report_link_is_the_lake_path_under_the_reports_url(
    settings: ExecutionSettings, report: str, expected: str
) -> None:
    assert report_url({"report_html": report}, settings) == expected


def test_every_step_task_carries_the_three_links() -> None:
    from step_tasks.local import LocalStepOperator

    names = [link.name for link in LocalStepOperator.operator_extra_links]
    assert names == ["MLflow run", "Model version", "Report"]
    assert len({link.xcom_key for link in STEP_LINKS}) == 3  # each link stored under its own XCom key


def test_summary_is_published_as_its_own_xcom() -> None:
    ti = RecordingTaskInstance()
    result = {"summary": "AUC 0.93 vs champion 0.91: approved", "approved": True}
    assert publish_summary({"ti": ti}, result) is result
    assert ti.pushed == {"summary": "AUC 0.93 vs champion 0.91: approved"}
    publish_summary({"ti": ti}, {"rows": 3})  # no summary: nothing pushed
    assert ti.pushed == {"summary": "AUC 0.93 vs champion 0.91: approved"}


def test_mlflow_ui_url_defaults_to_an_http_tracking_server() -> None:
    assert load_settings({"MLFLOW_TRACKING_URI": "http://mlflow:5000/"}).mlflow_ui_url == "http://mlflow:5000"
    assert load_settings({"MLFLOW_TRACKING_URI": "sqlite:///x.db"}).mlflow_ui_url == ""
    explicit = {
        "MLFLOW_TRACKING_URI": "http://mlflow-internal:5000",
        "ML_MLFLOW_UI_URL": "https://mlflow.example.com",
    }
    assert load_settings(explicit).mlflow_ui_url == "https://mlflow.example.com"
    assert load_settings({}).reports_url == "/ml-reports"
    assert (
        load_settings({"ML_REPORTS_URL": "https://r.example.com/x/"}).reports_url == "https://r.example.com/x"
    )


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ML_MLFLOW_UI_URL", "ftp://mlflow"),
        ("ML_MLFLOW_UI_URL", "https://user:secret@mlflow.example.com"),
        ("ML_REPORTS_URL", "javascript:alert(1)"),
    ],
)
def test_bad_link_settings_are_refused_by_name(name: str, value: str) -> None:
    with pytest.raises(SettingsError, match=name):
        load_settings({name: value})
