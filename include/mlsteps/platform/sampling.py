"""Seeded uniform samples of lake partitions, drawn while streaming the needed columns."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlsteps.logic.drift import sample_positions

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from mlsteps.platform.lake import Lake


def missing_columns(lake: Lake, files: list[str], columns: list[str]) -> list[str]:
    """The wanted columns that some Parquet file lacks (reads only the footers)."""
    import pyarrow.parquet as pq

    missing: set[str] = set()
    for relative in files:
        with lake.fs.open_input_file(lake.path(relative)) as handle:
            names = set(pq.read_schema(handle).names)
        missing.update(c for c in columns if c not in names)
    return [c for c in columns if c in missing]


def sample_partition(
    lake: Lake,
    files: list[str],
    columns: list[str],
    total_rows: int,
    limit: int,
    rng: np.random.Generator,
    batch_rows: int = 65_536,
) -> pd.DataFrame:
    """Stream the needed columns and keep only the sampled rows; stops once the last one is read.

    Args:
        lake: The lake holding the files.
        files: The partition's data files, in manifest order (row positions count across them).
        columns: The columns to read.
        total_rows: The partition's row count from its manifest.
        limit: The most rows to keep.
        rng: The seeded generator that picks the rows.
        batch_rows: Rows per streamed batch (memory per batch).

    Returns:
        The sampled rows, in partition order.
    """
    import numpy as np
    import pyarrow as pa

    positions = sample_positions(total_rows, limit, rng)
    kept: list[pa.RecordBatch] = []
    offset, taken = 0, 0
    schema = None
    for batch in lake.iter_batches(files, columns=columns, batch_rows=batch_rows):
        schema = batch.schema
        end = offset + batch.num_rows
        stop = int(np.searchsorted(positions, end, side="left"))
        if stop > taken:
            kept.append(batch.take(pa.array(positions[taken:stop] - offset)))
        taken, offset = stop, end
        if taken >= len(positions):
            break
    if not kept:
        return pa.Table.from_batches([], schema=schema).to_pandas() if schema else _empty(columns)
    # Parts written apart may differ in schema metadata; concat_tables tolerates that, from_batches not.
    tables = [pa.Table.from_batches([batch]) for batch in kept]
    return pa.concat_tables(tables, promote_options="default").to_pandas()


def _empty(columns: list[str]) -> pd.DataFrame:
    import pandas as pd

    return pd.DataFrame({c: pd.Series(dtype="float64") for c in columns})
