"""The one way the ``champion`` alias changes: under the champion lock, alias first, ledger entry last.

:func:`change_champion` takes the lock and reads the ledger and the current champion; its
:meth:`ChampionChange.commit` checks the lease is left, points ``champion`` at the version
(``previous-champion`` keeps the replaced one), tags the version and writes one immutable ledger
entry. A crash between the alias and the entry leaves the alias ahead of the ledger, never the
reverse, so a rerun (promote's catch-up) can finish the same move without a duplicate entry.
Promote and rollback both use it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.contract.results import ChampionChangeResult
from mlsteps.platform.ledger import append_ledger, read_ledger
from mlsteps.platform.lock import LakeLock, champion_lock
from mlsteps.platform.mlflow_registry import (
    CHAMPION,
    PREVIOUS_CHAMPION,
    RETRAIN_COLUMNS_TAG,
    RETRAIN_DS_TAG,
    champion_version,
    holdout_metrics,
)

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.platform.context import StepContext
    from mlsteps.platform.lake import Lake

NONE = "none"


@dataclass
class ChampionChange:
    """What was read under the champion lock, and the write that changes the champion."""

    context: StepContext
    client: MlflowClient
    name: str
    lock: LakeLock
    #: The ledger entries when the lock was taken, oldest first.
    entries: list[dict[str, Any]]
    #: The version ``champion`` pointed to when the lock was taken, or None.
    current: str | None

    def commit(
        self,
        version: ModelVersion,
        action: str,
        replaced: str | None,
        reason: str,
        approval: dict[str, str] | None = None,
    ) -> str:
        """Make ``version`` champion in place of ``replaced``, tag it and record it in the ledger.

        Returns:
            The written ledger entry's lake-relative path.

        Raises:
            StepError: The lock's lease ran out before the change (nothing is written then).
        """
        self.lock.ensure_held()
        entry = ledger_entry(self.context, self.client, version, action, replaced, reason, approval)
        move_champion(self.client, self.name, str(version.version), replaced, promotion_tags(entry))
        return append_ledger(self.context.lake, self.name, entry, self.entries)


@contextmanager
def change_champion(
    context: StepContext, client: MlflowClient, name: str, purpose: str
) -> Iterator[ChampionChange]:
    """Hold the champion lock of model ``name`` while the caller decides and commits one change."""
    with champion_lock(context.lake, name, purpose=purpose) as lock:
        entries = read_ledger(context.lake, name)
        current = champion_version(client, name)
        yield ChampionChange(context, client, name, lock, entries, current)


def move_champion(
    client: MlflowClient, model: str, version: str, current: str | None, tags: dict[str, str]
) -> None:
    """Point ``champion`` at ``version``, keep the replaced one as ``previous-champion``, tag the version."""
    if current is not None:
        client.set_registered_model_alias(model, PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(model, CHAMPION, version)
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, value)


def ledger_entry(
    context: StepContext,
    client: MlflowClient,
    version: ModelVersion,
    action: str,
    replaced: str | None,
    reason: str,
    approval: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ledger document of one champion change (with the person's approval when one was asked).

    A version trained by a drift retrain carries the drift's day and columns (``retrain``).
    """
    tags = version.tags or {}
    entry: dict[str, Any] = {
        "action": action,
        "model": version.name,
        "version": str(version.version),
        "replaced": replaced,
        "reason": reason,
        "metrics": holdout_metrics(client, version),
        "mlflow_run_id": version.run_id,
        "training_run": tags.get("training_run"),
        **context.lineage(),
    }
    retrain = retrain_record(tags)
    if retrain is not None:
        entry["retrain"] = retrain
    if approval is not None:
        entry["approval"] = approval
    return entry


def retrain_record(tags: dict[str, str]) -> dict[str, Any] | None:
    """``{"ds", "drifted_columns"}`` from a version's retrain tags, or None when it was no drift retrain."""
    if RETRAIN_DS_TAG not in tags and RETRAIN_COLUMNS_TAG not in tags:
        return None
    columns = [column for column in tags.get(RETRAIN_COLUMNS_TAG, "").split(",") if column]
    return {"ds": tags.get(RETRAIN_DS_TAG) or None, "drifted_columns": columns}


def promotion_tags(entry: dict[str, Any]) -> dict[str, str]:
    """Tags recording on the version when and why it became champion (and who approved it)."""
    tags = {
        "mlsteps.promoted.action": entry["action"],
        "mlsteps.promoted.replaced": entry["replaced"] or NONE,
        "mlsteps.promoted.reason": entry["reason"][:500],
        "mlsteps.promoted.dag_id": entry["dag_id"],
        "mlsteps.promoted.dag_run_id": entry["dag_run_id"],
    }
    return {**tags, **approval_tags("approved", entry.get("approval"))}


def approval_tags(decision: str, approval: dict[str, str] | None) -> dict[str, str]:
    """``mlsteps.approval.*`` tags of a person's decision; none when nobody was asked."""
    if approval is None:
        return {}
    return {
        "mlsteps.approval.decision": decision,
        "mlsteps.approval.by": approval["by"] or NONE,
        "mlsteps.approval.at": approval["at"] or NONE,
        "mlsteps.approval.comment": approval["comment"],
    }


def change_result(
    lake: Lake, name: str, version: str, replaced: str | None, entry: str | None, changed: bool
) -> ChampionChangeResult:
    """The step result shared by promote and rollback."""
    if changed:
        summary = f"{name} champion is now version {version} (replaced {label(replaced)})"
    else:
        summary = f"{name} version {version} was already champion; nothing changed"
    return {
        "summary": summary,
        "model_name": name,
        "model_version": version,
        "champion_version": version,
        "previous_champion": replaced,
        "changed": changed,
        "ledger_entry": lake.url(entry) if entry else None,
        "model_uri": f"models:/{name}@{CHAMPION}",
    }


def label(version: str | None) -> str:
    """``version 7``, or ``none`` when there is no version."""
    return NONE if version is None else f"version {version}"
