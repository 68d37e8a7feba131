"""``make bench``: every measurement side by side in one run; prints a summary and saves JSON.

Settings come from the environment (defaults in brackets):
``BENCH_NAME`` [bench-<time>], ``BENCH_SECTIONS`` [startup,parse,training,example,scoring,drift],
``BENCH_SIZES`` [1000000,5000000,10000000], ``BENCH_SEED_MAX_ROWS`` [5000000],
``BENCH_SCORING_REPEATS`` [1], ``BENCH_SCORING_MODELS`` [pipeline,full], ``BENCH_FULL_TREES`` [500],
``BENCH_FULL_DEPTH`` [6], ``BENCH_PARSE_REPEATS`` [5],
``BENCH_HELP_REPEATS`` [3], ``BENCH_TRAIN_ROWS_PER_DAY`` [5000], ``BENCH_TRAIN_REPEATS`` [3],
``BENCH_DRIFT_ROWS`` [1000000], ``BENCH_DRIFT_FEATURES`` [30], ``BENCH_DRIFT_SEEDS`` [5],
``BENCH_DRIFT_BASELINE_SEEDS`` [1], ``BENCH_DISTRIBUTED_SIZES`` [200000,1000000,3000000],
``BENCH_DISTRIBUTED_COLUMNS`` [40], ``BENCH_DASK_WORKERS`` [2], ``BENCH_DASK_MEMORY_LIMIT`` [1GiB],
``BENCH_DISTRIBUTED_ROUNDS`` [50], ``BENCH_KEEP_WORKDIR`` [0].
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from repotools.local_airflow import stop_on_sigterm

from bench import distributed, drift, parse, scoring, startup, training
from bench.common import REPO_ROOT, env_int, env_sizes, log, machine_info
from bench.report import summary_rows, table
from bench.workspace import FULL_MODEL, PIPELINE_MODEL, Workspace

SECTIONS = ("startup", "parse", "training", "example", "scoring", "drift", "distributed")
RESULTS = REPO_ROOT / "bench" / "results"


def settings() -> dict[str, Any]:
    """Every knob of this run, read once from the environment."""
    sections = [
        s.strip() for s in os.environ.get("BENCH_SECTIONS", ",".join(SECTIONS)).split(",") if s.strip()
    ]
    unknown = sorted(set(sections) - set(SECTIONS))
    if unknown:
        raise SystemExit(f"ERROR: BENCH_SECTIONS names unknown section(s) {unknown}; choose from {SECTIONS}")
    models = os.environ.get("BENCH_SCORING_MODELS", "pipeline,full").split(",")
    return {
        "name": os.environ.get("BENCH_NAME") or f"bench-{dt.datetime.now():%Y%m%d-%H%M%S}",
        "sections": sections,
        "sizes": env_sizes("BENCH_SIZES", "1000000,5000000,10000000"),
        "seed_max_rows": env_int("BENCH_SEED_MAX_ROWS", 5_000_000),
        "scoring_repeats": env_int("BENCH_SCORING_REPEATS", 1),
        "scoring_models": {m: {"pipeline": PIPELINE_MODEL, "full": FULL_MODEL}[m] for m in models if m},
        "full_trees": env_int("BENCH_FULL_TREES", 500),
        "full_depth": env_int("BENCH_FULL_DEPTH", 6),
        "parse_repeats": env_int("BENCH_PARSE_REPEATS", 5),
        "help_repeats": env_int("BENCH_HELP_REPEATS", 3),
        "train_rows_per_day": env_int("BENCH_TRAIN_ROWS_PER_DAY", 5_000),
        "train_customers": env_int("BENCH_TRAIN_CUSTOMERS", 2_000),
        "train_repeats": env_int("BENCH_TRAIN_REPEATS", 3),
        "drift_rows": env_int("BENCH_DRIFT_ROWS", 1_000_000),
        "drift_features": env_int("BENCH_DRIFT_FEATURES", 30),
        "drift_seeds": env_int("BENCH_DRIFT_SEEDS", 5),
        "drift_baseline_seeds": env_int("BENCH_DRIFT_BASELINE_SEEDS", 1),
        "distributed_sizes": env_sizes("BENCH_DISTRIBUTED_SIZES", "200000,1000000,3000000"),
        "distributed_columns": env_int("BENCH_DISTRIBUTED_COLUMNS", 40),
        "dask_workers": env_int("BENCH_DASK_WORKERS", 2),
        "dask_memory_limit": os.environ.get("BENCH_DASK_MEMORY_LIMIT") or "1GiB",
        "distributed_rounds": env_int("BENCH_DISTRIBUTED_ROUNDS", 50),
        "keep_workdir": bool(env_int("BENCH_KEEP_WORKDIR", 0)),
    }


def run_sections(workspace: Workspace, knobs: dict[str, Any]) -> dict[str, Any]:
    """Run the chosen sections in order; training and scoring share one snapshot and model."""
    results: dict[str, Any] = {}
    wanted = knobs["sections"]
    if "startup" in wanted:
        results["startup"] = _timed(startup.run, workspace, knobs["help_repeats"])
    if "parse" in wanted:
        results["parse"] = _timed(parse.run, workspace, knobs["parse_repeats"])
    if "training" in wanted or "scoring" in wanted:
        log("training set: generated events through the real features code")
        snapshot = workspace.case(
            "bench.workspace:write_training_set_here",
            rows_per_day=knobs["train_rows_per_day"],
            customers=knobs["train_customers"],
            seed=7,
        ).result
        results["training"] = _timed(
            training.run, workspace, snapshot, knobs["train_repeats"], "training" in wanted
        )
        workspace.case("bench.workspace:set_champion", version=results["training"]["ours"]["model_version"])
    if "example" in wanted:
        results["example"] = _timed(training.run_example, workspace)
    if "scoring" in wanted:
        if "full" in knobs["scoring_models"]:
            log(
                f"scoring: registering the full-size model "
                f"({knobs['full_trees']} trees, depth {knobs['full_depth']})"
            )
            results["full_model"] = workspace.case(
                "bench.workspace:register_full_model",
                model=FULL_MODEL,
                trees=knobs["full_trees"],
                max_depth=knobs["full_depth"],
            ).result
        results["scoring"] = _timed(
            scoring.run,
            workspace,
            knobs["sizes"],
            knobs["seed_max_rows"],
            knobs["scoring_repeats"],
            knobs["scoring_models"],
        )
        ours_runs = [e["ours"] for m in results["scoring"]["models"].values() for e in m["sizes"]]
        results["score_imports"] = startup.score_imports(ours_runs[-1]["modules"])
    if "drift" in wanted:
        results["drift"] = _timed(
            drift.run,
            workspace,
            knobs["drift_rows"],
            knobs["drift_features"],
            knobs["drift_seeds"],
            knobs["drift_baseline_seeds"],
        )
    if "distributed" in wanted:
        results["distributed"] = _timed(
            distributed.run,
            workspace,
            knobs["distributed_sizes"],
            knobs["distributed_columns"],
            knobs["dask_workers"],
            knobs["dask_memory_limit"],
            knobs["distributed_rounds"],
        )
    return results


def _timed(function: Any, *arguments: Any) -> dict[str, Any]:
    started = time.perf_counter()
    result = dict(function(*arguments))
    result["section_seconds"] = round(time.perf_counter() - started, 1)
    return result


def main() -> None:
    stop_on_sigterm()  # a stopped run still stops its mlflow server and removes its workspace
    knobs = settings()
    started = time.perf_counter()
    root = Path(tempfile.mkdtemp(prefix="mlsteps-bench-"))
    log(f"workspace {root}; results will be bench/results/{knobs['name']}.json")
    document: dict[str, Any] = {
        "name": knobs["name"],
        "started_at": dt.datetime.now(dt.UTC).isoformat(),
        "machine": machine_info(),
        "settings": {k: v for k, v in knobs.items() if k != "name"},
    }
    try:
        document["results"] = run_sections(Workspace(root), knobs)
    finally:
        if not knobs["keep_workdir"]:
            shutil.rmtree(root, ignore_errors=True)
    document["load_average_at_end"] = [round(value, 2) for value in os.getloadavg()]
    document["total_seconds"] = round(time.perf_counter() - started, 1)
    document["summary"] = summary_rows(document["results"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    target = RESULTS / f"{knobs['name']}.json"
    target.write_text(json.dumps(document, indent=2, default=str))
    machine = document["machine"]
    print()
    cpu = f"{machine['cpu_model']}, {machine['cores']} cores, {machine['memory_gb']} GB"
    load = (
        f"load average {machine['load_average_at_start']} at start, {document['load_average_at_end']} at end"
    )
    print(f"{cpu}, Python {machine['python']}; {load}")
    idle = machine["idle_memory"]
    print(
        f"memory left idle: a heap pass took {idle['warm_ms']} ms back to back and "
        f"{idle['idle_ms']} ms after {idle['idle_seconds']:g} s asleep ({idle['ratio']}x)"
    )
    print(table(document["summary"]))
    print(f"\nsaved {target.relative_to(REPO_ROOT)} in {document['total_seconds']:.0f} s")


if __name__ == "__main__":
    main()
