"""compare-shadow: the champion's and the shadow-scored challenger's outputs on the same day's rows.

Both committed partitions of the day are joined by row id. The comparison (score correlations,
decision agreement, each model's flagged rate) needs no labels, so it is there the morning after
scoring; ``monitor-performance`` adds the accuracy of both on the same rows once labels arrive. A day
without a shadow partition is a result, not a failure, and writes nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import predictions_prefix, shadow_predictions_prefix, shadow_report_prefix
from mlsteps.contract.results import CompareShadowResult
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, add_day_argument

if TYPE_CHECKING:
    import pandas as pd

    from mlsteps.platform.lake import Lake

NO_SHADOW = "no shadow partition"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The scored day to compare.")


def run(args: argparse.Namespace) -> CompareShadowResult:
    return compare_shadow(StepContext.from_args(args), args.ds)


def compare_shadow(context: StepContext, day: dt.date) -> CompareShadowResult:
    """Compare the day's champion and shadow partitions and write the report."""
    from mlsteps.logic.shadow import compare_scores
    from mlsteps.reports.html import save_report
    from mlsteps.reports.shadow import build_report

    config, lake = context.config, context.lake
    model, row_id = config.model.registered_name, config.dataset.row_id
    shadow_prefix = shadow_predictions_prefix(model, day)
    shadow_manifest = lake.manifest(shadow_prefix)
    if shadow_manifest is None:
        return {
            "ds": day.isoformat(),
            "status": "skipped",
            "summary": f"{NO_SHADOW} for {model} on ds={day} (no challenger to shadow, or shadow off); "
            "nothing compared",
        }
    champion_prefix = predictions_prefix(model, day)
    champion_manifest = lake.require_manifest(
        champion_prefix,
        "champion predictions to compare the shadow with",
        f"score ds={day} with the champion first (ml_batch_scoring)",
    )
    champion = read_outputs(lake, champion_prefix, row_id)
    shadow = read_outputs(lake, shadow_prefix, row_id)
    joined = champion.merge(shadow, on=row_id, suffixes=("_champion", "_shadow"), validate="one_to_one")
    if joined.empty:
        raise StepError(f"the champion and shadow partitions of ds={day} share no {row_id}; rescore the day")
    champion_scores = joined["score_champion"].to_numpy(dtype="float64")
    shadow_scores = joined["score_shadow"].to_numpy(dtype="float64")
    comparison = compare_scores(
        champion_scores,
        shadow_scores,
        joined["decision_champion"].to_numpy(),
        joined["decision_shadow"].to_numpy(),
    ).as_dict()
    document: dict[str, Any] = {
        "ds": day.isoformat(),
        "model_name": model,
        "champion_version": str(champion_manifest["model_version"]),
        "shadow_version": str(shadow_manifest["model_version"]),
        "decision_threshold": float(
            champion_manifest.get("decision_threshold", config.scoring.decision_threshold)
        ),
        "unmatched_rows": len(champion) + len(shadow) - 2 * len(joined),
        "comparison": comparison,
    }
    document["summary"] = summary(document)
    uris = save_report(
        lake, shadow_report_prefix(day), build_report(document, champion_scores, shadow_scores), document
    )
    return {
        "ds": document["ds"],
        "status": "compared",
        "champion_version": document["champion_version"],
        "shadow_version": document["shadow_version"],
        "comparison": comparison,
        "report_html": uris["report_html"],
        "report_json": uris["report_json"],
        "summary": document["summary"],
    }


def read_outputs(lake: Lake, prefix: str, row_id: str) -> pd.DataFrame:
    """A committed partition's row ids, scores and decisions (only the files its manifest lists)."""
    return lake.read_table(lake.partition_files(prefix), columns=[row_id, "score", "decision"]).to_pandas()


def summary(document: dict[str, Any]) -> str:
    """One line for the UI."""
    c = document["comparison"]
    rank = "n/a" if c["spearman"] is None else f"{c['spearman']:.3f}"
    versions = f"shadow v{document['shadow_version']} vs champion v{document['champion_version']}"
    head = f"{versions} on {document['ds']}"
    return (
        f"{head}: {c['rows']} rows, Spearman {rank}, decisions agree on {c['decision_agreement']:.2%}, "
        f"flagged {c['shadow_flagged_rate']:.2%} vs {c['champion_flagged_rate']:.2%}"
    )
