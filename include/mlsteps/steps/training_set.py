"""Build a training snapshot: a window's labelled events, joined point-in-time to features, split by time.

The holdout is the window's last days, strictly after every training row, so evaluation always
looks at a future the model never saw. Rows are sorted by event time and row id, so the same
inputs give the same snapshot and the same fingerprint.

Cached (``mlsteps.platform.step_cache``): its only effect is its snapshot under ``training/``, a
function of the window's raw partitions (labels) and feature partitions (keyed by their digests),
``--end``, ``--window-days``, the config and the code. ``--training-run`` only names the snapshot, so
it is not keyed: a reuse returns the earlier run's snapshot name (``training_run``), which the DAG
passes on to ``train`` and ``evaluate``. A snapshot rebuilt or deleted since is built again.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.feature_schema import (
    categorical_columns,
    feature_columns,
    feature_types,
    segment_only_columns,
)
from mlsteps.contract.layout import features_prefix, partition, snapshot_prefix, training_run_name
from mlsteps.contract.results import BuildTrainingSetResult
from mlsteps.errors import StepError
from mlsteps.platform.context import DataInterval, StepContext, parse_instant
from mlsteps.platform.datasets import save_training_set
from mlsteps.platform.lake import Lake
from mlsteps.platform.lineage import (
    config_document,
    feature_batches,
    package_versions,
    partition_digest,
    raw_record,
)

if TYPE_CHECKING:
    import pandas as pd
    from feast import FeatureStore

log = logging.getLogger(__name__)

#: The entity-dataframe column Feast reads as each row's point in time.
FEAST_TIMESTAMP = "event_timestamp"
#: Only names the output: not part of the cache key.
CACHE_EXCLUDED_OPTIONS = ("training_run",)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--end", type=parse_instant, required=True, help="Window end (exclusive), ISO; the holdout ends here."
    )
    parser.add_argument(
        "--window-days",
        type=int,
        help="Days of labelled events before --end (default: model.training_window_days).",
    )
    parser.add_argument(
        "--training-run", help="Snapshot name under training/ (default: derived from --run-id)."
    )


def run(args: argparse.Namespace) -> BuildTrainingSetResult:
    from mlsteps.platform.feature_store import feature_store, training_service_name

    context = StepContext.from_args(args)
    config = context.config
    window_days = args.window_days or config.model.training_window_days
    if window_days <= config.model.holdout_days:
        raise StepError(
            f"--window-days ({window_days}) must be larger than model.holdout_days "
            f"({config.model.holdout_days}) so that some days are left to train on"
        )
    training_run = training_run_name(args.training_run or args.run_id)
    interval = DataInterval(args.end - dt.timedelta(days=window_days), args.end)
    holdout_start = args.end - dt.timedelta(days=config.model.holdout_days)
    check_features_built(context.lake, config, interval)
    events = labelled_events(context.lake, config, interval)
    store = feature_store(context)
    joined = join_features(store, config, events, training_service_name(config))
    train, holdout = split_by_time(joined, config, holdout_start)
    manifest = save_training_set(
        context.lake,
        training_run,
        train,
        holdout,
        snapshot_record(context, interval, holdout_start),
    )
    uri = context.lake.url(f"training/{manifest['training_run']}")
    return {
        "summary": f"training set {manifest['training_run']}: {len(train)} train + {len(holdout)} holdout "
        f"rows for {interval}, holdout from {holdout_start.date()}",
        "training_run": manifest["training_run"],
        "uri": uri,
        "fingerprint": manifest["fingerprint"],
        "rows": {"train": len(train), "holdout": len(holdout)},
        "positives": {"train": _positives(train, config), "holdout": _positives(holdout, config)},
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "holdout_start": holdout_start.isoformat(),
        "feature_service": training_service_name(config),
    }


def cache_inputs(context: StepContext, args: argparse.Namespace) -> dict[str, Any]:
    """Digests of the window's raw partitions (labels) and feature partitions."""
    config = context.config
    window_days = args.window_days or config.model.training_window_days
    days = DataInterval(args.end - dt.timedelta(days=window_days), args.end).days()
    return {
        prefix: {day.isoformat(): partition_digest(context.lake, partition(prefix, day)) for day in days}
        for prefix in (config.dataset.source, features_prefix(config))
    }


def cache_outputs(
    context: StepContext, args: argparse.Namespace, result: BuildTrainingSetResult
) -> list[str]:
    """The committed snapshot."""
    return [snapshot_prefix(result["training_run"])]


def snapshot_record(
    context: StepContext, interval: DataInterval, holdout_start: dt.datetime
) -> dict[str, Any]:
    """What the snapshot manifest records: column roles, interval, config, Feast views, raw digests."""
    from mlsteps.platform.feature_store import (
        describe_feature_views,
        feature_service_name,
        training_service_name,
    )

    config = context.config
    return {
        "feature_columns": feature_columns(config),
        "categorical_columns": categorical_columns(config),
        "label": config.dataset.label,
        "row_id": config.dataset.row_id,
        "entity_keys": list(config.dataset.entity_keys),
        "event_time": config.dataset.event_time,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "holdout_start": holdout_start.isoformat(),
        "config_hash": config.config_hash,
        "feature_service": training_service_name(config),
        "serving_feature_service": feature_service_name(config),
        "lineage": context.lineage(),
        # What `trace` shows and `reproduce` rebuilds from: the config itself, the Feast
        # definitions, the raw partitions read (with digests) and the package versions.
        "config": config_document(config),
        "feature_views": describe_feature_views(config, context.lake),
        "raw": raw_record(context.lake, config, interval.start, interval.end),
        "feature_batches": feature_batches(context.lake, config, interval.days()),
        "versions": package_versions(),
    }


def check_features_built(lake: Lake, config: PipelineConfig, interval: DataInterval) -> None:
    """Every day of the window has committed features built with the current feature definitions.

    Raises:
        StepError: A day has no committed partition, or was built with other feature columns.
    """
    prefix = features_prefix(config)
    expected = feature_columns(config)
    missing, stale = [], []
    for day in interval.days():
        manifest = lake.manifest(partition(prefix, day))
        if manifest is None:
            missing.append(day.isoformat())
        elif manifest.get("feature_columns") != expected:
            stale.append(day.isoformat())
    if missing or stale:
        problem = (
            f"not built for {_days(missing)}"
            if missing
            else f"built with other feature columns on {_days(stale)}"
        )
        raise StepError(
            f"features of {config.dataset.name} under {lake.url(prefix)} are {problem}; "
            f"run build-features for {interval} first"
        )


def _days(days: list[str]) -> str:
    return ", ".join(days) if len(days) <= 4 else f"{days[0]} .. {days[-1]} ({len(days)} days)"


def labelled_events(lake: Lake, config: PipelineConfig, interval: DataInterval) -> pd.DataFrame:
    """Row id, entity keys, event time, a 0/1 label and the segment-only columns
    (:func:`segment_only_columns`) of the window's events that carry a label.

    Raises:
        StepError: The raw data lacks a needed column, or the window holds no labelled event.
    """
    import pandas as pd

    dataset = config.dataset
    columns = [*dataset.key_columns, dataset.event_time, dataset.label, *segment_only_columns(config)]
    files = [f for day in interval.days() for f in lake.partition_files(partition(dataset.source, day))]
    frame = _read(lake, files, columns, config)
    times = pd.to_datetime(frame[dataset.event_time], utc=True)
    frame = frame.assign(**{dataset.event_time: times})
    frame = frame.loc[(times >= pd.Timestamp(interval.start)) & (times < pd.Timestamp(interval.end))]
    unlabelled = int(frame[dataset.label].isna().sum())
    frame = frame.dropna(subset=[dataset.label])
    if frame.empty:
        raise StepError(
            f"no labelled events of {dataset.name} in {interval} under {lake.url(dataset.source)}; "
            "land labelled data for the window or move --end"
        )
    if unlabelled:
        log.info("skipped %d event(s) without a label in %s", unlabelled, interval)
    return frame.assign(**{dataset.label: _binary_label(frame[dataset.label], config)}).reset_index(drop=True)


def _read(lake: Lake, files: list[str], columns: list[str], config: PipelineConfig) -> pd.DataFrame:
    import pyarrow.parquet as pq

    for relative in files:
        with lake.fs.open_input_file(lake.path(relative)) as handle:
            missing = [c for c in columns if c not in pq.read_schema(handle).names]
        if missing:
            raise StepError(
                f"raw file {lake.url(relative)} lacks column(s) {missing} that a training set needs; "
                "training needs labelled data with the dataset's key, time and label columns (and the "
                "columns evaluation.segments names)"
            )
    return lake.read_table(files, columns=columns).to_pandas() if files else _empty(columns)


def _empty(columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({column: pd.Series(dtype="object") for column in columns})


def _binary_label(label: pd.Series, config: PipelineConfig) -> pd.Series:
    """The label as int 0/1.

    Raises:
        StepError: The label holds values other than 0/1 (or False/True).
    """
    import pandas as pd

    values = (
        label.astype("int64") if pd.api.types.is_bool_dtype(label) else pd.to_numeric(label, errors="coerce")
    )
    bad = label[~values.isin([0, 1])]
    if not bad.empty:
        raise StepError(
            f"label '{config.dataset.label}' must be 0/1 or boolean, but has {len(bad)} other value(s) "
            f"such as {bad.iloc[0]!r}; fix the source data"
        )
    return values.astype("int64")


def join_features(
    store: FeatureStore, config: PipelineConfig, events: pd.DataFrame, service: str
) -> pd.DataFrame:
    """Point-in-time join of the events to their features through a Feast feature service.

    Returns:
        Row id, entity keys, event time, the features in :func:`feature_columns` order, the
        segment-only columns and the label, sorted by event time then row id.

    Raises:
        StepError: Some events found no feature row (features and raw data disagree).
    """
    dataset = config.dataset
    entity_df = events.rename(columns={dataset.event_time: FEAST_TIMESTAMP})
    job = store.get_historical_features(entity_df=entity_df, features=store.get_feature_service(service))
    joined = job.to_df().rename(columns={FEAST_TIMESTAMP: dataset.event_time})
    columns = [
        *dataset.key_columns,
        dataset.event_time,
        *feature_columns(config),
        *segment_only_columns(config),
        dataset.label,
    ]
    joined = joined.loc[:, columns].sort_values([dataset.event_time, dataset.row_id], kind="stable")
    unmatched = len(events) - len(joined) + int(joined[feature_columns(config)].isna().all(axis=1).sum())
    if unmatched:
        raise StepError(
            f"{unmatched} of {len(events)} events found no feature row in Feast's offline store; "
            "rebuild features for the window (build-features) so they match the raw data"
        )
    return _typed(joined.reset_index(drop=True), config)


def _typed(frame: pd.DataFrame, config: PipelineConfig) -> pd.DataFrame:
    """Fix dtypes after the join (Feast may widen them) so the fingerprint depends on values only."""
    import pandas as pd

    casts = {"float": "float64", "int": "int64", "bool": "bool"}
    typed = {}
    for name, kind in feature_types(config).items():
        series = frame[name]
        if kind in casts and not series.isna().any():
            typed[name] = series.astype(casts[kind])
        elif kind == "int":
            typed[name] = series.astype("float64")
    times = pd.to_datetime(frame[config.dataset.event_time], utc=True).astype("datetime64[ns, UTC]")
    return frame.assign(**typed, **{config.dataset.event_time: times})


def split_by_time(
    frame: pd.DataFrame, config: PipelineConfig, holdout_start: dt.datetime
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Train on events before ``holdout_start``, hold out the rest.

    Raises:
        StepError: Either split is empty or has no positive label.
    """
    import pandas as pd

    dataset = config.dataset
    is_holdout = frame[dataset.event_time] >= pd.Timestamp(holdout_start)
    train = frame.loc[~is_holdout].reset_index(drop=True)
    holdout = frame.loc[is_holdout].reset_index(drop=True)
    for name, split in (("train", train), ("holdout", holdout)):
        if _positives(split, config) == 0:
            raise StepError(
                f"the {name} split ({len(split)} rows, holdout from {holdout_start.isoformat()}) has no "
                f"positive '{dataset.label}'; widen --window-days or check the labels"
            )
    return train, holdout


def _positives(frame: pd.DataFrame, config: PipelineConfig) -> int:
    return int(frame[config.dataset.label].sum()) if len(frame) else 0
