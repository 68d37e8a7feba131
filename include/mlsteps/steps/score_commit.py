"""Publish a predictions partition once every scoring shard has finished.

Here the day's totals are known (one commit per day, however many shards scored it), so this is
where an implausible flagged share is warned about: none flagged, or a share far from the model's
training base rate (:func:`mlsteps.logic.calibration.flagged_rate_warnings`). A warning goes to the
log, the result, its summary and the partition's manifest, and never fails the step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import predictions_prefix, reference_prefix
from mlsteps.contract.results import CommitPredictionsResult
from mlsteps.errors import StepError
from mlsteps.logic.calibration import flagged_rate_warnings
from mlsteps.platform import mlflow_registry
from mlsteps.platform.context import StepContext, add_day_argument
from mlsteps.platform.lake import FileEntry, Lake
from mlsteps.platform.ledger import latest_entry_for, read_ledger
from mlsteps.platform.scoring import PinnedModel, read_receipts, resolve_model, scoring_input, staging_for

if TYPE_CHECKING:
    from mlsteps.contract.config import PipelineConfig

log = logging.getLogger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The day that was scored.")
    parser.add_argument("--model-version", required=True, help="The version every shard scored with.")
    parser.add_argument("--alias", default=None, help="The alias it was resolved from (recorded).")
    parser.add_argument("--shard-count", type=int, required=True, help="Shards that must have finished.")
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="Publish the challenger's shadow partition (shadow/predictions/), never the champion's.",
    )


def run(args: argparse.Namespace) -> CommitPredictionsResult:
    context = StepContext.from_args(args)
    alias = mlflow_registry.CHALLENGER if args.shadow else args.alias or context.config.scoring.alias
    model = resolve_model(context.config, alias, args.model_version)
    return commit_predictions(context, args.ds, model, args.shard_count, shadow=args.shadow)


def commit_predictions(
    context: StepContext, day: dt.date, model: PinnedModel, shard_count: int, shadow: bool = False
) -> CommitPredictionsResult:
    """Check every shard's receipt and row counts, then commit the partition with its lineage.

    With ``shadow``, the partition goes to ``shadow/predictions/`` and its manifest records
    ``role: shadow`` and the champion of the same day, so the two can be compared row by row.
    """
    config, lake = context.config, context.lake
    source = scoring_input(lake, config, day)
    staging = staging_for(lake, config, day, context.run_id, shadow=shadow)
    published = lake.manifest(staging.prefix)
    if _published_by_this_run(published, context, model, staging):
        assert published is not None
        return _result(
            lake.url(staging.prefix), day, model, published["rows_out"], published["positives"], published
        )
    receipts = read_receipts(staging, shard_count)
    versions = {receipt["model_version"] for receipt in receipts}
    if versions != {model.version}:
        raise StepError(
            f"shards scored with model versions {sorted(versions)}, expected only {model.version}"
        )
    staging.files = [FileEntry(**entry) for receipt in receipts for entry in receipt["files"]]
    rows_out = sum(receipt["rows"] for receipt in receipts)
    if rows_out != source.rows:
        raise StepError(f"shards scored {rows_out} rows but the input has {source.rows}; rerun the scoring")
    positives = sum(receipt["positives"] for receipt in receipts)
    base_rate = training_base_rate(lake, config, model)
    threshold, ratio = config.scoring.decision_threshold, config.scoring.flagged_rate_warning_ratio
    warnings = flagged_rate_warnings(rows_out, positives, threshold, base_rate, ratio)
    for warning in warnings:
        log.warning("ds=%s: %s", day, warning)
    manifest = lake.commit(
        staging,
        {
            "ds": day.isoformat(),
            "model_name": model.name,
            "model_version": model.version,
            "model_run_id": model.run_id,
            "alias": model.alias,
            "rows_in": source.rows,
            "rows_out": rows_out,
            "positives": positives,
            "decision_threshold": config.scoring.decision_threshold,
            "training_base_rate": base_rate,
            "warnings": warnings,
            "feature_fingerprint": source.fingerprint,
            "features_uri": lake.url(source.prefix),
            "shards": shard_count,
            "promotion": promotion_entry(lake, model),
            **(shadow_role(lake, config, day) if shadow else {}),
            **context.lineage(),
        },
    )
    return _result(lake.url(staging.prefix), day, model, rows_out, positives, manifest)


def training_base_rate(lake: Lake, config: PipelineConfig, model: PinnedModel) -> float | None:
    """The positive share of the version's train split, from its reference manifest (None: not recorded)."""
    reference = lake.manifest(reference_prefix(config, model.version)) or {}
    value = reference.get("base_rate")
    return float(value) if value is not None else None


def promotion_entry(lake: Lake, model: PinnedModel) -> str | None:
    """The ledger entry that made the scored version champion, when it was scored as champion.

    Recorded so that `trace` follows a stored link instead of searching the ledger by time.
    """
    if model.alias != mlflow_registry.CHAMPION:
        return None
    entry = latest_entry_for(read_ledger(lake, model.name), model.version)
    return str(entry["entry"]) if entry else None


def shadow_role(lake: Lake, config: PipelineConfig, day: dt.date) -> dict[str, Any]:
    """What a shadow manifest adds: its role, and the champion version that scored the same day.

    The champion's committed partition of the day names it; before that commits, the alias does.
    """
    champion = lake.manifest(predictions_prefix(config.model.registered_name, day))
    if champion is not None:
        return {"role": "shadow", "champion_version": str(champion["model_version"])}
    client = mlflow_registry.mlflow_client()
    version = mlflow_registry.champion_version(client, config.model.registered_name)
    return {"role": "shadow", "champion_version": version}


def _published_by_this_run(
    published: dict[str, Any] | None, context: StepContext, model: PinnedModel, staging: Any
) -> bool:
    """A retry after a successful commit finds its own manifest and nothing left to commit."""
    return (
        published is not None
        and bool(context.run_id)
        and published.get("dag_run_id") == context.run_id
        and str(published.get("model_version")) == model.version
        and not staging.lake.exists(staging.root)
    )


def _result(
    uri: str, day: dt.date, model: PinnedModel, rows_out: int, positives: int, manifest: dict[str, Any]
) -> CommitPredictionsResult:
    rate = positives / rows_out if rows_out else 0.0
    warnings = list(manifest.get("warnings") or [])
    warned = "".join(f"; WARNING: {warning}" for warning in warnings)
    return {
        "ds": day.isoformat(),
        "uri": uri,
        "rows": rows_out,
        "positive_rate": round(rate, 6),
        "model_version": model.version,
        "files": len(manifest["files"]),
        "warnings": warnings,
        "summary": f"{rows_out} rows scored to {uri} with {model.name} v{model.version} ({rate:.2%} flagged)"
        f"{warned}",
    }
