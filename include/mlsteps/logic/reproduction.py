"""Comparisons between a model version's records and its rebuild, and the verdict they add up to.

Functions here take what was recorded and what was rebuilt (hashes, parameters, frames, scores)
and never read the lake, the registry or MLflow; `reproduce` does the reading and the rebuilding.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.platform.context import DataInterval, parse_instant

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlsteps.platform.datasets import TrainingSet

IDENTICAL, EQUIVALENT, DIFFERS = "identical", "equivalent", "differs"
#: Checks that compare inputs: any difference there makes the verdict "differs".
INPUT_CHECKS = ("config", "training-set fingerprint", "hyperparameters")


@dataclass
class Check:
    """One comparison between the record and the rebuild."""

    check: str
    same: bool
    recorded: Any
    rebuilt: Any
    detail: str = ""


def feature_passes(
    snapshot: dict[str, Any], start: dt.datetime, end: dt.datetime, batch_days: int
) -> list[tuple[DataInterval, list[dt.date]]]:
    """Each day of ``[start, end)`` with the pass its features were computed in, as the snapshot recorded it.

    Days without a record are grouped into passes of ``batch_days``, as build-features makes by default.
    """
    recorded = snapshot.get("feature_batches") or {}
    passes: dict[tuple[str, str], list[dt.date]] = {}
    unknown = []
    for day in DataInterval(start, end).days():
        batch = recorded.get(day.isoformat())
        if batch:
            passes.setdefault((batch["start"], batch["end"]), []).append(day)
        else:
            unknown.append(day)
    found = [(DataInterval(parse_instant(a), parse_instant(b)), days) for (a, b), days in passes.items()]
    for offset in range(0, len(unknown), batch_days):
        chunk = unknown[offset : offset + batch_days]
        first, after = parse_instant(chunk[0].isoformat()), parse_instant(chunk[-1].isoformat())
        found.append((DataInterval(first, after + dt.timedelta(days=1)), chunk))
    return found


# --- checks ---------------------------------------------------------------------------------


def config_check(
    recorded_hash: str | None, snapshot_hash: str | None, snapshot_config_hash: str, training_config_hash: str
) -> Check:
    """The recorded configs hash to what the snapshot (``snapshot_hash``) and the version say they are."""
    snapshot_same = snapshot_config_hash == snapshot_hash
    same = snapshot_same and training_config_hash == recorded_hash
    detail = "" if snapshot_same else "the config recorded in the snapshot does not match its hash"
    return Check("config", same, recorded_hash, training_config_hash, detail)


def changed_raw_partitions(before: dict[str, Any], after: dict[str, Any]) -> str:
    """The raw partitions whose digest differs between two snapshot records, as one sentence ("" if none)."""
    changed = sorted(day for day in set(before) | set(after) if before.get(day) != after.get(day))
    return f"raw partition(s) changed since training: {', '.join(changed)}" if changed else ""


def first_value_difference(original: TrainingSet, rebuilt: TrainingSet) -> str:
    """The first row and column whose value differs between two snapshots (or how their shapes differ)."""
    row_id = original.manifest["row_id"]
    for split in ("train", "holdout"):
        before, after = getattr(original, split), getattr(rebuilt, split)
        if len(before) != len(after) or list(before.columns) != list(after.columns):
            return f"the {split} split has {len(before)} rows in the original and {len(after)} rebuilt"
        differs = _cells_differ(before, after)
        rows = differs.any(axis=1).to_numpy()
        if rows.any():
            row = int(rows.argmax())
            column = str(differs.columns[int(differs.iloc[row].to_numpy().argmax())])
            return (
                f"first differing value: {split} {row_id}={before[row_id].iloc[row]}, {column} "
                f"{_plain(before[column].iloc[row])!r} then, {_plain(after[column].iloc[row])!r} now"
            )
    return ""


def _plain(value: Any) -> Any:
    """A NumPy scalar as the Python value it holds (so it prints as 1.5, not np.float64(1.5))."""
    return value.item() if hasattr(value, "item") else value


def _cells_differ(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    left, right = before.reset_index(drop=True), after.reset_index(drop=True)
    return ~((left == right) | (left.isna() & right.isna()))


def params_check(recorded: dict[str, str], used: dict[str, Any], trials: int = 0) -> Check:
    """The parameters the retrained booster ``used`` after a search of ``trials`` Optuna trials (0: no
    search), against those ``recorded`` on the original run (its ``n_trials`` param is the count then).

    For a tuned version the parameters compared are the ones the search chose, so a search that
    picked differently is named here, parameter by parameter.
    """
    params = {key: str(value) for key, value in used.items() if key != "eval_metric"}
    differing = [key for key, value in params.items() if recorded.get(key) != value]
    details = [f"{key}: {recorded.get(key)} then, {params[key]} now" for key in differing]
    recorded_trials = int(recorded.get("n_trials") or 0)
    if recorded_trials != trials:
        details.insert(0, f"Optuna trials: {recorded_trials} then, {trials} now")

    def summary(count: int, seed: Any, searched: int) -> str:
        return f"{count} parameters, seed {seed}" + (f", {searched} Optuna trials" if searched else "")

    return Check(
        "hyperparameters",
        not details,
        summary(len(params), recorded.get("seed"), recorded_trials),
        summary(len(params), params.get("seed"), trials),
        ", ".join(details),
    )


def predictions_check(registered: np.ndarray, rebuilt: np.ndarray, tolerance: float) -> Check:
    """Registered vs retrained scores of the same holdout rows: the largest |Δp| against ``tolerance``."""
    import numpy as np

    delta = float(np.max(np.abs(registered - rebuilt)))
    return Check(
        "holdout predictions",
        delta <= tolerance,
        f"max |Δp| <= {tolerance:g}",
        f"max |Δp| = {delta:.3g}",
        f"{len(registered)} holdout rows",
    )


# --- verdict --------------------------------------------------------------------------------


def verdict(checks: list[Check]) -> tuple[str, str, Check | None]:
    """The verdict, its one-line text and the check that decided it (None when all agree).

    Different inputs, or holdout predictions further apart than the tolerance, make ``differs``;
    the same inputs with a different booster whose predictions stay within it, ``equivalent``.
    """
    by_name = {check.check: check for check in checks}
    first = next((check for check in checks if not check.same), None)
    predictions = by_name.get("holdout predictions")
    if any(not by_name[n].same for n in INPUT_CHECKS):
        return DIFFERS, f"{DIFFERS}: first difference in {first.check if first else 'inputs'}", first
    if predictions is not None and not predictions.same:
        return DIFFERS, f"{DIFFERS}: holdout predictions ({predictions.rebuilt})", predictions
    if first is None:
        return IDENTICAL, IDENTICAL, None
    if predictions is not None:
        return EQUIVALENT, f"{EQUIVALENT} ({predictions.rebuilt})", first
    return EQUIVALENT, f"{EQUIVALENT}: first difference in {first.check}", first


def package_changes(then: dict[str, str], now: dict[str, str]) -> dict[str, str]:
    """Packages recorded ``then`` whose version is different ``now``, as ``old -> new``."""
    return {name: f"{then[name]} -> {now.get(name)}" for name in then if then[name] != now.get(name)}


def render(report: Mapping[str, Any]) -> str:
    """The report as text: one line per check, the environment, and the verdict."""
    lines = [
        f"Reproduce {report['model_name']} version {report['model_version']} "
        f"(snapshot {report['training_run']}, data interval {report['interval']})"
    ]
    for check in report["checks"]:
        mark = "same" if check["same"] else "DIFFERS"
        lines.append(
            f"  [{mark:^7}] {check['check']:<25} recorded {check['recorded']}, rebuilt {check['rebuilt']}"
        )
        if check["detail"]:
            lines.append(f"{'':12}{check['detail']}")
    code, changed = report["environment"]["code_version"], report["environment"]["packages_changed"]
    lines.append(f"  code version: recorded {code['recorded']}, now {code['now']}")
    if changed:
        lines.append(
            f"  packages changed since training: {', '.join(f'{k} {v}' for k, v in changed.items())}"
        )
    if report["scratch"]:
        lines.append(f"  scratch kept at {report['scratch']}")
    lines.append(f"verdict: {report['verdict_text']}")
    return "\n".join(lines)
