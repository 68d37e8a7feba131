"""Land the hourly bike-sharing table of 2011 (ISLP's ``Bikeshare.csv``) in the lake as raw partitions.

The table ships inside the ISLP package (install it with ``--no-deps``: only its data is read, so
its heavy dependencies are not needed). Each row is one hour of Capital Bikeshare in Washington
D.C.; the loader turns it into events of ``include/config/examples/bikeshare.yaml`` and writes one
plain Parquet file per UTC day under ``<dataset.source>/ds=YYYY-MM-DD/``, as any landing system
would (no manifest: README, "The landing contract"). Dates move by a whole number of weeks so that
each hour keeps its weekday, holiday and working-day flags; the same arguments land the same bytes.

    python -m repotools.bikeshare --start 2022-01-01 --days 120
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from mlsteps.contract.config import load_config
from mlsteps.contract.layout import partition
from mlsteps.platform.lake import Lake

if TYPE_CHECKING:
    import pandas as pd

    from mlsteps.contract.config import PipelineConfig

#: The table's first day; ``day`` in the CSV counts days of 2011 from 1.
TABLE_START = dt.date(2011, 1, 1)
TABLE_DAYS = 365
#: 2022 starts on a Saturday, as 2011 did: the default shift keeps calendar dates and weekdays.
DEFAULT_START = dt.date(2022, 1, 1)
#: An hour is busy from this many riders on (about the busiest quarter of 2011's hours).
BUSY_RIDERS = 200
EXAMPLE_CONFIG = Path(__file__).resolve().parents[1] / "config" / "examples" / "bikeshare.yaml"
SEASONS = {1: "winter", 2: "spring", 3: "summer", 4: "fall"}


def table_path() -> Path:
    """Where the installed ISLP package keeps ``Bikeshare.csv`` (found without importing ISLP).

    Raises:
        FileNotFoundError: ISLP is not installed.
    """
    spec = importlib.util.find_spec("ISLP")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the ISLP package is not installed; install its data with "
            "`pip install --no-deps -r tests/requirements-data.txt` (make install does)"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data" / "Bikeshare.csv"


def load_events(start: dt.date = DEFAULT_START, csv: Path | None = None) -> pd.DataFrame:
    """The whole table as events with the example config's column names, 2011-01-01 moved to ``start``.

    Raises:
        ValueError: ``start`` is not a whole number of weeks from 2011-01-01.
        FileNotFoundError: ISLP is not installed.
    """
    import pandas as pd

    shift = (start - TABLE_START).days
    if shift % 7:
        raise ValueError(
            f"--start {start} is not a whole number of weeks after {TABLE_START} (a Saturday); "
            "choose a Saturday so that weekdays and working days stay true"
        )
    raw = pd.read_csv(csv or table_path())
    hour_start = (
        pd.Timestamp(start, tz="UTC")
        + pd.to_timedelta(raw["day"] - 1, unit="D")
        + pd.to_timedelta(raw["hr"], unit="h")
    )
    return pd.DataFrame(
        {
            "record_id": hour_start.dt.strftime("%Y-%m-%dT%H"),
            "hour_slot": raw["hr"].map("{:02d}".format),
            "hour_start": hour_start.astype("datetime64[us, UTC]"),
            "season": raw["season"].map(SEASONS),
            "weather": raw["weathersit"],
            "holiday": raw["holiday"].astype(bool),
            "working_day": raw["workingday"].astype(bool),
            "temperature": raw["temp"].astype(float),
            "felt_temperature": raw["atemp"].astype(float),
            "humidity": raw["hum"].astype(float),
            "wind_speed": raw["windspeed"].astype(float),
            "riders": raw["bikers"].astype("int64"),
            "busy_hour": raw["bikers"] >= BUSY_RIDERS,
        }
    )


def land(
    events: pd.DataFrame, config: PipelineConfig, lake: Lake, first: dt.date, days: int
) -> dict[str, int]:
    """Write the events of ``days`` UTC days from ``first`` on, one Parquet file per day; rows per day."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dataset = config.dataset
    day_of_event = events[dataset.event_time].dt.date
    written = {}
    for offset in range(days):
        day = first + dt.timedelta(days=offset)
        rows = events.loc[day_of_event == day].reset_index(drop=True)
        if rows.empty:
            continue
        buffer = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(rows, preserve_index=False), buffer)
        lake.write_bytes(f"{partition(dataset.source, day)}/part-00000.parquet", buffer.getvalue())
        written[day.isoformat()] = len(rows)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m repotools.bikeshare", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--start", type=dt.date.fromisoformat, default=DEFAULT_START,
        help=f"The date 2011-01-01 becomes, a Saturday (default {DEFAULT_START}).",
    )  # fmt: skip
    parser.add_argument("--skip-days", type=int, default=0, help="Table days to leave out at the start.")
    parser.add_argument("--days", type=int, default=TABLE_DAYS, help="Days to land (default: all 365).")
    parser.add_argument("--config", type=Path, default=EXAMPLE_CONFIG, help="Config whose dataset to land.")
    parser.add_argument("--lake", help="Lake URI (default: $ML_LAKE_URI).")
    args = parser.parse_args(argv)
    try:
        events = load_events(args.start)
    except (ValueError, FileNotFoundError) as error:
        print(f"ERROR: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    lake = Lake(args.lake)
    first = args.start + dt.timedelta(days=args.skip_days)
    written = land(events, load_config(args.config), lake, first, args.days)
    print(f"landed {sum(written.values())} rows in {len(written)} day(s) from {first} under {lake.uri}")


if __name__ == "__main__":
    main()
