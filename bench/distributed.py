"""Distributed training: single-node XGBoost against xgboost.dask on a LocalCluster, at growing sizes.

Each size is a wide synthetic snapshot (the config's first categorical column, ``columns`` numeric
ones, the config's label, row id and event time) committed like a real one. Both engines train on
it with the config's parameters (``rounds`` boosting rounds at most, early stopping, refit) and are
judged on the same holdout. Reported: wall time of the fit, peak RSS of the single process against
the peak RSS of each Dask worker (and of the driver), holdout ROC-AUC, and whether the train split's
in-memory size exceeds one worker's ``memory_limit``.
"""

from __future__ import annotations

import time
from typing import Any

from bench.common import log
from bench.workspace import Workspace, config

RUN = "distributed-{rows}"


def settings_for(workers: int, memory_limit: str, rounds: int) -> Any:
    """The workspace's config with this benchmark's Dask cluster and boosting rounds."""
    base = config()
    dask = base.model.dask.model_copy(update={"workers": workers, "memory_limit": memory_limit})
    model = base.model.model_copy(update={"dask": dask, "num_boost_round": rounds, "calibration": "none"})
    return base.model_copy(update={"model": model})


# --- cases (each runs in its own fresh interpreter) ----------------------------------------------


def write_snapshot(rows: int, columns: int, seed: int) -> dict[str, Any]:
    """Commit a synthetic snapshot of ``rows`` rows (last 10% of the time range as holdout)."""
    import numpy as np
    import pandas as pd

    from mlsteps.platform.datasets import save_training_set
    from mlsteps.platform.lake import Lake

    dataset = config().dataset
    category = next(n for n, spec in dataset.columns.items() if spec.type == "categorical")
    values = list(dataset.columns[category].categories or [])
    rng = np.random.default_rng(seed)
    numeric = {f"x{index:02d}": rng.normal(size=rows) for index in range(columns)}
    codes = rng.integers(0, len(values), size=rows)
    signal = sum(numeric[f"x{index:02d}"] * (0.6 / (1 + index)) for index in range(columns))
    signal = signal + (codes % 3 - 1) * 0.8
    labels = rng.random(rows) < 1 / (1 + np.exp(-(signal - 3.0)))
    times = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta(np.sort(rng.random(rows)) * 28, unit="D")
    frame = pd.DataFrame(
        {
            dataset.row_id: np.char.add("r", np.arange(rows).astype(str)),
            dataset.event_time: times,
            category: pd.Categorical.from_codes(codes, categories=values).astype(str),
            **numeric,
            dataset.label: labels,
        }
    )
    cut = int(rows * 0.9)
    train, holdout = frame.iloc[:cut].reset_index(drop=True), frame.iloc[cut:].reset_index(drop=True)
    metadata = {
        "feature_columns": [category, *numeric],
        "categorical_columns": [category],
        "label": dataset.label,
        "row_id": dataset.row_id,
        "entity_keys": [],
        "event_time": dataset.event_time,
    }
    save_training_set(Lake(), RUN.format(rows=rows), train, holdout, metadata)
    return {
        "rows": rows,
        "train_rows": len(train),
        "train_in_memory_mib": round(train.memory_usage(deep=True).sum() / 2**20, 1),
        "positive_share": round(float(labels.mean()), 4),
    }


def single(rows: int, workers: int, memory_limit: str, rounds: int) -> dict[str, Any]:
    """Single-node training (the default engine) on the snapshot; its holdout ROC-AUC."""
    import sklearn.metrics

    from mlsteps.logic import training
    from mlsteps.platform.datasets import load_training_set
    from mlsteps.platform.lake import Lake

    settings = settings_for(workers, memory_limit, rounds)
    started = time.perf_counter()
    snapshot = load_training_set(Lake(), RUN.format(rows=rows))
    fit = training.train_model(training.training_splits(snapshot, settings), snapshot, settings, "cpu", 0)
    wall = time.perf_counter() - started
    scores = training.predict(fit.booster, snapshot.holdout, settings)
    auc = sklearn.metrics.roc_auc_score(snapshot.holdout[snapshot.label].astype(int), scores)
    return {
        "read_and_fit_seconds": round(wall, 2),
        "best_iteration": fit.best_iteration,
        "holdout_roc_auc": round(float(auc), 5),
    }


def distributed(rows: int, workers: int, memory_limit: str, rounds: int) -> dict[str, Any]:
    """xgboost.dask on a LocalCluster: the workers read and train; the holdout is scored here."""
    import sklearn.metrics

    from mlsteps.logic import training
    from mlsteps.platform.dask_engine import dask_client, read_split, train_on_dask
    from mlsteps.platform.lake import Lake

    settings = settings_for(workers, memory_limit, rounds)
    lake = Lake()
    manifest = lake.manifest(f"training/{RUN.format(rows=rows)}")
    assert manifest is not None
    started = time.perf_counter()
    with dask_client(settings.model.dask, "local") as client:
        ready = time.perf_counter()
        trained = train_on_dask(client, lake, manifest, settings, "cpu")
        fitted = time.perf_counter()
    holdout = read_split(lake, manifest, "holdout").compute(scheduler="sync")  # the holdout alone
    scores = training.predict(trained.fit.booster, holdout, settings)
    auc = sklearn.metrics.roc_auc_score(holdout[manifest["label"]].astype(int), scores)
    peaks = sorted(round(value / 2**20, 1) for value in trained.worker_peak_rss.values())
    return {
        "cluster_start_seconds": round(ready - started, 2),
        "read_and_fit_seconds": round(fitted - ready, 2),
        "best_iteration": trained.fit.best_iteration,
        "holdout_roc_auc": round(float(auc), 5),
        "worker_peak_rss_mib": peaks,
    }


# --- the section ----------------------------------------------------------------------------------


def run(
    workspace: Workspace, sizes: list[int], columns: int, workers: int, memory_limit: str, rounds: int
) -> dict[str, Any]:
    """Both engines at each size, each in its own process (peak RSS from ``wait4``)."""
    from mlsteps.contract.config import memory_bytes

    limit_mib = round(memory_bytes(memory_limit) / 2**20, 1)
    entries = []
    for rows in sizes:
        log(f"distributed: {rows:,} rows x {columns} numeric columns; single node, then {workers} workers")
        written = workspace.case("bench.distributed:write_snapshot", rows=rows, columns=columns, seed=7)
        snapshot = written.result
        knobs = {"rows": rows, "workers": workers, "memory_limit": memory_limit, "rounds": rounds}
        alone = workspace.case("bench.distributed:single", **knobs)
        spread = workspace.case("bench.distributed:distributed", **knobs)
        entries.append(
            {
                "snapshot": snapshot,
                "exceeds_worker_memory_limit": snapshot["train_in_memory_mib"] > limit_mib,
                "single": {**alone.result, "peak_rss_mb": alone.peak_rss_mb},
                "dask": {**spread.result, "driver_peak_rss_mb": spread.peak_rss_mb},
                "auc_difference": round(
                    spread.result["holdout_roc_auc"] - alone.result["holdout_roc_auc"], 5
                ),
            }
        )
    return {
        "workers": workers,
        "memory_limit": memory_limit,
        "memory_limit_mib": limit_mib,
        "columns": columns,
        "rounds": rounds,
        "sizes": entries,
        "gpu": "not measured: no GPU machine was available",
    }
