"""The example dataset's loader: dates move by whole weeks and each UTC day lands as one plain file."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pandas as pd
import pytest
from repotools.bikeshare import EXAMPLE_CONFIG, land, load_events

from mlsteps.contract.config import load_config
from mlsteps.platform.lake import Lake

HEADER = (
    "season,mnth,day,hr,holiday,weekday,workingday,weathersit,"
    + "temp,atemp,hum,windspeed,casual,registered,bikers"
)


@pytest.fixture
def table(tmp_path: Path) -> Path:
    """Three hours of ISLP's layout: two on 2011-01-01 (a Saturday), one on 2011-01-03 (a Monday)."""
    path = tmp_path / "Bikeshare.csv"
    path.write_text(
        f"{HEADER}\n"
        '1,"Jan",1,0,0,6,0,"clear",0.24,0.29,0.81,0,3,13,16\n'
        '1,"Jan",1,23,0,6,0,"cloudy/misty",0.3,0.3,0.7,0.1,20,200,220\n'
        '1,"Jan",3,8,0,1,1,"clear",0.2,0.2,0.5,0.2,10,190,200\n'
    )
    return path


def test_events_move_by_whole_weeks_and_keep_weekdays(table: Path) -> None:
    events = load_events(dt.date(2022, 1, 1), table)

    assert list(events["record_id"]) == ["2022-01-01T00", "2022-01-01T23", "2022-01-03T08"]
    assert list(events["hour_start"].dt.dayofweek) == [5, 5, 0]  # Saturday, Saturday, Monday
    assert list(events["busy_hour"]) == [False, True, True]


def test_a_start_that_would_change_weekdays_is_refused(table: Path) -> None:
    with pytest.raises(ValueError, match="whole number of weeks"):
        load_events(dt.date(2022, 1, 2), table)


def test_each_utc_day_lands_as_one_parquet_file(table: Path, tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))

    written = land(
        load_events(dt.date(2022, 1, 1), table), load_config(EXAMPLE_CONFIG), lake, dt.date(2022, 1, 1), 3
    )

    assert written == {"2022-01-01": 2, "2022-01-03": 1}
    landed = pd.read_parquet(lake.path("raw/bikeshare_hours/ds=2022-01-01/part-00000.parquet"))
    assert list(landed["hour_slot"]) == ["00", "23"]
