"""Step caching: an unchanged rerun reuses the expensive steps' outputs; any changed input runs them again.

One small real pipeline (the lineage tests' config) runs as DAG run ``r1`` (validate, build-features,
build-training-set, train, evaluate, promote), then again unchanged as ``r2``, passing results on as
the ``ml_training`` DAG does. The tests after that each change one thing and run the first step it
reaches.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import pytest

from mlsteps.cli import CACHEABLE_STEPS, STEPS, _load, build_parser
from mlsteps.contract import layout
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import CHAMPION
from tests.steps.lineage_fixtures import (
    DAYS,
    FIRST_DAY,
    TRAINING_END,
    WINDOW_DAYS,
    PipelineRun,
    environment,
    lineage_config,
    step,
)
from tests.steps.training_fixtures import rewrite_raw_row, unique_model_name

WINDOW = ["--start", "2026-10-03", "--end", TRAINING_END]
EXPENSIVE = ("validate", "build-features", "build-training-set", "train")


@dataclass
class Runs:
    pipeline: PipelineRun
    first: dict[str, dict[str, Any]]
    second: dict[str, dict[str, Any]]
    third_evaluate: dict[str, Any]


def run_training(run_id: str, result: Path) -> dict[str, dict[str, Any]]:
    """The ml_training chain as the DAG runs it: each step gets what the one before it returned."""
    ids = ["--dag-id", "ml_training", "--run-id", run_id]
    done: dict[str, dict[str, Any]] = {}
    done["validate"] = step(["validate", *WINDOW, *ids], result)
    done["build-features"] = step(["build-features", *WINDOW, *ids], result)
    done["build-training-set"] = step(["build-training-set", "--end", TRAINING_END, "--window-days",
                                       str(WINDOW_DAYS), "--training-run", run_id, *ids], result)  # fmt: skip
    done["train"] = step(
        ["train", "--training-run", done["build-training-set"]["training_run"], *ids], result
    )
    done["evaluate"] = evaluate(done["train"], ids, result)
    done["promote"] = step(["promote", "--model-version", done["evaluate"]["model_version"],
                            "--expected-champion", done["evaluate"]["champion_version"] or "none", *ids],
                           result)  # fmt: skip
    return done


def evaluate(trained: dict[str, Any], ids: list[str], result: Path) -> dict[str, Any]:
    return step(["evaluate", "--model-version", trained["model_version"], "--training-run",
                 trained["training_run"], "--ds", TRAINING_END, *ids], result)  # fmt: skip


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, mlflow_tracking: Any) -> Runs:
    directory = tmp_path_factory.mktemp("cache")
    model = unique_model_name("cache")
    pipeline = PipelineRun(directory, str(directory / "lake"), lineage_config(directory, model),
                           str(directory / "state"), mlflow_tracking.tracking_uri, model, "")  # fmt: skip
    result = directory / "result.json"
    with environment(pipeline.env()):
        step(["generate-data", "--start", FIRST_DAY, "--days", str(DAYS), "--rows-per-day", "600",
              "--customers", "300"], result)  # fmt: skip
        first = run_training("r1", result)
        second = run_training("r2", result)
        third = evaluate(second["train"], ["--dag-id", "ml_training", "--run-id", "r3"], result)
    return Runs(pipeline, first, second, third)


def rerun(runs: Runs, argv: list[str], run_id: str, **env: str) -> dict[str, Any]:
    with environment({**runs.pipeline.env(), **env}):
        return step(
            [*argv, "--dag-id", "ml_training", "--run-id", run_id], runs.pipeline.directory / "r.json"
        )


def without(result: dict[str, Any], *keys: str) -> dict[str, Any]:
    return {key: value for key, value in result.items() if key not in keys}


@pytest.mark.parametrize("name", EXPENSIVE)
def test_an_unchanged_rerun_reuses_the_first_runs_result(runs: Runs, name: str) -> None:
    second = runs.second[name]
    assert second["cached_from"] == {
        "run_id": "r1",
        "dag_id": "ml_training",
        "key": second["cached_from"]["key"],
    }
    assert second["summary"] == f"cached from run r1: {runs.first[name]['summary']}"
    assert without(second, "summary", "cached_from") == without(runs.first[name], "summary")


def test_the_unchanged_rerun_ends_with_the_same_champion_and_no_new_version(runs: Runs) -> None:
    with environment(runs.pipeline.env()):
        client = mlflow.MlflowClient()
        versions = client.search_model_versions(f"name='{runs.pipeline.model}'")
        champion = client.get_registered_model(runs.pipeline.model).aliases[CHAMPION]
    assert [v.version for v in versions] == ["1"]
    assert str(champion) == runs.second["promote"]["champion_version"] == "1"
    assert runs.second["promote"]["changed"] is False


def test_evaluate_judges_again_against_a_new_champion_then_is_reused(runs: Runs) -> None:
    assert "cached_from" not in runs.second["evaluate"]  # r1 judged against no champion, r2 against v1
    assert runs.second["evaluate"]["champion_version"] == "1"
    assert runs.third_evaluate["cached_from"]["run_id"] == "r2"


def test_the_reuse_is_recorded_in_the_lake_for_lineage(runs: Runs) -> None:
    key = runs.second["train"]["cached_from"]["key"]
    record = Lake(runs.pipeline.lake).read_json(layout.step_cache_reuse_path("train", key, "r2"))
    assert (record["run_id"], record["cached_from"]["run_id"]) == ("r2", "r1")


def test_force_runs_the_step_again(runs: Runs) -> None:
    assert "cached_from" not in rerun(runs, ["validate", *WINDOW, "--force"], "forced")


def test_a_changed_code_version_runs_the_step_again(runs: Runs) -> None:
    assert "cached_from" not in rerun(runs, ["validate", *WINDOW], "new_code", ML_GIT_SHA="0" * 40)


def test_a_changed_config_runs_the_step_again(runs: Runs, tmp_path: Path) -> None:
    changed = tmp_path / "changed.yaml"
    changed.write_text(
        Path(runs.pipeline.config).read_text().replace("min_roc_auc: 0.5", "min_roc_auc: 0.51")
    )
    assert "cached_from" not in rerun(runs, ["validate", *WINDOW, "--config", str(changed)], "new_config")


def test_deleted_outputs_run_the_step_again(runs: Runs) -> None:
    lake = Lake(runs.pipeline.lake)
    report = f"{layout.validation_report_prefix('2026-10-03', 'training')}/report.json"
    lake.delete(report)
    assert "cached_from" not in rerun(runs, ["validate", *WINDOW], "after_delete")
    assert lake.exists(report)


def test_a_changed_raw_row_invalidates_validate_and_everything_downstream(runs: Runs) -> None:
    """Down to the snapshot's fingerprint, which is what keys train (and train's version, evaluate)."""
    rewrite_raw_row(Lake(runs.pipeline.lake), "raw/transactions", "2026-10-05", 100.0)
    validated = rerun(runs, ["validate", *WINDOW], "r_changed")
    features = rerun(runs, ["build-features", *WINDOW], "r_changed")
    argv = [
        "build-training-set",
        "--end",
        TRAINING_END,
        "--window-days",
        str(WINDOW_DAYS),
        "--training-run",
        "r_changed",
    ]
    snapshot = rerun(runs, argv, "r_changed")
    assert [result for result in (validated, features, snapshot) if "cached_from" in result] == []
    assert snapshot["fingerprint"] != runs.first["build-training-set"]["fingerprint"]


def test_state_changing_steps_are_never_cached() -> None:
    never = {"promote", "rollback", "decide-retrain", "record-decision", "materialize", "score",
             "commit-predictions", "plan-scoring", "generate-data"}  # fmt: skip
    assert CACHEABLE_STEPS <= set(STEPS)
    assert not CACHEABLE_STEPS & never
    for name in never:
        with pytest.raises(SystemExit):
            build_parser(name).parse_args([name, "--force"])


@pytest.mark.parametrize("name", sorted(CACHEABLE_STEPS))
def test_every_cacheable_step_declares_its_inputs_and_outputs(name: str) -> None:
    module: Any = _load(STEPS[name][0])
    assert callable(module.cache_inputs)
    assert callable(module.cache_outputs)
    assert isinstance(build_parser(name).parse_args([name, "--force", *_required(name)]), argparse.Namespace)


def _required(name: str) -> list[str]:
    return {
        "validate": WINDOW,
        "build-features": WINDOW,
        "build-training-set": ["--end", TRAINING_END],
        "train": ["--training-run", "t"],
        "evaluate": ["--model-version", "1", "--training-run", "t"],
    }[name]
