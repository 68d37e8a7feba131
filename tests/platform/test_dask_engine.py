"""The Dask engine's split and data placement: pure functions on in-memory frames, and ``spread`` on a
real two-worker cluster (threads in this process: placement, not memory, is under test here; the
train step's tests run worker processes)."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pytest

from mlsteps.logic.training import split_by_time
from mlsteps.platform.dask_engine import (
    CALIBRATION,
    FIT,
    PART,
    ROW,
    VALIDATION,
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
