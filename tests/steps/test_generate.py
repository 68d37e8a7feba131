"""generate-data: reproducible, range-independent synthetic events whose label depends on history."""

from __future__ import annotations

import copy
import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from mlsteps.contract.config import DEFAULT_CONFIG_PATH, load_config
from mlsteps.contract.layout import partition
from mlsteps.logic.validation import check_events
from mlsteps.platform.context import DataInterval
from mlsteps.platform.lake import Lake
from mlsteps.steps.generate import CATEGORIES, COLUMNS, DRIFTABLE, generate_events

FIRST_DAY = dt.date(2026, 3, 1)
DAYS = [FIRST_DAY + dt.timedelta(days=i) for i in range(6)]
ROWS, CUSTOMERS, SEED = 3_000, 1_000, 11
DRIFT_DAY = DAYS[3]
SMALL = {"rows_per_day": 600, "customers": 300}


@pytest.fixture(scope="module")
def events() -> pd.DataFrame:
    return generate_events(DAYS, ROWS, CUSTOMERS, SEED)


def on_day(frame: pd.DataFrame, day: dt.date) -> pd.DataFrame:
    return frame[frame["event_time"].dt.date == day].reset_index(drop=True)


def test_same_arguments_give_identical_events(events: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(generate_events(DAYS, ROWS, CUSTOMERS, SEED), events)


def test_different_seed_gives_different_events() -> None:
    days = DAYS[:2]
    one = generate_events(days, seed=1, **SMALL)
    same = generate_events(days, seed=1, **SMALL)
    other = generate_events(days, seed=2, **SMALL)

    pd.testing.assert_frame_equal(one, same)
    assert not one.equals(other)
    assert one["customer_id"].head(100).tolist() != other["customer_id"].head(100).tolist()
    assert one["amount"].sum() != other["amount"].sum()


def test_a_days_events_do_not_depend_on_the_requested_range(events: pd.DataFrame) -> None:
    day = DAYS[2]
    alone = generate_events([day], ROWS, CUSTOMERS, SEED)

    assert set(alone["event_time"].dt.date) == {day}
    pd.testing.assert_frame_equal(alone, on_day(events, day))


def test_columns_and_dtypes_match_the_config(events: pd.DataFrame) -> None:
    dataset = load_config(DEFAULT_CONFIG_PATH).dataset

    assert list(events.columns) == list(COLUMNS)
    assert set(events.columns) == set(dataset.columns)
    assert str(events["event_time"].dtype) == "datetime64[ns, UTC]"
    assert events["event_time"].is_monotonic_increasing
    assert sorted(set(events["event_time"].dt.date)) == DAYS
    for name, spec in dataset.columns.items():
        series = events[name]
        if spec.type == "boolean":
            assert series.dtype == bool, name
        elif spec.type == "numeric":
            assert pd.api.types.is_float_dtype(series), name
            assert series.min() >= (spec.min if spec.min is not None else -np.inf), name
            assert series.max() <= (spec.max if spec.max is not None else np.inf), name
        elif spec.type in ("string", "categorical"):
            assert series.map(type).eq(str).all(), name
        if spec.categories:
            assert set(series) <= set(spec.categories) == set(CATEGORIES)
        if not spec.nullable:
            assert series.notna().all(), name
    assert events["distance_from_home_km"].isna().mean() <= 0.05
    assert events["transaction_id"].is_unique
    per_day = events.groupby(events["event_time"].dt.date).size()
    assert (per_day >= ROWS).all()  # ordinary events plus compromised customers' bursts
    assert (per_day <= ROWS * 1.1).all()


def test_generated_events_pass_validation(events: pd.DataFrame) -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    start = dt.datetime.combine(DAYS[0], dt.time(), dt.UTC)
    interval = DataInterval(start, start + dt.timedelta(days=len(DAYS)))
    assert check_events(events, config.dataset, interval) == []


def test_fraud_rate_is_plausible(events: pd.DataFrame) -> None:
    rate = events["is_fraud"].mean()
    assert 0.003 <= rate <= 0.05
    daily = events.groupby(events["event_time"].dt.date)["is_fraud"].sum()
    assert (daily > 0).all(), "every day has some fraud to learn from"


def test_label_depends_on_the_customers_history(events: pd.DataFrame) -> None:
    ordered = events.sort_values(["customer_id", "event_time"], kind="stable")
    past = ordered.set_index("event_time").groupby("customer_id", sort=False)["amount"]
    ordered = ordered.assign(
        trailing_mean=past.rolling("30D", closed="left").mean().to_numpy(),
        history=past.rolling("30D", closed="left").count().to_numpy(),
    )
    known = ordered[ordered["history"] >= 3]
    unusual = known["amount"] > 3 * known["trailing_mean"]

    unusual_rate = known.loc[unusual, "is_fraud"].mean()
    usual_rate = known.loc[~unusual, "is_fraud"].mean()
    print(f"fraud rate: {unusual_rate:.3%} when amount > 3x trailing mean ({unusual.sum()} events)")
    print(f"fraud rate: {usual_rate:.3%} otherwise")
    assert unusual.sum() >= 200
    assert known.loc[unusual, "is_fraud"].sum() >= 20
    assert unusual_rate > 4 * usual_rate

    # The same absolute amount is riskier for a customer who usually spends little: history, not size.
    large = known[known["amount"] > known["amount"].quantile(0.9)]
    ratio = large["amount"] / large["trailing_mean"]
    assert large.loc[ratio > 3, "is_fraud"].mean() > 2 * large.loc[ratio < 1.5, "is_fraud"].mean()


def test_drift_shifts_exactly_the_chosen_columns_from_its_day_on(events: pd.DataFrame) -> None:
    chosen = ("amount", "merchant_category")
    drifted = generate_events(DAYS, ROWS, CUSTOMERS, SEED, drift_from=DRIFT_DAY, drift_columns=chosen)

    before = [day for day in DAYS if day < DRIFT_DAY]
    after = [day for day in DAYS if day >= DRIFT_DAY]
    for day in before:
        pd.testing.assert_frame_equal(on_day(drifted, day), on_day(events, day))

    untouched = [c for c in DRIFTABLE if c not in chosen] + ["transaction_id", "customer_id", "event_time"]
    for day in after:
        base, shifted = on_day(events, day), on_day(drifted, day)
        pd.testing.assert_frame_equal(shifted[untouched], base[untouched])
        assert shifted["amount"].median() > 1.8 * base["amount"].median()
        online = ["online_retail", "electronics"]
        assert (
            shifted["merchant_category"].isin(online).mean()
            > base["merchant_category"].isin(online).mean() + 0.2
        )
        changed = (shifted["merchant_category"] != base["merchant_category"]).mean()
        assert 0.2 < changed < 0.5


@pytest.fixture(scope="module")
def concept_shifted() -> pd.DataFrame:
    return generate_events(DAYS, ROWS, CUSTOMERS, SEED, concept_shift_from=DRIFT_DAY)


def test_concept_shift_leaves_every_input_unchanged(
    events: pd.DataFrame, concept_shifted: pd.DataFrame
) -> None:
    inputs = [c for c in COLUMNS if c != "is_fraud"]
    pd.testing.assert_frame_equal(concept_shifted[inputs], events[inputs])


def test_concept_shift_leaves_labels_before_its_day(
    events: pd.DataFrame, concept_shifted: pd.DataFrame
) -> None:
    for day in (day for day in DAYS if day < DRIFT_DAY):
        pd.testing.assert_series_equal(
            on_day(concept_shifted, day)["is_fraud"], on_day(events, day)["is_fraud"]
        )


def test_concept_shift_moves_fraud_online_from_its_day(
    events: pd.DataFrame, concept_shifted: pd.DataFrame
) -> None:
    after = concept_shifted[concept_shifted["event_time"].dt.date >= DRIFT_DAY]
    online = after["merchant_category"].isin(["online_retail", "electronics"])
    assert after.loc[online, "is_fraud"].mean() > 4 * after.loc[~online, "is_fraud"].mean()


@pytest.mark.parametrize("column", ["distance_from_home_km", "is_international", "card_present"])
def test_each_driftable_column_drifts_alone(column: str) -> None:
    days = DAYS[:2]
    base = generate_events(days, seed=3, **SMALL)
    drifted = generate_events(days, seed=3, drift_from=days[1], drift_columns=(column,), **SMALL)

    pd.testing.assert_frame_equal(on_day(drifted, days[0]), on_day(base, days[0]))
    others = [c for c in DRIFTABLE if c != column]
    pd.testing.assert_frame_equal(on_day(drifted, days[1])[others], on_day(base, days[1])[others])
    shifted, original = on_day(drifted, days[1])[column], on_day(base, days[1])[column]
    assert abs(shifted.astype(float).mean() - original.astype(float).mean()) > 0.1 * max(
        original.astype(float).mean(), 0.05
    )


# --- the CLI ---------------------------------------------------------------------------------


def child_env(**extra: str) -> dict[str, str]:
    """A step subprocess's environment: this one's, with ``extra``."""
    return {**os.environ, **extra}


def run_step(
    *argv: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "mlsteps", *argv],
        capture_output=True,
        text=True,
        env=child_env(**(env or {})),
        cwd=cwd,
        timeout=120,
    )


def test_cli_writes_committed_partitions_and_a_result(tmp_path: Path, local_lake: str) -> None:
    result_path = tmp_path / "out" / "result.json"
    argv = [
        "generate-data", "--start", "2026-03-01", "--days", "2", "--rows-per-day", "600",
        "--customers", "300", "--seed", "5", "--dag-id", "ml_data", "--run-id", "manual__1",
    ]  # fmt: skip
    process = run_step(*argv, env={"ML_STEP_RESULT": str(result_path)})
    assert process.returncode == 0, process.stderr

    result = json.loads(result_path.read_text())
    expected = generate_events([dt.date(2026, 3, 1), dt.date(2026, 3, 2)], 600, 300, 5)
    assert result["rows"] == len(expected)
    assert result["days"] == ["2026-03-01", "2026-03-02"]
    assert result["uri"] == f"{local_lake}/raw/transactions"
    assert result["fraud_rate"] == pytest.approx(expected["is_fraud"].mean(), abs=1e-5)
    assert result["drift_from"] is None
    assert "generate-data:" in process.stdout

    lake = Lake(local_lake)
    config_hash = load_config(DEFAULT_CONFIG_PATH).config_hash
    frames = []
    for day in result["days"]:
        manifest = lake.manifest(partition("raw/transactions", day))
        assert manifest is not None
        assert manifest["producer"] == "generate-data"
        assert manifest["ds"] == day
        assert manifest["seed"] == 5
        assert manifest["dag_id"] == "ml_data"
        assert manifest["dag_run_id"] == "manual__1"
        assert manifest["config_hash"] == config_hash
        files = lake.partition_files(partition("raw/transactions", day))
        frame = lake.read_table(files).to_pandas()
        assert len(frame) == manifest["rows"]
        frames.append(frame)
    written = pd.concat(frames, ignore_index=True)
    pd.testing.assert_frame_equal(written, expected)

    # A rerun for the same days replaces the partitions: same rows, no duplicates.
    rerun = run_step(*argv)
    assert rerun.returncode == 0, rerun.stderr
    for day in result["days"]:
        files = lake.partition_files(partition("raw/transactions", day))
        assert len(files) == 1
        assert sorted(lake.list_dir(partition("raw/transactions", day))) == sorted(
            ["_SUCCESS.json", files[0].rsplit("/", 1)[1]]
        )
    reread = pd.concat(
        [
            lake.read_table(lake.partition_files(partition("raw/transactions", d))).to_pandas()
            for d in result["days"]
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(reread, expected)


def _config_without_is_international(directory: Path) -> Path:
    document = copy.deepcopy(yaml.safe_load(DEFAULT_CONFIG_PATH.read_text()))
    del document["dataset"]["columns"]["is_international"]
    document["features"]["passthrough"].remove("is_international")
    document["features"]["aggregates"] = [
        a for a in document["features"]["aggregates"] if a["column"] == "amount"
    ]
    path = directory / "other.yaml"
    path.write_text(yaml.safe_dump(document))
    return path


@pytest.mark.parametrize(
    ("options", "words"),
    [
        (["--days", "0"], ["--days", "between 1 and 3650", "0"]),
        (["--rows-per-day", "5"], ["--rows-per-day", "5"]),
        (["--customers", "1"], ["--customers", "1"]),
        (["--drift-from", "2026-03-02", "--drift-columns", "amount,colour"], ["--drift-columns", "colour"]),
        (["--start", "yesterday-ish"], ["--start", "yesterday-ish", "ISO"]),
        (["--days", "many"], ["--days", "many"]),
        (["--config", "{other}"], ["lacks columns", "is_international", "--config"]),
        (["--config", "{missing}"], ["does not exist"]),
    ],
    ids=["days", "rows", "customers", "drift-column", "start", "days-type", "other-schema", "no-config"],
)
def test_cli_bad_arguments_give_one_error_line(
    tmp_path: Path, local_lake: str, options: list[str], words: list[str]
) -> None:
    values = {
        "other": str(_config_without_is_international(tmp_path)),
        "missing": str(tmp_path / "nope.yaml"),
    }
    options = [option.format(**values) for option in options]
    defaults = {"--start": "2026-03-01", "--days": "1", "--rows-per-day": "100", "--customers": "50"}
    for option in options:
        defaults.pop(option, None)
    argv = ["generate-data", *(x for pair in defaults.items() for x in pair), *options]
    result_path = tmp_path / "result.json"

    process = run_step(*argv, env={"ML_STEP_RESULT": str(result_path)})

    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    errors = [line for line in process.stderr.splitlines() if line.startswith("ERROR: ")]
    assert len(errors) == 1, process.stderr
    assert process.stderr.strip().splitlines()[-1] == errors[0]
    for word in words:
        assert word in errors[0]
    assert not result_path.exists()
    assert Lake(local_lake).partitions("raw/transactions") == []
