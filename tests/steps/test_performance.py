"""monitor-performance on real partitions and a real MLflow server: waiting, judged, a drop, refusals."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mlsteps.contract.config import load_config
from mlsteps.contract.layout import (
    partition,
    performance_record_path,
    predictions_prefix,
    shadow_predictions_prefix,
)
from mlsteps.platform.lake import Lake
from mlsteps.platform.monitoring import monitoring_experiment
from tests.steps.training_fixtures import run_step, unique_model_name, write_config

FIRST_DAY = dt.date(2026, 11, 2)
ROWS = 1_500
LEVEL = 0.90

pytestmark = pytest.mark.usefixtures("tracking")


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """Its own model, two drop days in a row make a retrain, small bootstrap."""
    path = Path(write_config(tmp_path, unique_model_name("perf")))
    document = yaml.safe_load(path.read_text())
    document["performance"] = {
        "consecutive_days": 2, "tolerance": 0.02, "min_labeled_rows": 300, "bootstrap_samples": 100,
    }  # fmt: skip
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("ML_PIPELINE_CONFIG", str(path))
    return str(path)


@pytest.fixture
def version(config: str) -> str:
    """A registered version whose run recorded ``holdout_roc_auc`` at evaluation."""
    model = load_config(config).model.registered_name
    client = mlflow.MlflowClient()
    experiment = client.create_experiment(f"{model}-train")
    run = client.create_run(experiment)
    client.log_metric(run.info.run_id, "holdout_roc_auc", LEVEL)
    client.log_metric(run.info.run_id, "holdout_pr_auc", 0.5)
    client.create_registered_model(model)
    created = client.create_model_version(
        model, source="s3://mlflow-artifacts/stub/model", run_id=run.info.run_id
    )
    return str(created.version)


def scored_rows(day: dt.date, separation: float) -> pd.DataFrame:
    """A day's rows: ids, labels at a 20% base rate, and scores that separate them by ``separation``."""
    rng = np.random.default_rng(day.toordinal())
    y = rng.random(ROWS) < 0.2
    logits = rng.normal(0.0, 1.0, ROWS) + separation * (2 * y - 1) - 1.4
    return pd.DataFrame(
        {
            "transaction_id": [f"t{day:%Y%m%d}-{i:05d}" for i in range(ROWS)],
            "is_fraud": y,
            "score": 1 / (1 + np.exp(-logits)),
        }
    )


def commit(lake: Lake, prefix: str, frame: pd.DataFrame, metadata: dict[str, Any]) -> None:
    staging = lake.stage(prefix)
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    lake.commit(staging, metadata)


def score_day(config: str, version: str, day: dt.date, separation: float, labelled: float = 1.0) -> None:
    """Commit the day's predictions, and the raw partition with the first ``labelled`` share of labels."""
    settings = load_config(config)
    lake = Lake()
    rows = scored_rows(day, separation)
    predictions = rows.loc[:, ["transaction_id", "score"]].assign(decision=rows["score"] >= 0.5)
    metadata = {"ds": day.isoformat(), "model_name": settings.model.registered_name, "model_version": version}
    commit(lake, predictions_prefix(settings.model.registered_name, day), predictions, metadata)
    if labelled:
        raw = rows.loc[: int(labelled * ROWS) - 1, ["transaction_id", "is_fraud"]]
        commit(lake, partition(settings.dataset.source, day), raw, {"ds": day.isoformat()})


def monitor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, day: dt.date) -> tuple[int, dict[str, Any]]:
    return run_step(
        ["monitor-performance", "--ds", day.isoformat(), "--run-id", f"perf__{day}"], tmp_path, monkeypatch
    )


def test_a_day_without_labels_is_waiting_not_failed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.2, labelled=0.0)
    code, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert code == 0
    assert result["status"] == "waiting"
    assert "waiting for labels (0/1500 rows labelled)" in result["summary"]


def test_a_day_with_too_few_labels_reports_its_coverage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.2, labelled=0.1)
    _, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert result["status"] == "waiting"
    assert result["label_coverage"] == pytest.approx(0.1)


def test_a_day_as_good_as_evaluated_is_ok(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.5)
    _, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert result["status"] == "ok"
    assert result["evaluation_level"] == pytest.approx(LEVEL)
    assert result["metrics"]["roc_auc"]["high"] >= LEVEL - 0.02


def test_one_dropped_day_is_not_yet_significant(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 0.3)
    _, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert result["status"] == "dropped"
    assert result["significant"] is False


def test_two_dropped_days_in_a_row_are_a_significant_drop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    second = FIRST_DAY + dt.timedelta(days=1)
    for day in (FIRST_DAY, second):
        score_day(config, version, day, 0.3)
        _, result = monitor(tmp_path, monkeypatch, day)
    assert result["significant"] is True
    assert result["summary"].endswith("significant drop: retrain")


def test_a_rerun_writes_the_same_record(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.0)
    record = performance_record_path(load_config(config).model.registered_name, FIRST_DAY)
    monitor(tmp_path, monkeypatch, FIRST_DAY)
    first = Lake().read_bytes(record)
    monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert Lake().read_bytes(record) == first


def test_the_report_draws_metrics_and_coverage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.0)
    _, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    html = Path(result["report_html"]).read_text()
    assert 'alt="Metrics per day"' in html
    assert 'alt="Label coverage"' in html


def test_the_day_is_logged_as_a_monitoring_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.0)
    _, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    run = mlflow.MlflowClient().get_run(result["mlflow_run_id"])
    experiment = mlflow.MlflowClient().get_experiment(run.info.experiment_id)
    assert experiment.name == monitoring_experiment(load_config(config))
    assert run.data.tags["monitor"] == "performance"
    assert run.data.metrics["roc_auc"] == pytest.approx(result["metrics"]["roc_auc"]["value"])


def test_a_day_never_scored_is_refused_in_one_line(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    local_lake: str,
    config: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, _ = monitor(tmp_path, monkeypatch, FIRST_DAY)
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("ERROR:")]
    assert code == 2
    assert len(errors) == 1
    assert "no committed predictions" in errors[0]


def test_a_version_never_evaluated_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str
) -> None:
    model = load_config(config).model.registered_name
    client = mlflow.MlflowClient()
    client.create_registered_model(model)
    unevaluated = str(client.create_model_version(model, source="s3://mlflow-artifacts/stub/model").version)
    score_day(config, unevaluated, FIRST_DAY, 1.0)
    code, _ = monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert code == 2


def shadow_score_day(config: str, day: dt.date, separation: float) -> None:
    """Commit a shadow partition of the same rows, scored by a challenger of another ``separation``."""
    model = load_config(config).model.registered_name
    rows = scored_rows(day, separation)  # the same ids and labels as the champion's rows of that day
    shadow = rows.loc[:, ["transaction_id", "score"]].assign(decision=rows["score"] >= 0.5)
    metadata = {"ds": day.isoformat(), "model_name": model, "model_version": "99", "role": "shadow"}
    commit(Lake(), shadow_predictions_prefix(model, day), shadow, metadata)


def test_a_shadow_partition_is_never_read_as_the_champions(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.5)
    _, alone = monitor(tmp_path, monkeypatch, FIRST_DAY)
    shadow_score_day(config, FIRST_DAY, 0.2)
    _, beside = monitor(tmp_path, monkeypatch, FIRST_DAY)
    assert (
        (beside["model_version"], beside["status"])
        == (alone["model_version"], alone["status"])
        == (version, "ok")
    )
    assert beside["metrics"] == alone["metrics"]
    assert "shadow" not in alone


def test_the_shadow_is_compared_with_the_champion_on_the_same_rows(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str, config: str, version: str
) -> None:
    score_day(config, version, FIRST_DAY, 1.5)
    shadow_score_day(config, FIRST_DAY, 0.2)
    _, result = monitor(tmp_path, monkeypatch, FIRST_DAY)
    shadow = result["shadow"]
    assert (shadow["model_version"], shadow["labeled_rows"]) == ("99", ROWS)
    assert shadow["champion_roc_auc"] == pytest.approx(result["metrics"]["roc_auc"]["value"], abs=1e-6)
    assert shadow["delta_roc_auc"] == pytest.approx(shadow["roc_auc"] - shadow["champion_roc_auc"], abs=2e-6)
    assert shadow["ci_low"] <= shadow["delta_roc_auc"] <= shadow["ci_high"] < 0  # a clearly worse challenger
    assert "Champion vs shadow on the same rows" in Path(result["report_html"]).read_text()
