"""What every step receives besides its own options: config, lake, data interval and lineage ids."""

from __future__ import annotations

import argparse
import datetime as dt
from dataclasses import dataclass, field
from functools import cached_property

from mlsteps.contract.config import PipelineConfig, config_path, load_config
from mlsteps.contract.settings import StepSettings
from mlsteps.errors import StepError
from mlsteps.platform.lake import Lake
from mlsteps.platform.lineage import code_version


def parse_instant(text: str) -> dt.datetime:
    """Parse an ISO date or datetime into an aware UTC datetime (dates mean midnight UTC)."""
    try:
        value = dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an ISO date or datetime such as 2026-11-01 or 2026-11-01T00:00:00+00:00"
        ) from None
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def parse_day(text: str) -> dt.date:
    """Parse an ISO date (a datetime is truncated to its UTC day)."""
    return parse_instant(text).date()


def add_day_argument(parser: argparse.ArgumentParser, help: str) -> None:
    """The required ``--ds`` option of a step that works on one day."""
    parser.add_argument("--ds", type=parse_day, required=True, help=f"{help} (YYYY-MM-DD)")


@dataclass(frozen=True)
class DataInterval:
    """The half-open interval ``[start, end)`` a run is responsible for."""

    start: dt.datetime
    end: dt.datetime

    def __post_init__(self) -> None:
        if self.end <= self.start:
            raise StepError(
                f"data interval end {self.end.isoformat()} is not after its start {self.start.isoformat()}; "
                "pass --start before --end"
            )

    def days(self) -> list[dt.date]:
        """Every UTC day the interval touches."""
        first, last = self.start.date(), (self.end - dt.timedelta(microseconds=1)).date()
        return [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]

    def __str__(self) -> str:
        return f"[{self.start.isoformat()}, {self.end.isoformat()})"


def add_interval_arguments(parser: argparse.ArgumentParser) -> None:
    """``--start``/``--end``: the data interval (Airflow's data_interval_start/end)."""
    parser.add_argument("--start", type=parse_instant, required=True, help="Interval start (inclusive), ISO.")
    parser.add_argument("--end", type=parse_instant, required=True, help="Interval end (exclusive), ISO.")


@dataclass(frozen=True)
class StepContext:
    """Config, lake, settings and lineage for one step run; built once from the CLI options.

    ``settings`` are what the CLI read from the environment (``args.settings``); a context built
    without them reads the environment once, when built.
    """

    config_file: str | None
    lake_uri: str | None
    dag_id: str
    run_id: str
    settings: StepSettings = field(default_factory=StepSettings.from_env)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> StepContext:
        settings = getattr(args, "settings", None) or StepSettings.from_env()
        return cls(args.config, args.lake, args.dag_id, args.run_id, settings)

    @cached_property
    def config(self) -> PipelineConfig:
        return load_config(self.config_file or config_path(self.settings))

    @cached_property
    def lake(self) -> Lake:
        return Lake(self.lake_uri, self.settings)

    def lineage(self) -> dict[str, str]:
        """Tags that tie an output to the run, code and config that produced it."""
        return {
            "dag_id": self.dag_id,
            "dag_run_id": self.run_id,
            "config_hash": self.config.config_hash,
            "git_sha": code_version(self.settings),
            "image": self.settings.step_image,
        }
