"""Pin the model version and split one day's scoring into shards, before any shard runs."""

from __future__ import annotations

import argparse

from mlsteps.contract.results import PlanScoringResult
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, parse_day
from mlsteps.platform.scoring import (
    check_signature,
    input_columns,
    load_booster,
    resolve_model,
    scoring_input,
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ds", type=parse_day, required=True, help="The day to score (YYYY-MM-DD).")
    parser.add_argument("--alias", default=None, help="Model alias to score with (default: scoring.alias).")
    parser.add_argument("--shard-count", type=int, default=1, help="Number of scoring shards (1-64).")


def run(args: argparse.Namespace) -> PlanScoringResult:
    context = StepContext.from_args(args)
    config = context.config
    if not 1 <= args.shard_count <= 64:
        raise StepError(f"--shard-count must be between 1 and 64, got {args.shard_count}")
    alias = args.alias or config.scoring.alias
    source = scoring_input(context.lake, config, args.ds)
    model = resolve_model(config, alias)
    columns = input_columns(context.lake, source.files[0])
    check_signature(load_booster(model), columns, context.lake.url(source.prefix))
    shards = [
        ["--model-version", model.version, "--shard-index", str(i), "--shard-count", str(args.shard_count)]
        for i in range(args.shard_count)
    ]
    return PlanScoringResult(
        model_name=model.name,
        model_version=model.version,
        alias=alias,
        rows=source.rows,
        shard_count=args.shard_count,
        shards=shards,
        summary=f"{source.rows} rows of ds={args.ds} to score with {model.name}@{alias} "
        f"= v{model.version} in {args.shard_count} shard(s)",
    )
