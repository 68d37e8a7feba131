"""The results steps write to ``$ML_STEP_RESULT``: one definition per step, every step declared.

Each step's ``run`` returns its type here (mypy checks that it writes every key, and keys written
only on some paths are ``NotRequired``), and the DAGs' XCom templates (``step_tasks.templates.xcom``)
refuse, when the DAG is parsed, a key a step's result does not have. So a renamed key fails
loudly instead of rendering ``--model-version None``. No ML library is imported here: DAG files
import this module.
"""

from __future__ import annotations

from typing import Any, NotRequired, TypedDict


class CachedFrom(TypedDict):
    """The earlier successful run whose outputs a cached step reused (``mlsteps.platform.step_cache``)."""

    run_id: str
    dag_id: str
    #: The cache key: SHA-256 over the step's inputs, code version, config hash and options.
    key: str


class StepResult(TypedDict):
    """What every result has: one line for the UI (the ``summary`` XCom).

    A cacheable step's result that reused an earlier run's outputs also names that run
    (``cached_from``), and its summary starts with ``cached from run <run id>``.
    """

    summary: str
    cached_from: NotRequired[CachedFrom]


class Interval(TypedDict):
    """A data interval as ISO timestamps: ``[start, end)``."""

    start: str
    end: str


class MlflowRun(TypedDict):
    """The MLflow run a step logged to. Every step that logs a run names it ``mlflow_run_id``."""

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
    #: One compact row per segment of ``evaluation.segments``: size, both ROC-AUCs, difference, verdict.
    segments: list[dict[str, Any]]
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


class GenerateDataResult(StepResult):
    rows: int
    #: The days written (YYYY-MM-DD), in order.
    days: list[str]
    uri: str
    fraud_rate: float
    drift_from: str | None
    concept_shift_from: str | None


class ValidateResult(StepResult):
    #: Always true here: an invalid interval fails the step (its failed result counts ``problems``).
    valid: bool
    rows: int
    days: list[str]
    #: Rows per categorical column whose values lie outside its categories (kept as "other").
    unseen_categories: dict[str, int]
    report_html: str
    report_json: str


class BuildFeaturesResult(StepResult):
    rows: int
    days: list[str]
    uri: str
    feature_columns: list[str]
    lookback_days: int


class MaterializeResult(StepResult):
    feature_views: list[str]
    interval: Interval
    online_store: str
    project: str


class SplitCounts(TypedDict):
    train: int
    holdout: int


class BuildTrainingSetResult(StepResult):
    training_run: str
    uri: str
    fingerprint: str
    rows: SplitCounts
    positives: SplitCounts
    interval: Interval
    holdout_start: str
    feature_service: str


class ChampionChangeResult(StepResult):
    """The result of ``promote`` and of ``rollback`` (both built by ``platform.champion.change_result``)."""

    model_name: str
    model_version: str
    champion_version: str
    previous_champion: str | None
    changed: bool
    #: None when the version was already champion and the ledger holds no entry for it (rollback).
    ledger_entry: str | None
    model_uri: str


class RecordDecisionResult(StepResult):
    model_name: str
    model_version: str
    #: The champion, unchanged (None: there is none).
    champion_version: str | None
    decision: str
    timed_out: bool
    #: Always false: a rejection moves nothing.
    changed: bool
    ledger_entry: str


class PlanScoringResult(StepResult):
    model_name: str
    model_version: str
    alias: str
    rows: int
    shard_count: int
    #: Each shard's own score options (argv pairs), mapped over by the score task.
    shards: list[list[str]]
    #: With ``--shadow``: the latest challenger was planned (no shards: nothing to shadow).
    shadow: NotRequired[bool]


class CommitPredictionsResult(StepResult):
    ds: str
    uri: str
    rows: int
    positive_rate: float
    model_version: str
    #: How many files the committed partition lists.
    files: int
    #: Sentences about an implausible flagged share (0%, or far from the training base rate); never a failure.
    warnings: list[str]


class ScoreResult(StepResult):
    model_name: str
    model_version: str
    shard_index: int
    #: This shard's rows; with one shard and no ``--defer-commit``, the committed partition's rows.
    rows: int
    seconds: float
    #: Of ``seconds``, how long the model took to arrive (registry calls, download, load); the
    #: first batches are read meanwhile. A fixed cost: it weighs on small days, not large ones.
    model_seconds: float
    #: Only when the score step committed the partition itself (one shard, no ``--defer-commit``):
    #: the keys of :class:`CommitPredictionsResult`.
    ds: NotRequired[str]
    uri: NotRequired[str]
    positive_rate: NotRequired[float]
    files: NotRequired[int]
    warnings: NotRequired[list[str]]


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
    #: When the day was also shadow-scored: the challenger on the same labelled rows (model_version,
    #: rows, roc_auc, champion_roc_auc, delta_roc_auc = shadow - champion, ci_low, ci_high).
    shadow: NotRequired[dict[str, Any]]


class CompareShadowResult(StepResult):
    ds: str
    #: "compared", or "skipped" when the day has no shadow partition (nothing is written then).
    status: str
    champion_version: NotRequired[str]
    shadow_version: NotRequired[str]
    #: rows, pearson, spearman, decision_agreement, champion_flagged_rate, shadow_flagged_rate,
    #: flagged_by_champion_only, flagged_by_shadow_only.
    comparison: NotRequired[dict[str, Any]]
    report_html: NotRequired[str]
    report_json: NotRequired[str]


class RetrainDecision(TypedDict):
    """What ``decide-retrain`` decided (also the body of its retrain record), without the summary."""

    trigger: bool
    #: Why not to retrain, or why it retrains.
    reasons: list[str]
    ds: str
    #: Only when ``trigger`` is true: the ``ml_training`` run id to trigger, and that run's conf.
    run_id: NotRequired[str]
    conf: NotRequired[dict[str, Any]]


class DecideRetrainResult(StepResult, RetrainDecision):
    pass


class LineageChain(TypedDict):
    """A prediction's lineage as ``trace`` prints it with ``--json``."""

    #: ``model``, ``ds``, ``selector`` (column -> value) and the matching ``rows``.
    prediction: dict[str, Any]
    #: One per link of the chain: name, record, status, problem, facts.
    links: list[dict[str, Any]]
    intact: bool
    #: The broken links: link, record, problem (empty when none; a broken link fails the step).
    broken: list[dict[str, str]]
    #: The performance monitor's record of the day (realized metrics on its labels), None until judged.
    realized_performance: dict[str, Any] | None


class TraceResult(StepResult, LineageChain):
    pass


class ReproductionReport(TypedDict):
    """A rebuilt version compared with the original, as ``reproduce`` prints it with ``--json``."""

    model_name: str
    model_version: str
    training_run: str
    #: ``[start, end)`` of the training data.
    interval: str
    #: ``identical``, ``equivalent`` or ``differs``.
    verdict: str
    verdict_text: str
    first_difference: dict[str, Any] | None
    checks: list[dict[str, Any]]
    environment: dict[str, Any]
    #: The scratch prefix kept by ``--keep-scratch``, else None.
    scratch: str | None


class ReproduceResult(StepResult, ReproductionReport):
    pass


#: Step name (as on the command line) -> the type of its result. Every step has one.
RESULTS: dict[str, type] = {
    "generate-data": GenerateDataResult,
    "validate": ValidateResult,
    "build-features": BuildFeaturesResult,
    "materialize": MaterializeResult,
    "build-training-set": BuildTrainingSetResult,
    "train": TrainResult,
    "evaluate": EvaluateResult,
    "promote": ChampionChangeResult,
    "record-decision": RecordDecisionResult,
    "rollback": ChampionChangeResult,
    "plan-scoring": PlanScoringResult,
    "score": ScoreResult,
    "commit-predictions": CommitPredictionsResult,
    "drift": DriftResult,
    "compare-shadow": CompareShadowResult,
    "monitor-performance": MonitorPerformanceResult,
    "decide-retrain": DecideRetrainResult,
    "trace": TraceResult,
    "reproduce": ReproduceResult,
}


def result_keys(step: str) -> frozenset[str]:
    """The keys of a step's result.

    Raises:
        KeyError: The step's result is not declared here.
    """
    declared: Any = RESULTS[step]
    return frozenset(declared.__required_keys__ | declared.__optional_keys__)
