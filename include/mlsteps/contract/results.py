"""The results steps write to ``$ML_STEP_RESULT`` that other layers read: one definition per step.

The steps return these types (mypy checks that each writes every key), and the DAGs' XCom
templates (``step_tasks.templates.xcom``) refuse, when the DAG is parsed, a key a step's result
does not have. So a renamed key fails loudly instead of rendering ``--model-version None``. No ML
library is imported here: DAG files import this module.
"""

from __future__ import annotations

from typing import Any, TypedDict


class StepResult(TypedDict):
    """What every result has: one line for the UI (the ``summary`` XCom)."""

    summary: str


class MlflowRun(TypedDict):
    """The MLflow run a step logged to. Every step result names its run ``mlflow_run_id``."""

    mlflow_run_id: str | None
    experiment_id: str | None


class RegisteredRun(MlflowRun):
    """An MLflow run and the model version it registered."""

    model_name: str
    model_version: str
    model_uri: str
    run_url: str | None


class TrainResult(StepResult, RegisteredRun):
    metrics: dict[str, Any]
    training_seconds: float
    device: str
    n_trials: int
    reference_uri: str
    training_run: str
    reused: bool


class EvaluateResult(StepResult, MlflowRun):
    approved: bool
    reasons: list[str]
    model_name: str
    model_version: str
    champion_version: str | None
    metrics: dict[str, Any]
    comparison: dict[str, Any] | None
    thresholds: dict[str, Any]
    training_run: str
    report_html: str
    report_json: str


class DriftResult(StepResult, MlflowRun):
    ds: str
    drift: bool
    drifted_columns: list[str]
    drift_share: float
    columns_checked: int
    prediction_drift: bool
    model_name: str
    model_version: str
    report_html: str
    report_json: str
    mlflow_run_url: str | None


class PlanScoringResult(StepResult):
    model_name: str
    model_version: str
    alias: str
    rows: int
    shard_count: int
    #: Each shard's own score options (argv pairs), mapped over by the score task.
    shards: list[list[str]]


class MonitorPerformanceResult(StepResult, MlflowRun):
    ds: str
    model_name: str
    model_version: str
    #: "waiting" (too few labels yet), "ok" or "dropped" (this day is beyond the tolerance).
    status: str
    labeled_rows: int
    scored_rows: int
    label_coverage: float
    metric: str
    evaluation_level: float
    metrics: dict[str, Any]
    significant: bool
    reason: str
    report_html: str
    report_json: str


#: Step name (as on the command line) -> the type of its result.
RESULTS: dict[str, type] = {
    "train": TrainResult,
    "evaluate": EvaluateResult,
    "drift": DriftResult,
    "plan-scoring": PlanScoringResult,
    "monitor-performance": MonitorPerformanceResult,
}


def result_keys(step: str) -> frozenset[str]:
    """The keys of a step's result.

    Raises:
        KeyError: The step's result is not declared here.
    """
    declared: Any = RESULTS[step]
    return frozenset(declared.__required_keys__ | declared.__optional_keys__)
