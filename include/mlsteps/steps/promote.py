"""Move the ``champion`` alias to an approved version: check-and-set under a lock, recorded in the ledger.

Evaluation compared the challenger with the champion it saw (``--expected-champion``). Under the
champion lock, the current champion is read again: if it changed since (someone else promoted
or rolled back), this promotion is refused, because its evaluation judged against the wrong
model. Otherwise ``champion`` moves to the version, ``previous-champion`` keeps the replaced one
reachable, the version is tagged, and one immutable ledger entry is written. Re-running a
promotion that already happened changes nothing and writes no second entry.

When a person approved the promotion (the DAG's approval task, ``gates.require_approval``), who,
when and their comment (``--approved-by``, ``--approved-at``, ``--approval-comment``) go into the
ledger entry as ``approval`` and onto the version as ``mlsteps.approval.*`` tags. Each value is one
argv element and is stored as text, never interpreted.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from mlsteps.contract.results import ChampionChangeResult
from mlsteps.errors import StepError
from mlsteps.platform import mlflow_registry
from mlsteps.platform.champion import NONE, ChampionChange, change_champion, change_result, label
from mlsteps.platform.context import StepContext
from mlsteps.platform.ledger import latest_entry_for

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-version", required=True, help="The approved version to make champion.")
    parser.add_argument(
        "--expected-champion",
        required=True,
        help="The champion evaluate compared against (a version or 'none'); refused if it has changed.",
    )
    parser.add_argument("--reason", default="", help="Why, recorded on the version and in the ledger.")
    add_approval_arguments(parser)


def add_approval_arguments(parser: argparse.ArgumentParser) -> None:
    """The human decision's options, shared with ``record-decision``."""
    group = parser.add_argument_group("human approval (recorded as given; empty when none was asked)")
    group.add_argument("--approved-by", default="", help="Who approved (an Airflow user name).")
    group.add_argument("--approved-at", default="", help="When they answered (ISO 8601).")
    group.add_argument("--approval-comment", default="", help="Their comment.")


#: The longest comment or name kept; the rest is cut (MLflow tags take 5000 characters).
MAX_APPROVAL_TEXT = 2000


def approval_record(args: argparse.Namespace) -> dict[str, str] | None:
    """``{"by", "at", "comment"}`` when a person decided, else None."""
    by, at = str(args.approved_by or "").strip(), str(args.approved_at or "").strip()
    comment = str(args.approval_comment or "")
    if not (by or at or comment):
        return None
    return {"by": by[:MAX_APPROVAL_TEXT], "at": at[:100], "comment": comment[:MAX_APPROVAL_TEXT]}


def run(args: argparse.Namespace) -> ChampionChangeResult:
    context = StepContext.from_args(args)
    name = context.config.model.registered_name
    version = mlflow_registry.parse_version(args.model_version)
    expected = parse_expected(args.expected_champion)
    client = mlflow_registry.mlflow_client()
    candidate = mlflow_registry.get_version(client, name, version)
    mlflow_registry.require_lineage(candidate, context.config)
    require_approval(candidate, expected)
    with change_champion(context, client, name, purpose=f"promote {name} v{version}") as change:
        current = change.current
        if current == version:
            return already_champion(change, candidate, expected)
        if current != expected:
            raise StepError(
                f"the champion of {name} is now {label(current)}, not {label(expected)} as when version "
                f"{version} was evaluated; someone else promoted or rolled back since, so re-run evaluate"
            )
        written = change.commit(candidate, "promote", current, args.reason, approval_record(args))
    return change_result(context.lake, name, version, current, written, changed=True)


def parse_expected(text: str) -> str | None:
    """``none`` (no champion) or a version number."""
    if text.strip().lower() in (NONE, "", "null"):
        return None
    return mlflow_registry.parse_version(text, option="--expected-champion")


def require_approval(version: ModelVersion, expected: str | None) -> None:
    """Refuse a version `evaluate` did not approve, or approved against another champion than expected.

    Raises:
        StepError: The approval tag is not "true", or the evaluation's champion differs from ``expected``.
    """
    tags = version.tags or {}
    verdict = tags.get(mlflow_registry.APPROVED_TAG)
    if verdict != "true":
        state = "was rejected by evaluate" if verdict == "false" else "has not been evaluated"
        raise StepError(
            f"model {version.name} version {version.version} {state}; only a version evaluate approved "
            "can be promoted (run evaluate, or roll back to a version promoted before)"
        )
    evaluated_against = tags.get(mlflow_registry.EVALUATED_AGAINST_TAG)
    if evaluated_against is not None and evaluated_against != (expected or NONE):
        raise StepError(
            f"model {version.name} version {version.version} was evaluated against champion "
            f"{evaluated_against}, not {expected or NONE}; pass --expected-champion {evaluated_against} "
            "or re-run evaluate"
        )


def already_champion(
    change: ChampionChange, candidate: ModelVersion, expected: str | None
) -> ChampionChangeResult:
    """The version is champion already: a no-op when this very promotion did it, refused otherwise.

    When the alias moved but the ledger entry is missing (a crash between the two), the move is
    finished (aliases and tags) and the entry written now, so the ledger catches up without a duplicate.
    """
    name, version, entries = candidate.name, str(candidate.version), change.entries
    lake = change.context.lake
    recorded = latest_entry_for(entries, version)
    if recorded is not None and entries[-1] is recorded:
        _require_expected(name, version, recorded["replaced"], expected)
        return change_result(lake, name, version, recorded["replaced"], recorded["entry"], changed=False)
    replaced = mlflow_registry.aliases(change.client, name).get(mlflow_registry.PREVIOUS_CHAMPION)
    _require_expected(name, version, replaced, expected)
    reason = "ledger catch-up: the alias had moved but the promotion was not recorded"
    # The crash may also have come before the version's tags: finish the whole move, then record it.
    written = change.commit(candidate, "promote", replaced, reason)
    return change_result(lake, name, version, replaced, written, changed=False)


def _require_expected(name: str, version: str, replaced: str | None, expected: str | None) -> None:
    if expected not in (version, replaced):
        raise StepError(
            f"version {version} of {name} is already champion, but it replaced {label(replaced)}, not the "
            f"expected {label(expected)}; the champion changed since evaluation, so re-run evaluate"
        )
