"""validate, run as the real CLI on real Parquet: good data passes, each kind of bad data fails clearly."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mlsteps.contract.config import DEFAULT_CONFIG_PATH, load_config
from mlsteps.contract.layout import partition
from mlsteps.logic.validation import check_events, data_profile
from mlsteps.platform.context import DataInterval
from mlsteps.platform.lake import Lake
from mlsteps.steps.generate import generate_events
from tests.steps.report_fixtures import assert_figures, external_references, figures

DAYS = [dt.date(2026, 1, 1), dt.date(2026, 1, 2), dt.date(2026, 1, 3)]
ONE_DAY = ["--start", "2026-01-01", "--end", "2026-01-02"]
SOURCE = "raw/transactions"
FIGURES = ["Rows per day", "Null share per column", "Numeric column distributions"]
NO_ROWS_READ = {"empty interval", "corrupt parquet"}  # only the (empty) rows per day can be drawn


@pytest.fixture(scope="module")
def days() -> dict[dt.date, pd.DataFrame]:
    """Three small generated days (~600 rows each; the bundled config wants at least 500 per day)."""
    events = generate_events(DAYS, rows_per_day=600, customers=300, seed=21)
    return {day: frame.reset_index(drop=True) for day, frame in events.groupby(events["event_time"].dt.date)}


def land(lake: Path, day: dt.date, frame: pd.DataFrame | None = None, raw: bytes | None = None) -> None:
    """Write a landing partition the way another system would: plain Parquet, no manifest."""
    directory = lake / partition(SOURCE, day)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / "part-0.parquet"
    if raw is not None:
        target.write_bytes(raw)
    else:
        assert frame is not None
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), target)


def child_env(**extra: str) -> dict[str, str]:
    """A step subprocess's environment: this one's, with ``extra``."""
    return {**os.environ, **extra}


def run_validate(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlsteps", "validate", *argv],
        capture_output=True,
        text=True,
        env=child_env(**(env or {})),
        timeout=180,
    )


def report_of(lake: Path, day: str = "2026-01-01") -> dict[str, Any]:
    return json.loads((lake / f"reports/validation/ds={day}/training/report.json").read_text())


def html_of(lake: Path, day: str = "2026-01-01") -> str:
    return (lake / f"reports/validation/ds={day}/training/report.html").read_text()


def assert_self_contained(html: str) -> None:
    assert 'src="http' not in html
    assert 'href="http' not in html
    assert external_references(html) == []


# --- good data ---------------------------------------------------------------------------------


def test_good_data_passes(tmp_path: Path, days: dict[dt.date, pd.DataFrame]) -> None:
    lake_dir = tmp_path / "lake"
    lake = Lake(str(lake_dir))
    for day in DAYS[:2]:  # committed partitions, as generate-data or an upstream step writes them
        staging = lake.stage(partition(SOURCE, day))
        staging.write_parquet("00000.parquet", pa.Table.from_pandas(days[day], preserve_index=False))
        lake.commit(staging, {"ds": day.isoformat()})
    result_path = tmp_path / "result.json"

    process = run_validate(
        "--start", "2026-01-01", "--end", "2026-01-03", "--lake", str(lake_dir), "--run-id", "r1",
        env={"ML_STEP_RESULT": str(result_path)},
    )  # fmt: skip

    assert process.returncode == 0, process.stderr
    assert "Traceback" not in process.stderr
    rows = len(days[DAYS[0]]) + len(days[DAYS[1]])
    result = json.loads(result_path.read_text())
    assert result["valid"] is True
    assert result["rows"] == rows
    assert result["days"] == ["2026-01-01", "2026-01-02"]
    report_dir = lake_dir / "reports/validation/ds=2026-01-01/training"
    assert result["report_json"] == f"{lake_dir}/reports/validation/ds=2026-01-01/training/report.json"
    assert result["report_html"] == f"{lake_dir}/reports/validation/ds=2026-01-01/training/report.html"
    report = report_of(lake_dir)
    assert report["valid"] is True
    assert report["problems"] == []
    assert report["rows"] == rows
    assert report["dag_run_id"] == "r1"
    html = (report_dir / "report.html").read_text()
    assert html.startswith("<!doctype html>")
    assert "All checks passed." in html
    assert "distance_from_home_km" in html
    assert list(assert_figures(html, FIGURES)) == FIGURES  # problems first, then these, in this order
    assert_self_contained(html)


def test_naive_timestamps_are_taken_as_utc(tmp_path: Path, days: dict[dt.date, pd.DataFrame]) -> None:
    frame = days[DAYS[0]]
    land(tmp_path, DAYS[0], frame.assign(event_time=frame["event_time"].dt.tz_localize(None)))

    process = run_validate(*ONE_DAY, "--lake", str(tmp_path))

    assert process.returncode == 0, process.stderr
    assert report_of(tmp_path)["valid"] is True


def test_validate_on_the_s3_lake(s3_lake: str, days: dict[dt.date, pd.DataFrame], tmp_path: Path) -> None:
    lake = Lake(s3_lake)
    staging = lake.stage(partition(SOURCE, DAYS[0]))
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(days[DAYS[0]], preserve_index=False))
    lake.commit(staging, {})
    result_path = tmp_path / "result.json"

    process = run_validate(*ONE_DAY, env={"ML_STEP_RESULT": str(result_path)})  # ML_LAKE_URI names the bucket

    assert process.returncode == 0, process.stderr
    result = json.loads(result_path.read_text())
    assert result["rows"] == len(days[DAYS[0]])
    assert result["report_json"] == f"{s3_lake}/reports/validation/ds=2026-01-01/training/report.json"
    report = lake.read_json("reports/validation/ds=2026-01-01/training/report.json")
    assert report["valid"] is True
    assert b"All checks passed." in lake.read_bytes("reports/validation/ds=2026-01-01/training/report.html")

    # A corrupt landing file on S3 is reported, not crashed on.
    lake.write_bytes(f"{partition(SOURCE, DAYS[1])}/part-0.parquet", b"PAR1 but not really")
    bad = run_validate("--start", "2026-01-02", "--end", "2026-01-03")
    assert bad.returncode == 2, bad.stderr
    assert "Traceback" not in bad.stderr
    assert "not readable Parquet" in bad.stderr.strip().splitlines()[-1]


# --- bad data: every case is a real CLI run; the runs go in parallel to keep the suite quick -------


@dataclass
class Case:
    """One kind of bad input: how to build it, and what the failure must say."""

    build: Callable[[Path, dict[dt.date, pd.DataFrame]], list[str]]
    words: list[str]
    checks: set[str] = field(default_factory=set)  # check names the report must list


def _one_day(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[..., list[str]]:
    def build(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
        land(lake, DAYS[0], change(days[DAYS[0]].copy()))
        return ONE_DAY

    return build


def _failing_unseen_categories(build: Callable[..., list[str]]) -> Callable[..., list[str]]:
    """The same case under a config whose merchant_category says ``unseen: fail``."""

    def with_policy(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
        document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
        document["dataset"]["columns"]["merchant_category"]["unseen"] = "fail"
        config = lake.parent / "unseen-fails.yaml"
        config.write_text(yaml.safe_dump(document))
        return [*build(lake, days), "--config", str(config)]

    return with_policy


def _every(n: int) -> Callable[[pd.DataFrame], pd.Series]:
    return lambda frame: pd.Series(np.arange(len(frame)) % n == 0, index=frame.index)


def _duplicate_ids(frame: pd.DataFrame) -> pd.DataFrame:
    frame.loc[1:4, "transaction_id"] = frame.loc[0, "transaction_id"]
    return frame


def _empty(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
    land(lake, DAYS[1], days[DAYS[1]])  # data exists, but not for the interval asked for
    return ONE_DAY


def _stale(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
    land(lake, DAYS[0], days[DAYS[0]])
    return ["--start", "2026-01-01", "--end", "2026-01-04"]  # newest event ~48 h before the end


def _corrupt(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
    land(lake, DAYS[0], raw=b"\x00garbage, not Parquet\xff" * 40)
    return ONE_DAY


def _missing_middle_day(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
    land(lake, DAYS[0], days[DAYS[0]])
    land(lake, DAYS[2], days[DAYS[2]])
    return ["--start", "2026-01-01", "--end", "2026-01-04"]


def _bad_config(lake: Path, days: dict[dt.date, pd.DataFrame]) -> list[str]:
    land(lake, DAYS[0], days[DAYS[0]])
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    document["dataset"]["max_staleness_hour"] = 12  # a typo
    config = lake.parent / "bad-config.yaml"
    config.write_text(yaml.safe_dump(document))
    return [*ONE_DAY, "--config", str(config)]


def _several(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.drop(columns=["customer_id"]).head(300)
    frame.loc[frame.index[:3], "amount"] = -1.0
    frame.loc[frame.index[:7], "merchant_category"] = "casino"
    return frame


CASES: dict[str, Case] = {
    "missing column": Case(
        _one_day(lambda f: f.drop(columns=["amount"])), ["column 'amount'", "missing"], {"column_present"}
    ),
    "wrong dtype": Case(
        _one_day(lambda f: f.assign(amount=f["amount"].astype(str))),
        ["column 'amount'", "dtype", "numeric"],
        {"dtype"},
    ),
    "all-null column": Case(
        _one_day(lambda f: f.assign(customer_id=None)),
        ["column 'customer_id'", "entirely null"],
        {"all_null"},
    ),
    "empty interval": Case(_empty, ["no data landed", SOURCE], {"not_empty"}),
    "out-of-range values": Case(
        _one_day(lambda f: f.assign(amount=f["amount"].mask(_every(40)(f), -5.0))),
        ["column 'amount'", "outside [0.0, 100000.0]", "-5.0"],
        {"min"},
    ),
    "unknown category": Case(
        _failing_unseen_categories(
            _one_day(
                lambda f: f.assign(merchant_category=f["merchant_category"].mask(_every(40)(f), "casino"))
            )
        ),
        ["column 'merchant_category'", "outside its categories", "casino"],
        {"categories"},
    ),
    "duplicate keys": Case(
        _one_day(_duplicate_ids), ["row id 'transaction_id'", "duplicated"], {"multiple_fields_uniqueness"}
    ),
    "stale data": Case(_stale, ["stale", "before the interval end", "36 h"], {"freshness"}),
    "corrupt parquet": Case(
        _corrupt, ["raw/transactions/ds=2026-01-01/part-0.parquet", "not readable Parquet"], {"readable"}
    ),
    "too few rows": Case(
        _one_day(lambda f: f.head(200)), ["too few rows", "'2026-01-01': 200", "at least 500"], {"volume"}
    ),
    "missing day inside the interval": Case(
        _missing_middle_day, ["too few rows", "'2026-01-02': 0"], {"volume"}
    ),
    "bad config": Case(_bad_config, ["pipeline config", "bad-config.yaml", "dataset.max_staleness_hour"]),
    "null ratio above the limit": Case(
        _one_day(lambda f: f.assign(distance_from_home_km=f["distance_from_home_km"].mask(_every(5)(f)))),
        ["column 'distance_from_home_km'", "null", "above the allowed 5.0%"],
        {"null_ratio"},
    ),
    "nulls in a non-nullable boolean": Case(
        _one_day(lambda f: f.assign(card_present=f["card_present"].astype(object).mask(_every(50)(f)))),
        ["column 'card_present'", "null value(s)", "allows none"],
        {"not_nullable"},
    ),
    "several problems at once": Case(
        _failing_unseen_categories(_one_day(_several)),
        ["column 'customer_id'", "missing", "and 3 more problem(s)"],
        {"column_present", "min", "categories", "volume"},
    ),
}


@dataclass(frozen=True)
class Outcome:
    lake: Path
    process: subprocess.CompletedProcess


@pytest.fixture(scope="module")
def outcomes(
    tmp_path_factory: pytest.TempPathFactory, days: dict[dt.date, pd.DataFrame]
) -> dict[str, Outcome]:
    """Build every bad lake, then run the real CLI on all of them, a few at a time."""
    prepared = {}
    for index, (name, case) in enumerate(CASES.items()):
        lake = tmp_path_factory.mktemp(f"case{index}") / "lake"
        lake.mkdir()
        prepared[name] = (lake, case.build(lake, days))
    # Module fixtures start before the per-test environment isolation, so pin what the children read.
    env = {key: value for key, value in child_env().items() if key not in ("ML_LAKE_URI", "ML_STEP_RESULT")}
    env["ML_PIPELINE_CONFIG"] = str(DEFAULT_CONFIG_PATH)

    def run(name: str) -> Outcome:
        lake, argv = prepared[name]
        process = subprocess.run(
            [sys.executable, "-m", "mlsteps", "validate", *argv, "--lake", str(lake)],
            capture_output=True,
            text=True,
            env={**env, "ML_STEP_RESULT": str(lake.parent / "result.json")},
            timeout=180,
        )
        return Outcome(lake, process)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(zip(prepared, pool.map(run, prepared), strict=True))


@pytest.mark.parametrize("name", list(CASES))
def test_bad_input_fails_with_one_clear_line(name: str, outcomes: dict[str, Outcome]) -> None:
    case, outcome = CASES[name], outcomes[name]
    stderr = outcome.process.stderr

    assert outcome.process.returncode == 2, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ")
    for word in case.words:
        assert word in last, f"{word!r} not in {last!r}"
    result_file = outcome.lake.parent / "result.json"

    if case.checks:  # data problems are written up in the report too
        assert "report.html" in last
        # The failed step's result points at that report (the task's Report link reads it).
        result = json.loads(result_file.read_text())
        assert result["failed"] is True
        assert result["valid"] is False
        assert result["summary"] == f"FAILED: {last.removeprefix('ERROR: ')}"
        assert result["report_html"] in last
        report = report_of(outcome.lake)
        assert report["valid"] is False
        assert case.checks <= {problem["check"] for problem in report["problems"]}
        html = html_of(outcome.lake)
        assert "check(s) failed." in html
        # The report is read when validation fails, so it carries the plots then too.
        assert_figures(html, ["Rows per day"] if name in NO_ROWS_READ else FIGURES)
        assert_self_contained(html)
    else:  # refused before any work: nothing to show, no result
        assert not result_file.exists()


def test_report_lists_every_problem(outcomes: dict[str, Outcome]) -> None:
    report = report_of(outcomes["several problems at once"].lake)
    problems = {problem["check"]: problem for problem in report["problems"]}

    assert set(problems) == {"column_present", "min", "categories", "volume"}
    assert problems["column_present"]["where"] == "customer_id"
    assert problems["min"]["where"] == "amount"
    assert problems["min"]["count"] == 3
    assert problems["categories"]["count"] == 7
    assert "'2026-01-01': 300" in problems["volume"]["message"]
    assert report["rows"] == 300


def test_scoring_input_without_label_passes_only_with_without_label(
    tmp_path: Path, days: dict[dt.date, pd.DataFrame]
) -> None:
    lake_dir = tmp_path / "lake"
    land(lake_dir, DAYS[0], days[DAYS[0]].drop(columns=["is_fraud"]))

    strict = run_validate(*ONE_DAY, "--lake", str(lake_dir))
    assert strict.returncode == 2
    assert "column 'is_fraud' (boolean) is missing" in strict.stderr.strip().splitlines()[-1]

    scoring = run_validate(*ONE_DAY, "--lake", str(lake_dir), "--without-label")
    assert scoring.returncode == 0, scoring.stderr
    report = json.loads((lake_dir / "reports/validation/ds=2026-01-01/scoring/report.json").read_text())
    assert report["valid"] is True


def test_a_new_category_passes_by_default_and_is_counted(
    tmp_path: Path, days: dict[dt.date, pd.DataFrame]
) -> None:
    lake_dir = tmp_path / "lake"
    frame = days[DAYS[0]].copy()
    frame.loc[frame.index[:9], "merchant_category"] = "casino"
    land(lake_dir, DAYS[0], frame.drop(columns=["is_fraud"]))
    result_file = tmp_path / "result.json"

    process = run_validate(
        *ONE_DAY, "--lake", str(lake_dir), "--without-label", env={"ML_STEP_RESULT": str(result_file)}
    )

    assert process.returncode == 0, process.stderr
    result = json.loads(result_file.read_text())
    assert result["unseen_categories"] == {"merchant_category": 9}
    assert (
        "9 value(s) outside its categories (e.g. 'casino'), encoded as one 'other' category"
        in result["summary"]
    )


def test_a_new_category_is_listed_in_the_report(tmp_path: Path, days: dict[dt.date, pd.DataFrame]) -> None:
    frame = days[DAYS[0]].copy()
    frame.loc[frame.index[:9], "merchant_category"] = "casino"
    land(tmp_path, DAYS[0], frame)

    assert run_validate(*ONE_DAY, "--lake", str(tmp_path)).returncode == 0
    assert report_of(tmp_path)["unseen_categories"] == [
        {"column": "merchant_category", "count": 9, "examples": ["casino"]}
    ]
    assert "<td>merchant_category</td><td>9</td><td>casino</td>" in html_of(tmp_path)


# --- the report's plots --------------------------------------------------------------------------


def test_report_without_readable_rows_says_why_it_has_no_column_plots(outcomes: dict[str, Outcome]) -> None:
    html = html_of(outcomes["corrupt parquet"].lake)

    assert set(figures(html)) == {"Rows per day"}
    assert "<h2>Null share per column</h2><p>Not drawn: no rows could be read.</p>" in html


def test_report_without_event_times_says_why_it_has_no_rows_per_day(
    tmp_path: Path, days: dict[dt.date, pd.DataFrame]
) -> None:
    land(tmp_path, DAYS[0], days[DAYS[0]].drop(columns=["event_time"]))

    process = run_validate(*ONE_DAY, "--lake", str(tmp_path))

    assert process.returncode == 2
    html = html_of(tmp_path)
    assert set(figures(html)) == {"Null share per column", "Numeric column distributions"}
    assert "Not drawn: column event_time is missing, entirely null or not a timestamp." in html


def test_profile_summarises_what_the_plots_show(days: dict[dt.date, pd.DataFrame]) -> None:
    dataset = load_config(DEFAULT_CONFIG_PATH).dataset
    interval = DataInterval(
        dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 4, tzinfo=dt.UTC)
    )  # three days, of which the second is left out below
    frame = pd.concat([days[DAYS[0]], days[DAYS[2]]], ignore_index=True)
    every_40th, every_5th, every_50th = _every(40)(frame), _every(5)(frame), _every(50)(frame)
    frame = frame.assign(
        amount=frame["amount"].mask(every_40th, -5.0),
        distance_from_home_km=frame["distance_from_home_km"].mask(every_5th),
        card_present=frame["card_present"].astype(object).mask(every_50th),
    )

    summary = data_profile(frame, dataset, interval)

    assert summary.rows_per_day == {DAYS[0]: len(days[DAYS[0]]), DAYS[1]: 0, DAYS[2]: len(days[DAYS[2]])}
    shares = {entry.column: entry for entry in summary.null_shares}
    assert list(shares) == list(dataset.columns)
    assert {name for name, entry in shares.items() if entry.over} == {"card_present", "distance_from_home_km"}
    assert shares["distance_from_home_km"].share == pytest.approx(every_5th.mean(), abs=0.01)
    assert shares["distance_from_home_km"].allowed == 0.05
    assert shares["card_present"].allowed == 0.0
    assert [h.column for h in summary.histograms] == ["amount", "distance_from_home_km"]
    amount = summary.histograms[0]
    assert amount.outside == int(every_40th.sum())
    assert sum(amount.counts) == len(frame)
    assert amount.edges[0] == -5.0
    assert 0.0 in amount.edges  # the configured min splits the bins: no bin holds both -5 and 3
    assert sum(summary.histograms[1].counts) == int(frame["distance_from_home_km"].notna().sum())
    # The same frame fails exactly the checks the plots highlight.
    checks = {problem.check for problem in check_events(frame, dataset, interval)}
    assert {"min", "null_ratio", "not_nullable", "volume"} <= checks


def test_profile_of_an_interval_with_no_readable_rows() -> None:
    dataset = load_config(DEFAULT_CONFIG_PATH).dataset
    interval = DataInterval(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, tzinfo=dt.UTC))

    summary = data_profile(None, dataset, interval)

    assert summary.rows_per_day == {DAYS[0]: 0, DAYS[1]: 0}
    assert summary.null_shares == []
    assert summary.histograms == []
