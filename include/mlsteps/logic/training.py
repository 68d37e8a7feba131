"""Training over a snapshot's frames: the time split, XGBoost parameters, boosting and the seeded search.

Training is deterministic for a given snapshot, config and device: fixed seeds, a fixed thread
count, and a validation slice that is the latest part of the train split by event time (never a
random draw, so early stopping judges the model on data after what it learned from).

With ``model.calibration`` on, the train split is cut in three by event time: what the booster
learns from, the early-stopping slice, and (latest) the calibration slice, each slice
``validation_fraction`` of the train split. The booster, and its refit, never see the calibration
slice; the calibrator is fitted there on the final booster's scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from mlsteps.errors import StepError
from mlsteps.logic.calibration import Calibrator, calibrate, fit_calibrator
from mlsteps.platform.datasets import model_input

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    import xgboost as xgb

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.platform.datasets import TrainingSet

#: Thread count unless the config's model params set ``nthread``: fixed, so results do not depend on the node.
DEFAULT_NTHREAD = 4


@dataclass
class Fit:
    """A trained booster and how it came about."""

    booster: xgb.Booster
    params: dict[str, Any]
    best_iteration: int
    validation_auc: float
    trials: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0
    #: Rows the final booster learnt from: the fit part, or after a refit the train split less the
    #: calibration slice (the whole split when calibration is off).
    rows: int = 0
    refit: bool = False
    #: The calibrator fitted on the calibration slice; None when ``model.calibration`` is none.
    calibrator: Calibrator | None = None


@dataclass(frozen=True)
class Splits:
    """The train split cut by time: what the booster learns from, the early-stopping slice, and
    (with calibration on) the latest slice, kept for the calibrator alone."""

    fit: pd.DataFrame
    validation: pd.DataFrame
    calibration: pd.DataFrame | None = None


# --- data ---------------------------------------------------------------------------------


def training_splits(snapshot: TrainingSet, config: PipelineConfig) -> Splits:
    """The split training uses; with calibration on, a calibration slice the size of the validation one."""
    fraction = config.model.validation_fraction
    return split_by_time(snapshot, fraction, fraction if config.model.calibration != "none" else 0.0)


def split_by_time(
    snapshot: TrainingSet, validation_fraction: float, calibration_fraction: float = 0.0
) -> Splits:
    """Carve the latest rows of the train split, by event time: ``calibration_fraction`` of them for the
    calibrator (latest), the ``validation_fraction`` before those for early stopping.

    Raises:
        StepError: A part is empty or lacks one of the two classes.
    """
    event_time, row_id = snapshot.manifest["event_time"], snapshot.manifest["row_id"]
    ordered = snapshot.train.sort_values([event_time, row_id], kind="stable").reset_index(drop=True)
    held = int(round(len(ordered) * calibration_fraction))
    end = len(ordered) - held
    start = end - int(round(len(ordered) * validation_fraction))
    calibration = ordered.iloc[end:] if calibration_fraction > 0 else None
    splits = Splits(ordered.iloc[:start], ordered.iloc[start:end], calibration)
    parts = [("training", splits.fit), ("validation", splits.validation)]
    for part, frame in [*parts, *([("calibration", calibration)] if calibration is not None else [])]:
        classes = frame[snapshot.label].astype(int).nunique() if len(frame) else 0
        if classes < 2:
            raise StepError(
                f"the {part} part of snapshot {snapshot.manifest['training_run']} has {len(frame)} rows and "
                f"{classes} label class(es); both classes are needed, widen the training window"
            )
    return splits


def labels(frame: pd.DataFrame, label: str) -> np.ndarray:
    """The 0/1 label column as float32."""
    return frame[label].astype("float32").to_numpy()


# --- training -----------------------------------------------------------------------------


def base_params(config: PipelineConfig, device: str) -> dict[str, Any]:
    """XGBoost parameters: defaults, then the config's, then the ones determinism and the device need."""
    params: dict[str, Any] = {
        "objective": "binary:logistic",
        "eval_metric": ["logloss", "auc"],
        "nthread": DEFAULT_NTHREAD,
        "verbosity": 1,
    }
    params.update(config.model.params)
    params.update({"tree_method": "hist", "device": device, "seed": config.model.seed})
    return params


def train_model(
    splits: Splits, snapshot: TrainingSet, config: PipelineConfig, device: str, n_trials: int
) -> Fit:
    """Train once with the configured params, or run a seeded Optuna search and keep the best.

    ``seconds`` on the result is the wall time of encoding, quantizing and boosting (imports excluded).
    """
    import sklearn.metrics  # noqa: F401 - imported before the clock starts
    import xgboost as xgb

    started = time.perf_counter()
    features = snapshot.feature_columns
    fit_x = model_input(splits.fit, features, config)
    validation_x = model_input(splits.validation, features, config)
    train_matrix = xgb.QuantileDMatrix(
        fit_x, label=labels(splits.fit, snapshot.label), enable_categorical=True
    )
    validation_matrix = xgb.QuantileDMatrix(
        validation_x,
        label=labels(splits.validation, snapshot.label),
        enable_categorical=True,
        ref=train_matrix,
    )
    matrices = (train_matrix, validation_matrix)
    params = base_params(config, device)
    fit = fit_once(params, matrices, config) if n_trials == 0 else search(params, matrices, config, n_trials)
    fit.rows = len(splits.fit)
    if config.model.refit:
        refit(fit, splits, snapshot, config)
    if splits.calibration is not None and config.model.calibration != "none":
        raw = predict(fit.booster, splits.calibration, config)
        fit.calibrator = fit_calibrator(
            config.model.calibration, labels(splits.calibration, snapshot.label), raw
        )
    fit.seconds = round(time.perf_counter() - started, 3)
    return fit


def refit(fit: Fit, splits: Splits, snapshot: TrainingSet, config: PipelineConfig) -> None:
    """Train the final booster again on the train split, for the rounds early stopping chose.

    The whole split but the calibration slice, when there is one: the calibrator must be fitted on
    scores of rows the booster never learnt from.

    ``validation_auc`` and ``best_iteration`` stay those of the early-stopped booster: the refit one
    has seen the validation slice, so its score there would say nothing. The holdout is not here at all.
    """
    import pandas as pd
    import xgboost as xgb

    whole = pd.concat([splits.fit, splits.validation], ignore_index=True)
    matrix = xgb.QuantileDMatrix(
        model_input(whole, snapshot.feature_columns, config),
        label=labels(whole, snapshot.label),
        enable_categorical=True,
    )
    fit.booster = xgb.train(fit.params, matrix, num_boost_round=fit.best_iteration + 1, verbose_eval=False)
    fit.rows, fit.refit = len(whole), True


def early_stopping(config: PipelineConfig) -> Any:
    """The early-stopping callback every training engine uses: validation AUC, best round kept."""
    import xgboost as xgb

    return xgb.callback.EarlyStopping(
        rounds=config.model.early_stopping_rounds,
        metric_name="auc",
        data_name="validation",
        maximize=True,
        save_best=True,
    )


def fit_once(params: dict[str, Any], matrices: tuple[Any, Any], config: PipelineConfig) -> Fit:
    """One boosting run with early stopping on validation AUC; the booster is cut back to its best round."""
    import xgboost as xgb
    from sklearn.metrics import roc_auc_score

    train_matrix, validation_matrix = matrices
    stopping = early_stopping(config)
    booster = xgb.train(
        params,
        train_matrix,
        num_boost_round=config.model.num_boost_round,
        evals=[(validation_matrix, "validation")],
        callbacks=[stopping],
        verbose_eval=False,
    )
    scores = booster.predict(validation_matrix)
    auc = float(roc_auc_score(validation_matrix.get_label(), scores))
    best_iteration = booster.num_boosted_rounds() - 1
    return Fit(booster, params, best_iteration, round(auc, 6))


def search(params: dict[str, Any], matrices: tuple[Any, Any], config: PipelineConfig, n_trials: int) -> Fit:
    """A seeded TPE search over the main tree parameters; the best trial's booster is kept."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    best: dict[str, Fit] = {}

    def objective(trial: optuna.Trial) -> float:
        candidate = {**params, **suggest(trial)}
        fitted = fit_once(candidate, matrices, config)
        if "fit" not in best or fitted.validation_auc > best["fit"].validation_auc:
            best["fit"] = fitted
        return fitted.validation_auc

    sampler = optuna.samplers.TPESampler(seed=config.model.seed)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    study.optimize(objective, n_trials=n_trials, n_jobs=1)
    chosen = best["fit"]
    chosen.trials = [{"number": t.number, "value": t.value, **t.params} for t in study.trials]
    return chosen


def suggest(trial: Any) -> dict[str, Any]:
    """The search space."""
    return {
        "max_depth": trial.suggest_int("max_depth", 3, 10),
        "learning_rate": trial.suggest_float("learning_rate", 0.01, 0.3, log=True),
        "min_child_weight": trial.suggest_float("min_child_weight", 0.5, 20.0, log=True),
        "subsample": trial.suggest_float("subsample", 0.5, 1.0),
        "colsample_bytree": trial.suggest_float("colsample_bytree", 0.5, 1.0),
        "reg_lambda": trial.suggest_float("reg_lambda", 1e-3, 10.0, log=True),
    }


def predict(
    booster: xgb.Booster, frame: pd.DataFrame, config: PipelineConfig, calibrator: Calibrator | None = None
) -> np.ndarray:
    """Positive-class probabilities for ``frame``, encoded by :func:`model_input`, then calibrated
    by ``calibrator`` (none: the booster's raw scores)."""
    features = list(booster.feature_names or [])
    return calibrate(calibrator, booster.inplace_predict(model_input(frame, features, config)))


def loggable_params(fit: Fit, config: PipelineConfig, n_trials: str, snapshot: TrainingSet) -> dict[str, Any]:
    """The parameters logged on the MLflow run: the booster's, the boosting schedule and the snapshot's."""
    params = {key: value for key, value in fit.params.items() if key != "eval_metric"}
    return {
        **params,
        "eval_metric": ",".join(fit.params.get("eval_metric", [])),
        "num_boost_round": config.model.num_boost_round,
        "early_stopping_rounds": config.model.early_stopping_rounds,
        "validation_fraction": config.model.validation_fraction,
        "refit": fit.refit,
        "calibration": config.model.calibration,
        "calibration_rows": fit.calibrator.rows if fit.calibrator else 0,
        "training_rows": fit.rows,
        "n_trials": n_trials,
        "feature_count": len(snapshot.feature_columns),
        "training_run": snapshot.manifest["training_run"],
    }
