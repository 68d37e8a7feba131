"""The Dask engine's split and data placement: pure functions on in-memory frames, ``spread`` on a
real two-worker cluster (threads in this process: placement, not memory, is under test here; the
train step's tests run worker processes), and the step's own cluster keeping placed partitions
where they are when XGBoost takes them."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pandas as pd
import pytest

from mlsteps.contract.config import DaskConfig
from mlsteps.contract.settings import StepSettings
from mlsteps.logic.training import split_by_time
from mlsteps.platform.dask_engine import (
    CALIBRATION,
    FIT,
    PART,
    ROW,
    VALIDATION,
    dask_client,
    place,
    spread,
    time_cuts,
    with_part,
)
from mlsteps.platform.datasets import TrainingSet

pytest.importorskip("distributed")

EVENT_TIME, ROW_ID, LABEL = "event_time", "row_id", "label"


def keyed_rows(count: int) -> pd.DataFrame:
    """``count`` rows with ties on event time (three rows per second), row ids shuffled in order."""
    times = pd.Timestamp("2026-10-01", tz="UTC") + pd.to_timedelta([i // 3 for i in range(count)], unit="s")
    return pd.DataFrame(
        {
            EVENT_TIME: times,
            ROW_ID: [f"r{(i * 7919) % count:05d}" for i in range(count)],
            LABEL: [i % 2 == 0 for i in range(count)],
        }
    )


def snapshot_of(frame: pd.DataFrame) -> TrainingSet:
    manifest = {"event_time": EVENT_TIME, "row_id": ROW_ID, "label": LABEL, "training_run": "t"}
    return TrainingSet(frame, frame.iloc[:0], manifest)


@pytest.mark.parametrize("calibration", [0.0, 0.1])
def test_the_slices_are_the_rows_single_node_training_takes(calibration: float) -> None:
    frame = keyed_rows(300).sample(frac=1.0, random_state=3)
    cuts = time_cuts(frame[[EVENT_TIME, ROW_ID]], 0.2, calibration)
    parted = with_part(frame, EVENT_TIME, ROW_ID, cuts)
    splits = split_by_time(snapshot_of(frame), 0.2, calibration)
    expected = {FIT: splits.fit, VALIDATION: splits.validation}
    if splits.calibration is not None:
        expected[CALIBRATION] = splits.calibration
    found = {part: set(rows[ROW_ID]) for part, rows in parted.groupby(PART)}
    assert found == {part: set(rows[ROW_ID]) for part, rows in expected.items()}


@pytest.fixture
def client() -> Iterator[object]:
    from distributed import Client, LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as client:
            yield client


def rows_per_worker(client: object, futures: list[object]) -> dict[str, int]:
    """How many rows of the placed partitions each worker holds."""
    lengths = client.gather([client.submit(len, future, pure=False) for future in futures])  # type: ignore[attr-defined]
    where = client.who_has(futures)  # type: ignore[attr-defined]
    held: dict[str, int] = {}
    for future, length in zip(futures, lengths, strict=True):
        for worker in where[future.key]:  # type: ignore[attr-defined]
            held[worker] = held.get(worker, 0) + length
    return held


def as_dask(frame: pd.DataFrame, partitions: int) -> object:
    import dask.dataframe as dd

    return dd.from_pandas(frame.rename(columns={ROW_ID: ROW}), npartitions=partitions, sort=False)


def test_place_deals_the_partitions_to_the_workers_without_moving_rows(client: object) -> None:
    futures = place(client, as_dask(keyed_rows(800), 8))  # type: ignore[arg-type]

    assert (len(futures), sorted(rows_per_worker(client, futures).values())) == (8, [400, 400])  # type: ignore[arg-type]


def test_place_shuffles_a_slice_that_left_a_worker_without_rows(client: object) -> None:
    rows = keyed_rows(800)
    cut = rows[EVENT_TIME].iloc[702]  # a tie-free cut inside the last of the 8 partitions
    frame = as_dask(rows, 8)

    futures = place(client, frame[frame[EVENT_TIME] >= cut])  # type: ignore[arg-type]
    held = rows_per_worker(client, futures)  # type: ignore[arg-type]

    assert (len(futures), len(held), min(held.values()) > 0, sum(held.values())) == (2, 2, True, 98)


def test_spread_keeps_every_row(client: object) -> None:
    rows = keyed_rows(500)

    gathered = spread(client, as_dask(rows, 1)).compute()  # type: ignore[arg-type]

    assert sorted(gathered[ROW]) == sorted(rows[ROW_ID])


def test_the_steps_cluster_leaves_each_partition_on_its_worker_for_xgboost_while_one_is_busy() -> None:
    """XGBoost trains a partition on the worker said to hold it after its own column selection and
    packing tasks; with work stealing those tasks moved every partition to the idle worker here."""
    import dask.dataframe as dd
    import numpy as np
    import xgboost as xgb
    import xgboost.dask  # noqa: F401 - xgb.dask

    rows = keyed_rows(8000)
    rows["x"] = np.arange(len(rows), dtype="float64") % 17
    rows[LABEL] = rows[LABEL].astype("float32")
    with dask_client(DaskConfig(workers=2, memory_limit="512MiB"), StepSettings()) as client:
        partitions = as_dask(rows, 8)
        futures = place(client, partitions)  # type: ignore[arg-type]
        placed = dict(zip([future.key for future in futures], holder_of(client, futures), strict=True))  # type: ignore[attr-defined]
        frame = dd.from_delayed(futures, meta=partitions._meta, verify_meta=False)  # type: ignore[attr-defined]
        busy = client.submit(time.sleep, 3, workers=[placed[futures[0].key]], pure=False)
        matrix = xgb.dask.DaskQuantileDMatrix(client, frame[["x"]], frame[LABEL])
        busy.result()
        trained_on = {
            matrix.partition_order[part.key]: worker
            for worker, parts in matrix.worker_map.items()
            for part in parts
        }

    assert trained_on == {index: placed[future.key] for index, future in enumerate(futures)}  # type: ignore[attr-defined]


def holder_of(client: object, futures: list[object]) -> list[str]:
    """The one worker holding each placed partition."""
    where = client.who_has(futures)  # type: ignore[attr-defined]
    assert {len(where[future.key]) for future in futures} == {1}  # type: ignore[attr-defined]
    return [where[future.key][0] for future in futures]  # type: ignore[attr-defined]
