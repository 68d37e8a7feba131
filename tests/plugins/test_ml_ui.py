"""The ``ml_ui`` Airflow plugin: which lake paths it serves, its report index, its sign-in check, and
that it serves reports from a local or S3 lake where pyarrow is not installed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import ml_ui
import pytest

from mlsteps.platform.lake import Lake
from tests.support.airflow import PLUGINS
from tests.support.services import S3Server


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


# --- the report pages without pyarrow (the lean Airflow image installs mlsteps without its deps) ---

#: Serves the index and one report of each lake given (name=URI) through the plugin's app, in a
#: process where pyarrow cannot load. Sign-in (tested above) is not the point: a signed-in user is given.
NO_PYARROW_DRIVER = """
import json, os, sys
sys.modules["pyarrow"] = None  # `import pyarrow` (and pyarrow.fs) now raises ImportError
sys.path.insert(0, sys.argv[1])
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
from airflow.api_fastapi.core_api.security import get_user
from fastapi.testclient import TestClient
import ml_ui
app = ml_ui._app()
app.dependency_overrides[get_user] = lambda: SimpleAuthManagerUser(username="viewer", role="viewer")
client = TestClient(app)
answers = {}
for lake in sys.argv[3:]:
    name, os.environ["ML_LAKE_URI"] = lake.split("=", 1)
    index = client.get("/")
    report = client.get("/" + sys.argv[2])
    answers[name] = {
        "index": [index.status_code, index.text],
        "report": [report.status_code, report.text],
        "missing": client.get("/reports/drift/ds=2026-01-01/report.html").status_code,
    }
print("@@" + json.dumps({"lakes": answers, "pyarrow_loaded": sys.modules.get("pyarrow") is not None}))
"""
REPORT = "reports/drift/ds=2026-11-06/report.html"
LAKES = ["local", "s3"]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, s3: S3Server) -> dict[str, Any]:
    """The report app's answers, without pyarrow, for a report in a local lake and in an S3 lake."""
    with pytest.MonkeyPatch.context() as patch:
        for key, value in s3.env.items():
            patch.setenv(key, value)
        s3.create_bucket("reports-lake")
        lakes = {
            "local": Lake(str(tmp_path_factory.mktemp("reports") / "lake")),
            "s3": Lake(f"s3://reports-lake/{uuid.uuid4().hex[:12]}"),
        }
        for lake in lakes.values():  # the steps write reports with pyarrow; the pages only read them
            lake.write_bytes(REPORT, b"<html>drift on amount</html>")
        argv = [sys.executable, "-c", NO_PYARROW_DRIVER, str(PLUGINS), REPORT]
        argv += [f"{name}={lake.uri}" for name, lake in lakes.items()]
        done = subprocess.run(
            argv, env=dict(os.environ), capture_output=True, text=True, timeout=300, check=False
        )
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(line for line in done.stdout.splitlines() if line.startswith("@@"))
    return dict(json.loads(line[2:]))


@pytest.mark.parametrize("lake", LAKES)
def test_report_is_served_without_pyarrow(served: dict[str, Any], lake: str) -> None:
    assert served["lakes"][lake]["report"] == [200, "<html>drift on amount</html>"]


@pytest.mark.parametrize("lake", LAKES)
def test_index_lists_reports_without_pyarrow(served: dict[str, Any], lake: str) -> None:
    status, page = served["lakes"][lake]["index"]
    assert status == 200
    assert f'href="/ml-reports/{REPORT}"' in page


@pytest.mark.parametrize("lake", LAKES)
def test_missing_report_is_404_without_pyarrow(served: dict[str, Any], lake: str) -> None:
    assert served["lakes"][lake]["missing"] == 404


def test_pyarrow_never_loads(served: dict[str, Any]) -> None:
    assert served["pyarrow_loaded"] is False


def test_a_symlink_out_of_the_lake_is_not_served(tmp_path: Path) -> None:
    secret = tmp_path / "secret.html"
    secret.write_text("<html>not a report</html>")
    link = tmp_path / "lake" / "reports" / "drift" / "ds=2026-11-06" / "report.html"
    link.parent.mkdir(parents=True)
    link.symlink_to(secret)
    assert (
        ml_ui.ReportStore(str(tmp_path / "lake")).exists("reports/drift/ds=2026-11-06/report.html") is False
    )
