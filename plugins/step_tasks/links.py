"""What a step task shows in the Airflow UI: extra links to MLflow and its report, and its summary.

Every step writes a JSON result (the task's ``return_value`` XCom). The links are built from the
ids in it, after the task ends: Airflow 3 calls ``get_link`` on the worker and stores each link
as an XCom, so the API server needs neither this module nor MLflow to show them. A result
without the ids a link needs (a step that logs no MLflow run, say) gives no link.

Result keys read: ``experiment_id`` with ``mlflow_run_id`` (MLflow run),
``model_name`` with ``model_version`` (registered model version) and ``report_html`` (a report
in the lake, served by the ``ml_ui`` plugin unless ``ML_REPORTS_URL`` points elsewhere).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

from mlsteps.platform.mlflow_registry import model_version_page, run_page
from step_tasks.settings import ExecutionSettings, load_settings

if TYPE_CHECKING:
    from airflow.sdk import BaseOperator
    from airflow.sdk.types import TaskInstanceKey

log = logging.getLogger(__name__)

#: The XCom key holding the step's one-line summary (a task instance's tab Storage, XCom lists it).
SUMMARY_KEY = "summary"
RETURN_KEY = "return_value"


def mlflow_run_url(result: Mapping[str, Any], settings: ExecutionSettings) -> str:
    """The MLflow UI page of the run the step logged to, or ``""``."""
    run_id = result.get("mlflow_run_id")
    experiment_id = result.get("experiment_id")
    if not (settings.mlflow_ui_url and run_id and experiment_id):
        return ""
    return run_page(settings.mlflow_ui_url, experiment_id, run_id)


def model_version_url(result: Mapping[str, Any], settings: ExecutionSettings) -> str:
    """The MLflow UI page of the registered model version the step produced or judged, or ``""``."""
    name, version = result.get("model_name"), result.get("model_version")
    if not (settings.mlflow_ui_url and name and version):
        return ""
    return model_version_page(settings.mlflow_ui_url, name, version)


def report_url(result: Mapping[str, Any], settings: ExecutionSettings) -> str:
    """Where a browser opens the step's HTML report, or ``""``.

    ``report_html`` is a lake URI; its path under the lake root is appended to ``reports_url``.
    """
    report = str(result.get("report_html") or "")
    lake = settings.step_env.get("ML_LAKE_URI", "").rstrip("/")
    if not (report and lake and report.startswith(f"{lake}/")):
        return ""
    relative = report[len(lake) + 1 :]
    return f"{settings.reports_url}/{quote(relative, safe='/=')}"


class StepResultLink(BaseOperatorLink):
    """A link built from the step's JSON result; subclasses name it and pick the URL."""

    name: ClassVar[str] = ""

    def url(self, result: Mapping[str, Any], settings: ExecutionSettings) -> str:
        raise NotImplementedError

    def get_link(self, operator: BaseOperator, *, ti_key: TaskInstanceKey) -> str:
        from airflow.sdk.execution_time.xcom import XCom

        result = XCom.get_value(ti_key=ti_key, key=RETURN_KEY)
        if not isinstance(result, Mapping):
            return ""
        return self.url(result, load_settings())


class MlflowRunLink(StepResultLink):
    name = "MLflow run"

    def url(self, result: Mapping[str, Any], settings: ExecutionSettings) -> str:
        return mlflow_run_url(result, settings)


class ModelVersionLink(StepResultLink):
    name = "Model version"

    def url(self, result: Mapping[str, Any], settings: ExecutionSettings) -> str:
        return model_version_url(result, settings)


class ReportLink(StepResultLink):
    name = "Report"

    def url(self, result: Mapping[str, Any], settings: ExecutionSettings) -> str:
        return report_url(result, settings)


#: The links every step task carries (a link with nothing to point at is not shown).
STEP_LINKS: tuple[StepResultLink, ...] = (MlflowRunLink(), ModelVersionLink(), ReportLink())


def publish_summary(context: Any, result: Any) -> Any:
    """Log the result's one-line summary and push it as the ``summary`` XCom; return ``result``."""
    if isinstance(result, Mapping) and result.get(SUMMARY_KEY):
        summary = str(result[SUMMARY_KEY])
        log.info("Result: %s", summary)
        ti = context.get("ti") if isinstance(context, Mapping) else None
        if ti is not None:
            ti.xcom_push(key=SUMMARY_KEY, value=summary)
    return result
