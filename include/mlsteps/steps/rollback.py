"""Move the ``champion`` alias back to a version that was champion before, recorded in the ledger.

``--version previous`` means the version the current champion replaced, as the ledger records it;
rolling back twice therefore undoes the first rollback. Only versions the ledger shows as champion
at some point can be rolled back to: a version that never passed promotion is refused.
"""

from __future__ import annotations

import argparse
from typing import Any

from mlsteps.errors import StepError
from mlsteps.platform import registry
from mlsteps.platform.context import StepContext
from mlsteps.steps.promote import ledger_entry, promotion_tags, result

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


def run(args: argparse.Namespace) -> dict[str, Any]:
    context = StepContext.from_args(args)
    name = context.config.model.registered_name
    requested = args.version.strip().lower()
    if requested != PREVIOUS:
        requested = registry.parse_version(requested, option="--version")
    client = registry.mlflow_client()
    with registry.champion_lock(context.lake, name, purpose=f"rollback {name} to {requested}") as lock:
        entries = registry.read_ledger(context.lake, name)
        current = registry.champion_version(client, name)
        target = resolve_target(name, requested, current, entries)
        if target == current:
            entry = registry.latest_entry_for(entries, target)
            return result(
                context.lake, name, target, current, entry["entry"] if entry else None, changed=False
            )
        version = registry.get_version(client, name, target)
        registry.require_lineage(version, context.config)
        lock.ensure_held()
        entry = ledger_entry(context, client, version, "rollback", current, args.reason)
        registry.move_champion(client, name, target, current, promotion_tags(entry))
        written = registry.append_ledger(context.lake, name, entry, entries)
    return result(context.lake, name, target, current, written, changed=True)


def resolve_target(name: str, requested: str, current: str | None, entries: list[dict[str, Any]]) -> str:
    """The version to roll back to: checked against the ledger.

    Raises:
        StepError: ``previous`` with nothing before the champion, or a version never promoted.
    """
    if requested == PREVIOUS:
        recorded = registry.latest_entry_for(entries, current) if current else None
        replaced = recorded["replaced"] if recorded else None
        if replaced is None:
            where = f"version {current}" if current else "no champion"
            raise StepError(
                f"{name} has {where} and the ledger records no champion before it, so there is nothing to "
                "roll back to; pass --version N of a version promoted before"
            )
        return str(replaced)
    if requested not in registry.promoted_versions(entries):
        promoted = sorted(registry.promoted_versions(entries), key=int)
        raise StepError(
            f"version {requested} of {name} was never champion (the ledger lists "
            f"{promoted or 'no versions'}); rollback only returns to a version promoted before, "
            "use promote for a new one"
        )
    return requested
