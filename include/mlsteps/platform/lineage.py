"""What training and scoring record so that a prediction can be traced and a model rebuilt.

These helpers are light on purpose (no pandas, no Feast): `trace` uses them to read records,
and the writing steps use them to make the records in the first place.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.feature_schema import lookback_days
from mlsteps.contract.layout import partition
from mlsteps.contract.settings import UNKNOWN_CODE_VERSION, StepSettings

if TYPE_CHECKING:
    import xgboost as xgb

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.platform.lake import Lake

#: Registry tag (run and version): SHA-256 of the booster's UBJSON bytes, the model's content hash.
MODEL_SHA256_TAG = "mlsteps.model_sha256"
#: Registry tag (run and version): package versions training ran with, as compact JSON.
VERSIONS_TAG = "mlsteps.versions"
#: Registry tag (run and version): the cache key of the train run that registered it, so that `trace`
#: finds the runs that reused the version (``cache/train/<key>/reused-by/``).
CACHE_KEY_TAG = "mlsteps.cache_key"
#: Packages whose versions can change a training set or a model.
TRACKED_PACKAGES = (
    "mlsteps", "xgboost", "numpy", "pandas", "pyarrow", "scikit-learn", "mlflow", "feast", "optuna",
)  # fmt: skip


def code_version(settings: StepSettings | None = None) -> str:
    """The code's git SHA: ``$ML_GIT_SHA`` (the factory and the step image set it), ``$ML_CODE_VERSION``,
    else ``git rev-parse HEAD`` of the checkout this package runs from, else ``unknown``."""
    return (settings or StepSettings.from_env()).code_version or _checkout_sha()


@functools.cache
def _checkout_sha() -> str:
    try:
        found = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN_CODE_VERSION
    return found.stdout.strip() or UNKNOWN_CODE_VERSION


def package_versions() -> dict[str, str]:
    """Python and the installed versions of :data:`TRACKED_PACKAGES` (read from metadata, not imported)."""
    versions = {"python": platform.python_version()}
    for name in TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def config_document(config: PipelineConfig) -> dict[str, Any]:
    """The whole pipeline config as JSON-able data: loading it back gives the same ``config_hash``."""
    return dict(config.model_dump(mode="json"))


def booster_sha256(booster: xgb.Booster) -> str:
    """The content hash of a booster: SHA-256 of its UBJSON serialization (trees, parameters, features)."""
    return hashlib.sha256(bytes(booster.save_raw(raw_format="ubj"))).hexdigest()


def raw_days(config: PipelineConfig, start: dt.datetime, end: dt.datetime) -> list[dt.date]:
    """Every raw day features of ``[start, end)`` read: the interval's days plus the look-back days."""
    first = start.date() - dt.timedelta(days=lookback_days(config))
    last = (end - dt.timedelta(microseconds=1)).date()
    return [first + dt.timedelta(days=offset) for offset in range((last - first).days + 1)]


def partition_digest(lake: Lake, prefix: str) -> str | None:
    """A content digest of one partition, or None when it does not exist.

    A committed partition's digest comes from the SHA-256 checksums its manifest lists. A landing
    partition without a manifest is hashed file by file (its Parquet files, as readers see them).
    """
    manifest = lake.manifest(prefix)
    if manifest is not None:
        checksums = sorted(str(entry["sha256"]) for entry in manifest["files"])
        return hashlib.sha256("\n".join(checksums).encode()).hexdigest()
    files = lake.partition_files(prefix)
    if not files:
        return None
    digest = hashlib.sha256()
    for relative in files:
        with lake.fs.open_input_stream(lake.path(relative)) as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    return f"landing:{digest.hexdigest()}"


def raw_record(lake: Lake, config: PipelineConfig, start: dt.datetime, end: dt.datetime) -> dict[str, Any]:
    """What raw data a training set was built from: the prefix, and each day's digest (None: absent)."""
    source = config.dataset.source
    days = raw_days(config, start, end)
    return {
        "prefix": source,
        "read_from": days[0].isoformat(),
        "partitions": {day.isoformat(): partition_digest(lake, partition(source, day)) for day in days},
    }


def feature_batches(
    lake: Lake, config: PipelineConfig, days: list[dt.date]
) -> dict[str, dict[str, str] | None]:
    """For each day, the pass its committed features were computed in (None: not recorded)."""
    from mlsteps.contract.layout import features_prefix

    batches: dict[str, dict[str, str] | None] = {}
    for day in days:
        manifest = lake.manifest(partition(features_prefix(config), day)) or {}
        batches[day.isoformat()] = manifest.get("computed_in")
    return batches
