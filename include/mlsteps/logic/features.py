"""Feature computation over raw frames (names and types: :mod:`mlsteps.contract.feature_schema`).

Every feature of an event is computed from the event itself and its entity's strictly earlier
events, never from later events, so the table serves training (point-in-time joins) and scoring
alike. Labels enter only through label-history features, and only the labels already known at
the event: an earlier event's label counts once its event time plus the label delay has passed.
That rule reads times only, never whether the label column happens to be filled, so a label that
landed early in the raw data still cannot leak into a feature.
"""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.feature_schema import (
    aggregate_name,
    column_value_type,
    feature_columns,
    feature_types,
    label_delay,
    label_history_name,
    time_part_name,
    window_timedelta,
)
from mlsteps.errors import StepError

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


def raw_columns(config: PipelineConfig) -> list[str]:
    """The raw columns features need: keys, event time and feature inputs; the label only for
    label-history features."""
    dataset, features = config.dataset, config.features
    used = [*dataset.key_columns, dataset.event_time, *features.passthrough]
    used += [spec.column for spec in features.aggregates] + [t.column for t in features.transforms]
    used += [dataset.label] if features.label_history is not None else []
    return list(dict.fromkeys(used))


# --- computation ------------------------------------------------------------------------------


def compute_features(
    raw: pd.DataFrame, config: PipelineConfig, start: dt.datetime, end: dt.datetime
) -> pd.DataFrame:
    """Features of the events in ``[start, end)``, each computed from its entity's strictly earlier events.

    Args:
        raw: Raw events covering ``[start - lookback_days, end)``; extra columns (the label too) are ignored.
        config: The pipeline config whose ``features`` section declares the features.
        start: First event time to return (inclusive).
        end: Event time to stop at (exclusive).

    Returns:
        One row per event in the interval: row id, entity keys, event time, then :func:`feature_columns`,
        sorted by event time and row id.

    Raises:
        StepError: A column the features need is missing from ``raw``.
    """
    import pandas as pd

    dataset = config.dataset
    missing = [c for c in raw_columns(config) if c not in raw.columns]
    if missing:
        raise StepError(
            f"raw events of {dataset.name} lack column(s) {missing} that features need; "
            "fix the source data or the features section of the pipeline config"
        )
    frame = _prepared(raw, config)
    in_interval = (frame[dataset.event_time] >= pd.Timestamp(start)) & (
        frame[dataset.event_time] < pd.Timestamp(end)
    )
    computed = {**_aggregates(frame, config), **label_history(frame, config), **_transforms(frame, config)}
    frame = frame.assign(**computed).loc[in_interval]
    frame = frame.assign(**_time_parts(frame, config))
    columns = [*dataset.key_columns, dataset.event_time, *feature_columns(config)]
    result = frame.loc[:, columns].sort_values([dataset.event_time, dataset.row_id], kind="stable")
    return _typed(result.reset_index(drop=True), config)


def _prepared(raw: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """Only the needed columns, event time as UTC, sorted by entity then time (rolling needs that order)."""
    import pandas as pd

    dataset = config.dataset
    frame = raw.loc[:, raw_columns(config)].copy()
    times = pd.to_datetime(frame[dataset.event_time])
    frame[dataset.event_time] = (
        times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
    )
    order = [*dataset.entity_keys, dataset.event_time, dataset.row_id]
    return frame.sort_values(order, kind="stable").reset_index(drop=True)


def _rolling(frame: pd.DataFrame, config: PipelineConfig, column: str, window: str) -> Any:
    """A per-entity time window over strictly earlier events (``closed='left'`` excludes the event itself)."""
    dataset = config.dataset
    values = frame[column].astype("float64")
    series = values.set_axis(frame[dataset.event_time])
    keys = [frame[key].to_numpy() for key in dataset.entity_keys]
    return series.groupby(keys, sort=False, dropna=False).rolling(window_timedelta(window), closed="left")


def _aggregates(frame: pd.DataFrame, config: PipelineConfig) -> dict[str, Any]:
    """Rolling aggregates aligned with ``frame``'s rows (which are sorted by entity, then time)."""
    columns: dict[str, Any] = {}
    for spec in config.features.aggregates:
        for window in spec.windows:
            rolling = _rolling(frame, config, spec.column, window)
            for function in spec.functions:
                values = getattr(rolling, function)().to_numpy()
                if function in ("count", "sum"):  # no history means zero events, not unknown
                    values = _fill_nan(values, 0.0)
                columns[aggregate_name(spec.column, function, window)] = values
    return columns


# Working column names that no config identifier can take (identifiers have no spaces).
_AT, _ROW, _LABELLED, _POSITIVES = "known at", "row", "labelled so far", "positives so far"


def label_history(frame: pd.DataFrame, config: PipelineConfig) -> dict[str, Any]:
    """Aggregates of the entity's labels known at each event, aligned with ``frame``'s rows.

    For an event at time ``t`` and a window ``w``, the labels counted are those of the entity's
    events at times ``e`` with ``t - w <= e`` and ``e + label_delay <= t``: in the window (closed on
    the left, like the other aggregates) and already known. Whether a label is known is decided by
    these times alone; a row's label value matters only for the events that pass that test, and a
    missing value there is simply not counted.

    Args:
        frame: Events with entity keys, event time (UTC) and label, covering the look-back days.
        config: The pipeline config; nothing is computed unless ``features.label_history`` is set.

    Returns:
        Per feature name, one array in ``frame``'s row order: ``count`` (labelled events, 0 when
        none), ``mean`` (share of positives, missing when none) and ``days_since_last_positive``
        (days from the last known positive event to this event, missing when none in the window).
    """
    history = config.features.label_history
    if history is None:
        return {}
    import numpy as np

    dataset = config.dataset
    keys = list(dataset.entity_keys)
    rows = frame.reset_index(drop=True)
    times = rows[dataset.event_time]
    events = rows.loc[:, keys].assign(**{_ROW: np.arange(len(rows))})
    past = _known_label_totals(rows, keys, dataset.event_time, dataset.label)
    cut = times - label_delay(config)
    known = _as_of(events, cut, past, keys, exact=True)
    last_positive = _as_of(events, cut, past.loc[past["positive"]], keys, exact=True)[_AT]
    days_since = (times - last_positive) / np.timedelta64(1, "D")
    columns: dict[str, Any] = {}
    for window in history.windows:
        start = times - window_timedelta(window)
        before = _as_of(events, start, past, keys, exact=False)
        count = (known[_LABELLED] - before[_LABELLED]).to_numpy()
        positives = (known[_POSITIVES] - before[_POSITIVES]).to_numpy()
        values = {
            "count": count,
            "mean": np.divide(positives, count, out=np.full(len(count), np.nan), where=count > 0),
            "days_since_last_positive": days_since.where(last_positive >= start).to_numpy("float64"),
        }
        for function in history.functions:
            columns[label_history_name(config, function, window)] = values[function]
    return columns


def _known_label_totals(rows: pd.DataFrame, keys: list[str], time: str, label: str) -> pd.DataFrame:
    """The labelled events in time order, with each entity's running totals up to and including them."""
    labels = rows[label].astype("float64")
    labelled = rows.loc[labels.notna(), keys].assign(**{_AT: rows[time], "positive": labels == 1.0})
    past = labelled.sort_values(_AT, kind="stable")
    groups = past.groupby(keys, sort=False, dropna=False)
    return past.assign(
        **{_LABELLED: groups.cumcount() + 1, _POSITIVES: groups["positive"].cumsum().astype("int64")}
    )


def _as_of(
    events: pd.DataFrame, cut: pd.Series, past: pd.DataFrame, keys: list[str], *, exact: bool
) -> pd.DataFrame:
    """Per event (in ``events``' row order), its entity's last row of ``past`` at or before ``cut``
    (strictly before when not ``exact``): the running totals there (0 when none) and its time."""
    import pandas as pd

    left = events.assign(cut=cut).sort_values("cut", kind="stable")
    right = past.loc[:, [*keys, _AT, _LABELLED, _POSITIVES]]
    joined = pd.merge_asof(left, right, left_on="cut", right_on=_AT, by=keys, allow_exact_matches=exact)
    joined = joined.sort_values(_ROW).reset_index(drop=True)
    totals = joined[[_LABELLED, _POSITIVES]].fillna(0).astype("int64")
    return totals.assign(**{_AT: joined[_AT]})


def _transforms(frame: pd.DataFrame, config: PipelineConfig) -> dict[str, Any]:
    import numpy as np

    columns: dict[str, Any] = {}
    for transform in config.features.transforms:
        values = frame[transform.column].astype("float64").to_numpy()
        if transform.kind == "log1p":
            columns[transform.name] = np.log1p(np.where(values > -1.0, values, np.nan))
            continue
        past_mean = _rolling(frame, config, transform.column, str(transform.window)).mean().to_numpy()
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = values / past_mean
        # With no usable history the event is taken to be at its entity's usual level.
        usable = np.isfinite(ratio) | np.isnan(values)
        columns[transform.name] = np.where(usable, ratio, 1.0)
    return columns


def _time_parts(frame: pd.DataFrame, config: PipelineConfig) -> dict[str, Any]:
    times = frame[config.dataset.event_time].dt
    parts = {"hour": times.hour, "day_of_week": times.dayofweek}
    return {time_part_name(config, part): parts[part] for part in config.features.time_parts}


def _fill_nan(values: Any, fill: float) -> Any:
    import numpy as np

    return np.where(np.isnan(values), fill, values)


def _typed(frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """Cast features to their declared value types so every partition has the same schema."""
    casts = {"float": "float64", "int": "int64", "bool": "bool"}
    typed = {}
    for name, kind in feature_types(config).items():
        if kind in casts and not (kind == "bool" and frame[name].isna().any()):
            typed[name] = frame[name].astype(casts[kind])
    return frame.assign(**typed)


def arrow_schema(config: PipelineConfig) -> pa.Schema:
    """The Parquet schema of a feature partition, fixed by the config (so all days agree)."""
    import pyarrow as pa

    types = {
        "float": pa.float64(),
        "int": pa.int64(),
        "bool": pa.bool_(),
        "string": pa.string(),
        "timestamp": pa.timestamp("ns", tz="UTC"),
    }
    dataset = config.dataset
    fields = [pa.field(c, types[column_value_type(config, c)]) for c in dataset.key_columns]
    fields.append(pa.field(dataset.event_time, types["timestamp"]))
    fields += [pa.field(name, types[kind]) for name, kind in feature_types(config).items()]
    return pa.schema(fields)
