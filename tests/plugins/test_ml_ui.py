"""The ``ml_ui`` Airflow plugin: which lake paths it serves, its report index, and its sign-in check."""

from __future__ import annotations

from pathlib import Path

import ml_ui
import pytest

from mlsteps.lake import Lake


@pytest.mark.parametrize(
    "requested",
    [
        "reports/evaluation/ds=2026-11-05/card_fraud_xgb-v1/report.html",
        "reports/drift/ds=2026-11-06/report.json",
    ],
)
def test_reports_are_served(requested: str) -> None:
    assert ml_ui.report_path(requested) == requested


@pytest.mark.parametrize(
    "requested",
    [
        "../etc/passwd",
        "reports/../ledger/card_fraud_xgb/0001.json",
        "reports/evaluation/../../training/run/train.parquet",
        "predictions/card_fraud/ds=2026-11-05/_SUCCESS.json",
        "reports/evaluation/ds=2026-11-05/report.py",
        "reports\\..\\x.html",
        "reports/x.html\x00.png",
        "",
    ],
)
def test_anything_but_a_report_is_refused(requested: str) -> None:
    assert ml_ui.report_path(requested) is None


def test_index_lists_html_reports_newest_day_first(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    for path in (
        "reports/evaluation/ds=2026-11-05/m-v1/report.html",
        "reports/evaluation/ds=2026-11-07/m-v2/report.html",
        "reports/evaluation/ds=2026-11-07/m-v2/report.json",
        "reports/drift/ds=2026-11-06/report.html",
    ):
        lake.write_bytes(path, b"<html></html>")
    assert ml_ui.list_reports(lake) == [
        "reports/evaluation/ds=2026-11-07/m-v2/report.html",
        "reports/evaluation/ds=2026-11-05/m-v1/report.html",
        "reports/drift/ds=2026-11-06/report.html",
    ]
    page = ml_ui._index(ml_ui.list_reports(lake))
    assert 'href="/ml-reports/reports/drift/ds=2026-11-06/report.html"' in page


def test_plugin_registers_the_report_app_and_nav_links(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    views = ml_ui._external_views()
    assert [view["name"] for view in views] == ["ML reports", "MLflow"]
    assert views[1]["href"] == "http://127.0.0.1:5000"
    assert ml_ui.MlUiPlugin.fastapi_apps[0]["url_prefix"] == "/ml-reports"


def test_reports_need_a_signed_in_user(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Through Airflow's own API server app: no token, no report (sign-in is on by default)."""
    from fastapi.testclient import TestClient

    lake = Lake(str(tmp_path / "lake"))
    lake.write_bytes("reports/drift/ds=2026-11-06/report.html", b"<html>drift</html>")
    monkeypatch.setenv("ML_LAKE_URI", lake.uri)
    monkeypatch.setenv("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "False")
    app = ml_ui._app()
    client = TestClient(app)
    response = client.get("/reports/drift/ds=2026-11-06/report.html")
    assert response.status_code == 401
