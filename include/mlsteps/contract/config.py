"""The pipeline config: one YAML file describing the use case, loaded into one validated object."""

from __future__ import annotations

import hashlib
import json
import re
from functools import cached_property
from pathlib import Path
from typing import Annotated, Any, Literal, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mlsteps.contract.settings import CONFIG_ENV_VAR, StepSettings
from mlsteps.errors import StepError

DEFAULT_CONFIG_PATH = Path(__file__).resolve().parents[2] / "config" / "pipeline.yaml"

Window = Annotated[
    str, Field(pattern=r"^[1-9][0-9]{0,3}[dh]$", description="A duration such as 1d, 7d or 12h.")
]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")]
ColumnType = Literal["numeric", "integer", "categorical", "boolean", "string", "timestamp"]
AggregateFunction = Literal["count", "sum", "mean", "max", "min", "std"]
LabelHistoryFunction = Literal["count", "mean", "days_since_last_positive"]


#: The one category every value outside a column's configured ``categories`` is encoded as.
OTHER_CATEGORY = "__other__"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ColumnSpec(_Frozen):
    """One raw column and the checks the `validate` step applies to it."""

    type: ColumnType
    nullable: bool = False
    max_null_ratio: float = Field(0.0, ge=0.0, le=1.0)
    min: float | None = None
    max: float | None = None
    categories: tuple[str, ...] | None = None
    #: What a value outside ``categories`` does: ``other`` counts it, reports it and encodes it as one
    #: "other" category at training and scoring alike; ``fail`` fails validation of its day.
    unseen: Literal["other", "fail"] = "other"

    @property
    def encoded_categories(self) -> list[str]:
        """The model's categories in code order: the configured ones, then ``OTHER`` unless unseen fails."""
        configured = list(self.categories or ())
        return configured if self.unseen == "fail" else [*configured, OTHER_CATEGORY]

    @model_validator(mode="after")
    def _consistent(self) -> ColumnSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"min ({self.min}) is greater than max ({self.max})")
        if self.type == "categorical" and not self.categories:
            raise ValueError("a categorical column needs a non-empty 'categories' list")
        if OTHER_CATEGORY in (self.categories or ()):
            raise ValueError(f"'{OTHER_CATEGORY}' is reserved for values outside 'categories'")
        if self.type != "categorical" and self.categories is not None:
            raise ValueError(f"'categories' is only allowed on categorical columns, not on {self.type}")
        if (self.min is not None or self.max is not None) and self.type not in ("numeric", "integer"):
            raise ValueError(
                f"'min'/'max' are only allowed on numeric or integer columns, not on {self.type}"
            )
        return self


class DatasetConfig(_Frozen):
    """Where the raw events land and what they look like."""

    name: Identifier
    source: str = Field(pattern=r"^[A-Za-z0-9_\-/]+$", description="Lake-relative prefix of ds= partitions.")
    event_time: Identifier
    entity_keys: tuple[Identifier, ...] = Field(min_length=1)
    row_id: Identifier
    label: Identifier
    label_names: tuple[str, str] | None = Field(
        None,
        description="What reports call label 0 and label 1, e.g. [on time, delayed]; "
        "default: '<label>=0' and '<label>=1'.",
    )
    columns: dict[Identifier, ColumnSpec] = Field(min_length=2)
    min_rows_per_day: int = Field(1, ge=0)
    max_staleness_hours: float = Field(36.0, gt=0)

    @model_validator(mode="after")
    def _roles_are_columns(self) -> DatasetConfig:
        roles = {"event_time": self.event_time, "row_id": self.row_id, "label": self.label}
        roles.update({f"entity_keys[{i}]": key for i, key in enumerate(self.entity_keys)})
        for role, column in roles.items():
            if column not in self.columns:
                raise ValueError(f"{role} names '{column}', which is not in 'columns'")
        if self.columns[self.event_time].type != "timestamp":
            raise ValueError(f"event_time column '{self.event_time}' must have type timestamp")
        if self.columns[self.label].type not in ("boolean", "integer"):
            raise ValueError(f"label column '{self.label}' must be boolean or integer (0/1)")
        return self

    @property
    def class_names(self) -> tuple[str, str]:
        """The names reports give label 0 and label 1 (never a word of one use case)."""
        return self.label_names or (f"{self.label}=0", f"{self.label}=1")

    @property
    def key_columns(self) -> list[str]:
        """Columns that identify an event: the row id and the entity keys."""
        return [self.row_id, *self.entity_keys]


class AggregateSpec(_Frozen):
    """Rolling per-entity aggregates of one column over the entity's past events."""

    column: Identifier
    functions: tuple[AggregateFunction, ...] = Field(min_length=1)
    windows: tuple[Window, ...] = Field(min_length=1)


class TransformSpec(_Frozen):
    """A derived feature: log1p of a column, or a column's ratio to the entity's past mean."""

    name: Identifier
    kind: Literal["log1p", "ratio_to_entity_mean"]
    column: Identifier
    window: Window | None = None

    @model_validator(mode="after")
    def _window_when_needed(self) -> TransformSpec:
        if self.kind == "ratio_to_entity_mean" and self.window is None:
            raise ValueError("a ratio_to_entity_mean transform needs a 'window'")
        return self


class LabelHistorySpec(_Frozen):
    """Aggregates of the entity's earlier labels that were already known at each event.

    A label counts for an event only once ``event_time + performance.label_delay_days`` of its own
    event has passed, so a feature never sees a label the event's scorer could not have known.
    """

    functions: tuple[LabelHistoryFunction, ...] = Field(min_length=1)
    windows: tuple[Window, ...] = Field(min_length=1)

    @model_validator(mode="after")
    def _no_duplicates(self) -> LabelHistorySpec:
        for field, values in (("functions", self.functions), ("windows", self.windows)):
            if len(set(values)) != len(values):
                raise ValueError(f"'{field}' lists a value twice: {list(values)}")
        return self


class FeaturesConfig(_Frozen):
    """How raw events become model features. Identical for training and scoring."""

    passthrough: tuple[Identifier, ...] = ()
    aggregates: tuple[AggregateSpec, ...] = ()
    label_history: LabelHistorySpec | None = Field(
        None,
        description="Aggregates of the entity's labels known before each event (the label delay is "
        "performance.label_delay_days); unset: no label-history features.",
    )
    time_parts: tuple[Literal["hour", "day_of_week"], ...] = ()
    transforms: tuple[TransformSpec, ...] = ()
    ttl_days: int = Field(90, ge=1, description="Feast feature-view TTL.")


#: A memory size such as ``2GiB``, ``512MB`` or ``1.5GB`` (Dask's units; decimal and binary).
MEMORY_SIZE = re.compile(r"[0-9]+(\.[0-9]+)?(B|kB|KB|MB|GB|TB|KiB|MiB|GiB|TiB)")
_MEMORY_UNITS = {"B": 1, "kB": 10**3, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
_MEMORY_UNITS.update({"KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40})
#: The least memory a Dask worker gets: below it a worker cannot even hold its imports.
MIN_WORKER_MEMORY = 256 * 2**20


def memory_bytes(size: str) -> int:
    """``"2GiB"`` -> 2147483648 (a size that :data:`MEMORY_SIZE` matches whole)."""
    number = size.rstrip("BkKMGTi")
    return int(float(number) * _MEMORY_UNITS[size[len(number) :]])


class DaskConfig(_Frozen):
    """The Dask cluster the train step creates for ``model.engine: dask`` (and closes when done)."""

    workers: int = Field(2, ge=1, le=256, description="Worker processes.")
    threads_per_worker: int = Field(1, ge=1, le=64, description="Threads per worker (XGBoost's nthread).")
    memory_limit: str = Field(
        "2GiB",
        description="Memory per worker, e.g. 2GiB or 512MB; Dask spills, then pauses, then restarts a "
        "worker that goes past it.",
    )

    @field_validator("memory_limit")
    @classmethod
    def _enough_memory(cls, size: str) -> str:
        if not MEMORY_SIZE.fullmatch(size):
            raise ValueError(f"memory_limit {size!r} is not a size such as 2GiB, 512MiB or 1.5GB")
        if memory_bytes(size) < MIN_WORKER_MEMORY:
            raise ValueError(f"memory_limit {size} is below the least a worker needs (256MiB)")
        return size


class ModelConfig(_Frozen):
    """The registered model and how it is trained."""

    registered_name: str = Field(pattern=r"^[A-Za-z0-9_\-.]{1,100}$")
    experiment: str = Field("ml-training", min_length=1, max_length=200)
    params: dict[str, float | int | str | bool] = Field(default_factory=dict)
    num_boost_round: int = Field(300, ge=1, le=100_000)
    early_stopping_rounds: int = Field(30, ge=1)
    seed: int = Field(42, ge=0)
    training_window_days: int = Field(28, ge=1, le=3650)
    holdout_days: int = Field(3, ge=1)
    validation_fraction: float = Field(0.15, gt=0.0, lt=0.5)
    refit: bool = Field(
        True,
        description="Once early stopping has chosen the rounds, train the final booster again on the "
        "whole train split (early-stopping slice included); the holdout stays unseen.",
    )
    calibration: Literal["none", "isotonic", "platt"] = Field(
        "none",
        description="Post-hoc calibration of the booster's scores, fitted on the latest validation_fraction "
        "of the train split, which the booster (and its refit) never learns from; none: raw scores.",
    )
    n_trials: int = Field(0, ge=0, le=500)
    engine: Literal["single", "dask"] = Field(
        "single",
        description="single: XGBoost in the train step's own process; dask: xgboost.dask on a Dask "
        "cluster the train step creates (model.dask) and closes.",
    )
    dask: DaskConfig = Field(default_factory=DaskConfig)

    @model_validator(mode="after")
    def _search_is_single(self) -> ModelConfig:
        if self.engine == "dask" and self.n_trials > 0:
            raise ValueError(
                f"engine dask does not run an Optuna search (n_trials is {self.n_trials}); set n_trials: 0 "
                "or engine: single"
            )
        return self

    @model_validator(mode="after")
    def _holdout_fits(self) -> ModelConfig:
        if self.holdout_days >= self.training_window_days:
            raise ValueError(
                f"holdout_days ({self.holdout_days}) must be smaller than "
                f"training_window_days ({self.training_window_days})"
            )
        return self


class GatesConfig(_Frozen):
    """What a challenger must reach before it may become champion."""

    min_roc_auc: float = Field(0.75, ge=0.0, le=1.0)
    min_pr_auc: float = Field(0.0, ge=0.0, le=1.0)
    max_log_loss: float | None = Field(None, gt=0.0)
    max_calibration_error: float | None = Field(
        None, gt=0.0, le=1.0, description="Highest expected calibration error on the holdout; unset: off."
    )
    max_auc_drop: float = Field(0.01, ge=0.0, le=1.0, description="Allowed ROC-AUC regression vs champion.")
    bootstrap_samples: int = Field(200, ge=20, le=10_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    require_approval: bool = Field(
        False, description="Ask a person (Airflow's approval form) before promoting an approved challenger."
    )
    approval_timeout_hours: float = Field(
        72.0, gt=0.0, le=24 * 90, description="How long the approval waits for an answer."
    )
    approval_on_timeout: Literal["reject", "approve"] = Field(
        "reject", description="What an unanswered approval becomes once the timeout passes."
    )
    segment_regression: bool = Field(
        False,
        description="Also refuse a challenger that regresses significantly on any segment of "
        "evaluation.segments large enough to judge, even when the global ROC-AUC improves.",
    )


class SegmentSpec(_Frozen):
    """One column the holdout is split by: its values, or a numeric column bucketed by ``bins``."""

    column: Identifier
    bins: tuple[float, ...] | None = Field(
        None,
        min_length=1,
        description="Strictly increasing edges; [0, 50] gives the buckets < 0, [0, 50) and >= 50.",
    )

    @field_validator("bins")
    @classmethod
    def _strictly_increasing(cls, bins: tuple[float, ...] | None) -> tuple[float, ...] | None:
        if bins is not None and any(low >= high for low, high in zip(bins, bins[1:], strict=False)):
            raise ValueError(f"bins must be strictly increasing, got {list(bins)}")
        return bins


class EvaluationConfig(_Frozen):
    """Evaluation beyond one global metric: challenger vs champion per segment of the holdout."""

    segments: tuple[SegmentSpec, ...] = ()
    min_rows: int = Field(
        200, ge=2, description="Fewer holdout rows than this in a segment: too small to judge."
    )
    min_positives: int = Field(
        20,
        ge=1,
        description="Fewer rows of either class (positives, or negatives) in a segment: too small to judge.",
    )


class ScoringConfig(_Frozen):
    """Nightly batch scoring."""

    schedule: str = "0 2 * * *"
    alias: Identifier = "champion"
    decision_threshold: float = Field(0.5, gt=0.0, lt=1.0)
    batch_rows: int = Field(65_536, ge=1_000, le=10_000_000)
    source: Literal["features", "feast"] = "features"
    shadow: bool = Field(
        False,
        description="Also score the latest challenger (not the champion) each day, into shadow/predictions/.",
    )
    flagged_rate_warning_ratio: float | None = Field(
        3.0,
        gt=1.0,
        description="Warn when a scored day's flagged share is outside [base rate / ratio, "
        "base rate * ratio] of the model's training base rate; a 0% share always warns; unset: only that.",
    )


class DriftConfig(_Frozen):
    """When the drift monitor asks for retraining."""

    column_p_value: float = Field(0.05, gt=0.0, lt=1.0)
    drift_share: float = Field(0.3, gt=0.0, le=1.0, description="Share of drifted columns that means drift.")
    sample_rows: int = Field(50_000, ge=1_000)
    cooldown_hours: float = Field(24.0, ge=0.0)
    weekly_retrain_budget: int = Field(2, ge=0)


class PerformanceConfig(_Frozen):
    """When realized performance on delayed labels counts as a drop (the performance monitor)."""

    schedule: str = Field(
        "0 6 * * *", description="When `ml_performance_monitor` judges the day whose labels are due."
    )
    label_delay_days: int = Field(
        7, ge=0, le=365, description="Days after a scored day before its labels are expected to be in."
    )
    label_source: str | None = Field(
        None,
        description="Lake prefix of a label table (row id, label) by ds=; unset: the raw label column.",
    )
    metric: Literal["roc_auc", "pr_auc", "log_loss"] = Field(
        "roc_auc", description="The metric judged for a drop."
    )
    tolerance: float = Field(
        0.02, ge=0.0, le=1.0, description="How far past the evaluation level is tolerated."
    )
    consecutive_days: int = Field(
        2, ge=1, le=60, description="Judged days in a row beyond tolerance that make a drop."
    )
    min_labeled_rows: int = Field(
        200, ge=1, description="Fewer labelled rows than this: the day is not judged."
    )
    bootstrap_samples: int = Field(300, ge=20, le=10_000)
    confidence: float = Field(0.95, gt=0.5, lt=1.0)


NotificationEvent = Literal[
    "gate_rejected",
    "approval_requested",
    "approved",
    "rejected",
    "promoted",
    "rolled_back",
    "retrain_triggered",
    "validation_failed",
    "scoring_failed",
]
NOTIFICATION_EVENTS: tuple[NotificationEvent, ...] = get_args(NotificationEvent)


class NotificationChannel(_Frozen):
    """One place messages go. Credentials live in the Airflow connection, never here."""

    type: Literal["smtp", "webhook", "slack"]
    conn_id: str = Field(pattern=r"^[A-Za-z0-9_.\-]{1,250}$", description="An Airflow connection id.")
    to: tuple[str, ...] = Field((), description="Recipients (smtp only).")

    @model_validator(mode="after")
    def _recipients(self) -> NotificationChannel:
        if self.type == "smtp" and not self.to:
            raise ValueError("an smtp channel needs at least one recipient in 'to'")
        if self.type != "smtp" and self.to:
            raise ValueError(f"'to' is only allowed on smtp channels, not on {self.type}")
        return self


class NotificationsConfig(_Frozen):
    """Who hears about what. With no channel, messages are only written to the task log."""

    channels: tuple[NotificationChannel, ...] = ()
    events: tuple[NotificationEvent, ...] = NOTIFICATION_EVENTS


class TrainingScheduleConfig(_Frozen):
    """When `ml_training` runs on its own."""

    schedule: str = "0 3 * * 0"


class CacheConfig(_Frozen):
    """Step caching: a step whose inputs are unchanged since a successful run reuses that run's outputs."""

    enabled: bool = True


class PipelineConfig(_Frozen):
    """The whole use case. A different dataset needs only a different file of this shape."""

    name: Identifier
    dataset: DatasetConfig
    features: FeaturesConfig
    model: ModelConfig
    gates: GatesConfig = GatesConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    training: TrainingScheduleConfig = TrainingScheduleConfig()
    scoring: ScoringConfig = ScoringConfig()
    drift: DriftConfig = DriftConfig()
    performance: PerformanceConfig = PerformanceConfig()
    notifications: NotificationsConfig = NotificationsConfig()
    #: How steps run, not what they compute: left out of ``config_hash``.
    cache: CacheConfig = CacheConfig()

    @field_validator("training", "scoring", "performance", mode="after")
    @classmethod
    def _cron_has_five_fields(cls, value: Any) -> Any:
        if not re.fullmatch(r"(@\w+|(\S+\s+){4}\S+)", value.schedule.strip()):
            raise ValueError(f"schedule '{value.schedule}' is not a 5-field cron expression or @preset")
        return value

    @model_validator(mode="after")
    def _features_use_known_columns(self) -> PipelineConfig:
        columns = self.dataset.columns
        used = [("passthrough", c) for c in self.features.passthrough]
        used += [("aggregates", a.column) for a in self.features.aggregates]
        used += [("transforms", t.column) for t in self.features.transforms]
        for where, column in used:
            if column not in columns:
                raise ValueError(f"features.{where} uses column '{column}', which is not in dataset.columns")
            if column == self.dataset.label:
                raise ValueError(f"features.{where} uses the label '{column}': that would leak the target")
        for aggregate in self.features.aggregates:
            if columns[aggregate.column].type not in ("numeric", "integer", "boolean"):
                raise ValueError(f"features.aggregates: column '{aggregate.column}' is not numeric")
        return self

    @model_validator(mode="after")
    def _label_history_is_leak_free(self) -> PipelineConfig:
        history, performance = self.features.label_history, self.performance
        if history is None:
            return self
        delay = performance.label_delay_days
        if delay < 1:
            raise ValueError(
                "features.label_history needs performance.label_delay_days of at least 1: with 0 a "
                "label would count as known at its own event's time; set the days labels take to arrive"
            )
        if performance.label_source is not None:
            raise ValueError(
                "features.label_history reads labels from the raw partitions' label column, but "
                f"performance.label_source ('{performance.label_source}') says they land elsewhere; "
                "unset one of them"
            )
        for window in history.windows:
            amount, unit = int(window[:-1]), window[-1]
            if (amount if unit == "d" else amount / 24) <= delay:
                raise ValueError(
                    f"features.label_history.windows: '{window}' is not longer than the label delay "
                    f"(performance.label_delay_days = {delay}), so no label in it is known yet; "
                    "use a longer window"
                )
        return self

    @model_validator(mode="after")
    def _segments_are_judgeable_columns(self) -> PipelineConfig:
        columns = self.dataset.columns
        for index, segment in enumerate(self.evaluation.segments):
            where = f"evaluation.segments[{index}]"
            spec = columns.get(segment.column)
            if spec is None:
                raise ValueError(f"{where} uses column '{segment.column}', which is not in dataset.columns")
            if segment.column in (self.dataset.label, self.dataset.event_time) or spec.type == "timestamp":
                raise ValueError(
                    f"{where} uses column '{segment.column}': segments need a categorical, boolean, "
                    "string or numeric input column, not the label or a timestamp"
                )
            if segment.bins is not None and spec.type not in ("numeric", "integer"):
                raise ValueError(f"{where}: 'bins' are only allowed on numeric columns, not on {spec.type}")
            if segment.bins is None and spec.type == "numeric":
                raise ValueError(f"{where}: numeric column '{segment.column}' needs 'bins' to bucket it")
        columns_used = [segment.column for segment in self.evaluation.segments]
        if len(set(columns_used)) != len(columns_used):
            raise ValueError("evaluation.segments names a column twice")
        if self.gates.segment_regression and not self.evaluation.segments:
            raise ValueError("gates.segment_regression is on but evaluation.segments names no column")
        return self

    @cached_property
    def config_hash(self) -> str:
        """A stable hash of the config's content, recorded for lineage.

        The ``cache`` section says how steps run, not what they compute, so it is left out: turning
        caching off or on changes no output, no step's cache key and no recorded lineage.
        """
        content = self.model_dump(mode="json", exclude={"cache"})
        canonical = json.dumps(content, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def config_path(settings: StepSettings | None = None) -> Path:
    """The config file in use: ``$ML_PIPELINE_CONFIG`` of ``settings`` (read from this process's
    environment by default), else the default under ``include/config``."""
    return Path((settings or StepSettings.from_env()).config_file or DEFAULT_CONFIG_PATH)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Load and validate the pipeline config.

    Args:
        path: The YAML file; defaults to :func:`config_path`.

    Returns:
        The validated, immutable config.

    Raises:
        StepError: The file is missing, is not YAML, or a field is invalid. The message names
            the file and every bad field.
    """
    file = Path(path) if path is not None else config_path()
    try:
        raw = yaml.safe_load(file.read_text())
    except FileNotFoundError:
        raise StepError(
            f"pipeline config {file} does not exist; set {CONFIG_ENV_VAR} to a valid YAML file"
        ) from None
    except (OSError, UnicodeDecodeError) as err:
        raise StepError(
            f"pipeline config {file} cannot be read ({type(err).__name__}: {err}); "
            f"set {CONFIG_ENV_VAR} to a readable YAML file"
        ) from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        line = f" at line {where.line + 1}" if where is not None else ""
        raise StepError(
            f"pipeline config {file} is not valid YAML{line}; fix the syntax and re-run"
        ) from None
    if not isinstance(raw, dict):
        raise StepError(f"pipeline config {file} must be a YAML mapping at the top level")
    try:
        return PipelineConfig.model_validate(raw)
    except ValidationError as err:
        raise StepError(f"pipeline config {file} is invalid: {describe_validation_error(err)}") from None


def describe_validation_error(err: ValidationError) -> str:
    """Turn pydantic's errors into one line that names each bad field."""
    parts = []
    for error in err.errors():
        field = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        value = error.get("input")
        if error["type"] == "missing":
            parts.append(f"field '{field}' is required")
        elif error["type"] == "extra_forbidden":
            parts.append(f"field '{field}' is not a known setting (check its spelling)")
        else:
            # A whole section as the offending value is noise; the message names the field inside it.
            got = "" if isinstance(value, dict | list) else f" (got {value!r:.60})"
            parts.append(f"field '{field}': {message}{got}" if field else f"{message}{got}")
    return "; ".join(parts)
