"""Validation checks and the data profile on a four-row frame of a two-day interval."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlsteps.contract.config import DatasetConfig
from mlsteps.logic.validation import UnseenValues, check_events, data_profile, unseen_categories
from mlsteps.platform.context import DataInterval

DAY_1, DAY_2 = dt.date(2026, 1, 1), dt.date(2026, 1, 2)
INTERVAL = DataInterval(dt.datetime(2026, 1, 1, tzinfo=dt.UTC), dt.datetime(2026, 1, 3, tzinfo=dt.UTC))
DATASET = DatasetConfig.model_validate(
    {
        "name": "tiny",
        "source": "raw/tiny",
        "event_time": "event_time",
        "entity_keys": ["card_id"],
        "row_id": "row_id",
        "label": "is_fraud",
        "min_rows_per_day": 1,
        "max_staleness_hours": 24,
        "columns": {
            "row_id": {"type": "string"},
            "card_id": {"type": "string"},
            "event_time": {"type": "timestamp"},
            "amount": {"type": "numeric", "min": 0, "max": 100},
            "merchant": {"type": "categorical", "categories": ["shop", "travel"]},
            "distance": {"type": "numeric", "nullable": True, "max_null_ratio": 0.3},
            "is_fraud": {"type": "integer"},
        },
    }
)


def events() -> pd.DataFrame:
    """Four valid rows, two per day."""
    return pd.DataFrame(
        {
            "row_id": ["a", "b", "c", "d"],
            "card_id": ["c1", "c2", "c1", "c2"],
            "event_time": pd.to_datetime(
                ["2026-01-01 08:00", "2026-01-01 20:00", "2026-01-02 09:00", "2026-01-02 22:00"], utc=True
            ),
            "amount": [1.0, 20.0, 50.0, 99.0],
            "merchant": ["shop", "travel", "shop", "shop"],
            "distance": [1.0, np.nan, 3.0, 4.0],
            "is_fraud": [0, 1, 0, 0],
        }
    )


def checks_failed(frame: pd.DataFrame) -> set[str]:
    return {problem.check for problem in check_events(frame, DATASET, INTERVAL)}


def test_valid_events_have_no_problem() -> None:
    assert check_events(events(), DATASET, INTERVAL) == []


def test_a_null_in_a_non_nullable_column_is_reported_with_its_count() -> None:
    frame = events().assign(amount=[1.0, None, 50.0, 99.0])

    problems = [p for p in check_events(frame, DATASET, INTERVAL) if p.check == "not_nullable"]

    assert [(p.where, p.message) for p in problems] == [
        ("amount", "column 'amount' has 1 null value(s) of 4 but allows none")
    ]


def test_a_null_share_above_the_allowed_one_is_reported() -> None:
    frame = events().assign(distance=[np.nan, np.nan, 3.0, 4.0])

    problems = [p for p in check_events(frame, DATASET, INTERVAL) if p.check == "null_ratio"]

    assert [p.message for p in problems] == ["column 'distance' is 50.0% null, above the allowed 30.0%"]


@pytest.mark.parametrize(("value", "check"), [(-1.0, "min"), (101.0, "max")])
def test_a_value_outside_the_range_is_reported(value: float, check: str) -> None:
    assert check in checks_failed(events().assign(amount=[1.0, value, 50.0, 99.0]))


def with_unseen_policy(policy: str) -> DatasetConfig:
    merchant = DATASET.columns["merchant"].model_copy(update={"unseen": policy})
    return DATASET.model_copy(update={"columns": {**DATASET.columns, "merchant": merchant}})


def test_a_value_outside_the_categories_fails_a_column_whose_policy_is_fail() -> None:
    frame = events().assign(merchant=["shop", "casino", "shop", "shop"])

    problems = check_events(frame, with_unseen_policy("fail"), INTERVAL)

    assert {problem.check for problem in problems} == {"categories"}


def test_a_value_outside_the_categories_passes_by_default() -> None:
    assert checks_failed(events().assign(merchant=["shop", "casino", "shop", "shop"])) == set()


def test_values_outside_the_categories_are_counted_with_examples() -> None:
    frame = events().assign(merchant=["casino", "casino", "shop", "zoo"])

    assert unseen_categories(frame, DATASET) == [UnseenValues("merchant", 3, ["casino", "zoo"])]


def test_a_column_whose_policy_is_fail_is_not_counted_as_kept() -> None:
    frame = events().assign(merchant=["casino", "shop", "shop", "shop"])

    assert unseen_categories(frame, with_unseen_policy("fail")) == []


def test_nulls_are_not_new_categories() -> None:
    frame = events().assign(merchant=[None, "shop", "shop", "travel"])

    assert unseen_categories(frame, DATASET) == []


def test_the_profile_carries_the_kept_values() -> None:
    profile = data_profile(events().assign(merchant=["casino", "shop", "shop", "shop"]), DATASET, INTERVAL)

    assert [(u.column, u.count) for u in profile.unseen] == [("merchant", 1)]


@pytest.mark.parametrize(
    ("frame", "check"),
    [
        (events().drop(columns="merchant"), "column_present"),
        (events().assign(amount=["1", "2", "3", "4"]), "dtype"),
    ],
    ids=["a_missing_column", "a_column_of_the_wrong_dtype"],
)
def test_a_bad_column_is_reported_by_its_check_alone(frame: pd.DataFrame, check: str) -> None:
    assert checks_failed(frame) == {check}


def test_a_duplicated_row_id_is_reported() -> None:
    problems = check_events(events().assign(row_id=["a", "a", "c", "d"]), DATASET, INTERVAL)

    assert [p.message.split(" (")[0] for p in problems] == ["row id 'row_id' has 2 duplicated value(s)"]


@pytest.mark.parametrize(
    ("rows", "check"),
    [(slice(2, None), "volume"), (slice(None, 2), "freshness")],
    ids=[
        "a_day_without_rows_fails_the_volume_check",
        "data_older_than_the_allowed_staleness_fails_the_freshness_check",
    ],
)
def test_a_missing_day_fails_its_check(rows: slice, check: str) -> None:
    assert check in checks_failed(events().iloc[rows])


def test_profile_counts_rows_per_day_and_null_shares() -> None:
    profile = data_profile(events().iloc[:3], DATASET, INTERVAL)

    assert profile.rows_per_day == {DAY_1: 2, DAY_2: 1}
    shares = {entry.column: entry.share for entry in profile.null_shares}
    assert shares["distance"] == pytest.approx(1 / 3)


def test_profile_histograms_count_values_outside_the_range() -> None:
    profile = data_profile(events().assign(amount=[-5.0, 20.0, 50.0, 150.0]), DATASET, INTERVAL)

    amount = next(h for h in profile.histograms if h.column == "amount")
    assert (amount.outside, sum(amount.counts)) == (2, 4)


def test_profile_without_rows_has_a_zero_for_every_day() -> None:
    assert data_profile(None, DATASET, INTERVAL).rows_per_day == {DAY_1: 0, DAY_2: 0}
