"""Build the feature table of a data interval from raw events: Feast's offline source, one partition a day.

Every feature of an event is computed from the event itself and its entity's strictly earlier
events, never from later events, and from labels only once they were known (label-history
features), so the table serves training (point-in-time joins) and scoring alike. The raw days
before the interval are read as look-back, which makes a day's features the same whichever range
it was built in, up to rounding in the last bits of rolling sums; each partition records the
pass it was computed in, so `reproduce` can match it exactly.

Cached (``mlsteps.platform.step_cache``): its only effect is its own feature partitions, and they are
a function of the raw partitions read (the interval's days and their look-back days, keyed by their
digests), the config, the code and ``--batch-days``. A reuse requires every partition it committed
to be unchanged (same digest): a day rebuilt since, by another run, is built again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.feature_schema import feature_columns, lookback_days
from mlsteps.contract.layout import features_prefix, partition
from mlsteps.contract.results import BuildFeaturesResult
from mlsteps.errors import StepError
from mlsteps.logic.features import arrow_schema, compute_features, raw_columns
from mlsteps.platform.context import DataInterval, StepContext, add_interval_arguments
from mlsteps.platform.lake import Lake
from mlsteps.platform.lineage import partition_digest, raw_days

if TYPE_CHECKING:
    import pandas as pd

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


def run(args: argparse.Namespace) -> BuildFeaturesResult:
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


def cache_inputs(context: StepContext, args: argparse.Namespace) -> dict[str, Any]:
    """The digest of every raw partition the features read: the interval's days and the look-back."""
    config, interval = context.config, DataInterval(args.start, args.end)
    source = config.dataset.source
    days = raw_days(config, _midnight(interval.days()[0]), _midnight(interval.days()[-1], 1))
    return {"raw": {day.isoformat(): partition_digest(context.lake, partition(source, day)) for day in days}}


def cache_outputs(context: StepContext, args: argparse.Namespace, result: BuildFeaturesResult) -> list[str]:
    """The committed feature partition of every day."""
    return [partition(features_prefix(context.config), day) for day in result["days"]]


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
            cache[day] = _read_files(lake, config, files) if files else None
        if cache[day] is None and day in wanted:
            raise StepError(
                f"no raw events of {dataset.name} for {day} under {lake.url(dataset.source)}; "
                "land the day's data (or run generate-data) before build-features"
            )
    return pd.concat([cache[day] for day in days if cache[day] is not None], ignore_index=True)


def _read_files(lake: Lake, config: PipelineConfig, files: list[str]) -> pd.DataFrame:
    """The columns features need from a partition's files.

    The label is read only for label-history features, and a file without it (a day landed before
    its labels) reads as unlabelled rows: those labels are simply not known yet.
    """
    import pandas as pd
    import pyarrow.parquet as pq

    columns = raw_columns(config)
    label = config.dataset.label
    with_label: list[str] = []
    without_label: list[str] = []
    for relative in files:
        with lake.fs.open_input_file(lake.path(relative)) as handle:
            names = set(pq.read_schema(handle).names)
        missing = [c for c in columns if c not in names and c != label]
        if missing:
            raise StepError(
                f"raw file {lake.url(relative)} lacks column(s) {missing} that features need; "
                "fix the source data or the features section of the pipeline config"
            )
        (with_label if label in names or label not in columns else without_label).append(relative)
    if not without_label:
        return lake.read_table(files, columns=columns).to_pandas()
    unlabelled = lake.read_table(without_label, columns=[c for c in columns if c != label]).to_pandas()
    parts = [unlabelled.assign(**{label: float("nan")})]
    if with_label:
        parts.insert(0, lake.read_table(with_label, columns=columns).to_pandas())
    return pd.concat(parts, ignore_index=True).loc[:, columns]


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
