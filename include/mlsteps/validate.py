"""Validate the raw events of a data interval against the dataset section of the config.

Readability, emptiness and dtypes are checked first, because value checks on a column of the
wrong type mean nothing. Value checks (nulls, ranges, categories, duplicate keys, volume and
freshness) then run as one lazy pandera schema, so every problem is reported at once.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.config import ColumnSpec, DatasetConfig
from mlsteps.context import DataInterval, StepContext, add_interval_arguments
from mlsteps.errors import StepError
from mlsteps.lake import Lake, partition
from mlsteps.reports import Report, save_report

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

MAX_EXAMPLES = 3


@dataclass(frozen=True)
class Problem:
    """One failed check, phrased for a person."""

    check: str
    where: str
    message: str
    count: int = 1


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_interval_arguments(parser)
    parser.add_argument(
        "--without-label",
        action="store_true",
        help="Scoring input: the label is not known yet, so its column is neither required nor checked.",
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
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
    purpose = "scoring" if args.without_label else "training"
    report_prefix = f"reports/validation/ds={interval.start.date().isoformat()}/{purpose}"
    document = {
        "dataset": dataset.name,
        "interval": {"start": interval.start.isoformat(), "end": interval.end.isoformat()},
        "rows": rows,
        "valid": not problems,
        "problems": [asdict(problem) for problem in problems],
        **context.lineage(),
    }
    uris = save_report(context.lake, report_prefix, _report(dataset, interval, rows, problems), document)
    if problems:
        more = f" (and {len(problems) - 1} more problem(s))" if len(problems) > 1 else ""
        raise StepError(
            f"validation of {dataset.name} {interval} failed: {problems[0].message}{more}; "
            f"fix the source data or the config, then re-run (report: {uris['report_html']})"
        )
    return {
        "summary": f"{rows} rows of {dataset.name} valid for {interval}",
        "valid": True,
        "rows": rows,
        "days": [day.isoformat() for day in interval.days()],
        **uris,
    }


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


def check_events(frame: pd.DataFrame, dataset: DatasetConfig, interval: DataInterval) -> list[Problem]:
    """Every check on the rows of the interval; an empty list means valid."""
    import pandera.errors

    problems = _check_columns_and_dtypes(frame, dataset)
    usable = {
        name
        for name, spec in dataset.columns.items()
        if _has_dtype(frame, name, spec) and not frame[name].isna().all()
    }
    schema = _schema(dataset, usable, interval)
    try:
        schema.validate(frame, lazy=True)
    except pandera.errors.SchemaErrors as err:
        problems += _describe_failures(err.failure_cases, dataset, frame, interval)
    return problems


def _has_dtype(frame: pd.DataFrame, name: str, spec: ColumnSpec) -> bool:
    """Whether the column exists with a dtype that fits the config's type."""
    import pandas as pd

    if name not in frame.columns:
        return False
    series, types = frame[name], pd.api.types
    if series.dtype == object and series.hasnans:  # Arrow bools (and others) with nulls arrive as object
        series = series.dropna().infer_objects()
    kinds = {
        "numeric": lambda: types.is_numeric_dtype(series) and not types.is_bool_dtype(series),
        "integer": lambda: types.is_integer_dtype(series),
        "boolean": lambda: types.is_bool_dtype(series),
        "string": lambda: types.is_string_dtype(series),
        "categorical": lambda: types.is_string_dtype(series) or isinstance(series.dtype, pd.CategoricalDtype),
        "timestamp": lambda: types.is_datetime64_any_dtype(series),
    }
    return bool(kinds[spec.type]())


def _check_columns_and_dtypes(frame: pd.DataFrame, dataset: DatasetConfig) -> list[Problem]:
    problems = []
    for name, spec in dataset.columns.items():
        if name not in frame.columns:
            problems.append(Problem("column_present", name, f"column '{name}' ({spec.type}) is missing"))
        elif frame[name].isna().all():  # it has no values whose type or range could be checked
            if not (spec.nullable and spec.max_null_ratio >= 1.0):
                problems.append(
                    Problem(
                        "all_null",
                        name,
                        f"column '{name}' is entirely null ({len(frame)} of {len(frame)} values)",
                        len(frame),
                    )
                )
        elif not _has_dtype(frame, name, spec):
            problems.append(
                Problem(
                    "dtype",
                    name,
                    f"column '{name}' has dtype {frame[name].dtype}, but the config says {spec.type}",
                )
            )
    return problems


def _schema(dataset: DatasetConfig, usable: set[str], interval: DataInterval) -> pa.DataFrameSchema:
    """The value-level pandera schema for the columns whose dtype is right."""
    import pandera.pandas as pa

    columns = {}
    for name, spec in dataset.columns.items():
        if name not in usable:
            continue
        checks = []
        # ``error`` names the check in pandera's failure cases; built-in checks otherwise use their repr.
        if spec.min is not None:
            checks.append(pa.Check.ge(spec.min, name="min", error="min"))
        if spec.max is not None:
            checks.append(pa.Check.le(spec.max, name="max", error="max"))
        if spec.categories:
            checks.append(pa.Check.isin(list(spec.categories), name="categories", error="categories"))
        if spec.nullable:
            limit = spec.max_null_ratio
            checks.append(
                pa.Check(
                    lambda s, limit=limit: bool(s.isna().mean() <= limit),
                    name="null_ratio",
                    ignore_na=False,  # the default would drop the very nulls this check counts
                )
            )
        columns[name] = pa.Column(nullable=spec.nullable, checks=checks, required=True)
    frame_checks = []
    if dataset.event_time in usable:
        frame_checks.append(
            pa.Check(
                lambda df: _stale_hours(df, dataset, interval) <= dataset.max_staleness_hours,
                name="freshness",
            )
        )
        frame_checks.append(pa.Check(lambda df: not _short_days(df, dataset, interval), name="volume"))
    unique = [dataset.row_id] if dataset.row_id in usable else None
    return pa.DataFrameSchema(columns, checks=frame_checks, unique=unique, strict=False)


def _utc(times: pd.Series) -> pd.Series:
    """Event times in UTC; naive times from a landing system are taken to be UTC already."""
    return times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")


def _stale_hours(frame: pd.DataFrame, dataset: DatasetConfig, interval: DataInterval) -> float:
    newest = _utc(frame[dataset.event_time]).max()
    return (
        float((interval.end - newest.to_pydatetime()).total_seconds() / 3600)
        if newest == newest
        else float("inf")
    )


def _short_days(frame: pd.DataFrame, dataset: DatasetConfig, interval: DataInterval) -> dict[str, int]:
    """Days of the interval with fewer rows than expected; a day with no rows at all counts too."""
    counts = _utc(frame[dataset.event_time]).dt.date.value_counts()
    return {
        day.isoformat(): int(counts.get(day, 0))
        for day in interval.days()
        if counts.get(day, 0) < dataset.min_rows_per_day
    }


def _describe_failures(
    failures: pd.DataFrame, dataset: DatasetConfig, frame: pd.DataFrame, interval: DataInterval
) -> list[Problem]:
    """Group pandera's failure cases by (column, check) into one sentence each."""
    problems = []
    for (column, check), group in failures.groupby(["column", "check"], sort=False, dropna=False):
        examples = ", ".join(repr(v) for v in group["failure_case"].drop_duplicates().head(MAX_EXAMPLES))
        count = len(group)
        where = column if isinstance(column, str) else dataset.source  # frame-wide checks have no column
        sentence = _sentence(str(column), str(check), count, examples, dataset, frame, interval)
        problems.append(Problem(str(check), where, sentence, count))
    return problems


def _sentence(
    column: str,
    check: str,
    count: int,
    examples: str,
    dataset: DatasetConfig,
    frame: pd.DataFrame,
    interval: DataInterval,
) -> str:
    spec = dataset.columns.get(column)
    if check == "not_nullable":
        return f"column '{column}' has {count} null value(s) of {len(frame)} but allows none"
    if check == "null_ratio" and spec is not None:
        ratio = frame[column].isna().mean()
        return f"column '{column}' is {ratio:.1%} null, above the allowed {spec.max_null_ratio:.1%}"
    if check in ("min", "max") and spec is not None:
        return f"column '{column}' has {count} value(s) outside [{spec.min}, {spec.max}] (e.g. {examples})"
    if check == "categories" and spec is not None:
        return f"column '{column}' has {count} value(s) outside its categories (e.g. {examples})"
    if check in ("multiple_fields_uniqueness", "field_uniqueness"):
        return f"row id '{dataset.row_id}' has {count} duplicated value(s) (e.g. {examples})"
    if check == "freshness":
        newest = _utc(frame[dataset.event_time]).max()
        return (
            f"data is stale: the newest {dataset.event_time} is {newest.isoformat()}, "
            f"{_stale_hours(frame, dataset, interval):.1f} h before the interval end "
            f"(allowed: {dataset.max_staleness_hours:g} h)"
        )
    if check == "volume":
        short = _short_days(frame, dataset, interval)
        return (
            f"too few rows on {len(short)} day(s) ({short}); "
            f"at least {dataset.min_rows_per_day} expected per day"
        )
    return f"check {check} failed on {column} for {count} row(s) (e.g. {examples})"


def _report(dataset: DatasetConfig, interval: DataInterval, rows: int, problems: list[Problem]) -> Report:
    verdict = "All checks passed." if not problems else f"{len(problems)} check(s) failed."
    report = Report(
        title=f"Validation: {dataset.name} {interval.start.date()}",
        verdict=verdict,
        passed=not problems,
        meta={"interval": str(interval), "rows": rows, "source": dataset.source},
    )
    report.add_table(
        "Problems",
        [{"check": p.check, "where": p.where, "rows": p.count, "what": p.message} for p in problems],
    )
    report.add_table(
        "Checks applied",
        [
            {
                "column": name,
                "type": spec.type,
                "nullable": spec.nullable,
                "min": spec.min,
                "max": spec.max,
                "categories": spec.categories or "",
            }
            for name, spec in dataset.columns.items()
        ],
        note=f"Plus: unique {dataset.row_id}, at least {dataset.min_rows_per_day} rows per day, newest event "
        f"at most {dataset.max_staleness_hours:g} h before the interval end.",
    )
    return report
