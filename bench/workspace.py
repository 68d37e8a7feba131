"""The benchmark's private world: a temp lake, a SQLite MLflow, a real training set and a registered champion.

Everything is produced by the pipeline's own code: events from ``mlsteps.steps.generate``, features
from ``mlsteps.logic.features.compute_features``, the snapshot from ``mlsteps.platform.datasets``, the model
from the real ``train`` step (which logs to MLflow and registers a version with this pipeline's
lineage tag), and the ``champion`` alias set on it, so that the real ``score`` step can run.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bench.common import child_env, run_case

if TYPE_CHECKING:
    import pandas as pd

    from mlsteps.contract.config import PipelineConfig

CONFIG_FILE = Path(__file__).resolve().parents[1] / "include" / "config" / "pipeline.yaml"
#: The real second dataset (hourly bike-sharing demand), landed by ``repotools.bikeshare``.
EXAMPLE_CONFIG_FILE = CONFIG_FILE.parent / "examples" / "bikeshare.yaml"
TRAINING_RUN = "bench"
#: The training window: the features of these days form the snapshot; the last holdout_days are held out.
WINDOW_START = dt.date(2026, 10, 1)
WINDOW_DAYS = 32
#: Scoring partitions are dated after the window, one day per size.
SCORING_FIRST_DAY = dt.date(2026, 12, 1)
PART_ROWS = 1_000_000
#: The model the bundled config names; ``train`` registers it with early stopping.
PIPELINE_MODEL = "card_fraud_xgb"
#: A second model for scoring, of production size: see ``register_full_model`` and the README.
FULL_MODEL = "card_fraud_xgb_full"


@dataclass(frozen=True)
class Workspace:
    """Paths and the environment every child process of the benchmark runs with."""

    root: Path
    #: The pipeline config every child reads: the demo's, or the example dataset's.
    config: Path = CONFIG_FILE

    @property
    def lake(self) -> str:
        return str(self.root / "lake")

    @property
    def tracking_uri(self) -> str:
        return f"sqlite:///{self.root / 'mlflow.db'}"

    def config_file(self, model: str) -> Path:
        """This workspace's config, or a copy whose registered model is ``model`` (same pipeline name)."""
        if not model or model == PIPELINE_MODEL:
            return self.config
        path = self.root / f"pipeline-{model}.yaml"
        if not path.exists():
            import yaml

            document = yaml.safe_load(self.config.read_text())
            document["model"]["registered_name"] = model
            path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    def env(self, model: str = "", **extra: str) -> dict[str, str]:
        airflow_home = self.root / "airflow"
        airflow_home.mkdir(exist_ok=True)
        return child_env(
            {
                "ML_LAKE_URI": self.lake,
                "ML_PIPELINE_CONFIG": str(self.config_file(model)),
                "ML_STATE_DIR": str(self.root / "state"),
                "MLFLOW_TRACKING_URI": self.tracking_uri,
                "AIRFLOW_HOME": str(airflow_home),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
                "GIT_PYTHON_REFRESH": "quiet",
                **extra,
            }
        )

    def case(
        self,
        target: str,
        model: str = "",
        timeout: float = 1800,
        environment: dict[str, str] | None = None,
        **arguments: Any,
    ) -> Any:
        """Run ``bench.<module>:<function>`` in a fresh interpreter inside this workspace.

        ``model`` picks the registered model the case's config names (default: the pipeline's own);
        ``environment`` adds to or replaces the workspace's variables (e.g. another tracking URI).
        """
        return run_case(target, arguments, self.env(model, **(environment or {})), self.root, timeout)


def config() -> PipelineConfig:
    """The config this process runs with (``$ML_PIPELINE_CONFIG``, as the steps read it)."""
    from mlsteps.contract.config import load_config

    return load_config(os.environ.get("ML_PIPELINE_CONFIG") or CONFIG_FILE)


# --- data made by the pipeline's own code --------------------------------------------------------


def labelled_features(rows_per_day: int, customers: int, seed: int) -> pd.DataFrame:
    """Generated events of the window (plus look-back) through the real features code, with the label."""
    from mlsteps.contract.feature_schema import lookback_days
    from mlsteps.steps.generate import generate_events

    settings = config()
    first = WINDOW_START - dt.timedelta(days=lookback_days(settings))
    days = [first + dt.timedelta(days=i) for i in range((WINDOW_START - first).days + WINDOW_DAYS)]
    events = generate_events(days, rows_per_day, customers, seed)
    return features_with_label(events, WINDOW_START, WINDOW_DAYS)


def features_with_label(events: pd.DataFrame, window_start: dt.date, window_days: int) -> pd.DataFrame:
    """The window's features of ``events`` by the real features code, with each row's label."""
    from mlsteps.logic.features import compute_features

    settings = config()
    start = dt.datetime.combine(window_start, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=window_days)
    features = compute_features(events, settings, start, end)
    label = settings.dataset.label
    labels = events.set_index(settings.dataset.row_id)[label].astype("int64")
    return features.assign(**{label: labels.reindex(features[settings.dataset.row_id]).to_numpy()})


def write_training_set(root: Path, rows_per_day: int, customers: int, seed: int) -> dict[str, Any]:
    """Commit the snapshot ``training/bench`` of generated events, as ``build-training-set`` lays it out."""
    frame = labelled_features(rows_per_day, customers, seed)
    return save_snapshot(root, frame, WINDOW_START, WINDOW_DAYS)


def save_snapshot(root: Path, frame: pd.DataFrame, window_start: dt.date, window_days: int) -> dict[str, Any]:
    """Split the window's labelled features by time and commit them as the snapshot ``training/bench``."""
    from mlsteps.contract.feature_schema import categorical_columns, feature_columns
    from mlsteps.platform.datasets import save_training_set
    from mlsteps.platform.lake import Lake
    from mlsteps.steps.training_set import split_by_time

    settings = config()
    start = dt.datetime.combine(window_start, dt.time(), tzinfo=dt.UTC)
    end = start + dt.timedelta(days=window_days)
    holdout_start = end - dt.timedelta(days=settings.model.holdout_days)
    train, holdout = split_by_time(frame, settings, holdout_start)
    dataset = settings.dataset
    metadata = {
        "feature_columns": feature_columns(settings),
        "categorical_columns": categorical_columns(settings),
        "label": dataset.label,
        "row_id": dataset.row_id,
        "entity_keys": list(dataset.entity_keys),
        "event_time": dataset.event_time,
        "interval": {"start": start.isoformat(), "end": end.isoformat()},
        "holdout_start": holdout_start.isoformat(),
    }
    manifest = save_training_set(Lake(str(root / "lake")), TRAINING_RUN, train, holdout, metadata)
    return {
        "train_rows": len(train),
        "holdout_rows": len(holdout),
        "train_positive_rate": round(float(train[dataset.label].mean()), 5),
        "features": len(metadata["feature_columns"]),
        "fingerprint": manifest["fingerprint"],
    }


def register_full_model(trees: int, max_depth: int) -> dict[str, Any]:
    """Boost ``trees`` trees of depth ``max_depth`` with the config's other params (no early stopping).

    The early-stopped model of this data is small (about 10 trees), which makes scoring bound by
    I/O; a model of production size shows the compute-bound case. It is logged and registered with the same
    functions and lineage tags as ``train`` uses, then made champion of its registered name.
    """
    import time

    import mlflow
    import xgboost as xgb

    from mlsteps.logic import training
    from mlsteps.platform import mlflow_registry
    from mlsteps.platform.context import StepContext
    from mlsteps.platform.datasets import load_training_set, model_input
    from mlsteps.platform.lake import Lake
    from mlsteps.steps import train

    settings = config()
    snapshot = load_training_set(Lake(), TRAINING_RUN)
    started = time.perf_counter()
    matrix = xgb.QuantileDMatrix(
        model_input(snapshot.train, snapshot.feature_columns, settings),
        label=training.labels(snapshot.train, snapshot.label),
        enable_categorical=True,
    )
    params = {**training.base_params(settings, "cpu"), "max_depth": max_depth}
    booster = xgb.train(params, matrix, num_boost_round=trees)
    seconds = time.perf_counter() - started
    context = StepContext(str(os.environ["ML_PIPELINE_CONFIG"]), None, "bench", "bench-full-model")
    tags = mlflow_registry.lineage_tags(context, snapshot.manifest)
    mlflow.set_experiment(settings.model.experiment)
    with mlflow.start_run(run_name="bench full model", tags=tags) as active:
        uri = train.log_model(booster, snapshot)
        version = train.register(settings, uri, tags, active.info.run_id)
    set_champion(version)
    return {
        "model_version": version,
        "trees": booster.num_boosted_rounds(),
        "max_depth": max_depth,
        "fit_seconds": round(seconds, 3),
    }


def write_training_set_here(rows_per_day: int, customers: int, seed: int) -> dict[str, Any]:
    """:func:`write_training_set` into this process's lake (``$ML_LAKE_URI``)."""
    return write_training_set(Path(os.environ["ML_LAKE_URI"]).parent, rows_per_day, customers, seed)


def write_example_training_set_here() -> dict[str, Any]:
    """The snapshot of the example dataset (hourly bike-sharing, 2011 moved to 2022) into this lake.

    The window is the config's ``training_window_days`` up to the end of the table; its last
    ``holdout_days`` are held out, as an ``ml_training`` run on 2023-01-01 would split them.
    """
    from repotools.bikeshare import DEFAULT_START, TABLE_DAYS, load_events

    settings = config()
    window_days = settings.model.training_window_days
    window_start = DEFAULT_START + dt.timedelta(days=TABLE_DAYS - window_days)
    frame = features_with_label(load_events(DEFAULT_START), window_start, window_days)
    return {
        **save_snapshot(Path(os.environ["ML_LAKE_URI"]).parent, frame, window_start, window_days),
        "dataset": settings.dataset.name,
        "window": f"{window_start} + {window_days} days",
    }


def set_champion(version: str) -> dict[str, Any]:
    """Point ``champion`` at the version ``train`` registered (what ``promote`` does after the gate)."""
    from mlflow import MlflowClient

    from mlsteps.platform.mlflow_registry import CHAMPION

    name = config().model.registered_name
    MlflowClient().set_registered_model_alias(name, CHAMPION, version)
    return {"model_name": name, "model_version": version}


def part_size(sizes: list[int]) -> int:
    """Rows per written part: every size must be a whole number of parts (1M rows at most).

    Raises:
        ValueError: The sizes share no divisor of at least 10,000 rows.
    """
    import math

    rows = min(PART_ROWS, math.gcd(*sizes))
    if rows < 10_000:
        raise ValueError(f"BENCH_SIZES {sizes} must share a divisor of at least 10000 rows, e.g. 1000000")
    return rows


def scoring_day(index: int) -> dt.date:
    return SCORING_FIRST_DAY + dt.timedelta(days=index)


def write_scoring_partitions(sizes: list[int], seed: int) -> dict[str, Any]:
    """Committed feature partitions of ``sizes`` rows, resampled from the window's real feature rows.

    Parts of 1M rows are written once (zstd, 64k-row row groups, as ``build-features`` writes them)
    and hard-linked into each day's staging area, then committed with the lake's own protocol.
    """
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from mlsteps.contract.layout import features_prefix, partition
    from mlsteps.logic.features import arrow_schema
    from mlsteps.platform.lake import Lake, Staging

    settings = config()
    lake = Lake(os.environ["ML_LAKE_URI"])
    source = labelled_features(2_500, 2_000, seed + 1).drop(columns=[settings.dataset.label])
    table = pa.Table.from_pandas(source, schema=arrow_schema(settings), preserve_index=False)
    rng = np.random.default_rng(seed)
    part_rows = part_size(sizes)
    holding = Staging(lake, "_bench/scoring-parts", "parts")
    row_id = settings.dataset.row_id
    for part in range(max(sizes) // part_rows):
        rows = part_rows
        chunk = table.take(pa.array(rng.integers(0, table.num_rows, rows)))
        ids = pc.binary_join_element_wise(
            f"b{part:03d}-", pc.cast(pa.array(np.arange(rows)), pa.string()), ""
        )
        chunk = chunk.set_column(chunk.schema.get_field_index(row_id), row_id, ids)
        holding.write_parquet(f"{part:05d}.parquet", chunk)
    days = {}
    for index, size in enumerate(sizes):
        day = scoring_day(index)
        staging = Staging(lake, partition(features_prefix(settings), day), f"bench-{size}")
        wanted = size // part_rows
        for entry in holding.files[:wanted]:
            target = Path(lake.path(f"{staging.root}/{entry.path}"))
            target.parent.mkdir(parents=True, exist_ok=True)
            os.link(lake.path(f"{holding.root}/{entry.path}"), target)
            staging.files.append(entry)
        manifest = lake.commit(staging, {"producer": "bench", "ds": day.isoformat()})
        days[str(size)] = {"ds": day.isoformat(), "rows": manifest["rows"], "files": len(manifest["files"])}
    lake.delete(holding.root)
    return {"source_rows": table.num_rows, "partitions": days}
