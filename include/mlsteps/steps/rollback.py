"""Move the ``champion`` alias back to a version that was champion before, recorded in the ledger.

``--version previous`` means the version the current champion replaced, as the ledger records it;
rolling back twice therefore undoes the first rollback. Only versions the ledger shows as champion
at some point can be rolled back to: a version that never passed promotion is refused.
"""

from __future__ import annotations

import argparse
from typing import Any

from mlsteps.contract.results import ChampionChangeResult
from mlsteps.errors import StepError
from mlsteps.platform import mlflow_registry
from mlsteps.platform.champion import change_champion, change_result
from mlsteps.platform.context import StepContext
from mlsteps.platform.ledger import latest_entry_for, promoted_versions

PREVIOUS = "previous"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--version",
        required=True,
        help="A version number that was champion before, or 'previous' (the one the champion replaced).",
    )
    parser.add_argument(
        "--reason", default="rollback", help="Why, recorded on the version and in the ledger."
    )


def run(args: argparse.Namespace) -> ChampionChangeResult:
    context = StepContext.from_args(args)
    name = context.config.model.registered_name
    requested = args.version.strip().lower()
    if requested != PREVIOUS:
        requested = mlflow_registry.parse_version(requested, option="--version")
    client = mlflow_registry.mlflow_client()
    with change_champion(context, client, name, purpose=f"rollback {name} to {requested}") as change:
        current = change.current
        target = resolve_target(name, requested, current, change.entries)
        if target == current:
            entry = latest_entry_for(change.entries, target)
            recorded = entry["entry"] if entry else None
            return change_result(context.lake, name, target, current, recorded, changed=False)
        version = mlflow_registry.get_version(client, name, target)
        mlflow_registry.require_lineage(version, context.config)
        written = change.commit(version, "rollback", current, args.reason)
    return change_result(context.lake, name, target, current, written, changed=True)


def resolve_target(name: str, requested: str, current: str | None, entries: list[dict[str, Any]]) -> str:
    """The version to roll back to: checked against the ledger.

    Raises:
        StepError: ``previous`` with nothing before the champion, or a version never promoted.
    """
    if requested == PREVIOUS:
        recorded = latest_entry_for(entries, current) if current else None
        replaced = recorded["replaced"] if recorded else None
        if replaced is None:
            where = f"version {current}" if current else "no champion"
            raise StepError(
                f"{name} has {where} and the ledger records no champion before it, so there is nothing to "
                "roll back to; pass --version N of a version promoted before"
            )
        return str(replaced)
    if requested not in promoted_versions(entries):
        promoted = sorted(promoted_versions(entries), key=int)
        raise StepError(
            f"version {requested} of {name} was never champion (the ledger lists "
            f"{promoted or 'no versions'}); rollback only returns to a version promoted before, "
            "use promote for a new one"
        )
    return requested
