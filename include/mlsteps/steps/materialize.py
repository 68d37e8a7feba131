"""Materialize exactly one data interval of features into the Feast online store.

The stateless ``materialize(start, end)`` is used rather than ``materialize_incremental``, so a
rerun or a backfill of the same interval writes the same rows and depends on no stored watermark.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging

from mlsteps.contract.layout import features_prefix, partition
from mlsteps.contract.results import MaterializeResult
from mlsteps.errors import StepError
from mlsteps.platform.context import DataInterval, StepContext, add_interval_arguments

log = logging.getLogger(__name__)

#: Feast's file store selects event times in [start, end] inclusive; this makes the end exclusive.
END_EXCLUSIVE = dt.timedelta(microseconds=1)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_interval_arguments(parser)


def run(args: argparse.Namespace) -> MaterializeResult:
    from mlsteps.platform.feature_store import feature_store, feature_view_name

    context = StepContext.from_args(args)
    config = context.config
    interval = DataInterval(args.start, args.end)
    missing = missing_feature_days(context, interval)
    if missing:
        raise StepError(
            f"features of {config.dataset.name} are not built for {', '.join(missing)} "
            f"(no committed partition under {context.lake.url(features_prefix(config))}); "
            "run build-features for the interval first"
        )
    store = feature_store(context)
    views = [feature_view_name(config)]
    store.materialize(start_date=interval.start, end_date=interval.end - END_EXCLUSIVE, feature_views=views)
    log.info(
        "materialized %s for %s into the %s online store", views, interval, store.config.online_store.type
    )
    return {
        "summary": f"feature view(s) {', '.join(views)} materialized for {interval}",
        "feature_views": views,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "online_store": str(store.config.online_store.type),
        "project": store.project,
    }


def missing_feature_days(context: StepContext, interval: DataInterval) -> list[str]:
    """Days of the interval whose feature partition was never committed."""
    prefix = features_prefix(context.config)
    return [
        day.isoformat() for day in interval.days() if context.lake.manifest(partition(prefix, day)) is None
    ]
