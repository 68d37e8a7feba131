"""Label-history features (logic/features.py): only labels known before an event reach its features."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.contract.feature_schema import feature_types, label_history_names, lookback_days
from mlsteps.logic.features import compute_features, raw_columns

START, END = dt.datetime(2026, 2, 1, tzinfo=dt.UTC), dt.datetime(2026, 4, 1, tzinfo=dt.UTC)
HISTORY = ["is_fraud_count_10d", "is_fraud_mean_10d", "is_fraud_days_since_last_positive_10d"]
HISTORY += [name.replace("10d", "30d") for name in HISTORY]


def with_history(windows: tuple[str, ...] = ("10d", "30d"), delay_days: int = 7) -> PipelineConfig:
    document = load_config().model_dump(mode="json")
    document["features"]["label_history"] = {
        "windows": list(windows),
        "functions": ["count", "mean", "days_since_last_positive"],
    }
    document["performance"]["label_delay_days"] = delay_days
    return PipelineConfig.model_validate(document)


def timeline() -> pd.DataFrame:
    """Entity a's events around a4 (12 Mar 10:00); with a 7-day delay a4 may know labels up to 5 Mar 10:00."""
    rows = [
        ("a1", "a", "2026-03-01 10:00:00", True),  # known, but outside a4's 10d window
        ("a2", "a", "2026-03-05 10:00:00", False),  # known exactly at a4's time
        ("a3", "a", "2026-03-05 10:00:01", True),  # known one second after a4
        ("a4", "a", "2026-03-12 10:00:00", False),  # the event whose features are checked
        ("a5", "a", "2026-03-13 10:00:00", True),  # later
        ("b1", "b", "2026-03-02 10:00:00", True),  # another entity
    ]
    frame = pd.DataFrame(rows, columns=["transaction_id", "customer_id", "event_time", "is_fraud"])
    return frame.assign(
        event_time=pd.to_datetime(frame["event_time"], utc=True),
        amount=10.0,
        merchant_category="grocery",
        card_present=True,
        is_international=False,
        distance_from_home_km=1.0,
    ).astype({"is_fraud": "object"})


def features_of(raw: pd.DataFrame, row_id: str = "a4", config: PipelineConfig | None = None) -> pd.Series:
    features = compute_features(raw, config or with_history(), START, END).set_index("transaction_id")
    return features.loc[row_id, HISTORY]


def flipped(raw: pd.DataFrame, row_id: str) -> pd.DataFrame:
    at = raw["transaction_id"] == row_id
    return raw.assign(is_fraud=raw["is_fraud"].where(~at, ~raw.loc[at, "is_fraud"].astype(bool)))


@pytest.mark.parametrize(
    "row_id",
    ["a3", "a4", "a5", "b1"],
    ids=["earlier-but-known-a-second-after", "its-own", "a-later-event", "another-entity"],
)
def test_a_label_not_known_at_the_event_changes_none_of_its_features(row_id: str) -> None:
    # Every label is filled in the raw frame: the rule must use times only, not the filled column.
    raw = timeline()
    pd.testing.assert_series_equal(features_of(flipped(raw, row_id)), features_of(raw))


def test_a_label_known_exactly_at_the_event_changes_its_features() -> None:
    raw = timeline()
    assert (
        features_of(flipped(raw, "a2"))["is_fraud_mean_10d"] == 1.0 != features_of(raw)["is_fraud_mean_10d"]
    )


def test_count_and_mean_cover_the_known_labels_of_the_window() -> None:
    features = features_of(timeline())
    assert (features["is_fraud_count_30d"], features["is_fraud_mean_30d"]) == (2, 0.5)


def test_a_window_leaves_out_known_labels_older_than_it() -> None:
    assert features_of(timeline())["is_fraud_count_10d"] == 1  # a1 is known but 11 days old


def test_days_since_last_positive_counts_from_the_positive_event() -> None:
    assert features_of(timeline())["is_fraud_days_since_last_positive_30d"] == 11.0


def test_days_since_last_positive_is_missing_without_a_positive_in_the_window() -> None:
    assert np.isnan(features_of(timeline())["is_fraud_days_since_last_positive_10d"])


def test_a_known_event_without_a_label_is_not_counted() -> None:
    raw = timeline()
    raw.loc[raw["transaction_id"] == "a2", "is_fraud"] = None
    features = features_of(raw)
    assert features["is_fraud_count_10d"] == 0
    assert np.isnan(features["is_fraud_mean_10d"])


def test_counts_of_an_event_without_history_are_zero() -> None:
    assert features_of(timeline(), "b1")["is_fraud_count_30d"] == 0


def test_random_events_match_a_brute_force_reference() -> None:
    rng = np.random.default_rng(4)
    n = 150
    seconds = rng.integers(0, 40 * 86_400, n) // 3_600 * 3_600  # whole hours: many ties
    raw = timeline().iloc[[0] * n].reset_index(drop=True)
    raw = raw.assign(
        transaction_id=[f"r{i}" for i in range(n)],
        customer_id=rng.choice(["a", "b", "c", "d"], n),
        event_time=pd.Timestamp("2026-02-01", tz="UTC") + pd.to_timedelta(seconds, unit="s"),
        is_fraud=pd.Series(rng.choice([True, False, None], n, p=[0.3, 0.6, 0.1]), dtype="object"),
    )
    config = with_history(windows=("9d", "30d"), delay_days=3)
    features = compute_features(raw, config, START, END).set_index("transaction_id")
    for event in raw.itertuples():
        same = raw["customer_id"] == event.customer_id
        known = raw.loc[same & (raw["event_time"] <= event.event_time - pd.Timedelta(days=3))]
        for window in ("9d", "30d"):
            inside = known.loc[known["event_time"] >= event.event_time - pd.Timedelta(window)]
            labels = inside["is_fraud"].dropna().astype(float)
            row = features.loc[event.transaction_id]
            assert row[f"is_fraud_count_{window}"] == len(labels)
            assert row[f"is_fraud_mean_{window}"] == pytest.approx(
                labels.mean() if len(labels) else np.nan, nan_ok=True
            )
            positive = inside.loc[inside["is_fraud"].eq(True), "event_time"]
            since = (event.event_time - positive.max()) / pd.Timedelta(days=1) if len(positive) else np.nan
            assert row[f"is_fraud_days_since_last_positive_{window}"] == pytest.approx(since, nan_ok=True)


def test_label_history_features_are_named_after_the_label_and_typed() -> None:
    types = feature_types(with_history())
    assert {name: types[name] for name in label_history_names(with_history())} == {
        name: "int" if "_count_" in name else "float" for name in HISTORY
    }


def test_the_label_is_a_raw_input_only_with_label_history() -> None:
    assert "is_fraud" in raw_columns(with_history())
    assert "is_fraud" not in raw_columns(load_config())


def test_look_back_covers_the_longest_label_history_window() -> None:
    assert lookback_days(with_history(windows=("10d", "45d"))) == 45
