"""compare-shadow on committed partitions in a local lake: the numbers, the report, and a clean skip."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from mlsteps.contract.layout import predictions_prefix, shadow_predictions_prefix, shadow_report_prefix
from mlsteps.platform.lake import Lake
from tests.steps.training_fixtures import run_step, unique_model_name, write_config

DAY = dt.date(2026, 11, 2)
ROWS = 1_000


@pytest.fixture
def model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, local_lake: str) -> str:
    name = unique_model_name("shadow")
    monkeypatch.setenv("ML_PIPELINE_CONFIG", write_config(tmp_path, name))
    return name


def commit(prefix: str, scores: np.ndarray, version: str) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "transaction_id": [f"t{i:05d}" for i in range(len(scores))],
            "score": scores,
            "decision": scores >= 0.5,
        }
    )
    lake = Lake()
    staging = lake.stage(prefix)
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    lake.commit(staging, {"ds": DAY.isoformat(), "model_version": version, "decision_threshold": 0.5})
    return frame


def compare(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[int, dict]:
    return run_step(["compare-shadow", "--ds", DAY.isoformat()], tmp_path, monkeypatch)


def test_the_comparison_counts_agreement_and_each_models_flagged_rate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    rng = np.random.default_rng(5)
    champion = commit(predictions_prefix(model, DAY), rng.random(ROWS), "3")
    shadow = commit(shadow_predictions_prefix(model, DAY), rng.random(ROWS), "4")
    code, result = compare(tmp_path, monkeypatch)
    assert code == 0
    comparison = result["comparison"]
    assert (result["champion_version"], result["shadow_version"]) == ("3", "4")
    assert comparison["rows"] == ROWS
    assert comparison["champion_flagged_rate"] == pytest.approx(champion["decision"].mean())
    assert comparison["shadow_flagged_rate"] == pytest.approx(shadow["decision"].mean())
    assert comparison["decision_agreement"] == pytest.approx(
        (champion["decision"] == shadow["decision"]).mean()
    )
    assert abs(comparison["spearman"]) < 0.1  # independent scores


def test_the_report_draws_both_scores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str) -> None:
    scores = np.random.default_rng(6).random(ROWS)
    commit(predictions_prefix(model, DAY), scores, "3")
    commit(shadow_predictions_prefix(model, DAY), scores**2, "4")
    _, result = compare(tmp_path, monkeypatch)
    html = Path(result["report_html"]).read_text()
    assert 'alt="Scores, row by row"' in html
    assert 'alt="Score distributions"' in html
    assert result["comparison"]["spearman"] == pytest.approx(1.0)


def test_a_day_without_a_shadow_partition_is_skipped_and_writes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, model: str
) -> None:
    commit(predictions_prefix(model, DAY), np.random.default_rng(7).random(ROWS), "3")
    code, result = compare(tmp_path, monkeypatch)
    assert code == 0
    assert result["status"] == "skipped"
    assert not Lake().exists(shadow_report_prefix(DAY))
