"""Drift: the real ``drift`` step against Evidently's default ``DataDriftPreset`` on the full data.

Each seed writes a reference of ``rows`` rows and a day of ``rows`` rows with ``features`` columns
(numeric, boolean and categorical), and shifts a seeded choice of known columns in the day. Ours
runs ``python -m mlsteps drift`` (its ``main``) on committed partitions: sampling while streaming,
stat tests, HTML report and MLflow run. The baseline reads both sides whole and runs the preset.
Timed work starts after imports; extra RSS is the peak over the RSS right after imports.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import current_rss_mb, log, ratio
from bench.workspace import Workspace, config

FIRST_DAY = dt.date(2027, 1, 1)
NUMERIC_SHAPES = ("normal", "lognormal", "exponential", "uniform", "poisson")
CATEGORIES = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
#: Drifted columns per seed, by kind.
DRIFTED = {"numeric": 3, "boolean": 1, "categorical": 2}
SCORE = "score"


def columns(features: int) -> dict[str, str]:
    """Column name -> kind: two thirds numeric, then booleans and categoricals."""
    numeric = round(features * 2 / 3)
    boolean = (features - numeric) // 2
    kinds = ["numeric"] * numeric + ["boolean"] * boolean + ["categorical"] * (features - numeric - boolean)
    return {f"{kind[0]}{index:02d}": kind for index, kind in enumerate(kinds)}


def day_of(seed: int) -> dt.date:
    return FIRST_DAY + dt.timedelta(days=seed)


def version_of(seed: int) -> str:
    return str(100 + seed)


# --- data --------------------------------------------------------------------------------------


def _column(name: str, kind: str, rows: int, rng: Any, shape_rng: Any, drifted: bool) -> Any:
    """One column's values; ``shape_rng`` fixes the column's distribution, ``rng`` draws the values."""
    import numpy as np
    import pyarrow as pa

    if kind == "boolean":
        rate = shape_rng.uniform(0.05, 0.4)
        return pa.array(rng.random(rows) < (rate * 1.6 + 0.04 if drifted else rate))
    if kind == "categorical":
        count = int(shape_rng.integers(4, len(CATEGORIES) + 1))
        weights = shape_rng.dirichlet(np.full(count, 2.0))
        codes = rng.choice(count, size=rows, p=weights)
        if drifted:
            codes = np.where(rng.random(rows) < 0.25, int(np.argmin(weights)), codes)
        return pa.DictionaryArray.from_arrays(codes.astype("int32"), list(CATEGORIES[:count])).cast(
            pa.string()
        )
    shape = NUMERIC_SHAPES[int(name[1:]) % len(NUMERIC_SHAPES)]
    scale = float(shape_rng.uniform(0.5, 20.0))
    if shape == "poisson":
        lam = float(shape_rng.uniform(1.0, 8.0))
        return pa.array(rng.poisson(lam + (0.4 * lam**0.5 if drifted else 0.0), rows).astype("int64"))
    draw = {
        "normal": lambda: rng.normal(0.0, 1.0, rows),
        "lognormal": lambda: rng.lognormal(0.0, 0.6, rows),
        "exponential": lambda: rng.exponential(1.0, rows),
        "uniform": lambda: rng.random(rows),
    }[shape]()
    if drifted:
        draw = draw + 0.3 * draw.std()
    values = draw * scale
    if int(name[1:]) % 4 == 1:  # some columns carry missing values, as real features do
        values = np.where(rng.random(rows) < 0.02, np.nan, values)
    return pa.array(values)


def prepare(seed: int, rows: int, features: int) -> dict[str, Any]:
    """Commit the reference, the day's features and its predictions; returns the drifted columns."""
    import numpy as np
    import pyarrow as pa

    from mlsteps.contract.layout import features_prefix, partition, predictions_prefix, reference_prefix
    from mlsteps.platform.lake import Lake

    settings, lake = config(), Lake()
    kinds = columns(features)
    rng = np.random.default_rng([seed, 1])
    truth = sorted(
        str(name)
        for kind, count in DRIFTED.items()
        for name in rng.choice([c for c, k in kinds.items() if k == kind], size=count, replace=False)
    )
    day, version = day_of(seed), version_of(seed)
    sides = {}
    for number, side in enumerate(("reference", "current"), start=2):
        draw = np.random.default_rng([seed, number])
        sides[side] = {
            name: _column(
                name,
                kind,
                rows,
                draw,
                np.random.default_rng([seed, 10 + index]),
                drifted=number == 3 and name in truth,
            )
            for index, (name, kind) in enumerate(kinds.items())
        }
        sides[side][SCORE] = pa.array(draw.beta(0.5, 20.0, rows).astype("float32"))
    reference = {
        "producer": "bench",
        "feature_columns": list(kinds),
        "categorical_columns": [name for name, kind in kinds.items() if kind == "categorical"],
        "score_column": SCORE,
    }
    _commit(lake, reference_prefix(settings, version), pa.table(sides["reference"]), reference)
    current = pa.table(sides["current"])
    _commit(
        lake, partition(features_prefix(settings), day), current.drop_columns([SCORE]), {"producer": "bench"}
    )
    scored = {"producer": "bench", "model_version": version, "ds": day.isoformat()}
    _commit(lake, predictions_prefix(settings.model.registered_name, day), current.select([SCORE]), scored)
    return {"ds": day.isoformat(), "model_version": version, "drifted_columns": truth, "kinds": kinds}


def _commit(lake: Any, prefix: str, table: Any, metadata: dict[str, Any]) -> None:
    staging = lake.stage(prefix)
    step = 250_000
    for start in range(0, table.num_rows, step):
        staging.write_parquet(f"{start // step:05d}.parquet", table.slice(start, step))
    lake.commit(staging, metadata)


# --- cases (each runs in its own fresh interpreter) ----------------------------------------------


def ours(ds: str) -> dict[str, Any]:
    """``python -m mlsteps drift --ds <ds>`` (its ``main``), after importing what it imports anyway."""
    import evidently.legacy.calculations.stattests  # noqa: F401
    import matplotlib.figure  # noqa: F401
    import mlflow  # noqa: F401
    import pandas  # noqa: F401
    import pyarrow.parquet  # noqa: F401

    import mlsteps.steps.drift  # noqa: F401
    from mlsteps.cli import main

    baseline_rss = current_rss_mb()
    result_file = Path(tempfile.mkdtemp()) / "drift.json"
    os.environ["ML_STEP_RESULT"] = str(result_file)
    started = time.perf_counter()
    code = main(["drift", "--ds", ds, "--dag-id", "bench", "--run-id", f"bench-drift-{ds}"])
    seconds = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the drift step exited {code}")
    step = json.loads(result_file.read_text())
    return {
        "work_seconds": round(seconds, 3),
        "flagged": sorted(step["drifted_columns"]),
        "prediction_drift": step["prediction_drift"],
        "baseline_rss_mb": baseline_rss,
        "sample_rows": config().drift.sample_rows,
    }


def evidently_default(ds: str, version: str, kinds: dict[str, str]) -> dict[str, Any]:
    """Default ``DataDriftPreset`` on the whole reference and the whole day (every row, every column)."""
    import pandas as pd
    from evidently import Report
    from evidently.presets import DataDriftPreset

    from mlsteps.contract.layout import features_prefix, partition, reference_prefix
    from mlsteps.platform.lake import Lake

    settings, lake = config(), Lake()
    baseline_rss = current_rss_mb()
    started = time.perf_counter()
    names = list(kinds)
    reference = pd.read_parquet(lake.path(reference_prefix(settings, version)), columns=names)
    current = pd.read_parquet(lake.path(partition(features_prefix(settings), ds)), columns=names)
    snapshot = Report([DataDriftPreset()]).run(current_data=current, reference_data=reference)
    flagged = sorted(_drifted(snapshot.dict()))
    seconds = time.perf_counter() - started
    return {"work_seconds": round(seconds, 3), "flagged": flagged, "baseline_rss_mb": baseline_rss}


def _drifted(document: dict[str, Any]) -> list[str]:
    """Columns whose ``ValueDrift`` drifted: a distance at or over its threshold, or a p-value under it."""
    flagged = []
    for metric in document["metrics"]:
        settings = metric.get("config", {})
        if not str(settings.get("type", "")).endswith("ValueDrift"):
            continue
        method, value, threshold = (
            str(settings["method"]).lower(),
            float(metric["value"]),
            settings["threshold"],
        )
        is_distance = any(word in method for word in ("distance", "divergence", "psi", "wasserstein"))
        if (value >= threshold) if is_distance else (value < threshold):
            flagged.append(str(settings["column"]))
    return flagged


# --- the section ----------------------------------------------------------------------------------


def run(workspace: Workspace, rows: int, features: int, seeds: int, baseline_seeds: int) -> dict[str, Any]:
    """Every seed: prepare, run ours; the first ``baseline_seeds`` seeds also run the baseline."""
    runs = []
    for seed in range(seeds):
        log(f"drift seed {seed}: writing {rows:,} + {rows:,} rows x {features} columns")
        prepared = workspace.case("bench.drift:prepare", seed=seed, rows=rows, features=features).result
        truth = prepared["drifted_columns"]
        entry: dict[str, Any] = {"seed": seed, "drifted_columns": truth}
        run = workspace.case("bench.drift:ours", ds=prepared["ds"])
        entry["ours"] = _judged(run, truth)
        log(f"drift seed {seed}: ours {entry['ours']['work_seconds']} s, {entry['ours']['detection']}")
        if seed < baseline_seeds:
            run = workspace.case(
                "bench.drift:evidently_default",
                ds=prepared["ds"],
                version=prepared["model_version"],
                kinds=prepared["kinds"],
            )
            entry["evidently_default"] = _judged(run, truth)
            entry["speedup"] = ratio(
                entry["evidently_default"]["work_seconds"], entry["ours"]["work_seconds"]
            )
            log(f"drift seed {seed}: Evidently default {entry['evidently_default']['work_seconds']} s")
        runs.append(entry)
    return {
        "rows": rows,
        "features": features,
        "seeds": seeds,
        "baseline_seeds": baseline_seeds,
        "runs": runs,
        **_totals(runs),
    }


def _judged(run: Any, truth: list[str]) -> dict[str, Any]:
    flagged = set(run.result["flagged"])
    return {
        **run.result,
        "peak_rss_mb": run.peak_rss_mb,
        "extra_rss_mb": round(run.peak_rss_mb - run.result["baseline_rss_mb"], 1),
        "process_wall_s": run.wall_s,
        "detection": {
            "found": len(flagged & set(truth)),
            "of": len(truth),
            "false_positives": sorted(flagged - set(truth)),
        },
    }


def _totals(runs: list[dict[str, Any]]) -> dict[str, Any]:
    from bench.common import median

    def total(name: str) -> dict[str, Any]:
        judged = [entry[name] for entry in runs if name in entry]
        if not judged:
            return {}
        found = sum(j["detection"]["found"] for j in judged)
        expected = sum(j["detection"]["of"] for j in judged)
        return {
            "seeds": len(judged),
            "median_seconds": median([j["work_seconds"] for j in judged]),
            "max_extra_rss_mb": max(j["extra_rss_mb"] for j in judged),
            "max_peak_rss_mb": max(j["peak_rss_mb"] for j in judged),
            "found": found,
            "expected": expected,
            "false_positives": sum(len(j["detection"]["false_positives"]) for j in judged),
        }

    ours, baseline = total("ours"), total("evidently_default")
    speedups = [entry["speedup"] for entry in runs if entry.get("speedup")]
    return {
        "ours_total": ours,
        "evidently_default_total": baseline,
        "median_speedup": median(speedups) if speedups else None,
    }
