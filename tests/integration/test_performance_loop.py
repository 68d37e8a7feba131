"""The performance loop on concept-shifted data, step by step against the real MLflow server.

The labels change rule from ``SHIFT`` on while every input is drawn as before. The drift monitor
stays quiet; the performance monitor sees the champion's realized ROC-AUC fall below its evaluation
level, asks for exactly one retrain, and the model retrained on the shifted days recovers realized
performance. An unshifted pipeline asks for nothing. The steps run in-process through the CLI, in
pipeline order, on one local lake (a module-scoped chain; each test checks one fact).
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.steps.training_fixtures import run_step, unique_model_name, write_config

pytestmark = pytest.mark.slow

FIRST = dt.date(2026, 9, 20)
DAYS = 42
SHIFT = dt.date(2026, 10, 16)
FIRST_TRAINING_END = dt.date(2026, 10, 14)  # the champion never sees a shifted label
JUDGED = [dt.date(2026, 10, 17), dt.date(2026, 10, 18)]
RETRAINING_END = dt.date(2026, 10, 30)  # 14 shifted days in its window, a shifted holdout
RECOVERED = dt.date(2026, 10, 30)


class Loop:
    """One pipeline: its environment, and each step's result by a label."""

    def __init__(self, tmp: Path, env: dict[str, str]) -> None:
        self.tmp, self.env = tmp, env
        self.results: dict[str, dict[str, Any]] = {}

    def step(self, label: str, argv: list[str]) -> dict[str, Any]:
        with pytest.MonkeyPatch.context() as patch:
            for key, value in self.env.items():
                patch.setenv(key, value)
            code, result = run_step(argv, self.tmp, patch)
        assert code == 0, f"{label}: {argv[0]} exited {code}"
        self.results[label] = result
        return result

    def train(self, label: str, end: dt.date, expected_champion: str) -> str:
        """Training set, train, evaluate and (when approved) promote; the version trained."""
        run = f"{label}_run"
        self.step(f"{label}.set", ["build-training-set", "--end", end.isoformat(), "--window-days", "20",
                                    "--training-run", run])  # fmt: skip
        version = self.step(f"{label}.train", ["train", "--training-run", run, "--run-id", run])[
            "model_version"
        ]
        evaluate = ["evaluate", "--model-version", version, "--training-run", run, "--ds", end.isoformat()]
        evaluation = self.step(f"{label}.evaluate", [*evaluate, "--run-id", run])
        if evaluation["approved"]:
            self.step(f"{label}.promote", ["promote", "--model-version", version, "--expected-champion",
                                           expected_champion, "--run-id", run])  # fmt: skip
        return str(version)

    def monitor(self, day: dt.date) -> None:
        """Score the day, check drift, judge performance and decide, as the three DAGs would."""
        ds = ["--ds", day.isoformat()]
        self.step(f"score.{day}", ["score", *ds, "--run-id", f"score_{day}"])
        self.step(f"drift.{day}", ["drift", *ds, "--run-id", f"drift_{day}"])
        self.step(f"decide-drift.{day}", ["decide-retrain", *ds, "--run-id", f"drift_{day}"])
        self.step(f"performance.{day}", ["monitor-performance", *ds, "--run-id", f"perf_{day}"])
        self.step(f"decide-performance.{day}", ["decide-retrain", *ds, "--reason", "performance",
                                                  "--run-id", f"perf_{day}"])  # fmt: skip


def start(tmp: Path, s3: Any, tracking_uri: str, concept_shift: bool) -> Loop:
    model = unique_model_name("perf_loop")
    config = Path(write_config(tmp, model))
    document = yaml.safe_load(config.read_text())
    document["performance"] = {"consecutive_days": 2, "tolerance": 0.02, "bootstrap_samples": 100}
    config.write_text(yaml.safe_dump(document, sort_keys=False))
    env = {**s3.env, "ML_LAKE_URI": str(tmp / "lake"), "ML_STATE_DIR": str(tmp / "state"),
           "MLFLOW_TRACKING_URI": tracking_uri, "ML_PIPELINE_CONFIG": str(config)}  # fmt: skip
    loop = Loop(tmp, env)
    shift = ["--concept-shift-from", SHIFT.isoformat()] if concept_shift else []
    last = FIRST + dt.timedelta(days=DAYS)
    loop.step("generate", ["generate-data", "--start", FIRST.isoformat(), "--days", str(DAYS),
                           "--rows-per-day", "1500", "--customers", "800", *shift])  # fmt: skip
    loop.step("features", ["build-features", "--start", FIRST.isoformat(), "--end", last.isoformat()])
    loop.step("materialize", ["materialize", "--start", FIRST.isoformat(), "--end", last.isoformat()])
    loop.train("first", FIRST_TRAINING_END, "none")
    for day in JUDGED:
        loop.monitor(day)
    return loop


@pytest.fixture(scope="module")
def shifted(mlflow_tracking: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Loop:
    loop = start(tmp_path_factory.mktemp("shifted"), s3, mlflow_tracking.tracking_uri, concept_shift=True)
    champion = loop.results["first.train"]["model_version"]
    loop.train("retrain", RETRAINING_END, champion)
    loop.monitor(RECOVERED)
    return loop


@pytest.fixture(scope="module")
def unshifted(mlflow_tracking: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Loop:
    return start(tmp_path_factory.mktemp("unshifted"), s3, mlflow_tracking.tracking_uri, concept_shift=False)


def triggers(loop: Loop, reason: str) -> list[str]:
    return [
        result["run_id"]
        for label, result in loop.results.items()
        if label.startswith(f"decide-{reason}.") and result["trigger"]
    ]


def test_input_drift_stays_quiet_on_a_concept_shift(shifted: Loop) -> None:
    assert triggers(shifted, "drift") == []


def test_the_performance_monitor_asks_for_exactly_one_retrain(shifted: Loop) -> None:
    assert triggers(shifted, "performance") == [f"performance__{JUDGED[-1]}"]


def test_the_first_shifted_day_alone_is_not_yet_significant(shifted: Loop) -> None:
    first = shifted.results[f"performance.{JUDGED[0]}"]
    assert (first["status"], first["significant"]) == ("dropped", False)


def test_the_retrained_model_is_promoted(shifted: Loop) -> None:
    assert (
        shifted.results["retrain.promote"]["model_version"]
        == shifted.results["retrain.train"]["model_version"]
    )


def test_the_retrained_model_recovers_realized_performance(shifted: Loop) -> None:
    before = shifted.results[f"performance.{JUDGED[-1]}"]["metrics"]["roc_auc"]["value"]
    after = shifted.results[f"performance.{RECOVERED}"]
    assert after["status"] == "ok"
    assert after["metrics"]["roc_auc"]["value"] > before + 0.1


def test_unchanged_data_triggers_nothing(unshifted: Loop) -> None:
    assert triggers(unshifted, "drift") + triggers(unshifted, "performance") == []
