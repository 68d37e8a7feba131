"""Pin the model version and split one day's scoring into shards, before any shard runs."""

from __future__ import annotations

import argparse
import datetime as dt

from mlsteps.contract.results import PlanScoringResult
from mlsteps.errors import StepError
from mlsteps.platform.context import StepContext, add_day_argument
from mlsteps.platform.scoring import (
    check_signature,
    input_columns,
    load_booster,
    resolve_challenger,
    resolve_model,
    scoring_input,
)

#: What ``--shadow`` plans when there is no challenger apart from the champion: no shards, no output.
NO_CHALLENGER = "no challenger to shadow"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_day_argument(parser, "The day to score.")
    parser.add_argument("--alias", default=None, help="Model alias to score with (default: scoring.alias).")
    parser.add_argument("--shard-count", type=int, default=1, help="Number of scoring shards (1-64).")
    parser.add_argument(
        "--shadow",
        action="store_true",
        help="Plan shadow scoring of the latest challenger (to shadow/predictions/, never read as the "
        "champion's); no challenger apart from the champion plans no shards, which is not a failure.",
    )


def run(args: argparse.Namespace) -> PlanScoringResult:
    context = StepContext.from_args(args)
    config = context.config
    if not 1 <= args.shard_count <= 64:
        raise StepError(f"--shard-count must be between 1 and 64, got {args.shard_count}")
    alias = args.alias or config.scoring.alias
    challenger = resolve_challenger(config) if args.shadow else None
    if args.shadow and challenger is None:
        return _nothing_to_shadow(config.model.registered_name, args.ds, args.shard_count)
    source = scoring_input(context.lake, config, args.ds)
    model = challenger or resolve_model(config, alias)
    columns = input_columns(context.lake, source.files[0])
    check_signature(load_booster(model), columns, context.lake.url(source.prefix))
    shards = [
        ["--model-version", model.version, "--shard-index", str(i), "--shard-count", str(args.shard_count)]
        for i in range(args.shard_count)
    ]
    role = " (shadow)" if args.shadow else ""
    return PlanScoringResult(
        model_name=model.name,
        model_version=model.version,
        alias=model.alias,
        rows=source.rows,
        shard_count=args.shard_count,
        shards=shards,
        shadow=args.shadow,
        summary=f"{source.rows} rows of ds={args.ds} to score with {model.name}@{model.alias} "
        f"= v{model.version} in {args.shard_count} shard(s){role}",
    )


def _nothing_to_shadow(model_name: str, day: dt.date, shard_count: int) -> PlanScoringResult:
    """A shadow plan without shards: the mapped score tasks, the commit and the comparison skip."""
    return PlanScoringResult(
        model_name=model_name,
        model_version="",
        alias="challenger",
        rows=0,
        shard_count=shard_count,
        shards=[],
        shadow=True,
        summary=f"{NO_CHALLENGER} on ds={day}: the latest trained version of {model_name} is the champion "
        "(or none was trained); nothing written",
    )
