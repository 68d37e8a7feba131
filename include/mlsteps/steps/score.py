"""Score one day's feature rows with the pinned model, streaming, into a committed predictions partition.

Memory stays bounded: the input is read one row group and one batch at a time without
pre-buffering (one batch read ahead while the last is predicted), and each batch's small output
(keys, score, decision) becomes its own part.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from mlsteps.contract.results import ScoreResult
from mlsteps.platform.context import StepContext, add_day_argument
from mlsteps.platform.scoring import (
    PinnedModel,
    load_model,
    resolve_challenger,
    resolve_model,
    score_units,
    scoring_input,
    shard_units,
    staging_for,
    write_receipt,
)

if TYPE_CHECKING:
    from mlsteps.contract.config import PipelineConfig


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The day to score.")
    parser.add_argument("--alias", default=None, help="Model alias to score with (default: scoring.alias).")
    parser.add_argument("--model-version", default=None, help="Pinned version (set by plan-scoring).")
    parser.add_argument("--shard-index", type=int, default=0, help="This shard (0-based).")
    parser.add_argument("--shard-count", type=int, default=1, help="Shards in all; 1 scores and commits.")
    parser.add_argument(
        "--defer-commit",
        action="store_true",
        help="Leave publishing to commit-predictions (what the DAG does, for any shard count).",
    )
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="Score the challenger (the pinned version, else the latest) into shadow/predictions/.",
    )
    parser.add_argument(
        "--batch-rows", type=int, default=None, help="Rows per batch (default: scoring.batch_rows)."
    )


def run(args: argparse.Namespace) -> ScoreResult:
    import pyarrow.compute as pc

    from mlsteps.errors import StepError

    context = StepContext.from_args(args)
    config = context.config
    if not 0 <= args.shard_index < args.shard_count <= 1024:
        raise StepError(
            f"--shard-index {args.shard_index} must be in [0, --shard-count {args.shard_count}) ≤ 1024"
        )
    batch_rows = args.batch_rows or config.scoring.batch_rows
    source = scoring_input(context.lake, config, args.ds)
    started, arrived = time.perf_counter(), list[float]()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlsteps-model") as registry:
        # The registry calls and the model's download run while the first batches are read.
        pinning = registry.submit(
            scoring_model, config, args.alias or config.scoring.alias, args.model_version, args.shadow
        )
        loading = registry.submit(lambda: load_model(pinning.result()))
        loading.add_done_callback(lambda _: arrived.append(time.perf_counter() - started))
        staging = staging_for(context.lake, config, args.ds, context.run_id, shadow=args.shadow)
        rows = positives = 0
        units = shard_units(context.lake, source.files, args.shard_index, args.shard_count)
        for scored in score_units(context.lake, config, loading, units, batch_rows):
            name = f"shard-{args.shard_index:05d}-{scored.unit_number:05d}-{scored.batch_number:05d}.parquet"
            staging.write_parquet(name, scored.table, unique_columns=[config.dataset.row_id])
            rows += scored.table.num_rows
            positives += int(pc.sum(scored.table.column("decision")).as_py() or 0)
        model = pinning.result()
    details = {"model_version": model.version, "rows": rows, "positives": positives}
    write_receipt(staging, args.shard_index, args.shard_count, details)
    result: ScoreResult = {
        "model_name": model.name,
        "model_version": model.version,
        "shard_index": args.shard_index,
        "rows": rows,
        "seconds": round(time.perf_counter() - started, 3),
        "model_seconds": round(arrived[0], 3),
        "summary": f"shard {args.shard_index + 1}/{args.shard_count}: {rows} rows scored with "
        f"{model.name} v{model.version}",
    }
    if args.shard_count == 1 and not args.defer_commit:
        from mlsteps.steps.score_commit import commit_predictions

        result = {**result, **commit_predictions(context, args.ds, model, 1, shadow=args.shadow)}
    return result


def scoring_model(config: PipelineConfig, alias: str, version: str | None, shadow: bool) -> PinnedModel:
    """The champion (or ``alias``) pinned to ``version``; with ``shadow``, the challenger.

    Raises:
        StepError: Shadow scoring without a pinned version finds no challenger apart from the champion
            (``plan-scoring --shadow`` plans no shards then, so the DAG never gets here).
    """
    from mlsteps.errors import StepError
    from mlsteps.platform.mlflow_registry import CHALLENGER

    if not shadow:
        return resolve_model(config, alias, version)
    if version is not None:
        return resolve_model(config, CHALLENGER, version)
    challenger = resolve_challenger(config)
    if challenger is None:
        raise StepError(
            f"no challenger to shadow for {config.model.registered_name}: the latest trained version is the "
            "champion (or none was trained); run plan-scoring --shadow, which skips cleanly"
        )
    return challenger
