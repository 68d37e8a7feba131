"""decide-retrain: drift verdict, cooldown and weekly budget, with one recorded retrain per day."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mlsteps.cli import main
from mlsteps.contract.layout import retrains_prefix
from mlsteps.platform.lake import Lake
from mlsteps.steps.retrain_policy import decide, run_id_for

NOW = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)
DRIFT = {"drift": True, "drifted_columns": ["amount", "distance_from_home_km"]}


def _history(*hours_ago: float) -> list[dict[str, str]]:
    return [{"triggered_at": (NOW - dt.timedelta(hours=h)).isoformat()} for h in hours_ago]


def test_no_drift_never_retrains() -> None:
    reasons = decide({"drift": False, "drifted_columns": ["amount"]}, [], NOW, 24, 2)
    assert reasons == ["no drift: 1 column(s) drifted, below the threshold"]


def test_drift_with_cooldown_passed_and_budget_left_retrains() -> None:
    assert decide(DRIFT, _history(30), NOW, 24, 2) == []


def test_cooldown_blocks() -> None:
    reasons = decide(DRIFT, _history(3), NOW, 24, 5)
    assert len(reasons) == 1
    assert reasons[0].startswith("cooldown:")


def test_weekly_budget_blocks_and_older_retrains_do_not_count() -> None:
    assert decide(DRIFT, _history(30, 60), NOW, 24, 2)[0].startswith("weekly retrain budget spent: 2 of 2")
    assert decide(DRIFT, _history(30, 8 * 24), NOW, 24, 2) == []


def _report(lake: Lake, day: str, drift: bool) -> None:
    lake.write_json(f"reports/drift/ds={day}/report.json", {**DRIFT, "drift": drift})


def _decide(lake_dir: str, day: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict:
    result = tmp_path / f"result-{day}.json"
    monkeypatch.setenv("ML_STEP_RESULT", str(result))
    assert main(["decide-retrain", "--ds", day, "--lake", lake_dir]) == 0
    return dict(json.loads(result.read_text()))


def test_replayed_day_asks_for_the_same_run_and_records_once(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    _report(lake, "2026-11-06", drift=True)
    first = _decide(local_lake, "2026-11-06", tmp_path, monkeypatch)
    again = _decide(local_lake, "2026-11-06", tmp_path, monkeypatch)
    assert first["trigger"] is again["trigger"] is True
    assert first["run_id"] == again["run_id"] == run_id_for(dt.date(2026, 11, 6))
    assert first["conf"] == {
        "reason": "drift",
        "ds": "2026-11-06",
        "drifted_columns": DRIFT["drifted_columns"],
    }
    assert lake.list_dir(retrains_prefix("card_fraud_xgb")) == ["2026-11-06.json"]

    _report(lake, "2026-11-07", drift=True)  # inside the 24 h cooldown of the first retrain
    blocked = _decide(local_lake, "2026-11-07", tmp_path, monkeypatch)
    assert blocked["trigger"] is False
    assert blocked["reasons"][0].startswith("cooldown:")
    assert lake.list_dir(retrains_prefix("card_fraud_xgb")) == ["2026-11-06.json"]


def test_missing_drift_report_is_a_clear_error(
    local_lake: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    assert main(["decide-retrain", "--ds", "2026-11-06", "--lake", local_lake]) == 2
    assert "no drift report at" in capsys.readouterr().err
