"""The lineage chain's links as data: facts read from stored records, checked, and rendered as text.

Functions here take records already read (registry tags, manifests, run params) and never read
the lake, the registry or MLflow themselves; `trace` does the reading.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.results import LineageChain
from mlsteps.platform.lineage import MODEL_SHA256_TAG, VERSIONS_TAG

OK, WARNING, BROKEN, UNREACHABLE = "ok", "warning", "broken", "unreachable"
MAX_ROWS_SHOWN = 20


@dataclass
class Link:
    """One link of the chain: the record it was read from, what it says, and whether it holds."""

    name: str
    record: str
    status: str = OK
    facts: dict[str, Any] = field(default_factory=dict)
    problem: str = ""

    def broken(self, problem: str) -> Link:
        self.status, self.problem = BROKEN, problem
        return self

    def warn(self, problem: str) -> Link:
        if self.status == OK:
            self.status, self.problem = WARNING, problem
        return self


def unreachable(name: str, upstream: str) -> Link:
    """A link not followed because the link it hangs from is broken."""
    return Link(name, "-", UNREACHABLE, problem=f"not followed: the {upstream} link is broken")


def view_summary(view: dict[str, Any]) -> str:
    """A Feast view recorded in a snapshot, in one line: name, entities, feature count, TTL."""
    ttl = view.get("ttl_seconds")
    ttl_text = f", ttl {ttl // 86400} d" if ttl else ""
    entities = ", ".join(view.get("entities", []))
    return f"{view['name']}({entities}; {len(view.get('features', {}))} features{ttl_text})"


# --- links read from records already in hand -----------------------------------------------


def features_link(tags: dict[str, str], snapshot: dict[str, Any] | None, predictions: dict[str, Any]) -> Link:
    """The feature definitions: the config hash (checked against the recorded config) and the Feast views."""
    if snapshot is None:
        return unreachable("features", "training set")
    link = Link("features", "training set manifest: config, feature_views")
    views = snapshot.get("feature_views") or []
    link.facts = {
        "config_hash": snapshot.get("config_hash"),
        "config_hash_at_training": tags.get("config_hash"),
        "config_hash_at_scoring": predictions.get("config_hash"),
        "feature_service": snapshot.get("feature_service"),
        "feature_views": [view_summary(view) for view in views if "name" in view],
        "feature_columns": len(snapshot.get("feature_columns", [])),
    }
    document = snapshot.get("config")
    if document is None:
        return link.warn("the snapshot predates recorded configs: only the config hash is known")
    recorded_hash = PipelineConfig.model_validate(document).config_hash
    if recorded_hash != snapshot.get("config_hash"):
        return link.broken(
            f"the config recorded in the snapshot hashes to {recorded_hash}, "
            f"not {snapshot.get('config_hash')}"
        )
    if tags.get("config_hash") != snapshot.get("config_hash"):
        link.warn("the config changed between build-training-set and train")
    return link


def code_link(tags: dict[str, str], snapshot: dict[str, Any] | None, predictions: dict[str, Any]) -> Link:
    """Code version, image and package versions at training (and at scoring)."""
    link = Link("code", "registry tags git_sha, image, mlsteps.versions")
    link.facts = {
        "git_sha": tags.get("git_sha"),
        "image": tags.get("image"),
        "packages": json.loads(tags[VERSIONS_TAG]) if VERSIONS_TAG in tags else None,
        "git_sha_at_snapshot": ((snapshot or {}).get("lineage") or {}).get("git_sha"),
        "git_sha_at_scoring": predictions.get("git_sha"),
    }
    if not tags.get("git_sha") or tags.get("git_sha") == "unknown":
        link.warn("no code version was recorded at training")
    elif VERSIONS_TAG not in tags:
        link.warn("package versions were not recorded at training")
    return link


def params_link(
    tags: dict[str, str], run_id: str | None, params: dict[str, str], metrics: dict[str, float]
) -> Link:
    """Hyperparameters, seed and training metrics from the MLflow run (no ``run_id``: unreachable)."""
    if run_id is None:
        return unreachable("hyperparameters", "mlflow run")
    link = Link("hyperparameters", f"MLflow run {run_id} params")
    link.facts = {
        "params": dict(sorted(params.items())),
        "device": tags.get("mlsteps.device"),
        "n_trials": tags.get("mlsteps.n_trials"),
        "validation_auc": metrics.get("validation_auc"),
        "model_sha256": tags.get(MODEL_SHA256_TAG),
    }
    if "seed" not in params:
        link.broken(f"MLflow run {run_id} records no seed parameter")
    return link


# --- output ---------------------------------------------------------------------------------


def chain_document(
    name: str,
    day: dt.date,
    column: str,
    value: str,
    rows: list[dict[str, Any]],
    links: list[Link],
    realized: dict[str, Any] | None = None,
) -> LineageChain:
    """The chain as JSON-able data (what ``--json`` prints and the step result holds).

    ``realized`` is the day's realized-performance record, when the performance monitor judged it.
    """
    broken = [link for link in links if link.status == BROKEN]
    return {
        "prediction": {"model": name, "ds": day.isoformat(), "selector": {column: value}, "rows": rows},
        "links": [asdict(link) for link in links],
        "intact": not broken and all(link.status != UNREACHABLE for link in links),
        "broken": [{"link": link.name, "record": link.record, "problem": link.problem} for link in broken],
        "realized_performance": realized,
    }


def realized_text(record: dict[str, Any] | None) -> str:
    """A day's realized-performance record in one line (None: the monitor has not judged the day)."""
    if record is None:
        return "not judged yet (the performance monitor has not run for this day)"
    from mlsteps.logic.performance import coverage_text, judged_text

    if record["status"] == "waiting":
        return f"waiting for labels ({coverage_text(record)})"
    version = f"for version {record['model_version']}"
    return f"{judged_text(record)} {version}: {record['status']}, {coverage_text(record)}"


def render(document: Mapping[str, Any]) -> str:
    """The chain as text: the prediction, one block per link, and the verdict."""
    prediction = document["prediction"]
    (column, value), rows = next(iter(prediction["selector"].items())), prediction["rows"]
    lines = [f"Lineage of {column}={value} in {prediction['model']} predictions ds={prediction['ds']}"]
    for row in rows[:MAX_ROWS_SHOWN]:
        cells = ", ".join(f"{key}={_text(cell)}" for key, cell in row.items() if key != "part")
        lines.append(f"  row: {cells}")
    if len(rows) > MAX_ROWS_SHOWN:
        lines.append(f"  ... and {len(rows) - MAX_ROWS_SHOWN} more rows")
    for link in document["links"]:
        lines.append(f"[{link['status'].upper():^11}] {link['name']:<15} {link['record']}")
        if link["problem"]:
            lines.append(f"{'':16}! {link['problem']}")
        lines += [
            f"{'':16}{key}: {_text(fact)}"
            for key, fact in link["facts"].items()
            if fact not in (None, [], {})
        ]
    if "realized_performance" in document:
        lines.append(f"realized performance of the day: {realized_text(document['realized_performance'])}")
    if document["broken"]:
        lines.append(f"lineage BROKEN at: {', '.join(b['link'] for b in document['broken'])}")
    else:
        lines.append(f"lineage intact: {len(document['links'])} links")
    return "\n".join(lines)


def _text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, dict):
        return " ".join(f"{key}={_text(item)}" for key, item in value.items())
    if isinstance(value, list):
        return ", ".join(_text(item) for item in value)
    return str(value)
