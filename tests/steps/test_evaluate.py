"""The evaluate step: absolute gates, challenger vs champion on one holdout, reports, lineage refusal."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlsteps.contract.config import GatesConfig
from mlsteps.logic.gates import Comparison, champion_check
from mlsteps.logic.metrics import paired_bootstrap, weighted_auc
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import APPROVED_TAG, CHAMPION, THRESHOLDS_TAG
from tests.steps.report_fixtures import assert_figures, external_references, png_size
from tests.steps.training_fixtures import (
    build_features,
    build_snapshot,
    register_stub_versions,
    run_step,
    unique_model_name,
    write_config,
)

FIGURES = ["ROC curves", "Precision-recall curves", "Confusion matrices", "Score distribution", "Calibration"]


def train_and_evaluate(
    config: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *options: str
) -> tuple[int, dict]:
    """Train version 1 on the ``good`` snapshot, evaluate it with ``options``: exit code and result."""
    trained = run_step(
        ["train", "--config", config, "--training-run", "good"], tmp_path / "t.json", monkeypatch
    )
    assert trained[0] == 0
    argv = ["evaluate", "--config", config, "--model-version", "1", "--training-run", "good", *options]
    return run_step(argv, tmp_path / "e.json", monkeypatch)


def test_good_challenger_without_champion_is_approved_and_reported(
    tracking: str, s3_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name)
    build_snapshot(s3_lake, "good")

    code, result = train_and_evaluate(config, tmp_path, monkeypatch, "--ds", "2026-10-11")

    assert code == 0
    assert result["approved"] is True
    assert result["model_version"] == "1"
    assert result["champion_version"] is None
    assert result["metrics"]["champion"] is None
    challenger = result["metrics"]["challenger"]
    assert challenger["roc_auc"] > 0.7
    assert {"pr_auc", "f1", "log_loss", "brier", "expected_calibration_error", "confusion"} <= set(challenger)
    assert any("no champion" in reason for reason in result["reasons"])
    assert "approved" in result["summary"]

    lake = Lake(s3_lake)
    prefix = f"reports/evaluation/ds=2026-10-11/{name}-v1"
    assert result["report_html"] == lake.url(f"{prefix}/report.html")
    html = lake.read_bytes(f"{prefix}/report.html").decode()
    assert "<h2>Gate checks</h2>" in html
    assert list(assert_figures(html, FIGURES)) == FIGURES
    assert 'src="http' not in html
    assert 'href="http' not in html
    assert external_references(html) == []
    assert lake.read_json(f"{prefix}/report.json")["approved"] is True

    client = mlflow.MlflowClient()
    run = client.get_run(result["mlflow_run_id"])
    assert run.data.metrics["holdout_roc_auc"] == pytest.approx(challenger["roc_auc"])
    artifacts = [a.path for a in client.list_artifacts(result["mlflow_run_id"], "evaluation/ds=2026-10-11")]
    assert sorted(artifacts) == [
        "evaluation/ds=2026-10-11/report.html",
        "evaluation/ds=2026-10-11/report.json",
    ]
    assert client.get_model_version(name, "1").tags[APPROVED_TAG] == "true"


def test_worse_challenger_is_rejected_and_the_champion_stays(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name, gates={"min_pr_auc": 0.0})
    features = build_features()
    build_snapshot(local_lake, "good", frame=features)
    build_snapshot(local_lake, "shuffled", frame=features, shuffle_train_labels=True)  # same holdout rows
    result_file = tmp_path / "r.json"
    common = ["--config", config]
    assert run_step(["train", *common, "--training-run", "good"], result_file, monkeypatch)[0] == 0
    assert run_step(
        ["evaluate", *common, "--model-version", "1", "--training-run", "good"], result_file, monkeypatch
    )[1]["approved"]
    promoted = run_step(
        ["promote", *common, "--model-version", "1", "--expected-champion", "none"], result_file, monkeypatch
    )
    assert promoted[1]["champion_version"] == "1"
    assert run_step(["train", *common, "--training-run", "shuffled"], result_file, monkeypatch)[0] == 0

    argv = ["evaluate", *common, "--model-version", "2", "--training-run", "shuffled", "--min-roc-auc", "0"]
    code, result = run_step(argv, result_file, monkeypatch)

    assert code == 0  # a rejection is a result, not a failure
    assert result["approved"] is False
    assert result["champion_version"] == "1"
    assert result["metrics"]["champion"]["roc_auc"] > result["metrics"]["challenger"]["roc_auc"]
    assert result["comparison"]["ci_high"] < 0
    assert len(result["reasons"]) == 1
    assert "significant drop" in result["reasons"][0]
    assert "rejected" in result["summary"]
    client = mlflow.MlflowClient()
    assert client.get_model_version_by_alias(name, CHAMPION).version == "1"
    assert client.get_model_version(name, "2").tags[APPROVED_TAG] == "false"
    refused = run_step(
        ["promote", *common, "--model-version", "2", "--expected-champion", "1"], result_file, monkeypatch
    )
    assert refused[0] == 2

    # Against a champion, the report draws both models: the score distribution gets a second panel.
    html = Path(result["report_html"]).read_text()
    figures = assert_figures(html, FIGURES)
    (first,) = Path(local_lake).glob(f"reports/evaluation/ds=*/{name}-v1/report.html")  # no champion then
    alone = assert_figures(first.read_text(), FIGURES)
    assert png_size(figures["Score distribution"])[0] > 1.6 * png_size(alone["Score distribution"])[0]
    assert external_references(html) == []


@pytest.fixture
def evaluated_with_a_run_minimum(
    tracking: str, local_lake: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, dict]:
    """Version 1 of a fresh model, evaluated with ``--min-roc-auc 0.6`` (the config says otherwise)."""
    name = unique_model_name()
    config = write_config(tmp_path, name, gates={"min_pr_auc": 0.05})
    build_snapshot(local_lake, "good")
    code, result = train_and_evaluate(config, tmp_path, monkeypatch, "--min-roc-auc", "0.6")
    assert code == 0
    return name, result


def test_the_result_records_the_thresholds_applied(evaluated_with_a_run_minimum: tuple[str, dict]) -> None:
    _, result = evaluated_with_a_run_minimum
    assert result["thresholds"]["min_roc_auc"] == 0.6  # this run's, not the config's
    assert result["thresholds"]["min_pr_auc"] == 0.05
    assert set(result["thresholds"]) == {
        "min_roc_auc", "min_pr_auc", "max_log_loss", "max_calibration_error", "max_auc_drop",
        "bootstrap_samples", "confidence", "segment_regression",
    }  # fmt: skip


def test_the_version_carries_the_thresholds_applied(evaluated_with_a_run_minimum: tuple[str, dict]) -> None:
    name, result = evaluated_with_a_run_minimum
    tag = mlflow.MlflowClient().get_model_version(name, "1").tags[THRESHOLDS_TAG]
    assert json.loads(tag) == result["thresholds"]


def test_the_summary_names_the_minimum_applied(evaluated_with_a_run_minimum: tuple[str, dict]) -> None:
    assert evaluated_with_a_run_minimum[1]["summary"].endswith("(minimum AUC 0.60)")


def test_the_result_carries_one_row_per_configured_segment(
    evaluated_with_a_run_minimum: tuple[str, dict],
) -> None:
    # The bundled config segments by merchant_category and by amount bins: each row is in one of each.
    segments = evaluated_with_a_run_minimum[1]["segments"]

    assert {row["segment"].split("=")[0] for row in segments} == {"merchant_category", "amount"}
    assert sum(row["rows"] for row in segments) == 2 * sum(
        row["rows"] for row in segments if row["segment"].startswith("amount=")
    )
    assert {row["verdict"] for row in segments} <= {"too small to judge", "no champion to compare"}


@pytest.mark.parametrize(("pipeline", "expected"), [("", "has no mlsteps.pipeline tag"), ("other", "=other")])
def test_a_version_without_this_pipelines_lineage_is_refused(
    pipeline: str,
    expected: str,
    tracking: str,
    local_lake: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    name = unique_model_name()
    config = write_config(tmp_path, name)
    register_stub_versions(name, 1, pipeline=pipeline)

    argv = ["evaluate", "--config", config, "--model-version", "1", "--training-run", "good"]
    code, result = run_step(argv, tmp_path / "r.json", monkeypatch)

    assert code == 2
    assert result == {}
    error = capsys.readouterr().err
    assert expected in error
    assert "refusing to use a model without this pipeline's lineage" in error


def test_weighted_auc_matches_sklearn_with_ties() -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 500)
    scores = np.round(rng.random(500) + 0.3 * y, 2)  # rounding makes ties

    assert weighted_auc(scores, y, np.ones(500)) == pytest.approx(roc_auc_score(y, scores))
    weights = rng.integers(0, 3, 500).astype(float)
    assert weighted_auc(scores, y, weights) == pytest.approx(roc_auc_score(y, scores, sample_weight=weights))


def test_paired_bootstrap_of_identical_models_is_exactly_zero() -> None:
    rng = np.random.default_rng(4)
    y = rng.integers(0, 2, 300)
    scores = rng.random(300)

    deltas = paired_bootstrap(y, scores, scores.copy(), samples=50, seed=1)

    assert np.all(deltas == 0)


@pytest.mark.parametrize(
    ("delta", "high", "approved"),
    [
        (-0.05, -0.02, False),  # material and significant: rejected
        (-0.05, 0.01, True),  # material but the interval reaches zero: benefit of the doubt
        (-0.005, -0.001, True),  # significant but within the allowed drop
        (0.02, 0.04, True),  # better
    ],
)
def test_champion_rule(delta: float, high: float, approved: bool) -> None:
    gates = GatesConfig(max_auc_drop=0.01)
    comparison = Comparison("3", delta, delta - 0.03, high, 0.95, 200)

    check = champion_check(comparison, gates)

    assert check.passed is approved
    assert "champion version 3" in check.sentence
