"""Human approval of promotion in running Airflow services, answered through Airflow's HITL REST API.

The real services (API server, scheduler, DAG processor; tests/ui/conftest.py) run ``ml_training``
with ``require_approval`` on. Three runs, one after the other: the first is approved by a person in
headless Chromium (the task's Required actions tab: the summary and report link shown, a hostile
comment typed, which must be stored as text, then Approve clicked), the second rejected through
the REST API, the third left unanswered until its (short, configured: tests/ui/conftest.py) timeout
rejects it. Each ends with the ledger and the ``champion`` alias as expected. This module runs
first on the shared services, so the first run finds no champion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from mlflow import MlflowClient

from mlsteps.contract.config import load_config
from mlsteps.platform.lake import Lake
from mlsteps.platform.ledger import read_decisions, read_ledger
from tests.support import hitl
from tests.ui.conftest import UiAirflow

pytestmark = pytest.mark.slow

MODEL = load_config().model.registered_name
RUN_TIMEOUT_S = 900
#: `force`: each run trains its own challenger; on the same window the step cache would reuse the first.
CONF = {
    "training_window_days": 10,
    "n_trials": 0,
    "min_roc_auc": 0.5,
    "require_approval": True,
    "force": True,
}
#: Typed into the form's one-line comment field, so without a newline.
HOSTILE = "ship it $(touch /tmp/approval-pwned) `id` {{ var.value.secret }} --expected-champion 99 <b>x</b>"


def start_training(airflow: UiAirflow, run_id: str) -> dict[str, Any]:
    """A run that asks for approval; its form, once the approval task waits for an answer."""
    airflow.start_run("ml_training", {**CONF, "reason": "approval test"}, run_id=run_id)
    return hitl.wait_for_input(airflow.services, "ml_training", run_id, "approval", RUN_TIMEOUT_S)


def wait_for_run(airflow: UiAirflow, run_id: str) -> dict[str, str]:
    airflow.finished_run("ml_training", run_id, RUN_TIMEOUT_S)
    return airflow.task_states("ml_training", run_id)


def champion(airflow: UiAirflow) -> str | None:
    aliases = MlflowClient(tracking_uri=airflow.tracking_uri).get_registered_model(MODEL).aliases
    return str(aliases["champion"]) if "champion" in aliases else None


def evaluated_version(airflow: UiAirflow, run_id: str) -> str:
    entries = airflow.api(
        f"dags/ml_training/dagRuns/{run_id}/taskInstances/evaluate/xcomEntries/return_value?deserialize=true"
    )
    return str(entries["value"]["model_version"])


def approve_in_the_browser(browser: Any, airflow: UiAirflow, run_id: str, artifacts: Path) -> dict[str, Any]:
    """Open the task's Required actions tab as a person would, check what it shows, type a comment
    and click Approve; return what the page showed."""
    from playwright.sync_api import expect

    context = browser.new_context(viewport={"width": 1400, "height": 1100}, base_url=airflow.url)
    page = context.new_page()
    try:
        tab = f"/dags/ml_training/runs/{run_id}/tasks/approval/required_actions"
        page.goto(tab, wait_until="networkidle")
        approve = page.get_by_test_id("hitl-option-Approve")
        approve.wait_for(timeout=60_000)
        summary = evaluation_summary(airflow, run_id)
        page.get_by_text(summary[:40]).first.wait_for()
        report = page.get_by_role("link", name="Evaluation report")
        shown = {"summary": summary, "report_href": report.get_attribute("href")}
        page.locator("#element_comment").fill(HOSTILE)
        page.screenshot(path=str(artifacts / "10-approval-form.png"), full_page=True)
        approve.click()
        expect(approve).to_be_disabled(timeout=60_000)  # answered: the options are locked
        page.screenshot(path=str(artifacts / "11-approval-answered.png"), full_page=True)
    finally:
        context.close()
    return shown


def evaluation_summary(airflow: UiAirflow, run_id: str) -> str:
    entry = airflow.api(f"dags/ml_training/dagRuns/{run_id}/taskInstances/evaluate/xcomEntries/summary")
    return str(entry["value"]).strip('"')


@pytest.fixture(scope="module")
def approved(ui_airflow: UiAirflow, browser: Any, artifacts: Path) -> dict[str, Any]:
    """Approved in Chromium: the first run, the one a person answers in the UI."""
    assert not read_ledger(Lake(str(ui_airflow.lake)), MODEL), "test_approval runs first on the services"
    run_id = "approve_1"
    form = start_training(ui_airflow, run_id)
    shown = approve_in_the_browser(browser, ui_airflow, run_id, artifacts)
    states = wait_for_run(ui_airflow, run_id)
    response = ui_airflow.api(f"dags/ml_training/dagRuns/{run_id}/taskInstances/approval/-1/hitlDetails")
    return {"run_id": run_id, "form": form, "shown": shown, "response": response, "states": states}


@pytest.fixture(scope="module")
def rejected(ui_airflow: UiAirflow, approved: dict[str, Any]) -> dict[str, Any]:
    run_id = "reject_2"
    start_training(ui_airflow, run_id)
    comment = "holdout too small"
    response = hitl.answer(ui_airflow.services, "ml_training", run_id, "approval", "Reject", comment)
    return {"run_id": run_id, "response": response, "states": wait_for_run(ui_airflow, run_id)}


@pytest.fixture(scope="module")
def timed_out(ui_airflow: UiAirflow, rejected: dict[str, Any]) -> dict[str, Any]:
    run_id = "timeout_3"
    start_training(ui_airflow, run_id)
    return {"run_id": run_id, "states": wait_for_run(ui_airflow, run_id)}


def test_the_form_shows_summary_metrics_reason_and_report_link(approved: dict[str, Any]) -> None:
    form = approved["form"]
    assert form["options"] == ["Approve", "Reject"]
    assert "AUC" in form["body"]
    assert "no champion" in form["body"]
    assert "| challenger |" in form["body"]
    assert "approval test" in form["body"]
    assert "[Evaluation report](" in form["body"]
    assert form["subject"].startswith(f"Promote {MODEL} version ")


def test_the_page_shows_the_summary_and_the_report_link(approved: dict[str, Any]) -> None:
    assert approved["shown"]["summary"]
    assert str(approved["shown"]["report_href"]).startswith("/ml-reports/reports/evaluation/")


def test_clicking_approve_answers_with_the_chosen_option(approved: dict[str, Any]) -> None:
    assert approved["response"]["response_received"] is True
    assert approved["response"]["chosen_options"] == ["Approve"]


def test_approve_promotes_and_records_the_approver(ui_airflow: UiAirflow, approved: dict[str, Any]) -> None:
    assert approved["states"]["promote"] == "success"
    assert approved["states"]["record_rejection"] == "skipped"
    version = evaluated_version(ui_airflow, approved["run_id"])
    assert champion(ui_airflow) == version
    (entry,) = read_ledger(Lake(str(ui_airflow.lake)), MODEL)
    assert entry["version"] == version
    assert entry["approval"]["by"] == approved["response"]["responded_by_user"]["name"]
    assert entry["approval"]["at"]


def test_a_hostile_comment_is_stored_as_text(ui_airflow: UiAirflow, approved: dict[str, Any]) -> None:
    (entry,) = read_ledger(Lake(str(ui_airflow.lake)), MODEL)
    assert entry["approval"]["comment"] == HOSTILE
    tags = MlflowClient(tracking_uri=ui_airflow.tracking_uri).get_model_version(MODEL, entry["version"]).tags
    assert tags["mlsteps.approval.comment"] == HOSTILE
    assert not Path("/tmp/approval-pwned").exists()


def test_reject_promotes_nothing_and_records_who_and_why(
    ui_airflow: UiAirflow, rejected: dict[str, Any]
) -> None:
    assert rejected["states"]["promote"] == "skipped"
    assert rejected["states"]["record_rejection"] == "success"
    assert len(read_ledger(Lake(str(ui_airflow.lake)), MODEL)) == 1
    decision = read_decisions(Lake(str(ui_airflow.lake)), MODEL)[0]
    assert decision["version"] == evaluated_version(ui_airflow, rejected["run_id"])
    assert decision["approval"]["by"] == rejected["response"]["responded_by"]["name"]
    assert decision["approval"]["comment"] == "holdout too small"
    assert decision["timed_out"] is False
    assert champion(ui_airflow) == read_ledger(Lake(str(ui_airflow.lake)), MODEL)[0]["version"]


def test_no_answer_in_time_rejects_and_is_recorded(ui_airflow: UiAirflow, timed_out: dict[str, Any]) -> None:
    assert timed_out["states"]["approval"] == "success"
    assert timed_out["states"]["promote"] == "skipped"
    assert timed_out["states"]["record_rejection"] == "success"
    decisions = read_decisions(Lake(str(ui_airflow.lake)), MODEL)
    assert [d["timed_out"] for d in decisions] == [False, True]
    assert decisions[1]["version"] == evaluated_version(ui_airflow, timed_out["run_id"])
    assert len(read_ledger(Lake(str(ui_airflow.lake)), MODEL)) == 1
