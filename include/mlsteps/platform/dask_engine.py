"""Training on a Dask cluster with ``xgboost.dask``: the cluster, the distributed read and the fit.

One code path for both modes; only :func:`dask_client` differs by mode. In local mode the cluster
is a ``distributed.LocalCluster`` of worker processes; in kubernetes mode it is a DaskCluster of the
dask-kubernetes operator, made for the step (:mod:`mlsteps.platform.dask_kubernetes`).

The workers read the snapshot's Parquet themselves (one partition per row group), encode each
partition with :func:`~mlsteps.platform.datasets.model_input`, and train with the same parameters,
seed, early stopping on the same validation slice, refit and calibration as single-node training
(:mod:`mlsteps.logic.training`). The train step's own process holds only the split keys (event
time and row id), the validation and calibration scores, and a bounded sample for MLflow and the
drift reference; never the whole set.
"""

from __future__ import annotations

import logging
import resource
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.contract.layout import snapshot_prefix
from mlsteps.errors import StepError
from mlsteps.logic.calibration import fit_calibrator
from mlsteps.logic.training import Fit, base_params, early_stopping
from mlsteps.platform.datasets import SPLITS, TrainingSet, model_input

if TYPE_CHECKING:
    import dask.dataframe as dd
    import pandas as pd
    from distributed import Client, Future
    from distributed.deploy import Cluster

    from mlsteps.contract.config import DaskConfig, PipelineConfig
    from mlsteps.contract.settings import StepSettings
    from mlsteps.platform.lake import Lake

log = logging.getLogger(__name__)

#: The column :func:`with_part` adds: 0 = fit, 1 = early-stopping slice, 2 = calibration slice.
PART = "_mlsteps_part"
FIT, VALIDATION, CALIBRATION = 0, 1, 2
#: The label as float32 and the row id, beside the encoded features (names no config column may take).
LABEL, ROW = "_mlsteps_label", "_mlsteps_row"
#: How long the step waits for every worker to join (pods may first have to be scheduled).
WORKERS_TIMEOUT_S = 300
#: The scheduler settings of every cluster the step makes. Work stealing is off: XGBoost trains each
#: partition on the worker its scheduler reports holding it, so a stolen column selection or packing
#: task moves that partition's rows to another worker, which changes the fit (another split of the
#: rows, other quantile sketches) and breaks the per-worker share that bounds memory. With one worker
#: busy, stealing put every partition on the other worker (tests/platform/test_dask_engine.py).
SCHEDULER_CONFIG: dict[str, Any] = {"distributed.scheduler.work-stealing": False}


def scheduler_env() -> dict[str, str]:
    """:data:`SCHEDULER_CONFIG` as the environment variables Dask reads (a scheduler pod's settings)."""
    return {
        "DASK_" + key.upper().replace(".", "__").replace("-", "_"): str(value)
        for key, value in SCHEDULER_CONFIG.items()
    }


@contextmanager
def dask_client(dask: DaskConfig, settings: StepSettings) -> Iterator[Client]:
    """A client of a cluster made for this step, closed on success and on failure.

    Raises:
        StepError: kubernetes mode: the pod cannot create its cluster (see
            :func:`~mlsteps.platform.dask_kubernetes.kube_cluster`).
    """
    from distributed import Client

    cluster = _cluster(dask, settings)
    try:
        with Client(cluster) as client:
            client.wait_for_workers(dask.workers, timeout=WORKERS_TIMEOUT_S)
            yield client
    finally:
        cluster.close()


def _cluster(dask: DaskConfig, settings: StepSettings) -> Cluster:
    """The mode's cluster: the operator's DaskCluster in a pod, local worker processes otherwise."""
    if settings.execution_mode == "kubernetes":
        from mlsteps.platform.dask_kubernetes import kube_cluster

        return kube_cluster(dask, settings)
    import dask as dask_library
    from distributed import LocalCluster

    with dask_library.config.set(SCHEDULER_CONFIG):  # the scheduler, in this process, reads it now
        return LocalCluster(
            n_workers=dask.workers,
            threads_per_worker=dask.threads_per_worker,
            memory_limit=dask.memory_limit,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )


def read_split(lake: Lake, manifest: dict[str, Any], split: str) -> dd.DataFrame:
    """One split of a committed snapshot as a lazy Dask frame: one partition per Parquet row group,
    each read by a worker through the lake's own filesystem (local or S3)."""
    import dask.dataframe as dd
    import pyarrow.parquet as pq

    prefix = snapshot_prefix(manifest["training_run"])
    entry = next(e for e in manifest["files"] if e["path"].endswith(f"-{split}.parquet"))
    path = lake.path(f"{prefix}/{entry['path']}")
    with lake.fs.open_input_file(path) as source:
        metadata = pq.ParquetFile(source).metadata
    meta = metadata.schema.to_arrow_schema().empty_table().to_pandas()
    groups = [(lake.fs, path, group) for group in range(metadata.num_row_groups)]
    return dd.from_map(read_row_group, groups, meta=meta, enforce_metadata=False)


def read_row_group(where: tuple[Any, str, int]) -> pd.DataFrame:
    """One row group of a Parquet file, as pandas (runs on a worker)."""
    import pyarrow.parquet as pq

    filesystem, path, group = where
    with filesystem.open_input_file(path) as source:
        return pq.ParquetFile(source).read_row_group(group).to_pandas()


def peak_rss_bytes() -> int:
    """This process's peak resident memory (Linux reports kilobytes)."""
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


# --- the time split, partition by partition ----------------------------------------------------


@dataclass(frozen=True)
class Cuts:
    """The first (event time, row id) of the early-stopping slice and, with calibration, of its slice."""

    validation: tuple[Any, Any]
    calibration: tuple[Any, Any] | None


def time_cuts(keys: pd.DataFrame, validation_fraction: float, calibration_fraction: float) -> Cuts:
    """The cut points :func:`~mlsteps.logic.training.split_by_time` uses, from the two key columns alone.

    ``keys`` holds the event time and row id columns, in that order.
    """
    ordered = keys.sort_values(list(keys.columns), kind="stable").reset_index(drop=True)
    held = int(round(len(ordered) * calibration_fraction))
    end = len(ordered) - held
    start = end - int(round(len(ordered) * validation_fraction))
    first = tuple(ordered.iloc[start])
    calibration = tuple(ordered.iloc[end]) if calibration_fraction > 0 and end < len(ordered) else None
    return Cuts((first[0], first[1]), (calibration[0], calibration[1]) if calibration else None)


def with_part(frame: pd.DataFrame, event_time: str, row_id: str, cuts: Cuts) -> pd.DataFrame:
    """``frame`` plus :data:`PART`: which slice each row is in, by its (event time, row id)."""
    import numpy as np

    def at_or_after(cut: tuple[Any, Any]) -> Any:
        times = frame[event_time]
        return (times > cut[0]) | ((times == cut[0]) & (frame[row_id] >= cut[1]))

    part = np.where(at_or_after(cuts.validation), VALIDATION, FIT)
    if cuts.calibration is not None:
        part = np.where(at_or_after(cuts.calibration), CALIBRATION, part)
    return frame.assign(**{PART: part.astype("int8")})


def prepared(
    frame: pd.DataFrame, manifest: dict[str, Any], cuts: Cuts, config: PipelineConfig
) -> pd.DataFrame:
    """One partition as the model sees it: features encoded by :func:`model_input`, the label as
    float32 (:data:`LABEL`), the row id (:data:`ROW`) and the slice (:data:`PART`); nothing else."""
    sliced = with_part(frame, manifest["event_time"], manifest["row_id"], cuts)
    encoded = model_input(frame, list(manifest["feature_columns"]), config)
    label = frame[manifest["label"]].astype("float32")
    return encoded.assign(**{LABEL: label, ROW: frame[manifest["row_id"]], PART: sliced[PART]})


# --- training ------------------------------------------------------------------------------


@dataclass
class DaskFit:
    """A fit trained on the cluster, a bounded sample of the snapshot for the driver's own use, the
    train split's exact base rate, and each worker's peak memory."""

    fit: Fit
    view: TrainingSet
    base_rate: float
    worker_peak_rss: dict[str, int]


def train_on_dask(
    client: Client, lake: Lake, manifest: dict[str, Any], config: PipelineConfig, device: str
) -> DaskFit:
    """Train like :func:`~mlsteps.logic.training.train_model` (n_trials 0), with the data on the workers.

    Raises:
        StepError: A part of the split lacks one of the two classes, or the device is not cpu.
    """
    import dask.dataframe as dd
    import xgboost as xgb
    import xgboost.dask
    from sklearn.metrics import roc_auc_score

    if device != "cpu":
        raise StepError(
            "model.engine dask trains on cpu only in this version; use --device cpu or engine single"
        )
    started = time.perf_counter()
    event_time, row_id = manifest["event_time"], manifest["row_id"]
    features = list(manifest["feature_columns"])
    fraction = config.model.validation_fraction
    calibrating = config.model.calibration != "none"
    raw = read_split(lake, manifest, "train")
    cuts = time_cuts(raw[[event_time, row_id]].compute(), fraction, fraction if calibrating else 0.0)
    meta = prepared(raw._meta, manifest, cuts, config)
    train = raw.map_partitions(prepared, manifest, cuts, config, meta=meta)
    check_parts(train, manifest["training_run"], calibrating)

    def encoded(part: dd.DataFrame) -> tuple[dd.DataFrame, dd.Series]:
        return part[features], part[LABEL]

    params = {**base_params(config, device), "nthread": config.model.dask.threads_per_worker}
    fit_part = spread(client, train[train[PART] == FIT])
    validation_part = spread(client, train[train[PART] == VALIDATION])
    fit_x, fit_y = encoded(fit_part)
    validation_x, validation_y = encoded(validation_part)
    train_matrix = xgb.dask.DaskQuantileDMatrix(client, fit_x, fit_y, enable_categorical=True)
    validation_matrix = xgb.dask.DaskQuantileDMatrix(
        client, validation_x, validation_y, enable_categorical=True, ref=train_matrix
    )
    stopping = early_stopping(config)
    output = xgb.dask.train(
        client,
        params,
        train_matrix,
        num_boost_round=config.model.num_boost_round,
        evals=[(validation_matrix, "validation")],
        callbacks=[stopping],
        verbose_eval=False,
    )
    booster: xgb.Booster = output["booster"]
    scores = xgb.dask.inplace_predict(client, booster, validation_x).compute()
    auc = float(roc_auc_score(validation_y.compute(), scores))
    fit = Fit(booster, params, booster.num_boosted_rounds() - 1, round(auc, 6))
    fit.rows = int(len(fit_part))
    del train_matrix, validation_matrix
    if config.model.refit:
        whole_x, whole_y = encoded(dd.concat([fit_part, validation_part]))
        matrix = xgb.dask.DaskQuantileDMatrix(client, whole_x, whole_y, enable_categorical=True)
        refitted = xgb.dask.train(
            client, params, matrix, num_boost_round=fit.best_iteration + 1, verbose_eval=False
        )
        fit.booster, fit.rows, fit.refit = refitted["booster"], int(len(whole_y)), True
        del matrix
    if calibrating:
        calibration_x, calibration_y = encoded(spread(client, train[train[PART] == CALIBRATION]))
        raw = xgb.dask.inplace_predict(client, fit.booster, calibration_x).compute()
        fit.calibrator = fit_calibrator(config.model.calibration, calibration_y.compute().to_numpy(), raw)
    fit.seconds = round(time.perf_counter() - started, 3)
    rate = round(float(train[LABEL].mean().compute()), 6)
    view = driver_view(lake, manifest, config.drift.sample_rows, config.model.seed)
    peaks = {str(address): int(rss) for address, rss in client.run(peak_rss_bytes).items()}
    return DaskFit(fit, view, rate, peaks)


def spread(client: Client, frame: dd.DataFrame) -> dd.DataFrame:
    """``frame`` computed on the workers by :func:`place`, and kept there."""
    import dask.dataframe as dd

    return dd.from_delayed(place(client, frame), meta=frame._meta, verify_meta=False)


def place(client: Client, frame: dd.DataFrame) -> list[Future]:
    """``frame``'s partitions computed on the workers, every worker holding some of its rows.

    XGBoost refuses a worker with no rows when there are categorical features. The partitions (one
    per Parquet row group, in time order) are dealt out in turn, each computed on its own worker,
    so no row crosses between workers and a worker holds only its own share: this is what lets a
    training set larger than one worker's ``memory_limit`` train. A slice with fewer partitions
    than workers, or one that left a worker with no rows (a time slice lies in the row groups of
    its last days), is then shuffled by row id into one partition per worker; such a slice is
    small (the early-stopping or calibration slice, or a small set).
    """
    import dask.dataframe as dd

    workers = sorted(client.nthreads())

    def pinned(parts: list[Any]) -> list[Future]:
        return [
            client.compute(part, workers=[workers[index % len(workers)]], allow_other_workers=False)
            for index, part in enumerate(parts)
        ]

    dealt = pinned(frame.to_delayed())
    lengths = client.gather([client.submit(len, future, pure=False) for future in dealt])
    if all(sum(lengths[index :: len(workers)]) for index in range(len(workers))):
        return dealt
    gathered = dd.from_delayed(dealt, meta=frame._meta, verify_meta=False)
    return pinned(gathered.shuffle(on=ROW, npartitions=len(workers), shuffle_method="tasks").to_delayed())


def check_parts(train: dd.DataFrame, training_run: str, calibrating: bool) -> None:
    """Every slice holds both classes, as :func:`~mlsteps.logic.training.split_by_time` demands.

    Raises:
        StepError: A slice is empty or lacks one class.
    """
    pairs = train[[PART, LABEL]].map_partitions(lambda f: f.drop_duplicates()).compute()
    counts = pairs.drop_duplicates().groupby(PART)[LABEL].nunique()
    names = [(FIT, "training"), (VALIDATION, "validation")]
    for part, name in [*names, *([(CALIBRATION, "calibration")] if calibrating else [])]:
        classes = int(counts.get(part, 0))
        if classes < 2:
            raise StepError(
                f"the {name} part of snapshot {training_run} has {classes} label class(es); both classes "
                "are needed, widen the training window"
            )


def driver_view(lake: Lake, manifest: dict[str, Any], rows: int, seed: int) -> TrainingSet:
    """A seeded sample of at most ``rows`` rows of each split, drawn on the workers: what the train
    step's own process logs to MLflow (schema, signature, input example) and samples the drift
    reference from."""
    frames = {}
    for split in SPLITS:
        frame = read_split(lake, manifest, split)
        total = int(len(frame))
        share = min(1.0, rows / total) if total else 1.0
        frames[split] = (frame.sample(frac=share, random_state=seed) if share < 1.0 else frame).compute()
        frames[split] = frames[split].reset_index(drop=True)
    return TrainingSet(frames["train"], frames["holdout"], manifest)
