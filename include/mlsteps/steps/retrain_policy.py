"""Decide whether a monitor's verdict on a day should retrain the model: verdict, cooldown, budget.

Two monitors ask for retraining: the drift monitor (``--reason drift``, from the day's drift report)
and the performance monitor (``--reason performance``, from the day's performance report). Both go
through the same cooldown and weekly budget, counted over every monitor-triggered retrain. Each
retrain is recorded once under ``monitoring/<model>/retrains/<run id>.json`` with an exclusive
create, and the run id is the same for the same reason and day (``<reason>__<day>``). Replaying an
event therefore asks for the same ``ml_training`` run, which Airflow refuses to create twice: one
day, one reason, at most one retrain.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from mlsteps.contract.layout import drift_report_prefix, performance_report_prefix, retrains_prefix
from mlsteps.contract.results import DecideRetrainResult, RetrainDecision
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, add_day_argument
from mlsteps.platform.lake import Lake

WEEK = dt.timedelta(days=7)
REASONS = ("drift", "performance")


@dataclass(frozen=True)
class Signal:
    """What a monitor said about a day: whether it asks for a retrain, and in words either way."""

    wanted: bool
    why_not: str
    why: str
    conf: dict[str, Any] = field(default_factory=dict)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The day whose monitor report decides.")
    parser.add_argument(
        "--reason", choices=REASONS, default="drift", help="Which monitor's report decides (default drift)."
    )


def run_id_for(day: dt.date, reason: str = "drift") -> str:
    """The ``ml_training`` run id a day asks for (deterministic: replays collapse into it)."""
    return f"{reason}__{day.isoformat()}"


def run(args: argparse.Namespace) -> DecideRetrainResult:
    context = StepContext.from_args(args)
    config, lake = context.config, context.lake
    signal = read_signal(lake, args.reason, args.ds)
    prefix = retrains_prefix(config.model.registered_name)
    history = _history(lake, prefix)
    run_id = run_id_for(args.ds, args.reason)
    now = dt.datetime.now(dt.UTC)
    already = next((entry for entry in history if entry.get("run_id") == run_id), None)
    if already is not None:
        decision = _trigger(
            args.ds,
            args.reason,
            signal,
            ["this day already triggered a retrain; asking for the same run again"],
        )
        return {**decision, "summary": f"{args.reason} on {args.ds} already triggered {run_id}"}
    reasons = decide(signal, history, now, config.drift.cooldown_hours, config.drift.weekly_retrain_budget)
    if reasons:
        return {
            "trigger": False,
            "reasons": reasons,
            "ds": args.ds.isoformat(),
            "summary": "no retrain: " + reasons[0],
        }
    decision = _trigger(
        args.ds, args.reason, signal, [f"{args.reason} verdict, cooldown passed, weekly budget left"]
    )
    entry: dict[str, Any] = {**decision, "triggered_at": now.isoformat(), **context.lineage()}
    _record(lake, f"{prefix}/{run_id}.json", entry)
    return {**decision, "summary": f"{signal.why}: retrain {run_id}"}


def read_signal(lake: Lake, reason: str, day: dt.date) -> Signal:
    """The day's verdict from the reason's monitor report, or refuse when the monitor has not run."""
    prefix = drift_report_prefix(day) if reason == "drift" else performance_report_prefix(day)
    path = f"{prefix}/report.json"
    if not lake.exists(path):
        raise StepError(
            f"no {reason} report at {lake.url(path)}; run the {reason} monitor for ds={day} first"
        )
    report = dict(lake.read_json(path))
    return drift_signal(report) if reason == "drift" else performance_signal(report)


def drift_signal(report: dict[str, Any]) -> Signal:
    """The drift monitor's verdict: drift, and which columns."""
    columns = list(report.get("drifted_columns", []))
    return Signal(
        wanted=bool(report.get("drift")),
        why_not=f"no drift: {len(columns)} column(s) drifted, below the threshold",
        why=f"drift in {', '.join(columns)}",
        conf={"drifted_columns": columns},
    )


def performance_signal(report: dict[str, Any]) -> Signal:
    """The performance monitor's verdict: a significant drop of the judged metric, or not."""
    return Signal(
        wanted=bool(report.get("significant")),
        why_not=f"no significant performance drop: {report.get('reason', 'no verdict')}",
        why=f"{report.get('metric', 'performance')} dropped ({report.get('reason', '')})",
    )


def decide(
    signal: Signal,
    history: list[dict[str, Any]],
    now: dt.datetime,
    cooldown_hours: float,
    budget: int,
) -> list[str]:
    """Why not to retrain; an empty list means retrain.

    Args:
        signal: The monitor's verdict on the day.
        history: Earlier monitor-triggered retrains (``triggered_at`` ISO timestamps), any reason.
        now: The decision time.
        cooldown_hours: Minimum time since the last monitor-triggered retrain.
        budget: Monitor-triggered retrains allowed in any 7-day window.
    """
    if not signal.wanted:
        return [signal.why_not]
    times = sorted(dt.datetime.fromisoformat(entry["triggered_at"]) for entry in history)
    reasons = []
    if times and now - times[-1] < dt.timedelta(hours=cooldown_hours):
        wait = times[-1] + dt.timedelta(hours=cooldown_hours) - now
        reasons.append(f"cooldown: the last monitor retrain was at {times[-1].isoformat()}, {wait} left")
    recent = [moment for moment in times if now - moment < WEEK]
    if len(recent) >= budget:
        reasons.append(
            f"weekly retrain budget spent: {len(recent)} of {budget} monitor retrains in the last 7 days"
        )
    return reasons


def _trigger(day: dt.date, reason: str, signal: Signal, reasons: list[str]) -> RetrainDecision:
    return {
        "trigger": True,
        "reasons": reasons,
        "ds": day.isoformat(),
        "run_id": run_id_for(day, reason),
        "conf": {"reason": reason, "ds": day.isoformat(), **signal.conf},
    }


def _history(lake: Lake, prefix: str) -> list[dict[str, Any]]:
    return [lake.read_json(f"{prefix}/{name}") for name in lake.list_dir(prefix) if name.endswith(".json")]


def _record(lake: Lake, relative: str, entry: dict[str, Any]) -> None:
    from mlsteps.platform.objects import create_exclusive

    create_exclusive(lake, relative, json.dumps(entry, sort_keys=True).encode())
