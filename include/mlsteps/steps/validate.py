"""Validate the raw events of a data interval against the dataset section of the config.

The checks live in :mod:`mlsteps.logic.validation`, the report in :mod:`mlsteps.reports.validation`;
this module reads the interval's files, runs the checks and writes the report.

Cached (``mlsteps.platform.step_cache``): its only effect is its report, and what it judges is the
interval's raw partitions, keyed by their digests, with the config and code. Freshness is judged
against the interval's end, not the clock, so an unchanged interval gets the same verdict. A failed
validation is never recorded, so it is judged again on every run.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import DatasetConfig
from mlsteps.contract.layout import partition, validation_report_prefix
from mlsteps.contract.results import ValidateResult
from mlsteps.errors import StepError
from mlsteps.logic.validation import Problem, check_events, data_profile
from mlsteps.platform.context import DataInterval, StepContext, add_interval_arguments
from mlsteps.platform.lake import Lake
from mlsteps.platform.lineage import partition_digest
from mlsteps.reports.html import save_report
from mlsteps.reports.validation import build_report

if TYPE_CHECKING:
    import pandas as pd


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_interval_arguments(parser)
    parser.add_argument(
        "--without-label",
        action="store_true",
        help="Scoring input: the label is not known yet, so its column is neither required nor checked.",
    )


def run(args: argparse.Namespace) -> ValidateResult:
    context = StepContext.from_args(args)
    dataset = context.config.dataset
    if args.without_label:  # model_copy skips validation on purpose: the label role stays named
        columns = {name: spec for name, spec in dataset.columns.items() if name != dataset.label}
        dataset = dataset.model_copy(update={"columns": columns})
    interval = DataInterval(args.start, args.end)
    frame, problems = read_interval(context.lake, dataset, interval)
    if frame is not None:
        problems += check_events(frame, dataset, interval)
    rows = 0 if frame is None else len(frame)
    profile = data_profile(frame, dataset, interval)
    unseen = {u.column: u.count for u in profile.unseen}
    purpose = "scoring" if args.without_label else "training"
    report_prefix = validation_report_prefix(interval.start.date(), purpose)
    document = {
        "dataset": dataset.name,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "rows": rows,
        "valid": not problems,
        "problems": [asdict(problem) for problem in problems],
        "unseen_categories": [asdict(values) for values in profile.unseen],
        **context.lineage(),
    }
    report = build_report(dataset, interval, rows, problems, profile)
    uris = save_report(context.lake, report_prefix, report, document)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise StepError(
            f"validation of {dataset.name} {interval} failed: {problems[0].message}{more}; "
            f"fix the source data or the config, then re-run (report: {uris['report_html']})",
            result={"valid": False, "rows": rows, "problems": len(problems), **uris},
        )
    kept = "".join(f"; {u.sentence}" for u in profile.unseen)
    return {
        "summary": f"{rows} rows of {dataset.name} valid for {interval}{kept}",
        "valid": True,
        "unseen_categories": unseen,
        "rows": rows,
        "days": [day.isoformat() for day in interval.days()],
        "report_html": uris["report_html"],
        "report_json": uris["report_json"],
    }


def cache_inputs(context: StepContext, args: argparse.Namespace) -> dict[str, Any]:
    """The digest of every raw partition of the interval (None: the day has not landed)."""
    source = context.config.dataset.source
    days = DataInterval(args.start, args.end).days()
    return {"raw": {day.isoformat(): partition_digest(context.lake, partition(source, day)) for day in days}}


def cache_outputs(context: StepContext, args: argparse.Namespace, result: ValidateResult) -> list[str]:
    """The report's two files."""
    purpose = "scoring" if args.without_label else "training"
    prefix = validation_report_prefix(DataInterval(args.start, args.end).start.date(), purpose)
    return [f"{prefix}/report.html", f"{prefix}/report.json"]


def read_interval(
    lake: Lake, dataset: DatasetConfig, interval: DataInterval
) -> tuple[pd.DataFrame | None, list[Problem]]:
    """Read every raw file of the interval's days; unreadable files become problems, not crashes."""
    import pyarrow as pa

    tables, problems = [], []
    for day in interval.days():
        for relative in lake.partition_files(partition(dataset.source, day)):
            try:
                tables.append(lake.read_table([relative]))
            except (OSError, pa.ArrowException) as err:
                reason = str(err).splitlines()[0][:160]
                problems.append(
                    Problem("readable", relative, f"file {relative} is not readable Parquet ({reason})")
                )
    if not tables:
        if not problems:
            problems.append(
                Problem(
                    "not_empty",
                    dataset.source,
                    f"no data landed under {lake.url(dataset.source)} for the interval",
                )
            )
        return None, problems
    try:
        table = pa.concat_tables(tables, promote_options="permissive")
    except pa.ArrowException as err:
        problems.append(Problem("schema", dataset.source, f"files disagree on their schema ({err})"))
        return None, problems
    frame = table.to_pandas()
    if frame.empty:
        problems.append(Problem("not_empty", dataset.source, "the interval's files hold no rows"))
        return None, problems
    return frame, problems
