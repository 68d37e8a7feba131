"""Scoring: the real ``score`` step against its two limits (bare predict, bare I/O) and the seed pattern.

Every case works on the same committed feature partition with the same registered model version.
Each runs in its own fresh interpreter; its peak RSS comes from ``wait4``. The timed work starts
after the libraries are imported and includes everything else: resolving and loading the model,
reading, encoding, predicting and writing; ``score`` talks to an ``mlflow server`` over HTTP, as a
deployed step does. Bare predict times ``inplace_predict`` alone; bare I/O
times reading the columns ``score`` reads and writing the files it writes, with pyarrow alone.
The goal is ours at 0.8x or more of the slower of the two, the real limit of a streaming scorer.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from repotools import local_airflow

from bench.common import child_env, cpu_seconds, current_rss_mb, log, ratio
from bench.workspace import Workspace, config, scoring_day, write_scoring_partitions

HEAVY = ("feast", "evidently", "sklearn", "optuna", "matplotlib", "boto3", "scipy")


def _partition_dir(ds: str) -> Path:
    from mlsteps.contract.layout import features_prefix, partition
    from mlsteps.platform.lake import Lake

    lake = Lake()
    return Path(lake.path(partition(features_prefix(config()), ds)))


def _model_uri() -> str:
    from mlflow import MlflowClient

    name = config().model.registered_name
    version = MlflowClient().get_model_version_by_alias(name, "champion").version
    return f"models:/{name}/{version}"


# --- cases (each runs in its own fresh interpreter) ----------------------------------------------


def ours(ds: str, run_id: str) -> dict[str, Any]:
    """``python -m mlsteps score --ds <ds>`` (its ``main``), after importing what it imports anyway."""
    started = time.perf_counter()
    import mlflow.xgboost  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401
    import xgboost  # noqa: F401

    import mlsteps.steps.score  # noqa: F401
    from mlsteps.cli import main

    _import_tracking_store()
    baseline_rss = current_rss_mb()
    result_file = Path(tempfile.mkdtemp()) / "score.json"
    os.environ["ML_STEP_RESULT"] = str(result_file)
    imported, cpu = time.perf_counter(), cpu_seconds()
    code = main(["score", "--ds", ds, "--dag-id", "bench", "--run-id", run_id])
    finished, cpu = time.perf_counter(), cpu_seconds() - cpu
    if code != 0:
        raise RuntimeError(f"the score step exited {code}")
    step = json.loads(result_file.read_text())
    modules = sorted({name.split(".")[0] for name in sys.modules})
    return {
        "rows": step["rows"],
        "work_seconds": round(finished - imported, 3),
        "cpu_seconds": round(cpu, 3),
        "import_seconds": round(imported - started, 3),
        "step_seconds": step["seconds"],
        "model_seconds": step["model_seconds"],
        "baseline_rss_mb": baseline_rss,
        "model_version": step["model_version"],
        "files_written": step.get("files"),
        "heavy_modules": [name for name in HEAVY if name in modules],
        "modules": modules,
    }


def _import_tracking_store() -> None:
    """Import MLflow's REST stores before the clock: ``ours`` talks to an ``mlflow server`` over HTTP
    (:func:`mlflow_server`), and the first client would import them inside the timed work."""
    import mlflow.store.model_registry.rest_store  # noqa: F401
    import mlflow.store.tracking.rest_store  # noqa: F401


def seed(ds: str, output: str) -> dict[str, Any]:
    """The seed pattern: read the whole input, load the model through pyfunc, predict, write every column.

    ``pyfunc``'s own ``predict`` cannot take this model's categorical input: its XGBoost wrapper
    builds ``DMatrix(data)`` without ``enable_categorical`` (and schema enforcement refuses a
    category dtype). So the wrapper's two calls run here as it makes them, with that one flag set;
    skipping schema enforcement only makes the baseline faster.
    """
    started = time.perf_counter()
    import mlflow.pyfunc
    import pandas as pd
    import pyarrow.parquet  # noqa: F401
    import xgboost as xgb

    from mlsteps.platform.datasets import model_input

    imported = time.perf_counter()
    baseline_rss = current_rss_mb()
    frame = pd.read_parquet(_partition_dir(ds))
    model = mlflow.pyfunc.load_model(_model_uri())
    booster = model.get_raw_model()
    encoded = model_input(frame, list(booster.feature_names or []), config())
    frame["score"] = booster.predict(xgb.DMatrix(encoded, enable_categorical=True), validate_features=True)
    frame["decision"] = frame["score"] >= config().scoring.decision_threshold
    frame.to_parquet(output)
    finished = time.perf_counter()
    return {
        "rows": len(frame),
        "work_seconds": round(finished - imported, 3),
        "import_seconds": round(imported - started, 3),
        "baseline_rss_mb": baseline_rss,
        "output_bytes": os.path.getsize(output),
    }


def bare(ds: str) -> dict[str, Any]:
    """The compute limit: ``inplace_predict`` alone on the whole input, already read and encoded in memory."""
    import mlflow.xgboost
    import pandas as pd

    from mlsteps.platform.datasets import model_input

    booster = mlflow.xgboost.load_model(_model_uri())
    features = list(booster.feature_names or [])
    encoded = model_input(pd.read_parquet(_partition_dir(ds), columns=features), features, config())
    booster.inplace_predict(encoded.head(1000), validate_features=False)  # first-call set-up off the clock
    started = time.perf_counter()
    scores = booster.inplace_predict(encoded, validate_features=False)
    seconds = time.perf_counter() - started
    return {
        "rows": len(scores),
        "work_seconds": round(seconds, 3),
        "trees": booster.num_boosted_rounds(),
        "features": len(features),
    }


def bare_io(ds: str, output: str) -> dict[str, Any]:
    """The I/O limit: read what ``score`` reads and write what it writes, with pyarrow alone, no prediction.

    The same columns (keys and the model's features), row group by row group in ``scoring.batch_rows``
    batches without pre-buffering; for each batch one Parquet file of keys, ``score`` (float32) and
    ``decision``, zstd with the lake's row-group size and no dictionary for the row id, as the staging
    area writes them. The scores are the model's own for the first batch, predicted off the clock and
    reused, so the files compress as the real ones do. Not timed: loading the model and listing the files.
    """
    import mlflow.xgboost
    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlsteps.platform.lake import Lake
    from mlsteps.platform.scoring import encode_batch, scoring_input

    settings, lake = config(), Lake()
    booster = mlflow.xgboost.load_model(_model_uri())
    features = list(booster.feature_names or [])
    dataset = settings.dataset
    keys = [dataset.row_id, *dataset.entity_keys, dataset.event_time]
    batch_rows = settings.scoring.batch_rows
    paths = [
        lake.path(relative) for relative in scoring_input(lake, settings, dt.date.fromisoformat(ds)).files
    ]
    first = next(pq.ParquetFile(paths[0]).iter_batches(batch_size=batch_rows, columns=features))
    scores = pa.array(booster.inplace_predict(encode_batch(first, features, settings)), pa.float32())
    decisions = pa.array(scores.to_numpy() >= settings.scoring.decision_threshold)
    dictionary = [name for name in [*keys, "score", "decision"] if name != dataset.row_id]
    target = Path(output)
    target.mkdir(parents=True, exist_ok=True)
    rows = files = 0
    started, cpu = time.perf_counter(), cpu_seconds()
    for unit, path in enumerate(paths):
        parquet = pq.ParquetFile(path, pre_buffer=False)
        for group in range(parquet.metadata.num_row_groups):
            batches = parquet.iter_batches(
                batch_size=batch_rows, row_groups=[group], columns=[*keys, *features]
            )
            for number, batch in enumerate(batches):
                size = batch.num_rows
                table = pa.table(
                    {
                        **{key: batch.column(key) for key in keys},
                        "score": scores.slice(0, size),
                        "decision": decisions.slice(0, size),
                    }
                )
                pq.write_table(
                    table,
                    target / f"part-{unit:05d}-{group:05d}-{number:05d}.parquet",
                    compression="zstd",
                    row_group_size=lake.row_group_rows,
                    use_dictionary=dictionary,
                )
                rows, files = rows + size, files + 1
    seconds, cpu = time.perf_counter() - started, cpu_seconds() - cpu
    written = sum(path.stat().st_size for path in target.iterdir())
    shutil.rmtree(target)
    return {
        "rows": rows,
        "work_seconds": round(seconds, 3),
        "cpu_seconds": round(cpu, 3),
        "files_written": files,
        "output_bytes": written,
    }


# --- the section ----------------------------------------------------------------------------------


def run(
    workspace: Workspace,
    sizes: list[int],
    seed_max_rows: int,
    repeats: int,
    models: dict[str, str],
) -> dict[str, Any]:
    """Score every size with every model and every contender, interleaved so load spikes hit all.

    ``models`` maps a label to a registered model name whose ``champion`` is scored.
    """
    log(f"scoring: writing feature partitions of {sizes} rows")
    written = workspace.case("bench.scoring:prepare", sizes=sizes).result
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in models}
    with mlflow_server(workspace) as tracking_uri:
        for index, size in enumerate(sizes):
            entries = _score_size(workspace, index, size, models, repeats, seed_max_rows, tracking_uri)
            for label, entry in entries.items():
                results[label].append(entry)
    shutil.rmtree(workspace.root / "lake" / "predictions", ignore_errors=True)
    return {
        "partitions": written,
        "seed_max_rows": seed_max_rows,
        "repeats": repeats,
        "tracking": "score: an mlflow server over HTTP; the other cases: the workspace's SQLite store",
        "models": {
            label: {"registered_name": models[label], "sizes": results[label], **_goals(results[label])}
            for label in models
        },
    }


def _score_size(
    workspace: Workspace,
    index: int,
    size: int,
    models: dict[str, str],
    repeats: int,
    seed_max_rows: int,
    tracking_uri: str,
) -> dict[str, dict[str, Any]]:
    """Every contender on one size, for every model (by label); `ours` talks to MLflow at `tracking_uri`."""
    ds = scoring_day(index).isoformat()
    entries: dict[str, dict[str, Any]] = {}
    for label, model in models.items():
        entry: dict[str, Any] = {"rows": size, "ds": ds}
        for attempt in range(repeats):
            log(f"scoring {size:,} rows with the {label} model, attempt {attempt + 1}/{repeats}")
            _measure(entry, "bare", workspace.case("bench.scoring:bare", model=model, ds=ds))
            output = str(workspace.root / f"bare-io-{size}")
            _measure(
                entry,
                "bare_io",
                workspace.case("bench.scoring:bare_io", model=model, ds=ds, output=output),
            )
            run_id = f"bench-{model}-{size}-{attempt}"
            server = {"MLFLOW_TRACKING_URI": tracking_uri}
            case = workspace.case("bench.scoring:ours", model=model, environment=server, ds=ds, run_id=run_id)
            _measure(entry, "ours", case)
            if size <= seed_max_rows:
                output = str(workspace.root / f"seed-{size}.parquet")
                _measure(
                    entry, "seed", workspace.case("bench.scoring:seed", model=model, ds=ds, output=output)
                )
                Path(output).unlink(missing_ok=True)
        _summarize(entry)
        entries[label] = entry
        log(f"scoring {size:,} ({label} model): {_line(entry)}")
    return entries


@contextlib.contextmanager
def mlflow_server(workspace: Workspace) -> Iterator[str]:
    """An ``mlflow server`` over the workspace's store, for ``score`` to talk to as deployed (HTTP).

    With a database URI, the MLflow client itself opens the store: SQLAlchemy and Alembic imports and
    a schema check on every run (about 0.3 s, seen in a profile of the step), which a step never
    pays against a server. The server runs for the whole section, started before any clock.
    """
    backend = workspace.env()["MLFLOW_TRACKING_URI"]
    artifacts = ["--default-artifact-root", str(workspace.root / "mlruns")]
    with local_airflow.mlflow_server(backend, artifacts, child_env(), workspace.root) as url:
        yield url


#: The scoring goal: ours at this share or more of the slower of bare predict and bare I/O.
LIMIT_SHARE = 0.8


def _goals(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Throughput against the limit and the seed, peak RSS and its growth from the smallest to the largest."""
    smallest, largest = entries[0], entries[-1]
    at_5m = next((e for e in entries if e["rows"] == 5_000_000 and "seed" in e), None)
    growth = ratio(
        largest["ours"]["peak_rss_mb"] - smallest["ours"]["peak_rss_mb"], smallest["ours"]["peak_rss_mb"]
    )
    worst_vs_limit = min(e["ours_vs_limit"] for e in entries)
    peak = max(e["ours"]["peak_rss_mb"] for e in entries)
    return {
        "ours_vs_limit_min": worst_vs_limit,
        "ours_vs_bare_min": min(e["ours_vs_bare"] for e in entries),
        "ours_vs_seed_at_5m": at_5m["ours_vs_seed"] if at_5m else None,
        "ours_peak_rss_mb_max": peak,
        "ours_peak_rss_growth": growth,
        "goals": {
            f">= {LIMIT_SHARE}x the slower of bare predict and bare I/O": worst_vs_limit >= LIMIT_SHARE,
            ">= 4x seed at 5M": bool(at_5m and at_5m["ours_vs_seed"] >= 4) if at_5m else None,
            "peak RSS < 1 GB": peak < 1024,
            "RSS growth < 20% smallest to largest": growth is not None and growth < 0.2,
        },
    }


def prepare(sizes: list[int]) -> dict[str, Any]:
    return write_scoring_partitions(sizes, seed=11)


def _measure(entry: dict[str, Any], name: str, run: Any) -> None:
    """Keep the fastest attempt's figures (least disturbed by other jobs) and every attempt's time."""
    result = {**run.result, "peak_rss_mb": run.peak_rss_mb, "process_wall_s": run.wall_s}
    result["rows_per_s"] = round(result["rows"] / result["work_seconds"]) if result["work_seconds"] else None
    attempts = entry.get(name, {}).get("attempts", []) + [result["work_seconds"]]
    best = entry.get(name)
    if best is None or result["work_seconds"] < best["work_seconds"]:
        best = result
    entry[name] = {**best, "attempts": attempts}


def _summarize(entry: dict[str, Any]) -> None:
    """Ratios of the same run: ours against each limit and against the slower of the two (the goal)."""
    ours, bare, bare_io = entry["ours"], entry["bare"], entry["bare_io"]
    entry["ours_vs_bare"] = ratio(ours["rows_per_s"], bare["rows_per_s"])
    entry["ours_vs_bare_io"] = ratio(ours["rows_per_s"], bare_io["rows_per_s"])
    entry["limit"] = "bare predict" if bare["rows_per_s"] <= bare_io["rows_per_s"] else "bare I/O"
    entry["limit_rows_per_s"] = min(bare["rows_per_s"], bare_io["rows_per_s"])
    entry["ours_vs_limit"] = ratio(ours["rows_per_s"], entry["limit_rows_per_s"])
    entry["goal_met"] = entry["ours_vs_limit"] is not None and entry["ours_vs_limit"] >= LIMIT_SHARE
    if "seed" in entry:
        entry["ours_vs_seed"] = ratio(ours["rows_per_s"], entry["seed"]["rows_per_s"])
        entry["seed_vs_bare"] = ratio(entry["seed"]["rows_per_s"], bare["rows_per_s"])


def _line(entry: dict[str, Any]) -> str:
    parts = [
        f"{name} {entry[name]['rows_per_s']:,} rows/s"
        for name in ("bare", "bare_io", "ours", "seed")
        if name in entry
    ]
    limit = f"; ours {entry['ours_vs_limit']}x of the slower ({entry['limit']})"
    return ", ".join(parts) + limit + f" (model arrived after {entry['ours']['model_seconds']} s)"
