"""Decide whether a day's drift verdict should retrain the model: drift, cooldown and weekly budget.

Every drift-triggered retrain is recorded once, per day, under ``monitoring/<model>/retrains/`` with
an exclusive create, and always gets the same run id for the same day. Replaying the same
predictions event therefore asks for the same ``ml_training`` run, which Airflow refuses to
create twice: one drifted day, at most one retrain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from typing import Any

from mlsteps.contract.layout import drift_report_prefix, retrains_prefix
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, parse_day
from mlsteps.platform.lake import Lake

WEEK = dt.timedelta(days=7)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ds", type=parse_day, required=True, help="The day whose drift report decides.")


def run_id_for(day: dt.date) -> str:
    """The ``ml_training`` run id a drifted day asks for (deterministic: replays collapse into it)."""
    return f"drift__{day.isoformat()}"


def run(args: argparse.Namespace) -> dict[str, Any]:
    context = StepContext.from_args(args)
    config, lake = context.config, context.lake
    report = _drift_report(lake, args.ds)
    prefix = retrains_prefix(config.model.registered_name)
    history = _history(lake, prefix)
    now = dt.datetime.now(dt.UTC)
    already = next((entry for entry in history if entry["ds"] == args.ds.isoformat()), None)
    if already is not None:
        decision = _trigger(
            args.ds, report, ["this day already triggered a retrain; asking for the same run again"]
        )
        return {**decision, "summary": f"drift on {args.ds} already triggered {already['run_id']}"}
    reasons = decide(report, history, now, config.drift.cooldown_hours, config.drift.weekly_retrain_budget)
    if reasons:
        return {
            "trigger": False,
            "reasons": reasons,
            "ds": args.ds.isoformat(),
            "summary": "no retrain: " + reasons[0],
        }
    decision = _trigger(args.ds, report, ["drift verdict, cooldown passed, weekly budget left"])
    entry = {**decision, "triggered_at": now.isoformat(), **context.lineage()}
    _record(lake, f"{prefix}/{args.ds.isoformat()}.json", entry)
    return {
        **decision,
        "summary": f"drift in {', '.join(report['drifted_columns'])}: retrain {decision['run_id']}",
    }


def decide(
    report: dict[str, Any],
    history: list[dict[str, Any]],
    now: dt.datetime,
    cooldown_hours: float,
    budget: int,
) -> list[str]:
    """Why not to retrain; an empty list means retrain.

    Args:
        report: The day's drift report (``drift``, ``drifted_columns``).
        history: Earlier drift-triggered retrains (``triggered_at`` ISO timestamps).
        now: The decision time.
        cooldown_hours: Minimum time since the last drift-triggered retrain.
        budget: Drift-triggered retrains allowed in any 7-day window.
    """
    if not report.get("drift"):
        return [f"no drift: {len(report.get('drifted_columns', []))} column(s) drifted, below the threshold"]
    times = sorted(dt.datetime.fromisoformat(entry["triggered_at"]) for entry in history)
    reasons = []
    if times and now - times[-1] < dt.timedelta(hours=cooldown_hours):
        wait = times[-1] + dt.timedelta(hours=cooldown_hours) - now
        reasons.append(f"cooldown: the last drift retrain was at {times[-1].isoformat()}, {wait} left")
    recent = [moment for moment in times if now - moment < WEEK]
    if len(recent) >= budget:
        reasons.append(
            f"weekly retrain budget spent: {len(recent)} of {budget} drift retrains in the last 7 days"
        )
    return reasons


def _trigger(day: dt.date, report: dict[str, Any], reasons: list[str]) -> dict[str, Any]:
    return {
        "trigger": True,
        "reasons": reasons,
        "ds": day.isoformat(),
        "run_id": run_id_for(day),
        "conf": {
            "reason": "drift",
            "ds": day.isoformat(),
            "drifted_columns": list(report["drifted_columns"]),
        },
    }


def _drift_report(lake: Lake, day: dt.date) -> dict[str, Any]:
    path = f"{drift_report_prefix(day)}/report.json"
    if not lake.exists(path):
        raise StepError(f"no drift report at {lake.url(path)}; run the drift step for ds={day} first")
    return dict(lake.read_json(path))


def _history(lake: Lake, prefix: str) -> list[dict[str, Any]]:
    return [lake.read_json(f"{prefix}/{name}") for name in lake.list_dir(prefix) if name.endswith(".json")]


def _record(lake: Lake, relative: str, entry: dict[str, Any]) -> None:
    from mlsteps.platform.objects import create_exclusive

    create_exclusive(lake, relative, json.dumps(entry, sort_keys=True).encode())
