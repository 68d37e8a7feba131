"""The promotion ledger in the lake: one immutable JSON object per champion change, names sortable by time.

``ledger/<model>/`` holds one entry per promotion or rollback (the audit trail rollback reads)
and, beside them, the recorded rejections of promotions, which move no alias. Entries are written
under :func:`mlsteps.platform.lock.champion_lock` and never rewritten.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import ledger_prefix
from mlsteps.errors import StepError
from mlsteps.platform.objects import create_exclusive

if TYPE_CHECKING:
    from mlsteps.platform.lake import Lake

LEDGER_ENTRY = re.compile(r"^\d{8}T\d{12}Z-(promote|rollback)-v\d+\.json$")
#: A human decision that changed no alias (a rejected promotion); beside the entries, never one of them.
DECISION_ENTRY = re.compile(r"^\d{8}T\d{12}Z-reject-v\d+\.json$")


def read_ledger(lake: Lake, model: str) -> list[dict[str, Any]]:
    """Every ledger entry of a model, oldest first, each with its lake-relative ``entry`` path."""
    prefix = ledger_prefix(model)
    entries = []
    for name in lake.list_dir(prefix):
        if LEDGER_ENTRY.match(name):
            entries.append({**lake.read_json(f"{prefix}/{name}"), "entry": f"{prefix}/{name}"})
    return entries


def read_decisions(lake: Lake, model: str) -> list[dict[str, Any]]:
    """Every recorded rejection of a promotion (who, when, why), oldest first; they move no alias."""
    prefix = ledger_prefix(model)
    return [
        {**lake.read_json(f"{prefix}/{name}"), "entry": f"{prefix}/{name}"}
        for name in lake.list_dir(prefix)
        if DECISION_ENTRY.match(name)
    ]


def append_ledger(lake: Lake, model: str, entry: dict[str, Any], previous: list[dict[str, Any]]) -> str:
    """Write one immutable ledger entry; its name sorts after every earlier entry.

    Call under :func:`champion_lock`. The name is the entry's UTC time to the microsecond, bumped
    past the newest existing name should clocks disagree, then the action and version.

    Returns:
        The entry's lake-relative path.

    Raises:
        StepError: The name is taken (only possible if the lock was bypassed).
    """
    now = dt.datetime.now(dt.UTC)
    if previous:
        newest = _entry_time(previous[-1]["entry"])
        now = max(now, newest + dt.timedelta(microseconds=1))
    relative = f"{ledger_prefix(model)}/{now:%Y%m%dT%H%M%S%fZ}-{entry['action']}-v{entry['version']}.json"
    document = {**entry, "at": now.isoformat()}
    data = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
    if not create_exclusive(lake, relative, data):
        raise StepError(f"ledger entry {lake.url(relative)} already exists; was the promotion lock bypassed?")
    return relative


def _entry_time(relative: str) -> dt.datetime:
    stamp = relative.rsplit("/", 1)[-1].split("-", 1)[0]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)


def promoted_versions(entries: list[dict[str, Any]]) -> set[str]:
    """Versions the ledger shows as champion at some point."""
    return {str(entry["version"]) for entry in entries}


def latest_entry_for(entries: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    """The newest ledger entry that made ``version`` champion, or None."""
    matching = [entry for entry in entries if str(entry["version"]) == version]
    return matching[-1] if matching else None
