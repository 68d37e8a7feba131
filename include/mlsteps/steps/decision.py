"""Record that a person (or the approval's timeout) rejected promoting an approved challenger.

Nothing moves: the ``champion`` alias stays where it is. Under the champion lock, one immutable
entry ``<time>-reject-v<version>.json`` is written beside the promotion ledger's entries (who,
when, why, the champion at the time, the version's holdout metrics), and the version is tagged
``mlsteps.approval.*``. Rejection entries are not champion changes: ``rollback`` and ``promote``
never read them (:func:`mlsteps.platform.ledger.read_decisions` does). Every value is one argv element,
stored as text.
"""

from __future__ import annotations

import argparse

from mlsteps.contract.results import RecordDecisionResult
from mlsteps.errors import StepError
from mlsteps.platform import mlflow_registry
from mlsteps.platform.champion import NONE, approval_tags
from mlsteps.platform.context import StepContext
from mlsteps.platform.ledger import append_ledger, read_decisions, read_ledger
from mlsteps.platform.lock import champion_lock
from mlsteps.steps.promote import MAX_APPROVAL_TEXT


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-version", required=True, help="The challenger that was not promoted.")
    parser.add_argument("--decision", choices=["rejected"], default="rejected", help="What was decided.")
    parser.add_argument("--decided-by", default="", help="Who rejected it (empty: nobody answered).")
    parser.add_argument("--decided-at", default="", help="When (ISO 8601).")
    parser.add_argument("--comment", default="", help="Why, in the person's words.")
    parser.add_argument(
        "--timed-out",
        type=_flag,
        default=False,
        help="true when nobody answered in time and the configured default applied.",
    )
    parser.add_argument("--reason", default="", help="Why the run retrained (scheduled, drift, ...).")


def _flag(text: str) -> bool:
    value = str(text).strip().lower()
    if value not in ("true", "false", ""):
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value == "true"


def run(args: argparse.Namespace) -> RecordDecisionResult:
    context = StepContext.from_args(args)
    name = context.config.model.registered_name
    version = mlflow_registry.parse_version(args.model_version)
    client = mlflow_registry.mlflow_client()
    candidate = mlflow_registry.get_version(client, name, version)
    mlflow_registry.require_lineage(candidate, context.config)
    by = str(args.decided_by or "").strip()[:MAX_APPROVAL_TEXT]
    if not by and not args.timed_out:
        raise StepError("--decided-by is empty: name who rejected the promotion, or pass --timed-out")
    approval = {
        "by": by or "no answer (approval timed out)",
        "at": str(args.decided_at or "").strip()[:100],
        "comment": str(args.comment or "")[:MAX_APPROVAL_TEXT],
    }
    with champion_lock(context.lake, name, purpose=f"record rejection of {name} v{version}") as lock:
        current = mlflow_registry.champion_version(client, name)
        previous = read_ledger(context.lake, name) + read_decisions(context.lake, name)
        previous.sort(key=lambda entry: entry["entry"])
        entry = {
            "action": "reject",
            "model": name,
            "version": version,
            "champion": current,
            "reason": args.reason,
            "decision": args.decision,
            "timed_out": bool(args.timed_out),
            "approval": approval,
            "metrics": mlflow_registry.holdout_metrics(client, candidate),
            "mlflow_run_id": candidate.run_id,
            "training_run": (candidate.tags or {}).get("training_run"),
            **context.lineage(),
        }
        lock.ensure_held()
        written = append_ledger(context.lake, name, entry, previous)
    for key, value in approval_tags(args.decision, approval).items():
        client.set_model_version_tag(name, version, key, value)
    how = "nobody answered in time" if args.timed_out else f"rejected by {approval['by']}"
    return {
        "summary": f"{name} version {version} was not promoted: {how}; champion stays {current or NONE}",
        "model_name": name,
        "model_version": version,
        "champion_version": current,
        "decision": args.decision,
        "timed_out": bool(args.timed_out),
        "changed": False,
        "ledger_entry": context.lake.url(written),
    }
