"""Helpers for train/evaluate/promote/rollback tests: a small training snapshot, a config, and step runs."""

from __future__ import annotations

import datetime as dt
import json
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import yaml

from mlsteps.cli import build_parser, main
from mlsteps.contract.layout import partition
from mlsteps.errors import StepError
from mlsteps.platform.datasets import save_training_set
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import APPROVED_TAG, PIPELINE_TAG
from mlsteps.steps import promote
from mlsteps.steps.generate import generate_events
from tests.conftest import DEFAULT_CONFIG

FIRST_DAY = dt.date(2026, 10, 1)
FEATURES = [
    "amount", "merchant_category", "card_present", "is_international", "distance_from_home_km",
    "hour", "log_amount", "amount_to_customer_mean",
]  # fmt: skip


def unique_model_name(prefix: str = "test_model") -> str:
    return f"{prefix}_{uuid.uuid4().hex[:10]}"


def write_config(directory: Path, model_name: str, gates: dict[str, Any] | None = None, **model: Any) -> str:
    """The bundled config with its own registered model name and a small, fast training setup."""
    document = yaml.safe_load(DEFAULT_CONFIG.read_text())
    document["model"].update(
        {"registered_name": model_name, "num_boost_round": 40, "early_stopping_rounds": 10, **model}
    )
    small_gates = {"min_roc_auc": 0.7, "min_pr_auc": 0.05, "bootstrap_samples": 200}
    document["gates"].update({**small_gates, **(gates or {})})
    document["drift"]["sample_rows"] = 1_000
    path = directory / f"{model_name}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def build_features(days: int = 10, rows_per_day: int = 1_000, seed: int = 7) -> pd.DataFrame:
    """Generated events plus three simple features: hour, log amount, amount vs the customer's past mean."""
    day_list = [FIRST_DAY + dt.timedelta(days=offset) for offset in range(days)]
    events = generate_events(day_list, rows_per_day, 8_000, seed)
    events = events.sort_values(["event_time", "transaction_id"], kind="stable").reset_index(drop=True)
    past_mean = events.groupby("customer_id")["amount"].transform(lambda s: s.shift().expanding().mean())
    return events.assign(
        hour=events["event_time"].dt.hour.astype("int64"),
        log_amount=np.log1p(events["amount"]),
        amount_to_customer_mean=(events["amount"] / past_mean).astype("float64"),
    )


def build_snapshot(
    lake_uri: str,
    training_run: str,
    holdout_days: int = 3,
    shuffle_train_labels: bool = False,
    frame: pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Commit a training snapshot (train = early days, holdout = the last ``holdout_days``)."""
    frame = build_features() if frame is None else frame
    cutoff = pd.Timestamp(frame["event_time"].max().date() - dt.timedelta(days=holdout_days - 1), tz="UTC")
    train = frame[frame["event_time"] < cutoff].reset_index(drop=True)
    holdout = frame[frame["event_time"] >= cutoff].reset_index(drop=True)
    if shuffle_train_labels:
        shuffled = np.random.default_rng(0).permutation(train["is_fraud"].to_numpy())
        train = train.assign(is_fraud=shuffled)
    metadata = {
        "feature_columns": FEATURES,
        "categorical_columns": ["merchant_category"],
        "label": "is_fraud",
        "row_id": "transaction_id",
        "entity_keys": ["customer_id"],
        "event_time": "event_time",
        "interval": {
            "start": frame["event_time"].min().normalize().isoformat(),
            "end": (cutoff + pd.Timedelta(days=holdout_days)).isoformat(),
        },
    }
    return save_training_set(Lake(lake_uri), training_run, train, holdout, metadata)


def rewrite_raw_row(lake: Lake, source: str, day: str, delta: float) -> None:
    """Change one raw event's amount by ``delta``, as a late correction would."""
    prefix = partition(source, day)
    frame = lake.read_table(lake.partition_files(prefix)).to_pandas()
    frame.loc[0, "amount"] = frame.loc[0, "amount"] + delta
    staging = lake.stage(prefix)
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    lake.commit(staging, {"producer": "test"})


def run_step(argv: list[str], result: Path, monkeypatch: Any) -> tuple[int, dict[str, Any]]:
    """Run one step through the CLI in-process; return its exit code and JSON result (empty on failure).

    ``result`` is the result file, or a directory to write ``result-<step>.json`` in.
    """
    result_file = result / f"result-{argv[0]}.json" if result.is_dir() else result
    result_file.unlink(missing_ok=True)
    monkeypatch.setenv("ML_STEP_RESULT", str(result_file))
    code = main(argv)
    result = json.loads(result_file.read_text()) if result_file.exists() else {}
    return code, result


def register_stub_versions(
    model_name: str, count: int, pipeline: str = "card_fraud", approved: bool = True
) -> list[str]:
    """Register ``count`` versions pointing at a placeholder artifact: enough for alias and ledger tests."""
    import mlflow

    client = mlflow.MlflowClient()
    client.create_registered_model(model_name)
    tags = {PIPELINE_TAG: pipeline, APPROVED_TAG: "true" if approved else "false"} if pipeline else {}
    versions = []
    for _ in range(count):
        version = client.create_model_version(
            model_name, source="s3://mlflow-artifacts/stub/model", tags=tags
        )
        versions.append(str(version.version))
    return versions


def race_promotions(config: str, versions: list[str], expected: str, timeout: float = 300) -> dict[str, Any]:
    """Promote every version at once (threads released together); each outcome is a result or an error."""
    outcomes: dict[str, Any] = {}
    start = threading.Barrier(len(versions))

    def attempt(version: str) -> None:
        argv = ["promote", "--config", config, "--model-version", version, "--expected-champion", expected]
        args = build_parser("promote").parse_args([*argv, "--run-id", f"race-v{version}"])
        start.wait()
        try:
            outcomes[version] = promote.run(args)
        except StepError as err:
            outcomes[version] = err

    threads = [threading.Thread(target=attempt, args=(version,)) for version in versions]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=timeout)
    return outcomes
