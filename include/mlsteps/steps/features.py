"""Build the feature table of a data interval from raw events: Feast's offline source, one partition a day.

Every feature of an event is computed from the event itself and its entity's strictly earlier
events, never from later events or labels, so the table serves training (point-in-time joins)
and scoring alike. The raw days before the interval are read as look-back, which makes a day's
features the same whichever range it was built in, up to rounding in the last bits of rolling
sums; each partition records the pass it was computed in, so `reproduce` can match it exactly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.feature_schema import (
    aggregate_name,
    column_value_type,
    feature_columns,
    feature_types,
    lookback_days,
    time_part_name,
    window_timedelta,
)
from mlsteps.contract.layout import features_prefix, partition
from mlsteps.errors import StepError
from mlsteps.platform.context import DataInterval, StepContext, add_interval_arguments
from mlsteps.platform.lake import Lake

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa

log = logging.getLogger(__name__)

#: Days computed together: more means fewer repeated look-back reads, at the cost of memory.
DEFAULT_BATCH_DAYS = 7


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_interval_arguments(parser)
    parser.add_argument(
        "--batch-days",
        type=int,
        default=DEFAULT_BATCH_DAYS,
        help=f"Days computed per pass over one look-back (default {DEFAULT_BATCH_DAYS}; fewer: less memory).",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    context = StepContext.from_args(args)
    config = context.config
    interval = DataInterval(args.start, args.end)
    if args.batch_days < 1:
        raise StepError(f"--batch-days must be at least 1, got {args.batch_days}")
    prefix = features_prefix(config)
    written: list[dict[str, Any]] = []
    cache: dict[dt.date, pd.DataFrame | None] = {}
    # A partition holds a whole day, so a partial interval rebuilds the whole days it touches.
    for days in _batches(interval.days(), args.batch_days):
        written += build_batch(context, DataInterval(_midnight(days[0]), _midnight(days[-1], 1)), days, cache)
    rows = sum(entry["rows"] for entry in written)
    return {
        "summary": f"{rows} feature rows of {config.dataset.name} over {len(written)} day(s) for {interval}",
        "rows": rows,
        "days": [entry["ds"] for entry in written],
        "uri": context.lake.url(prefix),
        "feature_columns": feature_columns(config),
        "lookback_days": lookback_days(config),
    }


def build_batch(
    context: StepContext,
    batch: DataInterval,
    days: list[dt.date],
    cache: dict[dt.date, pd.DataFrame | None] | None = None,
) -> list[dict[str, Any]]:
    """Compute the features of ``batch`` in one pass and commit the partitions of ``days`` (all in it).

    Each manifest records the batch as ``computed_in``: rolling sums depend in their last bits on
    where the pass started, so `reproduce` recomputes every day in the batch it was computed in.
    """
    raw = read_raw(context.lake, context.config, batch, cache)
    features = compute_features(raw, context.config, batch.start, batch.end)
    return [_write_day(context, day, features, batch) for day in days]


# --- the feature contract (pure) ------------------------------------------------------------


def raw_columns(config: PipelineConfig) -> list[str]:
    """The raw columns features need: keys, event time and feature inputs; never the label."""
    dataset, features = config.dataset, config.features
    used = [*dataset.key_columns, dataset.event_time, *features.passthrough]
    used += [spec.column for spec in features.aggregates] + [t.column for t in features.transforms]
    return list(dict.fromkeys(used))


# --- computation (pure) ---------------------------------------------------------------------


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
    computed = {**_aggregates(frame, config), **_transforms(frame, config)}
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


# --- I/O --------------------------------------------------------------------------------------


def read_raw(
    lake: Lake,
    config: PipelineConfig,
    interval: DataInterval,
    cache: dict[dt.date, pd.DataFrame | None] | None = None,
) -> pd.DataFrame:
    """Raw events of the interval's days plus their look-back days, only the columns features need.

    Args:
        lake: The lake holding the raw partitions.
        config: The pipeline config.
        interval: The days whose features are wanted.
        cache: Days read earlier, reused and updated; days before this look-back are dropped from it.

    Raises:
        StepError: A day of the interval has no raw partition, or a raw file lacks a needed column.
    """
    import pandas as pd

    dataset = config.dataset
    first = interval.days()[0] - dt.timedelta(days=lookback_days(config))
    days = [first + dt.timedelta(days=i) for i in range((interval.days()[-1] - first).days + 1)]
    wanted = set(interval.days())
    cache = {} if cache is None else cache
    for day in [day for day in cache if day < first]:
        del cache[day]
    for day in days:
        if day not in cache:
            files = lake.partition_files(partition(dataset.source, day))
            cache[day] = _read_files(lake, files, raw_columns(config)) if files else None
        if cache[day] is None and day in wanted:
            raise StepError(
                f"no raw events of {dataset.name} for {day} under {lake.url(dataset.source)}; "
                "land the day's data (or run generate-data) before build-features"
            )
    return pd.concat([cache[day] for day in days if cache[day] is not None], ignore_index=True)


def _read_files(lake: Lake, files: list[str], columns: list[str]) -> pd.DataFrame:
    import pyarrow.parquet as pq

    for relative in files:
        with lake.fs.open_input_file(lake.path(relative)) as handle:
            names = set(pq.read_schema(handle).names)
        missing = [c for c in columns if c not in names]
        if missing:
            raise StepError(
                f"raw file {lake.url(relative)} lacks column(s) {missing} that features need; "
                "fix the source data or the features section of the pipeline config"
            )
    return lake.read_table(files, columns=columns).to_pandas()


def _write_day(
    context: StepContext, day: dt.date, features: pd.DataFrame, batch: DataInterval
) -> dict[str, Any]:
    """Commit one day's feature partition, replacing any earlier version."""
    import pyarrow as pa

    config = context.config
    event_day = features[config.dataset.event_time].dt.date
    frame = features.loc[event_day == day].reset_index(drop=True)
    table = pa.Table.from_pandas(frame, schema=arrow_schema(config), preserve_index=False)
    staging = context.lake.stage(partition(features_prefix(config), day))
    staging.write_parquet("00000.parquet", table, unique_columns=[config.dataset.row_id])
    manifest = context.lake.commit(
        staging,
        {
            "producer": "build-features",
            "ds": day.isoformat(),
            "dataset": config.dataset.name,
            "feature_columns": feature_columns(config),
            "config_hash": config.config_hash,
            "computed_in": {"start": batch.start.isoformat(), "end": batch.end.isoformat()},
            "lineage": context.lineage(),
        },
    )
    log.info("features %s: %d rows committed", day, manifest["rows"])
    return {"ds": day.isoformat(), "rows": manifest["rows"]}


def _batches(days: list[dt.date], size: int) -> Iterator[list[dt.date]]:
    for offset in range(0, len(days), size):
        yield days[offset : offset + size]


def _midnight(day: dt.date, plus_days: int = 0) -> dt.datetime:
    return dt.datetime.combine(day + dt.timedelta(days=plus_days), dt.time(), tzinfo=dt.UTC)
