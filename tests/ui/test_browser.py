"""The Airflow UI as a person sees it: DAG list, docs, the trigger form, a run, its links and a report.

Headless Chromium (Debian's package, through Playwright) against Airflow's real API server,
scheduler and DAG processor on loopback. The run is triggered from the form and executed by the
scheduler, steps and all. Every page checked is saved as a screenshot under ``test-artifacts/ui/``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.airflow import load_dagbag
from tests.ui.conftest import UiAirflow

pytestmark = pytest.mark.slow

DAG_TAGS = {
    "ml_training": "training",
    "ml_batch_scoring": "scoring",
    "ml_drift_monitor": "monitoring",
    "ml_rollback": "registry",
}
STEP_TASKS = ["validate", "build_features", "materialize", "build_training_set", "train_on_cpu", "evaluate"]
RUN_TIMEOUT_S = 900
WINDOW_DAYS = 10


@pytest.fixture(scope="module")
def page(browser: Any, ui_airflow: UiAirflow, artifacts: Path) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, base_url=ui_airflow.url)
    opened = context.new_page()
    try:
        yield opened
    finally:
        opened.screenshot(path=str(artifacts / "last-page.png"), full_page=True)
        context.close()


def shot(page: Any, artifacts: Path, name: str) -> None:
    page.screenshot(path=str(artifacts / f"{name}.png"), full_page=True)


def training_params() -> dict[str, tuple[str, str]]:
    """The ``ml_training`` Params as the DAG file defines them: name -> (title, description)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        dag = load_dagbag(monkeypatch, "local").dags["ml_training"]
    params = {name: dag.params.get_param(name) for name in dag.params}
    return {name: (param.schema["title"], param.description) for name, param in params.items()}


def test_dags_are_listed_with_tags_and_docs(page: Any, artifacts: Path) -> None:
    page.goto("/dags", wait_until="networkidle")
    for dag_id, tag in DAG_TAGS.items():
        card = page.locator("div", has=page.get_by_role("link", name=dag_id, exact=True)).last
        card.wait_for()
        assert tag in card.inner_text(), f"{dag_id} card lacks tag {tag}"
    shot(page, artifacts, "01-dag-list")

    page.goto("/dags/ml_training", wait_until="networkidle")
    page.get_by_role("button", name="Dag Docs").click()
    docs = page.get_by_role("dialog").filter(has_text="Retrains the model")
    docs.wait_for()
    assert "evaluation gate" in docs.inner_text()
    shot(page, artifacts, "02-dag-docs")
    page.keyboard.press("Escape")


def open_trigger_form(page: Any) -> Any:
    page.goto("/dags/ml_training", wait_until="networkidle")
    page.get_by_role("button", name="Trigger Dag").click()
    form = page.get_by_role("dialog").filter(has_text="Run Parameters")
    form.wait_for()
    return form


def test_trigger_form_explains_every_param(page: Any, artifacts: Path) -> None:
    form = open_trigger_form(page)
    text = form.inner_text()
    for name, (title, description) in training_params().items():
        assert title in text, f"param {name}: title {title!r} not on the form"
        assert description.split(".")[0] in text, f"param {name}: description not on the form"
    assert "CPU (profile cpu)" in text  # the device enum shows its display names
    shot(page, artifacts, "03-trigger-form")
    page.keyboard.press("Escape")


def number_field(form: Any, param: str) -> Any:
    """The input of a number Param (the form names its step buttons, not the input, after the Param)."""
    input_id = form.locator(f"[id='number-input:element_{param}:inc']").get_attribute("aria-controls")
    return form.locator(f"[id='{input_id}']")


@pytest.fixture(scope="module")
def triggered_run(page: Any, ui_airflow: UiAirflow, artifacts: Path) -> dict[str, Any]:
    """Trigger ml_training from the form with a short window; wait until the scheduler finished it."""
    earlier = {run["dag_run_id"] for run in ui_airflow.api("dags/ml_training/dagRuns?limit=100")["dag_runs"]}
    form = open_trigger_form(page)
    number_field(form, "training_window_days").fill(str(WINDOW_DAYS))
    form.locator("#element_reason").fill("browser test")
    shot(page, artifacts, "04-trigger-filled")
    form.get_by_test_id("trigger-dag-submit").click()
    deadline = time.monotonic() + 120
    created: list[str] = []
    while not created and time.monotonic() < deadline:
        runs = ui_airflow.api("dags/ml_training/dagRuns?limit=100")["dag_runs"]
        created = [run["dag_run_id"] for run in runs if run["dag_run_id"] not in earlier]
        time.sleep(1)
    assert len(created) == 1, f"the form created {created} (runs before: {sorted(earlier)})"
    run = ui_airflow.finished_run("ml_training", created[0], RUN_TIMEOUT_S)
    assert run["conf"]["training_window_days"] == WINDOW_DAYS
    assert run["conf"]["reason"] == "browser test"
    return run


def test_triggered_run_shows_step_summaries(
    page: Any, ui_airflow: UiAirflow, triggered_run: dict[str, Any], artifacts: Path
) -> None:
    run_id = triggered_run["dag_run_id"]
    page.goto(f"/dags/ml_training/runs/{run_id}", wait_until="networkidle")
    shot(page, artifacts, "05-run")
    for task_id in STEP_TASKS:
        entry = ui_airflow.api(
            f"dags/ml_training/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/summary"
        )
        summary = str(entry["value"]).strip('"')
        assert summary, f"{task_id} has no summary"
        page.goto(f"/dags/ml_training/runs/{run_id}/tasks/{task_id}/xcom", wait_until="networkidle")
        page.get_by_text(summary[:40]).first.wait_for()
        shot(page, artifacts, f"06-summary-{task_id}")


def open_details(page: Any, run_id: str, task_id: str) -> None:
    """A task instance's Details tab, where Airflow lists the task's extra links."""
    page.goto(f"/dags/ml_training/runs/{run_id}/tasks/{task_id}/details", wait_until="networkidle")
    page.get_by_text("Extra Links").wait_for()


def test_extra_links_resolve(
    page: Any, ui_airflow: UiAirflow, triggered_run: dict[str, Any], artifacts: Path
) -> None:
    run_id = triggered_run["dag_run_id"]
    trained = ui_airflow.api(
        f"dags/ml_training/dagRuns/{run_id}/taskInstances/train_on_cpu/xcomEntries/return_value?deserialize=true"
    )["value"]
    open_details(page, run_id, "train_on_cpu")
    mlflow_link = page.get_by_role("link", name="MLflow run")
    mlflow_link.wait_for()
    href = mlflow_link.get_attribute("href")
    assert href
    assert href.startswith(f"{ui_airflow.tracking_uri}/#/experiments/")
    version_href = page.get_by_role("link", name="Model version").get_attribute("href")
    assert version_href
    assert "/#/models/" in version_href
    shot(page, artifacts, "07-train-links")
    mlflow_page = page.context.new_page()
    try:
        response = mlflow_page.goto(href, wait_until="load")  # MLflow keeps polling: never idle
        assert response is not None
        assert response.ok
        # The MLflow run page names the run that trained the version: "train <training run>" (the
        # training run of an earlier DAG run when the step cache reused its version).
        name = f"train {trained['training_run']}"
        mlflow_page.get_by_text(re.compile(rf"^{re.escape(name)}")).first.wait_for(timeout=60_000)
    finally:
        shot(mlflow_page, artifacts, "08-mlflow-run")
        mlflow_page.close()


def test_report_renders_with_plots(page: Any, triggered_run: dict[str, Any], artifacts: Path) -> None:
    open_details(page, triggered_run["dag_run_id"], "evaluate")
    link = page.get_by_role("link", name="Report")
    link.wait_for()
    href = link.get_attribute("href")
    assert href
    assert href.startswith("/ml-reports/reports/evaluation/")  # served by the ml_ui plugin, same origin
    report = page.context.new_page()
    response = report.goto(href, wait_until="networkidle")
    assert response is not None
    assert response.ok
    assert "sandbox" in (response.headers.get("content-security-policy") or "")
    for heading in ("ROC curves", "Precision-recall curves", "Confusion matrices", "Score distribution"):
        image = report.get_by_role("img", name=heading)
        image.wait_for()
        width = image.evaluate("element => element.naturalWidth")
        assert width > 100, f"plot {heading!r} did not render (naturalWidth {width})"
    shot(report, artifacts, "09-evaluation-report")
    report.close()
