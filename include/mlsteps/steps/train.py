"""Train XGBoost on a training snapshot, log it to MLflow and register it as the challenger.

Training is deterministic for a given snapshot, config and device: fixed seeds, a fixed thread
count, and a validation slice that is the latest part of the train split by event time (never a
random draw, so early stopping judges the model on data after what it learned from). The holdout
is not touched here; `evaluate` judges the model on it. With ``model.calibration`` on, the calibrator
is fitted on the latest slice of the train split, which the booster never sees, and logged in the
model's MLmodel metadata, so every step that loads the model loads it too.

Cached (``mlsteps.platform.step_cache``): training is the most expensive step and deterministic for a
snapshot fingerprint, config, code, device and options, and its effects are its own: a registered
version, its reference sample and the ``challenger`` alias. A reuse requires the version to still
exist (not deleted, its run not deleted) and its reference sample unchanged, and points the
``challenger`` alias at it again, as the run that registered it did. The version is tagged with its
cache key (``mlsteps.cache_key``), which is how ``trace`` finds the runs that reused it.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import reference_prefix, snapshot_prefix
from mlsteps.contract.results import RegisteredRun, TrainResult
from mlsteps.errors import StepError
from mlsteps.logic.training import Fit, loggable_params, predict, train_model, training_splits
from mlsteps.platform import mlflow_registry
from mlsteps.platform.context import StepContext
from mlsteps.platform.datasets import TrainingSet, load_training_set
from mlsteps.platform.device import resolve_device
from mlsteps.platform.lineage import (
    CACHE_KEY_TAG,
    MODEL_SHA256_TAG,
    VERSIONS_TAG,
    booster_sha256,
    config_document,
    package_versions,
)

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.logic.calibration import Calibrator

log = logging.getLogger(__name__)

SCORE_COLUMN = "score"
DEVICE_TAG = "mlsteps.device"
TRIALS_TAG = "mlsteps.n_trials"
#: ``single`` or ``dask``: the training engine (``model.engine``, or the ``--engine`` option).
ENGINE_TAG = "mlsteps.engine"
#: The Dask worker count a ``dask`` version trained with (absent for ``single``).
WORKERS_TAG = "mlsteps.dask_workers"
MODEL_NAME_IN_RUN = "model"
DAY = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$(?!\n)")
COLUMN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$(?!\n)")
#: The longest value MLflow keeps in a model version tag.
MAX_TAG_LENGTH = 5000
#: The pipeline config training ran with, logged on the run (what `reproduce` retrains with).
CONFIG_ARTIFACT = "lineage/pipeline_config.json"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--training-run", required=True, help="Snapshot name under training/ (build-training-set)."
    )
    parser.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="Where XGBoost trains. cuda fails (never falls back) when no GPU is usable.",
    )
    parser.add_argument(
        "--engine",
        choices=("single", "dask"),
        default=None,
        help="single: XGBoost in this process; dask: xgboost.dask on a Dask cluster of model.dask workers, "
        "made for this step and closed after. Default: model.engine.",
    )
    parser.add_argument(
        "--n-trials",
        type=int,
        default=None,
        help="Optuna trials (seeded TPE); 0 trains once with the configured params. Default: model.n_trials.",
    )
    group = parser.add_argument_group(
        "drift retrain (set when ml_drift_monitor triggered the run; else empty)"
    )
    group.add_argument("--retrain-ds", default="", help="The day whose drift triggered this retrain.")
    group.add_argument(
        "--drifted-columns", default="", help="The columns that drifted on that day, comma-separated."
    )


def run(args: argparse.Namespace) -> TrainResult:
    context = StepContext.from_args(args)
    config = context.config
    n_trials = config.model.n_trials if args.n_trials is None else args.n_trials
    if not 0 <= n_trials <= 500:
        raise StepError(f"--n-trials must be between 0 and 500, got {n_trials}")
    engine = args.engine or config.model.engine
    if engine == "dask" and n_trials > 0:
        raise StepError(
            f"engine dask does not run an Optuna search (--n-trials {n_trials}); "
            "pass --n-trials 0 or engine single"
        )
    device = resolve_device(args.device, context.settings.require_gpu)
    manifest = require_snapshot(context, args.training_run)
    tags = {
        **mlflow_registry.lineage_tags(context, manifest),
        DEVICE_TAG: device,
        TRIALS_TAG: str(n_trials),
        ENGINE_TAG: engine,
        **({WORKERS_TAG: str(config.model.dask.workers)} if engine == "dask" else {}),
        VERSIONS_TAG: json.dumps(package_versions(), separators=(",", ":")),
        mlflow_registry.CALIBRATION_TAG: config.model.calibration,
        **retrain_tags(args.retrain_ds, args.drifted_columns),
    }
    if getattr(args, "cache_key", None):
        tags[CACHE_KEY_TAG] = args.cache_key
    earlier = earlier_attempt(config, tags)
    if earlier is not None:
        return reuse(context, load_training_set(context.lake, args.training_run), earlier, tags)
    if engine == "dask":
        snapshot, fit, rate, peaks = train_distributed(context, manifest, device)
    else:
        snapshot = load_training_set(context.lake, args.training_run)
        splits = training_splits(snapshot, config)
        fit, rate, peaks = train_model(splits, snapshot, config, device, n_trials), None, {}
    tags[MODEL_SHA256_TAG] = booster_sha256(fit.booster)
    extra = worker_metrics(peaks)
    logged = log_to_mlflow(context, snapshot, fit, tags, extra)
    reference = save_reference(context, snapshot, fit.booster, logged["model_version"], fit.calibrator, rate)
    metrics = {"validation_auc": fit.validation_auc, "best_iteration": fit.best_iteration, **extra}
    return result(config, logged, metrics, fit.seconds, tags, reference)


def require_snapshot(context: StepContext, training_run: str) -> dict[str, Any]:
    """The snapshot's manifest (its lineage), without reading its data.

    Raises:
        StepError: The snapshot was never committed.
    """
    manifest = context.lake.manifest(snapshot_prefix(training_run))
    if manifest is None:
        load_training_set(context.lake, training_run)  # raises the one message for a missing snapshot
    assert manifest is not None
    return manifest


def train_distributed(
    context: StepContext, manifest: dict[str, Any], device: str
) -> tuple[TrainingSet, Fit, float, dict[str, int]]:
    """Train with xgboost.dask on a cluster made for this step (closed after, on failure too).

    Returns:
        A bounded sample of the snapshot (what this process logs and samples the reference from),
        the fit, the train split's base rate, and each worker's peak memory in bytes.
    """
    from mlsteps.platform.dask_engine import dask_client, train_on_dask

    config = context.config
    with dask_client(config.model.dask, context.settings) as client:
        trained = train_on_dask(client, context.lake, manifest, config, device)
    return trained.view, trained.fit, trained.base_rate, trained.worker_peak_rss


def worker_metrics(peaks: dict[str, int]) -> dict[str, float]:
    """Peak memory of each Dask worker (MiB, by worker in address order) and the largest; none for single."""
    if not peaks:
        return {}
    mib = [round(peaks[address] / 2**20, 1) for address in sorted(peaks)]
    return {"worker_peak_rss_mib_max": max(mib), **{f"worker_{i}_peak_rss_mib": v for i, v in enumerate(mib)}}


def result(
    config: PipelineConfig,
    logged: RegisteredRun,
    metrics: dict[str, Any],
    seconds: float,
    tags: dict[str, str],
    reference: str,
    reused: bool = False,
) -> TrainResult:
    """The step result: ids and URIs of the run and version, metrics, timing and device."""
    again = " (already registered by an earlier attempt of this DAG run)" if reused else ""
    summary = (
        f"validation AUC {metrics['validation_auc']:.4f} at iteration {metrics['best_iteration']} in "
        f"{seconds:.1f} s on {tags[DEVICE_TAG]}: registered {config.model.registered_name} version "
        f"{logged['model_version']} as {mlflow_registry.CHALLENGER}{again}"
    )
    return TrainResult(
        summary=summary,
        **logged,
        metrics=metrics,
        training_seconds=seconds,
        device=tags[DEVICE_TAG],
        n_trials=int(tags[TRIALS_TAG]),
        reference_uri=reference,
        training_run=tags["training_run"],
        reused=reused,
    )


def retrain_tags(ds: str, drifted_columns: str) -> dict[str, str]:
    """The drift that triggered this retrain, as run and version tags; none for any other run.

    Raises:
        StepError: ``ds`` is not a day, or a column is not a plain column name.
    """
    ds, names = ds.strip(), [name.strip() for name in drifted_columns.split(",") if name.strip()]
    if not ds and not names:
        return {}
    if ds and not DAY.match(ds):
        raise StepError(f"--retrain-ds must be a day such as 2026-11-01, got {ds!r}")
    invalid = [name for name in names if not COLUMN.match(name)]
    if invalid:
        raise StepError(f"--drifted-columns must be comma-separated column names, got {invalid[0]!r}")
    kept: list[str] = []
    for name in names:  # whole names only, within MLflow's limit on a version tag's value
        if len(",".join([*kept, name])) > MAX_TAG_LENGTH:
            log.warning("%d drifted columns do not fit in one tag; kept the first %d", len(names), len(kept))
            break
        kept.append(name)
    return {
        mlflow_registry.RETRAIN_DS_TAG: ds,
        mlflow_registry.RETRAIN_COLUMNS_TAG: ",".join(kept),
    }


# --- caching ------------------------------------------------------------------------------


def cache_inputs(context: StepContext, args: argparse.Namespace) -> dict[str, Any]:
    """The snapshot's fingerprint (None: not built; the step then refuses, uncached)."""
    manifest = context.lake.manifest(snapshot_prefix(args.training_run)) or {}
    return {"snapshot_fingerprint": manifest.get("fingerprint")}


def cache_outputs(context: StepContext, args: argparse.Namespace, result: TrainResult) -> list[str]:
    """The version's reference sample (the version itself is checked by :func:`cache_reusable`)."""
    return [reference_prefix(context.config, result["model_version"])]


def cache_reusable(context: StepContext, result: TrainResult) -> bool:
    """The version and its run still exist; if so, the ``challenger`` alias points at it again."""
    from mlflow.exceptions import MlflowException

    client = mlflow_registry.mlflow_client()
    name, number = result["model_name"], result["model_version"]
    try:
        version = mlflow_registry.get_version(client, name, number)
        if version.run_id and client.get_run(version.run_id).info.lifecycle_stage == "deleted":
            return False
    except (StepError, MlflowException):
        return False
    client.set_registered_model_alias(name, mlflow_registry.CHALLENGER, number)
    return True


# --- retries --------------------------------------------------------------------------------


def earlier_attempt(config: PipelineConfig, tags: dict[str, str]) -> ModelVersion | None:
    """A version an earlier attempt of the same DAG run registered from the same data, config and device.

    Airflow retries a task whose pod died after registration; reusing that version keeps the
    registry free of duplicates. Runs without a DAG run id (manual runs) always train anew.
    """
    if not tags["dag_run_id"] or "'" in tags["dag_run_id"]:
        return None
    from mlflow.exceptions import MlflowException

    client = mlflow_registry.mlflow_client()
    name = config.model.registered_name
    try:
        found = client.search_model_versions(f"name='{name}' and tags.dag_run_id='{tags['dag_run_id']}'")
    except MlflowException as err:  # a store that cannot filter by tag: no reuse, just a new version
        log.warning("could not search earlier versions of %s (%s); training anew", name, err)
        return None
    keys = (
        "training_run",
        "data_fingerprint",
        "config_hash",
        DEVICE_TAG,
        TRIALS_TAG,
        mlflow_registry.PIPELINE_TAG,
    )
    matching = [v for v in found if all((v.tags or {}).get(key) == tags[key] for key in keys)]
    return max(matching, key=lambda v: int(v.version), default=None)


def reuse(
    context: StepContext, snapshot: TrainingSet, version: ModelVersion, tags: dict[str, str]
) -> TrainResult:
    """Finish what an earlier attempt started: the reference sample and the challenger alias."""
    config = context.config
    name, number = config.model.registered_name, str(version.version)
    reference = context.lake.url(reference_prefix(config, number))
    if context.lake.manifest(reference_prefix(config, number)) is None:
        loaded = mlflow_registry.load_model(name, number)
        reference = save_reference(context, snapshot, loaded.booster, number, loaded.calibrator)
    client = mlflow_registry.mlflow_client()
    client.set_registered_model_alias(name, mlflow_registry.CHALLENGER, number)
    run = client.get_run(version.run_id) if version.run_id else None
    values = run.data.metrics if run else {}
    metrics = {
        "validation_auc": values.get("validation_auc", float("nan")),
        "best_iteration": int(values.get("best_iteration", -1)),
    }
    logged = RegisteredRun(
        mlflow_run_id=version.run_id,
        experiment_id=run.info.experiment_id if run else None,
        model_name=name,
        model_version=number,
        model_uri=f"models:/{name}/{number}",
        run_url=mlflow_registry.run_url(run.info.experiment_id, run.info.run_id) if run else None,
    )
    return result(
        config, logged, metrics, float(values.get("training_seconds", 0.0)), tags, reference, reused=True
    )


# --- device -------------------------------------------------------------------------------


# --- MLflow -------------------------------------------------------------------------------


def log_to_mlflow(
    context: StepContext,
    snapshot: TrainingSet,
    fit: Fit,
    tags: dict[str, str],
    extra_metrics: dict[str, float] | None = None,
) -> RegisteredRun:
    """Log params, metrics, datasets, the model and a plot; register the version and alias it challenger."""
    import mlflow

    from mlsteps.reports.training import importance_figure

    config = context.config
    mlflow.set_experiment(config.model.experiment)
    with mlflow.start_run(run_name=f"train {snapshot.manifest['training_run']}", tags=tags) as active:
        engine = {
            "engine": tags[ENGINE_TAG],
            **({"dask_workers": tags[WORKERS_TAG]} if WORKERS_TAG in tags else {}),
        }
        mlflow.log_params({**loggable_params(fit, config, tags[TRIALS_TAG], snapshot), **engine})
        mlflow.log_metrics(
            {
                "validation_auc": fit.validation_auc,
                "best_iteration": fit.best_iteration,
                "training_seconds": fit.seconds,
                **(extra_metrics or {}),
            }
        )
        log_datasets(context, snapshot)
        mlflow.log_dict(config_document(config), CONFIG_ARTIFACT)
        mlflow.log_figure(importance_figure(fit.booster), "feature_importance.png")
        if fit.trials:
            mlflow.log_dict({"trials": fit.trials}, "optuna_trials.json")
        model_uri = log_model(fit.booster, snapshot, fit.calibrator)
        version = register(config, model_uri, tags, active.info.run_id)
    return RegisteredRun(
        mlflow_run_id=active.info.run_id,
        experiment_id=active.info.experiment_id,
        model_name=config.model.registered_name,
        model_version=version,
        model_uri=f"models:/{config.model.registered_name}/{version}",
        run_url=mlflow_registry.run_url(active.info.experiment_id, active.info.run_id),
    )


def log_datasets(context: StepContext, snapshot: TrainingSet) -> None:
    """Record both splits as run inputs: each split's file URI as source, the fingerprint as digest."""

    import mlflow
    from mlflow.data.pandas_dataset import from_pandas

    run_name = snapshot.manifest["training_run"]
    prefix = snapshot_prefix(run_name)
    files = {
        entry["path"].rsplit("-", 1)[-1].removesuffix(".parquet"): entry["path"]
        for entry in snapshot.manifest["files"]
    }
    digest = str(snapshot.manifest["fingerprint"])[:32]  # MLflow stores at most 36 characters
    for split, frame in (("train", snapshot.train), ("holdout", snapshot.holdout)):
        source = context.lake.url(f"{prefix}/{files.get(split, split)}")
        with _mlflow_hints_silenced():  # the dataset's schema is inferred lazily, inside log_input
            dataset = from_pandas(
                frame, source=source, targets=snapshot.label, name=f"{run_name}/{split}", digest=digest
            )
            mlflow.log_input(dataset, context="training" if split == "train" else "holdout")


def log_model(booster: xgb.Booster, snapshot: TrainingSet, calibrator: Calibrator | None = None) -> str:
    """Log the booster in the xgboost flavor with a signature and input example over the raw features.

    The calibrator, when there is one, goes into the MLmodel file's ``metadata``
    (:data:`mlflow_registry.CALIBRATION_METADATA_KEY`): it travels with the model's files and
    :func:`mlflow_registry.load_model` loads both at once.

    MLflow's generic pyfunc wrapper builds a DMatrix without categorical support, so its
    serving-input check fails on categorical features and logs a misleading warning: that check is
    silenced. Score with :func:`mlflow_registry.load_model` and :func:`model_input` instead.

    Returns:
        The logged model's URI (``models:/m-...``).
    """

    import mlflow.xgboost
    import numpy as np
    import pandas as pd
    import xgboost as xgb
    from mlflow.models import infer_signature

    raw = snapshot.train.loc[:, snapshot.feature_columns]
    example = raw.dropna().head(5) if len(raw.dropna()) else raw.head(5)
    requirements = [f"xgboost=={xgb.__version__}", f"pandas=={pd.__version__}", f"numpy=={np.__version__}"]
    with _mlflow_hints_silenced(), _quiet("mlflow.models.model"):
        signature = infer_signature(raw.head(200), np.zeros(min(len(raw), 200), dtype="float32"))
        info = mlflow.xgboost.log_model(
            booster,
            name=MODEL_NAME_IN_RUN,
            signature=signature,
            input_example=example,
            pip_requirements=requirements,
            model_format="ubj",
            metadata={mlflow_registry.CALIBRATION_METADATA_KEY: calibrator.document()}
            if calibrator
            else None,
        )
    return str(info.model_uri)


@contextmanager
def _mlflow_hints_silenced() -> Iterator[None]:
    """Silence two MLflow warnings that do not apply here.

    A local lake path matches both the "" and "file" dataset-source types; and the integer-columns
    hint is moot because scoring encodes input with :func:`model_input`, not the signature.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The specified dataset source", category=UserWarning)
        warnings.filterwarnings(
            "ignore", message="Hint: Inferred schema contains integer", category=UserWarning
        )
        yield


@contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def register(config: PipelineConfig, model_uri: str, tags: dict[str, str], run_id: str) -> str:
    """Register a new version carrying the lineage tags and point the ``challenger`` alias at it."""
    import mlflow

    name = config.model.registered_name
    version = mlflow.register_model(model_uri, name, tags=tags)
    client = mlflow_registry.mlflow_client()
    client.update_model_version(
        name,
        version.version,
        description=(
            f"Trained by pipeline {config.name} (MLflow run {run_id}) on snapshot {tags['training_run']}. "
            "Load with mlsteps.platform.mlflow_registry.load_model (booster and calibrator) and encode input "
            "with mlsteps.platform.datasets.model_input."
        ),
    )
    client.set_registered_model_alias(name, mlflow_registry.CHALLENGER, version.version)
    return str(version.version)


# --- reference sample ---------------------------------------------------------------------


def save_reference(
    context: StepContext,
    snapshot: TrainingSet,
    booster: xgb.Booster,
    version: str,
    calibrator: Calibrator | None = None,
    rate: float | None = None,
) -> str:
    """Commit a seeded sample of the training features plus the model score as the drift reference.

    Written to ``reference/<model>/<version>/`` as a committed partition. Its manifest also records
    the train split's ``base_rate`` (share of the positive class), which scoring compares the
    flagged share of each day with; ``rate`` when given (a Dask fit, whose ``snapshot`` is a sample).

    Returns:
        The partition's URI.
    """
    import pyarrow as pa

    config = context.config
    rows = min(len(snapshot.train), config.drift.sample_rows)
    sample = snapshot.train.sample(n=rows, random_state=config.model.seed).sort_index()
    frame = sample.loc[:, snapshot.feature_columns].reset_index(drop=True)
    frame[SCORE_COLUMN] = predict(booster, sample, config, calibrator)
    prefix = reference_prefix(config, version)
    staging = context.lake.stage(prefix)
    staging.write_parquet("sample.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    context.lake.commit(
        staging,
        {
            "producer": "train",
            "model": config.model.registered_name,
            "version": version,
            "feature_columns": snapshot.feature_columns,
            "categorical_columns": snapshot.categorical_columns,
            "score_column": SCORE_COLUMN,
            "base_rate": base_rate(snapshot) if rate is None else rate,
            "training_run": snapshot.manifest["training_run"],
            "data_fingerprint": snapshot.manifest["fingerprint"],
            **context.lineage(),
        },
    )
    return context.lake.url(prefix)


def base_rate(snapshot: TrainingSet) -> float:
    """The share of the positive class in the train split."""
    return round(float(snapshot.train[snapshot.label].astype(int).mean()), 6)
