"""The feature table's schema, derived from the pipeline config: names, order and value types.

Pure functions of the config (no pandas, no Feast): the feature step computes the columns they
name, and training sets, Feast objects and lineage records agree with it through them.
"""

from __future__ import annotations

import datetime as dt
import math

from mlsteps.contract.config import PipelineConfig
from mlsteps.errors import StepError


def aggregate_name(column: str, function: str, window: str) -> str:
    """The feature name of one rolling aggregate, e.g. ``amount_mean_30d``."""
    return f"{column}_{function}_{window}"


def label_history_name(config: PipelineConfig, function: str, window: str) -> str:
    """The feature name of one label-history aggregate, e.g. ``is_fraud_mean_30d``.

    Plain aggregates of the label are refused by the config, so these names are free.
    """
    return aggregate_name(config.dataset.label, function, window)


def label_history_names(config: PipelineConfig) -> list[str]:
    """The label-history feature names in their fixed order (empty when the config has none)."""
    history = config.features.label_history
    if history is None:
        return []
    return [label_history_name(config, f, w) for w in history.windows for f in history.functions]


def label_delay(config: PipelineConfig) -> dt.timedelta:
    """How long after its event a label becomes known: ``performance.label_delay_days``."""
    return dt.timedelta(days=config.performance.label_delay_days)


def time_part_name(config: PipelineConfig, part: str) -> str:
    """The feature name of a time part of the event time, e.g. ``event_time_hour``."""
    return f"{config.dataset.event_time}_{part}"


def feature_columns(config: PipelineConfig) -> list[str]:
    """The model's feature names in their fixed order: passthrough, aggregates, label history, time
    parts, transforms.

    Raises:
        StepError: Two features would get the same name, or a feature would shadow a key column.
    """
    names = list(config.features.passthrough)
    for spec in config.features.aggregates:
        names += [aggregate_name(spec.column, f, w) for w in spec.windows for f in spec.functions]
    names += label_history_names(config)
    names += [time_part_name(config, part) for part in config.features.time_parts]
    names += [transform.name for transform in config.features.transforms]
    reserved = {*config.dataset.key_columns, config.dataset.event_time, config.dataset.label}
    seen: set[str] = set()
    for name in names:
        if name in seen or name in reserved:
            raise StepError(
                f"feature name '{name}' is used twice or names a key, time or label column in "
                "features of the pipeline config; rename the transform or drop the duplicate"
            )
        seen.add(name)
    return names


def segment_only_columns(config: PipelineConfig) -> list[str]:
    """Raw columns a training snapshot keeps beside its features, so that `evaluate` can split the
    holdout by them: the ``evaluation.segments`` columns that are neither a feature nor a key column."""
    kept = {*feature_columns(config), *config.dataset.key_columns}
    return [s.column for s in config.evaluation.segments if s.column not in kept]


def categorical_columns(config: PipelineConfig) -> list[str]:
    """Feature columns the model treats as categories (categorical passthrough columns)."""
    columns = config.dataset.columns
    return [c for c in config.features.passthrough if columns[c].type == "categorical"]


def feature_types(config: PipelineConfig) -> dict[str, str]:
    """Each feature's value type: one of ``float``, ``int``, ``bool``, ``string``, ``timestamp``."""
    types: dict[str, str] = {}
    for column in config.features.passthrough:
        types[column] = column_value_type(config, column)
    for spec in config.features.aggregates:
        for window in spec.windows:
            for function in spec.functions:
                types[aggregate_name(spec.column, function, window)] = (
                    "int" if function == "count" else "float"
                )
    history = config.features.label_history
    for window in history.windows if history else ():
        for known in history.functions if history else ():
            types[label_history_name(config, known, window)] = "int" if known == "count" else "float"
    for part in config.features.time_parts:
        types[time_part_name(config, part)] = "int"
    for transform in config.features.transforms:
        types[transform.name] = "float"
    return {name: types[name] for name in feature_columns(config)}


def column_value_type(config: PipelineConfig, column: str) -> str:
    """The value type a raw column keeps in the feature table (nullable integers become floats)."""
    spec = config.dataset.columns[column]
    if spec.type == "integer":
        return "float" if spec.nullable else "int"
    return {"numeric": "float", "boolean": "bool", "timestamp": "timestamp"}.get(spec.type, "string")


def window_timedelta(window: str) -> dt.timedelta:
    """A config window such as ``7d`` or ``12h`` as a timedelta."""
    amount, unit = int(window[:-1]), window[-1]
    return dt.timedelta(days=amount) if unit == "d" else dt.timedelta(hours=amount)


def lookback_days(config: PipelineConfig) -> int:
    """Whole raw days to read before an interval so every window sees its full history."""
    windows = [w for spec in config.features.aggregates for w in spec.windows]
    windows += [t.window for t in config.features.transforms if t.window]
    if config.features.label_history is not None:
        windows += list(config.features.label_history.windows)
    longest = max((window_timedelta(w) for w in windows), default=dt.timedelta(0))
    return math.ceil(longest / dt.timedelta(days=1))
