"""Trace one prediction back through the records the pipeline stored, link by link, down to the raw data.

The chain: the predictions partition and its ``_SUCCESS.json`` → the registered model version and
alias it was scored with → the MLflow run → the training snapshot and its fingerprint → the raw
partitions of its data interval → the feature definitions (config hash, Feast views) → code version,
image and packages → hyperparameters → the evaluation verdict → the ledger entry that made the
version champion. Every link is read from a stored record (a lake manifest, the registry, an
MLflow run, a ledger entry), never inferred. A missing or contradicting record is a *broken link*:
the whole chain is still printed, then the step exits with code 2 and one ``ERROR:`` line naming
the first broken link and the record that is missing. Feast and Evidently are never imported.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
from typing import TYPE_CHECKING, Any

from mlsteps.contract import layout
from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.layout import partition, snapshot_prefix
from mlsteps.contract.results import TraceResult
from mlsteps.errors import StepError
from mlsteps.logic.lineage_facts import (
    BROKEN,
    Link,
    chain_document,
    code_link,
    features_link,
    params_link,
    render,
    unreachable,
)
from mlsteps.platform import mlflow_registry, step_cache
from mlsteps.platform.context import StepContext, add_day_argument
from mlsteps.platform.lake import MARKER, Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.lineage import CACHE_KEY_TAG, partition_digest

if TYPE_CHECKING:
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

#: The CLI prints this step's own report (text or JSON) instead of a summary line.
PRINTS_OWN_OUTPUT = True


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "Day of the predictions partition.")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--row-id", help="The prediction's row id (the dataset's row_id column).")
    which.add_argument(
        "--entity", help="An entity key as KEY=VALUE, e.g. customer_id=c00042: all its predictions that day."
    )
    parser.add_argument("--model", help="Registered model name (default: model.registered_name).")
    parser.add_argument("--json", action="store_true", help="Print the chain as JSON instead of text.")


def run(args: argparse.Namespace) -> TraceResult:
    context = StepContext.from_args(args)
    config = context.config
    name = args.model or config.model.registered_name
    column, value = selector(args, config)
    rows, links = trace(context.lake, name, args.ds, column, value)
    document = chain_document(
        name, args.ds, column, value, rows, links, realized_performance(context.lake, name, args.ds)
    )
    print(json.dumps(document, indent=2, default=str) if args.json else render(document), flush=True)
    broken = [link for link in links if link.status == BROKEN]
    if broken:
        more = f" (and {len(broken) - 1} more broken link(s) above)" if len(broken) > 1 else ""
        raise StepError(
            f"broken link in the lineage of {column}={value} (ds={args.ds}): {broken[0].name}: "
            f"{broken[0].problem}{more}"
        )
    return {"summary": f"lineage of {column}={value} (ds={args.ds}): {len(links)} links intact", **document}


def realized_performance(lake: Lake, name: str, day: dt.date) -> dict[str, Any] | None:
    """The performance monitor's record of the day (realized metrics on its labels), if it judged it."""
    path = layout.performance_record_path(name, day)
    return dict(lake.read_json(path)) if lake.exists(path) else None


def selector(args: argparse.Namespace, config: PipelineConfig) -> tuple[str, str]:
    """The column and value that pick the prediction(s): the row id, or one entity key.

    Raises:
        StepError: ``--entity`` is not KEY=VALUE with KEY one of the dataset's entity keys.
    """
    if args.row_id is not None:
        return config.dataset.row_id, str(args.row_id)
    key, sep, value = str(args.entity).partition("=")
    if not sep or key.strip() not in config.dataset.entity_keys or not value:
        raise StepError(
            f"--entity must be KEY=VALUE with KEY one of {list(config.dataset.entity_keys)}, "
            f"got {args.entity!r}"
        )
    return key.strip(), value


# --- the chain ------------------------------------------------------------------------------


def trace(
    lake: Lake, name: str, day: dt.date, column: str, value: str
) -> tuple[list[dict[str, Any]], list[Link]]:
    """Follow every link from the matching prediction rows back to the raw data.

    Returns:
        The matching prediction rows, and the links in chain order.

    Raises:
        StepError: The partition is intact but holds no prediction for ``column=value``.
    """
    link, manifest, rows = predictions_link(lake, name, day, column, value)
    if manifest is None:
        return rows, [link]
    client = mlflow_registry.mlflow_client()
    model, version = model_link(client, name, manifest, lake)
    links = [link, model]
    if version is None:
        return rows, links
    tags = version.tags or {}
    run_record, run = run_link(client, version)
    snapshot_record, snapshot = snapshot_link(lake, version)
    links += [
        run_record,
        snapshot_record,
        raw_link(lake, snapshot),
        features_link(tags, snapshot, manifest),
        code_link(tags, snapshot, manifest),
        params_link(tags, *_run_record(run)),
        evaluation_link(lake, version),
        promotion_link(lake, version, manifest),
    ]
    return rows, links


def predictions_link(
    lake: Lake, name: str, day: dt.date, column: str, value: str
) -> tuple[Link, dict[str, Any] | None, list[dict[str, Any]]]:
    """The committed predictions partition, its manifest, and the rows for ``column=value``."""
    prefix = layout.predictions_prefix(name, day)
    link = Link("predictions", lake.url(f"{prefix}/{MARKER}"))
    manifest = lake.manifest(prefix)
    if manifest is None:
        problem = f"{link.record} is missing (the partition was never committed, or its record was deleted)"
        return link.broken(problem), None, []
    rows, problems = find_rows(lake, prefix, manifest, column, value)
    link.facts = {
        "partition": lake.url(prefix),
        "rows": manifest.get("rows"),
        "committed_at": manifest.get("committed_at"),
        "dag_id": manifest.get("dag_id"),
        "dag_run_id": manifest.get("dag_run_id"),
        "features": manifest.get("features_uri"),
        "feature_fingerprint": manifest.get("feature_fingerprint"),
        "parts": sorted({row["part"] for row in rows}),
    }
    if problems:
        return link.broken("; ".join(problems)), manifest, rows
    if not rows:
        raise StepError(
            f"no prediction with {column}={value} in {lake.url(prefix)}; check --ds and the id "
            f"(the partition holds {manifest.get('rows')} rows)"
        )
    return link, manifest, rows


def find_rows(
    lake: Lake, prefix: str, manifest: dict[str, Any], column: str, value: str
) -> tuple[list[dict[str, Any]], list[str]]:
    """Rows whose ``column`` equals ``value``, from the parts the manifest lists, checksums verified."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    rows: list[dict[str, Any]] = []
    problems: list[str] = []
    for entry in manifest.get("files", []):
        relative = f"{prefix}/{entry['path']}"
        if not lake.exists(relative):
            problems.append(f"part {lake.url(relative)} listed in {MARKER} is missing")
            continue
        data = lake.read_bytes(relative)
        if hashlib.sha256(data).hexdigest() != entry["sha256"]:
            problems.append(f"part {lake.url(relative)} does not match the SHA-256 in {MARKER}")
            continue
        table = pq.read_table(pa.BufferReader(data))
        if column not in table.column_names:
            raise StepError(f"predictions in {lake.url(prefix)} have no column {column!r}; pick another key")
        matching = table.filter(pc.equal(pc.cast(table.column(column), pa.string()), value))
        rows += [{**row, "part": entry["path"]} for row in matching.to_pylist()]
    return rows, problems


def model_link(
    client: MlflowClient, name: str, manifest: dict[str, Any], lake: Lake | None = None
) -> tuple[Link, ModelVersion | None]:
    """The registered version the partition was scored with, and the alias that resolved to it.

    When later training runs reused the version from the step cache instead of training again, the
    link names them (``reused_by``), each with the run it was cached from: the version's own MLflow
    run, snapshot and evaluation below are that original run's.
    """
    number = str(manifest.get("model_version") or "")
    link = Link("model", f"MLflow registry: {name} version {number}")
    if not number:
        return link.broken(f"the predictions {MARKER} records no model_version"), None
    try:
        version = mlflow_registry.get_version(client, name, number)
    except StepError as err:
        return link.broken(f"registry record missing: {err}"), None
    now = sorted(alias for alias, v in mlflow_registry.aliases(client, name).items() if v == number)
    link.facts = {
        "name": name,
        "version": number,
        "alias_at_scoring": manifest.get("alias"),
        "aliases_now": now,
        "source": version.source,
        "pipeline": (version.tags or {}).get(mlflow_registry.PIPELINE_TAG),
        "calibration": (version.tags or {}).get(mlflow_registry.CALIBRATION_TAG, "none"),
    }
    if lake is not None:
        link.facts |= cached_reuses(lake, version)
    recorded_run = manifest.get("model_run_id")
    if recorded_run and recorded_run != version.run_id:
        link.broken(
            f"the predictions record MLflow run {recorded_run} for version {number}, but the registry "
            f"says {version.run_id}: the version was replaced after scoring"
        )
    return link, version


def cached_reuses(lake: Lake, version: ModelVersion) -> dict[str, Any]:
    """``cache_key`` and ``reused_by`` (one line per run that reused the version), when there are any."""
    key = (version.tags or {}).get(CACHE_KEY_TAG)
    found = step_cache.reuses(lake, "train", key) if key else []
    if not found:
        return {}
    return {
        "cache_key": key,
        "reused_by": [
            f"{entry.get('dag_id') or 'no DAG'} run {entry.get('run_id')}: train cached from run "
            f"{(entry.get('cached_from') or {}).get('run_id')}"
            for entry in found
        ],
    }


def run_link(client: MlflowClient, version: ModelVersion) -> tuple[Link, Run | None]:
    """The MLflow run that trained the version."""
    from mlflow.exceptions import MlflowException

    link = Link("mlflow run", f"MLflow run {version.run_id}")
    if not version.run_id:
        return link.broken(f"version {version.version} records no MLflow run"), None
    try:
        run = client.get_run(version.run_id)
    except MlflowException:
        return link.broken(f"MLflow run {version.run_id} of version {version.version} is missing"), None
    link.facts = {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "started": _millis(run.info.start_time),
        "url": _run_url(run),
    }
    if run.info.lifecycle_stage == "deleted":
        link.broken(f"MLflow run {version.run_id} of version {version.version} was deleted")
    return link, run


def snapshot_link(lake: Lake, version: ModelVersion) -> tuple[Link, dict[str, Any] | None]:
    """The training snapshot the version's tags name, checked against the fingerprint it was trained on."""
    tags = version.tags or {}
    training_run, fingerprint = tags.get("training_run"), tags.get("data_fingerprint")
    if not training_run:
        return Link("training set", "registry tags").broken(
            f"version {version.version} has no training_run tag"
        ), None
    prefix = snapshot_prefix(training_run)
    link = Link("training set", lake.url(f"{prefix}/{MARKER}"))
    manifest = lake.manifest(prefix)
    if manifest is None:
        return link.broken(f"training snapshot record {link.record} is missing"), None
    link.facts = {
        "training_run": training_run,
        "fingerprint": manifest.get("fingerprint"),
        "rows": manifest.get("split_rows"),
        "holdout_start": manifest.get("holdout_start"),
        "committed_at": manifest.get("committed_at"),
        "dag_run_id": (manifest.get("lineage") or {}).get("dag_run_id"),
    }
    if manifest.get("fingerprint") != fingerprint:
        link.broken(
            f"snapshot {training_run} now has fingerprint {manifest.get('fingerprint')}, but version "
            f"{version.version} was trained on {fingerprint}: the snapshot was rebuilt after training"
        )
    return link, manifest


def raw_link(lake: Lake, snapshot: dict[str, Any] | None) -> Link:
    """The raw data interval, and whether each raw partition read then is still there, unchanged."""
    if snapshot is None:
        return unreachable("raw data", "training set")
    record = snapshot.get("raw")
    interval = snapshot.get("interval") or {}
    link = Link("raw data", lake.url(record["prefix"]) if record else "training set manifest")
    link.facts = {"interval": mlflow_registry.describe_interval(interval)}
    if not record:
        return link.warn("the snapshot predates raw-partition records: only its interval is known")
    partitions = record.get("partitions", {})
    link.facts |= {
        "read_from": record.get("read_from"),
        "days_read": sum(1 for digest in partitions.values() if digest),
    }
    missing, changed = [], []
    for day, digest in sorted(partitions.items()):
        if digest is None:
            continue
        now = partition_digest(lake, partition(record["prefix"], day))
        if now is None:
            missing.append(day)
        elif now != digest:
            changed.append(day)
    if missing:
        link.broken(f"raw partition(s) {_days(missing)} under {lake.url(record['prefix'])} are missing")
    elif changed:
        link.warn(f"raw partition(s) {_days(changed)} changed since the snapshot was built")
    return link


def evaluation_link(lake: Lake, version: ModelVersion) -> Link:
    """The evaluation verdict on the version and its stored report."""
    tags = version.tags or {}
    verdict, day = tags.get(mlflow_registry.APPROVED_TAG), tags.get("mlsteps.evaluation.ds")
    if verdict is None or day is None:
        return Link("evaluation", "registry tags").broken(
            f"version {version.version} carries no evaluation verdict ({mlflow_registry.APPROVED_TAG})"
        )
    report = f"{layout.evaluation_report_prefix(day, version.name, version.version)}/report.json"
    link = Link("evaluation", lake.url(report))
    link.facts = {
        "approved": verdict == "true",
        "against_champion": tags.get(mlflow_registry.EVALUATED_AGAINST_TAG),
        "roc_auc": tags.get("mlsteps.evaluation.roc_auc"),
        "thresholds": json.loads(tags[mlflow_registry.THRESHOLDS_TAG])
        if mlflow_registry.THRESHOLDS_TAG in tags
        else None,
    }
    if not lake.exists(report):
        return link.broken(f"evaluation report {lake.url(report)} is missing")
    document = lake.read_json(report)
    link.facts["reasons"] = document.get("reasons", [])
    if str(document.get("approved")).lower() != verdict:
        link.broken(f"the report says approved={document.get('approved')}, the version tag {verdict}")
    elif verdict != "true":
        link.warn("the version was not approved by evaluation")
    return link


def promotion_link(lake: Lake, version: ModelVersion, predictions: dict[str, Any]) -> Link:
    """The ledger entry that made the version champion, as recorded when the partition was scored."""
    alias, number = predictions.get("alias"), str(version.version)
    if "promotion" in predictions:
        entry = predictions["promotion"]
        link = Link("promotion", lake.url(entry) if entry else f"predictions {MARKER}: promotion")
    else:  # partitions scored before promotions were recorded: the ledger is searched instead
        found = _ledger_entry_before(lake, version, predictions.get("committed_at"))
        entry = found["entry"] if found else None
        link = Link("promotion", lake.url(entry) if entry else f"ledger {layout.ledger_prefix(version.name)}")
        link.facts["found_by"] = "ledger search (the partition predates recorded promotions)"
    if entry is None:
        if alias == mlflow_registry.CHAMPION:
            return link.broken(f"no ledger entry records version {number} becoming champion before scoring")
        link.facts["note"] = f"scored with alias {alias}, not {mlflow_registry.CHAMPION}"
        return link
    if not lake.exists(entry):
        return link.broken(f"ledger entry {lake.url(entry)} is missing")
    document = lake.read_json(entry)
    link.facts |= {key: document.get(key) for key in ("action", "at", "replaced", "reason", "dag_run_id")}
    if str(document.get("version")) != number:
        link.broken(
            f"ledger entry {lake.url(entry)} is about version {document.get('version')}, not {number}"
        )
    return link


def _ledger_entry_before(lake: Lake, version: ModelVersion, scored_at: str | None) -> dict[str, Any] | None:
    entries = [
        entry
        for entry in read_ledger(lake, version.name)
        if str(entry.get("version")) == str(version.version) and (not scored_at or entry["at"] <= scored_at)
    ]
    return entries[-1] if entries else None


def _run_record(run: Run | None) -> tuple[str | None, dict[str, str], dict[str, float]]:
    """The run's id, params and metrics (no id: the run could not be read)."""
    if run is None:
        return None, {}, {}
    return run.info.run_id, run.data.params, run.data.metrics


def _days(days: list[str]) -> str:
    return ", ".join(days) if len(days) <= 4 else f"{days[0]} .. {days[-1]} ({len(days)} days)"


def _millis(value: int | None) -> str | None:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC).isoformat(timespec="seconds") if value else None


def _run_url(run: Run) -> str | None:
    from mlsteps.platform.mlflow_registry import run_url

    return run_url(run.info.experiment_id, run.info.run_id)
