"""Training: the real ``train`` step (XGBoost hist) against the seed RandomForest, on one snapshot.

Both read the same committed snapshot and are judged on the same holdout, as is an untuned
scikit-learn HistGradientBoostingClassifier on the raw columns (the accuracy baseline), on the
demo's data and on the example dataset (real hourly bike-sharing demand). Timed work excludes
imports and reading the snapshot: ours is the step's own ``training_seconds`` (encoding,
quantizing, boosting with early stopping), the seed's is one-hot encoding plus ``fit``.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import current_rss_mb, log, median, ratio, run_case
from bench.workspace import EXAMPLE_CONFIG_FILE, TRAINING_RUN, Workspace, config

#: The RandomForest of the seed tutorials, as they configure it.
SEED_FOREST = {
    "n_estimators": 200,
    "max_depth": 15,
    "min_samples_split": 10,
    "min_samples_leaf": 4,
    "class_weight": "balanced",
    "n_jobs": -1,
    "random_state": 42,
}


# --- cases (each runs in its own fresh interpreter) ----------------------------------------------


def ours(repeats: int) -> dict[str, Any]:
    """The ``train`` step once through its CLI (it registers the model), then ``train_model`` for a median."""
    import sklearn.metrics
    import xgboost  # noqa: F401 - imported before any clock starts

    from mlsteps.cli import main
    from mlsteps.logic import training
    from mlsteps.platform import mlflow_registry
    from mlsteps.platform.datasets import load_training_set
    from mlsteps.platform.lake import Lake

    baseline_rss = current_rss_mb()
    result_file = Path(tempfile.mkdtemp()) / "train.json"
    os.environ["ML_STEP_RESULT"] = str(result_file)
    started = time.perf_counter()
    # --force: the bench measures training, never a reuse from the step cache.
    argv = [
        "train",
        "--training-run",
        TRAINING_RUN,
        "--dag-id",
        "bench",
        "--run-id",
        "bench-train",
        "--force",
    ]
    code = main(argv)
    step_wall = time.perf_counter() - started
    if code != 0:
        raise RuntimeError(f"the train step exited {code}")
    step = json.loads(result_file.read_text())
    settings = config()
    snapshot = load_training_set(Lake(), TRAINING_RUN)
    loaded = mlflow_registry.load_model(step["model_name"], step["model_version"])
    scores = training.predict(loaded.booster, snapshot.holdout, settings, loaded.calibrator)
    auc = float(sklearn.metrics.roc_auc_score(snapshot.holdout[snapshot.label].astype(int), scores))
    early_stopped = settings.model_copy(update={"model": settings.model.model_copy(update={"refit": False})})
    splits = training.training_splits(snapshot, settings)
    without_refit = training.train_model(splits, snapshot, early_stopped, "cpu", 0)
    auc_without_refit = float(
        sklearn.metrics.roc_auc_score(
            snapshot.holdout[snapshot.label].astype(int),
            training.predict(without_refit.booster, snapshot.holdout, settings, without_refit.calibrator),
        )
    )
    fits = [float(step["training_seconds"])]
    for _ in range(repeats - 1):
        splits = training.training_splits(snapshot, settings)
        fits.append(training.train_model(splits, snapshot, settings, "cpu", 0).seconds)
    return {
        "fit_seconds": median(fits),
        "fit_seconds_all": fits,
        "step_wall_seconds": round(step_wall, 3),
        "holdout_roc_auc": round(auc, 5),
        "refit": settings.model.refit,
        #: The same training without the refit: the early-stopped booster, as before model.refit existed.
        "holdout_roc_auc_without_refit": round(auc_without_refit, 5),
        "best_iteration": step["metrics"]["best_iteration"],
        "validation_auc": step["metrics"]["validation_auc"],
        "model_name": step["model_name"],
        "model_version": step["model_version"],
        "nthread": training.DEFAULT_NTHREAD,
        "baseline_rss_mb": baseline_rss,
    }


def fit_only(repeats: int) -> dict[str, Any]:
    """``train_model`` alone, ``repeats`` times (a diagnostic of thread waiting under CPU contention)."""
    import sklearn.metrics  # noqa: F401
    import xgboost  # noqa: F401

    from mlsteps.logic import training
    from mlsteps.platform.datasets import load_training_set
    from mlsteps.platform.lake import Lake

    settings = config()
    snapshot = load_training_set(Lake(), TRAINING_RUN)
    fits = []
    for _ in range(repeats):
        cpu = os.times()
        splits = training.training_splits(snapshot, settings)
        seconds = training.train_model(splits, snapshot, settings, "cpu", 0).seconds
        used = os.times()
        fits.append(
            {"seconds": seconds, "cpu_seconds": round(used.user + used.system - cpu.user - cpu.system, 3)}
        )
    return {"median_seconds": median([f["seconds"] for f in fits]), "runs": fits}


def seed_random_forest() -> dict[str, Any]:
    """The seed's RandomForest on the same snapshot: one-hot encoding, NaN filled, ``fit``, holdout AUC."""
    import pandas as pd
    import sklearn.metrics
    from sklearn.ensemble import RandomForestClassifier

    from mlsteps.platform.datasets import load_training_set
    from mlsteps.platform.lake import Lake

    snapshot = load_training_set(Lake(), TRAINING_RUN)
    features, label = snapshot.feature_columns, snapshot.label

    def encode(frame: pd.DataFrame) -> pd.DataFrame:
        encoded = pd.get_dummies(frame.loc[:, features], columns=snapshot.categorical_columns)
        return encoded.astype("float32").fillna(-1.0)

    baseline_rss = current_rss_mb()
    started = time.perf_counter()
    train_x = encode(snapshot.train)
    forest = RandomForestClassifier(**SEED_FOREST).fit(train_x, snapshot.train[label].astype(int))
    seconds = time.perf_counter() - started
    holdout_x = encode(snapshot.holdout).reindex(columns=train_x.columns, fill_value=0.0)
    scores = forest.predict_proba(holdout_x)[:, 1]
    auc = float(sklearn.metrics.roc_auc_score(snapshot.holdout[label].astype(int), scores))
    return {
        "fit_seconds": round(seconds, 3),
        "holdout_roc_auc": round(auc, 5),
        "train_rows": len(train_x),
        "encoded_columns": train_x.shape[1],
        "baseline_rss_mb": baseline_rss,
    }


def hist_gradient_boosting() -> dict[str, Any]:
    """An untuned HistGradientBoostingClassifier on the same split, on raw columns and on every feature.

    Raw columns are the config's passthrough columns and the time parts of the event time (what a
    data scientist would feed it from the landed table); categorical ones keep the config's
    categories, as the pipeline encodes them. Every default is kept: this is the baseline to match.
    """
    import sklearn.metrics
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mlsteps.contract.feature_schema import time_part_name
    from mlsteps.platform.datasets import load_training_set, model_input
    from mlsteps.platform.lake import Lake

    settings = config()
    snapshot = load_training_set(Lake(), TRAINING_RUN)
    raw = [
        *settings.features.passthrough,
        *(time_part_name(settings, p) for p in settings.features.time_parts),
    ]
    result: dict[str, Any] = {"raw_columns": raw}
    for name, columns in (("raw", raw), ("features", list(snapshot.feature_columns))):
        started = time.perf_counter()
        model = HistGradientBoostingClassifier(categorical_features="from_dtype", random_state=0)
        model.fit(model_input(snapshot.train, columns, settings), snapshot.train[snapshot.label].astype(int))
        seconds = time.perf_counter() - started
        scores = model.predict_proba(model_input(snapshot.holdout, columns, settings))[:, 1]
        auc = float(sklearn.metrics.roc_auc_score(snapshot.holdout[snapshot.label].astype(int), scores))
        result[name] = {
            "holdout_roc_auc": round(auc, 5),
            "fit_seconds": round(seconds, 3),
            "columns": len(columns),
        }
    return result


def versus_baseline(ours_result: dict[str, Any], baseline: dict[str, Any]) -> dict[str, Any]:
    """Holdout ROC-AUC of the pipeline's model against the untuned baseline on raw columns."""
    ours_auc, raw_auc = ours_result["holdout_roc_auc"], baseline["raw"]["holdout_roc_auc"]
    return {
        "auc_difference": round(ours_auc - raw_auc, 5),
        "auc_ratio": ratio(ours_auc, raw_auc),
        "auc_difference_features": round(ours_auc - baseline["features"]["holdout_roc_auc"], 5),
        "refit_effect": round(ours_auc - ours_result["holdout_roc_auc_without_refit"], 5),
        "goal_met": ours_auc >= raw_auc,
    }


def run_example(workspace: Workspace) -> dict[str, Any]:
    """The pipeline's model and the untuned baseline on the example dataset, in its own workspace."""
    example = Workspace(workspace.root / "example", EXAMPLE_CONFIG_FILE)
    example.root.mkdir(parents=True, exist_ok=True)
    log("training (example dataset): hourly bike-sharing demand, landed from the ISLP package")
    snapshot = example.case("bench.workspace:write_example_training_set_here").result
    ours_result = example.case("bench.training:ours", repeats=1).result
    baseline = example.case("bench.training:hist_gradient_boosting").result
    return {
        "snapshot": snapshot,
        "ours": ours_result,
        "hist_gradient_boosting": baseline,
        **versus_baseline(ours_result, baseline),
    }


# --- the section ----------------------------------------------------------------------------------


def run(
    workspace: Workspace, snapshot: dict[str, Any], repeats: int, with_seed: bool = True
) -> dict[str, Any]:
    """Train both on the snapshot; our run registers the version later scored as champion."""
    log("training: our train step (CLI, logs to MLflow, registers the challenger)")
    ours_run = workspace.case("bench.training:ours", repeats=repeats)
    ours_result = ours_run.result
    if not with_seed:
        return {"snapshot": snapshot, "ours": {**ours_result, "peak_rss_mb": ours_run.peak_rss_mb}}
    log(f"training: ours fit {ours_result['fit_seconds']} s; now the seed RandomForest")
    seed_run = workspace.case("bench.training:seed_random_forest")
    seed_result = seed_run.result
    log("training: the untuned HistGradientBoosting baseline on the same split")
    baseline = workspace.case("bench.training:hist_gradient_boosting").result
    log("training: diagnostic, train_model with OMP_WAIT_POLICY=PASSIVE")
    passive = run_case(
        "bench.training:fit_only",
        {"repeats": repeats},
        workspace.env(OMP_WAIT_POLICY="PASSIVE"),
        workspace.root,
    )
    default = workspace.case("bench.training:fit_only", repeats=repeats)
    speedup = ratio(seed_result["fit_seconds"], ours_result["fit_seconds"])
    auc_gap = round(ours_result["holdout_roc_auc"] - seed_result["holdout_roc_auc"], 5)
    return {
        "snapshot": snapshot,
        "ours": {**ours_result, "peak_rss_mb": ours_run.peak_rss_mb, "process_wall_s": ours_run.wall_s},
        "seed_random_forest": {
            **seed_result,
            "params": SEED_FOREST,
            "peak_rss_mb": seed_run.peak_rss_mb,
            "process_wall_s": seed_run.wall_s,
        },
        "hist_gradient_boosting": baseline,
        "versus_hist_gradient_boosting": versus_baseline(ours_result, baseline),
        "speedup_fit": speedup,
        "speedup_step_end_to_end": ratio(seed_result["fit_seconds"], ours_result["step_wall_seconds"]),
        "auc_difference": auc_gap,
        "diagnostic_fit_seconds": {
            "default OpenMP wait policy": default.result,
            "OMP_WAIT_POLICY=PASSIVE": passive.result,
        },
        "gpu": "not measured: no GPU on this machine",
        "goals": {
            "speedup >= 20x": speedup is not None and speedup >= 20,
            "auc equal or better": auc_gap >= 0,
        },
    }
