"""Checks of a data interval's raw events against the dataset config, and the profile its report draws.

Readability, emptiness and dtypes are checked first, because value checks on a column of the
wrong type mean nothing. Value checks (nulls, ranges, categories, duplicate keys, volume and
freshness) then run as one lazy pandera schema, so every problem is reported at once.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from mlsteps.contract.config import ColumnSpec, DatasetConfig

if TYPE_CHECKING:
    import pandas as pd
    import pandera.pandas as pa

    from mlsteps.platform.context import DataInterval

MAX_EXAMPLES = 3
#: Numeric columns drawn in the report, those with out-of-range values first.
MAX_HISTOGRAMS = 12
HISTOGRAM_BINS = 30


@dataclass(frozen=True)
class Problem:
    """One failed check, phrased for a person."""

    check: str
    where: str
    message: str
    count: int = 1


@dataclass(frozen=True)
class NullShare:
    """How much of a column is null, and how much its spec allows (``share`` is None: column missing)."""

    column: str
    share: float | None
    allowed: float

    @property
    def over(self) -> bool:
        return self.share is not None and self.share > self.allowed


@dataclass(frozen=True)
class Histogram:
    """Counts of a numeric column's finite values per bin (split at its limits), and its configured range."""

    column: str
    counts: list[int]
    edges: list[float]
    minimum: float | None
    maximum: float | None
    outside: int


@dataclass(frozen=True)
class UnseenValues:
    """Values of a categorical column outside its categories, kept (policy ``unseen: other``) and counted."""

    column: str
    count: int
    examples: list[str]

    @property
    def sentence(self) -> str:
        return (
            f"column '{self.column}' has {self.count} value(s) outside its categories "
            f"(e.g. {', '.join(map(repr, self.examples))}), encoded as one 'other' category"
        )


@dataclass(frozen=True)
class DataProfile:
    """Small summaries of the validated rows for the report's plots; the rows themselves are not kept.

    ``rows_per_day`` is None when the event time column cannot be read as timestamps.
    """

    rows_per_day: dict[dt.date, int] | None
    null_shares: list[NullShare] = field(default_factory=list)
    histograms: list[Histogram] = field(default_factory=list)
    #: Values outside the categories that the policy keeps (``unseen: other``), per column.
    unseen: list[UnseenValues] = field(default_factory=list)


def unseen_categories(frame: pd.DataFrame, dataset: DatasetConfig) -> list[UnseenValues]:
    """Per categorical column whose policy is ``unseen: other``, the values outside its categories."""
    found = []
    for name, spec in dataset.columns.items():
        if spec.type != "categorical" or spec.unseen != "other" or name not in frame.columns:
            continue
        values = frame[name]
        outside = values[values.notna() & ~values.isin(list(spec.categories or ()))]
        if len(outside):
            examples = [str(v) for v in outside.drop_duplicates().head(MAX_EXAMPLES)]
            found.append(UnseenValues(name, len(outside), examples))
    return found


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
        if spec.categories and spec.unseen == "fail":
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


def _rows_per_day(frame: pd.DataFrame, dataset: DatasetConfig, interval: DataInterval) -> dict[dt.date, int]:
    """Rows per UTC day of the interval by event time; a day with no rows counts 0."""
    counts = _utc(frame[dataset.event_time]).dt.floor("D").value_counts()
    by_day = {stamp.date(): int(count) for stamp, count in counts.items()}
    return {day: by_day.get(day, 0) for day in interval.days()}


def _short_days(frame: pd.DataFrame, dataset: DatasetConfig, interval: DataInterval) -> dict[str, int]:
    """Days of the interval with fewer rows than expected; a day with no rows at all counts too."""
    return {
        day.isoformat(): count
        for day, count in _rows_per_day(frame, dataset, interval).items()
        if count < dataset.min_rows_per_day
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


def data_profile(frame: pd.DataFrame | None, dataset: DatasetConfig, interval: DataInterval) -> DataProfile:
    """Summaries for the report's plots, computed column by column without copying the frame.

    Args:
        frame: The interval's rows, or None when no file could be read.
        dataset: The columns and their specs.
        interval: The validated data interval.

    Returns:
        Rows per day, null shares of the configured columns, histograms of the numeric ones, and
        the values outside the categories that the ``unseen: other`` policy keeps.
    """
    if frame is None:
        return DataProfile(rows_per_day=dict.fromkeys(interval.days(), 0))
    event_time = dataset.columns.get(dataset.event_time)
    timed = (
        event_time is not None
        and _has_dtype(frame, dataset.event_time, event_time)
        and not frame[dataset.event_time].isna().all()
    )
    null_shares = [
        NullShare(
            name,
            float(frame[name].isna().mean()) if name in frame.columns else None,
            spec.max_null_ratio if spec.nullable else 0.0,
        )
        for name, spec in dataset.columns.items()
    ]
    histograms = [
        histogram
        for name, spec in dataset.columns.items()
        if spec.type in ("numeric", "integer") and _has_dtype(frame, name, spec)
        for histogram in [_histogram(frame[name], name, spec)]
        if histogram is not None
    ]
    histograms.sort(key=lambda h: h.outside == 0)  # stable: out-of-range columns first, else config order
    return DataProfile(
        _rows_per_day(frame, dataset, interval) if timed else None,
        null_shares,
        histograms[:MAX_HISTOGRAMS],
        unseen_categories(frame, dataset),
    )


def _histogram(series: pd.Series, name: str, spec: ColumnSpec) -> Histogram | None:
    """The finite values' histogram and how many fall outside ``[min, max]``; None without any value."""
    import numpy as np

    values = series.to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if not len(values):
        return None
    edges = np.histogram_bin_edges(values, bins=HISTOGRAM_BINS)
    # A limit inside the data becomes a bin edge, so no bin mixes allowed and out-of-range values
    # (bins are half-open, so the edge for max goes just above it: max itself is allowed).
    upper = None if spec.max is None else float(np.nextafter(spec.max, np.inf))
    limits = [limit for limit in (spec.min, upper) if limit is not None and edges[0] < limit < edges[-1]]
    edges = np.union1d(edges, limits)
    counts, _ = np.histogram(values, bins=edges)
    low = spec.min if spec.min is not None else -np.inf
    high = spec.max if spec.max is not None else np.inf
    outside = int(np.count_nonzero((values < low) | (values > high)))
    return Histogram(name, counts.tolist(), edges.tolist(), spec.min, spec.max, outside)
