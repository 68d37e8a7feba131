"""decide-retrain: a monitor's verdict, cooldown and weekly budget; one retrain per day and reason."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from mlsteps.cli import main
from mlsteps.contract.layout import retrains_prefix
from mlsteps.platform.lake import Lake
from mlsteps.steps.retrain_policy import Signal, decide, drift_signal, performance_signal, run_id_for

NOW = dt.datetime(2026, 11, 10, 12, tzinfo=dt.UTC)
DRIFT = {"drift": True, "drifted_columns": ["amount", "distance_from_home_km"]}


def _history(*hours_ago: float) -> list[dict[str, str]]:
    return [{"triggered_at": (NOW - dt.timedelta(hours=h)).isoformat()} for h in hours_ago]


@pytest.mark.parametrize(
    ("signal", "reason"),
    [
        (
            performance_signal({"significant": False, "metric": "roc_auc", "reason": "1 of 2 judged days"}),
            "no significant performance drop: 1 of 2 judged days",
        ),
        (
            drift_signal({"drift": False, "drifted_columns": ["amount"]}),
            "no drift: 1 column(s) drifted, below the threshold",
        ),
    ],
    ids=["no_significant_drop", "no_drift"],
)
def test_no_verdict_never_retrains(signal: Signal, reason: str) -> None:
    assert decide(signal, [], NOW, 24, 2) == [reason]


@pytest.mark.parametrize(
    "signal",
    [
        performance_signal({"significant": True, "metric": "roc_auc", "reason": "2 judged days"}),
        drift_signal(DRIFT),
    ],
    ids=["a_significant_drop", "drift"],
)
def test_a_verdict_retrains_once_the_cooldown_passed_with_budget_left(signal: Signal) -> None:
    assert decide(signal, _history(30), NOW, 24, 2) == []


def test_cooldown_blocks() -> None:
    reasons = decide(drift_signal(DRIFT), _history(3), NOW, 24, 5)
    assert len(reasons) == 1
    assert reasons[0].startswith("cooldown:")


def test_weekly_budget_blocks_and_older_retrains_do_not_count() -> None:
    assert decide(drift_signal(DRIFT), _history(30, 60), NOW, 24, 2)[0].startswith(
        "weekly retrain budget spent: 2 of 2"
    )
    assert decide(drift_signal(DRIFT), _history(30, 8 * 24), NOW, 24, 2) == []


def _report(lake: Lake, day: str, drift: bool) -> None:
    lake.write_json(f"reports/drift/ds={day}/report.json", {**DRIFT, "drift": drift})


def _decide(
    lake_dir: str, day: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, reason: str = "drift"
) -> dict:
    result = tmp_path / f"result-{day}.json"
    monkeypatch.setenv("ML_STEP_RESULT", str(result))
    assert main(["decide-retrain", "--ds", day, "--lake", lake_dir, "--reason", reason]) == 0
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
    assert lake.list_dir(retrains_prefix("card_fraud_xgb")) == ["drift__2026-11-06.json"]

    _report(lake, "2026-11-07", drift=True)  # inside the 24 h cooldown of the first retrain
    blocked = _decide(local_lake, "2026-11-07", tmp_path, monkeypatch)
    assert blocked["trigger"] is False
    assert blocked["reasons"][0].startswith("cooldown:")
    assert lake.list_dir(retrains_prefix("card_fraud_xgb")) == ["drift__2026-11-06.json"]


@pytest.mark.parametrize(
    ("reason_args", "message"),
    [([], "no drift report at"), (["--reason", "performance"], "no performance report at")],
    ids=["drift", "performance"],
)
def test_a_missing_report_is_a_clear_error(
    reason_args: list[str],
    message: str,
    local_lake: str,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert main(["decide-retrain", "--ds", "2026-11-06", "--lake", local_lake, *reason_args]) == 2
    assert message in capsys.readouterr().err


def _performance_report(lake: Lake, day: str, significant: bool) -> None:
    document = {"significant": significant, "metric": "roc_auc", "reason": "2 judged days in a row"}
    lake.write_json(f"reports/performance/ds={day}/report.json", document)


def test_a_performance_drop_asks_for_its_own_run(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _performance_report(Lake(local_lake), "2026-11-06", significant=True)
    decision = _decide(local_lake, "2026-11-06", tmp_path, monkeypatch, reason="performance")
    assert decision["run_id"] == "performance__2026-11-06"
    assert decision["conf"] == {"reason": "performance", "ds": "2026-11-06"}


def test_drift_and_performance_share_the_cooldown(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    _report(lake, "2026-11-06", drift=True)
    _performance_report(lake, "2026-11-06", significant=True)
    _decide(local_lake, "2026-11-06", tmp_path, monkeypatch)
    blocked = _decide(local_lake, "2026-11-06", tmp_path, monkeypatch, reason="performance")
    assert blocked["trigger"] is False
    assert blocked["reasons"][0].startswith("cooldown:")


def test_a_replayed_performance_drop_records_one_retrain(
    local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    _performance_report(lake, "2026-11-06", significant=True)
    for _ in range(2):
        decision = _decide(local_lake, "2026-11-06", tmp_path, monkeypatch, reason="performance")
        assert decision["run_id"] == "performance__2026-11-06"
    assert lake.list_dir(retrains_prefix("card_fraud_xgb")) == ["performance__2026-11-06.json"]
