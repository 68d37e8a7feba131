"""The lake layout: every lake path the steps write or read, built in one module."""

from __future__ import annotations

import datetime as dt

import pytest

from mlsteps.contract import layout
from mlsteps.contract.config import load_config
from mlsteps.errors import StepError

CONFIG = load_config()
DAY = dt.date(2026, 11, 3)


@pytest.mark.parametrize(
    ("built", "expected"),
    [
        (layout.features_prefix(CONFIG), "features/transactions"),
        (
            layout.snapshot_prefix("manual__2026-11-03T03:00:00+00:00"),
            "training/manual__2026-11-03T03_00_00_00_00",
        ),
        (layout.reference_prefix(CONFIG, "7"), "reference/card_fraud_xgb/7"),
        (layout.predictions_prefix("card_fraud_xgb", DAY), "predictions/card_fraud_xgb/ds=2026-11-03"),
        (layout.validation_report_prefix(DAY, "scoring"), "reports/validation/ds=2026-11-03/scoring"),
        (layout.evaluation_report_prefix("2026-11-03", "m", "7"), "reports/evaluation/ds=2026-11-03/m-v7"),
        (layout.drift_report_prefix(DAY), "reports/drift/ds=2026-11-03"),
        (layout.report_kind_prefix("drift"), "reports/drift"),
        (layout.retrains_prefix("m"), "monitoring/m/retrains"),
        (layout.ledger_prefix("m"), "ledger/m"),
        (layout.champion_lock_path("m"), "locks/m/champion.lock"),
    ],
)
def test_each_path_is_where_the_readme_says(built: str, expected: str) -> None:
    assert built == expected


def test_a_run_id_becomes_a_lake_safe_snapshot_name() -> None:
    assert layout.training_run_name("drift__2026-11-03") == "drift__2026-11-03"


def test_a_run_id_with_nothing_lake_safe_is_refused() -> None:
    with pytest.raises(StepError, match="needs a name"):
        layout.training_run_name("///")
