"""A small, real pipeline run for the lineage tests: raw data to a scored, promoted champion.

Every step is the real one, run through the CLI in this process: generate-data, build-features,
build-training-set (Feast on SQLite), train, evaluate, promote and score, against a local lake and
the real ``mlflow server`` fixture. The config is the bundled one with short windows (a 7-day
look-back) so the run takes seconds.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteps.cli import main
from mlsteps.contract.layout import partition
from mlsteps.platform.lake import Lake
from tests.conftest import DEFAULT_CONFIG
from tests.steps.training_fixtures import unique_model_name

FIRST_DAY = "2026-10-01"
DAYS = 11
TRAINING_END = "2026-10-11"  # the window is [2026-10-03, 2026-10-11), its look-back starts 2026-09-26
WINDOW_DAYS = 8
SCORED_DAY = "2026-10-11"
TRAINING_RUN = "lineage_t1"


@dataclass(frozen=True)
class PipelineRun:
    """What the run produced and the environment it ran in."""

    directory: Path
    lake: str
    config: str
    state: str
    tracking_uri: str
    model: str
    version: str

    def env(self, lake: str | None = None) -> dict[str, str]:
        return {
            "ML_LAKE_URI": lake or self.lake,
            "ML_PIPELINE_CONFIG": self.config,
            "ML_STATE_DIR": self.state,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
        }

    def predictions(self) -> list[dict[str, Any]]:
        """The scored rows of the predictions partition."""
        lake = Lake(self.lake)
        prefix = partition(f"predictions/{self.model}", SCORED_DAY)
        return list(lake.read_table(lake.partition_files(prefix)).to_pylist())


def lineage_config(directory: Path, model: str) -> str:
    """The bundled config with a unique model name, 7-day windows and an easy gate."""
    document = yaml.safe_load(DEFAULT_CONFIG.read_text())
    document["features"]["aggregates"] = [
        {"column": "amount", "functions": ["count", "mean", "max"], "windows": ["1d", "7d"]},
        {"column": "is_international", "functions": ["mean"], "windows": ["7d"]},
    ]
    document["features"]["transforms"] = [
        {"name": "log_amount", "kind": "log1p", "column": "amount"},
        {"name": "amount_to_mean_7d", "kind": "ratio_to_entity_mean", "column": "amount", "window": "7d"},
    ]
    document["model"].update(
        {
            "registered_name": model,
            "num_boost_round": 40,
            "early_stopping_rounds": 10,
            "training_window_days": WINDOW_DAYS,
            "holdout_days": 2,
        }
    )
    document["gates"].update({"min_roc_auc": 0.5, "min_pr_auc": 0.0, "bootstrap_samples": 50})
    document["drift"]["sample_rows"] = 1_000
    path = directory / f"{model}.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        for key, value in values.items():
            patch.setenv(key, value)
        patch.delenv("ML_STEP_RESULT", raising=False)
        yield


def step(argv: list[str], result_file: Path) -> dict[str, Any]:
    """Run one step through the CLI in this process; fail the test unless it succeeds."""
    result_file.unlink(missing_ok=True)
    os.environ["ML_STEP_RESULT"] = str(result_file)
    try:
        code = main(argv)
    finally:
        del os.environ["ML_STEP_RESULT"]
    assert code == 0, f"{argv[0]} exited {code}"
    return dict(json.loads(result_file.read_text()))


def run_pipeline(directory: Path, tracking_uri: str) -> PipelineRun:
    """generate-data → build-features → build-training-set → train → evaluate → promote → score."""
    model = unique_model_name("lineage")
    run = PipelineRun(
        directory=directory,
        lake=str(directory / "lake"),
        config=lineage_config(directory, model),
        state=str(directory / "state"),
        tracking_uri=tracking_uri,
        model=model,
        version="",
    )
    result = directory / "result.json"
    with environment(run.env()):
        step(["generate-data", "--start", FIRST_DAY, "--days", str(DAYS), "--rows-per-day", "600",
              "--customers", "300"], result)  # fmt: skip
        step(["build-features", "--start", FIRST_DAY, "--end", "2026-10-12"], result)
        step(["build-training-set", "--end", TRAINING_END, "--window-days", str(WINDOW_DAYS),
              "--training-run", TRAINING_RUN, "--dag-id", "ml_training", "--run-id", "manual__lineage"],
             result)  # fmt: skip
        trained = step(["train", "--training-run", TRAINING_RUN, "--dag-id", "ml_training",
                        "--run-id", "manual__lineage"], result)  # fmt: skip
        version = trained["model_version"]
        evaluated = step(["evaluate", "--model-version", version, "--training-run", TRAINING_RUN,
                          "--ds", TRAINING_END], result)  # fmt: skip
        assert evaluated["approved"], evaluated["reasons"]
        step(["promote", "--model-version", version, "--expected-champion", "none",
              "--reason", "first champion", "--dag-id", "ml_training", "--run-id", "manual__lineage"],
             result)  # fmt: skip
        step(["score", "--ds", SCORED_DAY, "--dag-id", "ml_batch_scoring", "--run-id", "scheduled__lineage"],
             result)  # fmt: skip
    return PipelineRun(**{**run.__dict__, "version": version})
