"""trace: from a real scored row back to the raw data, each link checked against its record; broken links."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from typing import Any

import pytest
from mlflow import MlflowClient

from mlsteps.cli import main
from mlsteps.contract.config import load_config
from mlsteps.platform.lake import Lake
from mlsteps.platform.ledger import read_ledger
from mlsteps.platform.lineage import code_version, package_versions
from tests.steps.lineage_fixtures import (
    SCORED_DAY,
    TRAINING_RUN,
    PipelineRun,
    environment,
    run_pipeline,
    step,
)

CHAIN = [
    "predictions", "model", "mlflow run", "training set", "raw data", "features", "code",
    "hyperparameters", "evaluation", "promotion",
]  # fmt: skip


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory, mlflow_tracking: Any) -> PipelineRun:
    return run_pipeline(tmp_path_factory.mktemp("trace"), mlflow_tracking.tracking_uri)


def trace(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str], *selector: str, lake: str | None = None
) -> tuple[int, str, str]:
    with environment(pipeline.env(lake)):
        code = main(["trace", "--ds", SCORED_DAY, *selector])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def links(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {link["name"]: link for link in document["links"]}


def test_trace_follows_a_scored_row_back_to_the_raw_interval(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    row = pipeline.predictions()[7]
    code, out, _ = trace(pipeline, capsys, "--row-id", row["transaction_id"], "--json")

    assert code == 0
    document = json.loads(out)
    assert document["intact"] is True
    assert document["broken"] == []
    assert [link["name"] for link in document["links"]] == CHAIN
    assert {link["name"]: link["status"] for link in document["links"]} == dict.fromkeys(CHAIN, "ok")
    (found,) = document["prediction"]["rows"]
    assert found["transaction_id"] == row["transaction_id"]
    assert found["score"] == pytest.approx(row["score"])

    lake = Lake(pipeline.lake)
    chain = links(document)
    predictions = lake.manifest(f"predictions/{pipeline.model}/ds={SCORED_DAY}")
    assert predictions is not None
    marker = f"predictions/{pipeline.model}/ds={SCORED_DAY}/_SUCCESS.json"
    assert chain["predictions"]["record"] == lake.url(marker)
    assert chain["predictions"]["facts"]["dag_run_id"] == "scheduled__lineage"

    client = MlflowClient(tracking_uri=pipeline.tracking_uri)
    version = client.get_model_version(pipeline.model, pipeline.version)
    assert chain["model"]["facts"]["version"] == pipeline.version == str(predictions["model_version"])
    assert chain["model"]["facts"]["alias_at_scoring"] == "champion"
    assert chain["mlflow run"]["facts"]["run_id"] == version.run_id == predictions["model_run_id"]

    snapshot = lake.manifest(f"training/{TRAINING_RUN}")
    assert snapshot is not None
    assert chain["training set"]["facts"]["training_run"] == TRAINING_RUN
    assert chain["training set"]["facts"]["fingerprint"] == snapshot["fingerprint"]
    assert chain["training set"]["facts"]["fingerprint"] == version.tags["data_fingerprint"]

    raw = chain["raw data"]
    assert raw["record"] == lake.url("raw/transactions")
    assert raw["facts"]["interval"] == "[2026-10-03T00:00:00+00:00, 2026-10-11T00:00:00+00:00)"
    assert raw["facts"]["read_from"] == "2026-09-26"  # the 7-day look-back of the rolling features
    assert raw["facts"]["days_read"] == 10  # 2026-10-01 .. 2026-10-10: the generated days in reach

    config = load_config(pipeline.config)
    features = chain["features"]["facts"]
    assert features["config_hash"] == features["config_hash_at_training"] == config.config_hash
    assert features["feature_service"] == "card_fraud_model_training"
    assert [view.split("(")[0] for view in features["feature_views"]] == [
        "transactions_features",
        "transactions_event_features",
    ]

    code_facts = chain["code"]["facts"]
    assert code_facts["git_sha"] == code_version() != "unknown"
    assert code_facts["image"] == "local"
    assert code_facts["packages"]["xgboost"] == package_versions()["xgboost"]

    params = chain["hyperparameters"]["facts"]
    assert params["params"]["seed"] == "42"
    assert params["params"]["max_depth"] == "5"
    assert len(params["model_sha256"]) == 64

    evaluation = chain["evaluation"]
    assert evaluation["facts"]["approved"] is True
    assert evaluation["facts"]["thresholds"]["min_roc_auc"] == config.gates.min_roc_auc
    assert evaluation["record"].endswith(f"reports/evaluation/ds=2026-10-11/{pipeline.model}-v1/report.json")

    (entry,) = read_ledger(lake, pipeline.model)
    promotion = chain["promotion"]
    assert promotion["record"] == lake.url(entry["entry"]) == lake.url(predictions["promotion"])
    assert promotion["facts"]["action"] == "promote"
    assert promotion["facts"]["reason"] == "first champion"


def test_trace_by_entity_key_prints_every_row_and_the_chain(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    customer = pipeline.predictions()[0]["customer_id"]
    expected = sum(1 for row in pipeline.predictions() if row["customer_id"] == customer)

    code, out, _ = trace(pipeline, capsys, "--entity", f"customer_id={customer}")

    assert code == 0
    assert out.count("  row: ") == expected
    for name in CHAIN:
        assert f"] {name}" in out
    assert out.strip().splitlines()[-1] == f"lineage intact: {len(CHAIN)} links"


def test_trace_shows_the_days_realized_performance_once_judged(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    from mlsteps.contract.layout import performance_record_path

    record = {
        "status": "ok", "metric": "roc_auc", "evaluation_level": 0.9, "model_version": "1",
        "labeled_rows": 10, "scored_rows": 10,
        "metrics": {"roc_auc": {"value": 0.91, "low": 0.9, "high": 0.92}},
    }  # fmt: skip
    row = pipeline.predictions()[0]["transaction_id"]
    _, before, _ = trace(pipeline, capsys, "--row-id", row, "--json", lake=lake_copy.uri)
    lake_copy.write_json(performance_record_path(pipeline.model, SCORED_DAY), record)
    _, after, _ = trace(pipeline, capsys, "--row-id", row, "--json", lake=lake_copy.uri)
    assert json.loads(before)["realized_performance"] is None
    assert json.loads(after)["realized_performance"] == record


def test_a_deleted_training_snapshot_record_is_a_named_broken_link(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    row = pipeline.predictions()[0]
    lake_copy.delete(f"training/{TRAINING_RUN}/_SUCCESS.json")

    code, out, err = trace(pipeline, capsys, "--row-id", row["transaction_id"], "--json", lake=lake_copy.uri)

    assert code == 2
    document = json.loads(out)
    assert document["intact"] is False
    record = lake_copy.url(f"training/{TRAINING_RUN}/_SUCCESS.json")
    assert document["broken"] == [
        {"link": "training set", "record": record, "problem": f"training snapshot record {record} is missing"}
    ]
    status = {link["name"]: link["status"] for link in document["links"]}
    assert status["raw data"] == status["features"] == "unreachable"
    assert status["model"] == status["promotion"] == "ok"
    assert err.strip().splitlines()[-1] == (
        f"ERROR: broken link in the lineage of transaction_id={row['transaction_id']} (ds={SCORED_DAY}): "
        f"training set: training snapshot record {record} is missing"
    )


def test_a_deleted_ledger_entry_and_a_changed_raw_day_are_reported(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str]
) -> None:
    row = pipeline.predictions()[0]
    (entry,) = read_ledger(lake_copy, pipeline.model)
    lake_copy.delete(entry["entry"])
    raw = lake_copy.manifest("raw/transactions/ds=2026-10-05")
    assert raw is not None
    lake_copy.write_json("raw/transactions/ds=2026-10-05/_SUCCESS.json", {**raw, "files": raw["files"][:0]})

    code, out, err = trace(pipeline, capsys, "--row-id", row["transaction_id"], lake=lake_copy.uri)

    assert code == 2
    assert "[  WARNING  ] raw data" in out
    assert "raw partition(s) 2026-10-05 changed since the snapshot was built" in out
    assert "[  BROKEN   ] promotion" in out
    assert out.strip().splitlines()[-1] == "lineage BROKEN at: promotion"
    assert f"promotion: ledger entry {lake_copy.url(entry['entry'])} is missing" in err


def test_trace_refuses_an_unknown_row_and_a_bad_entity(
    pipeline: PipelineRun, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = trace(pipeline, capsys, "--row-id", "no-such-row")
    assert code == 2
    assert "no prediction with transaction_id=no-such-row" in err
    code, _, err = trace(pipeline, capsys, "--entity", "merchant=x")
    assert code == 2
    assert "--entity must be KEY=VALUE with KEY one of ['customer_id']" in err


def test_trace_as_a_process_imports_neither_feast_nor_evidently(pipeline: PipelineRun) -> None:
    row = pipeline.predictions()[3]
    script = textwrap.dedent(
        f"""
        import sys
        from mlsteps import cli
        code = cli.main(["trace", "--ds", "{SCORED_DAY}", "--row-id", "{row["transaction_id"]}"])
        print("HEAVY", sorted(m for m in ("feast", "evidently") if m in sys.modules))
        sys.exit(code)
        """
    )
    env = {key: value for key, value in os.environ.items() if key != "ML_STEP_RESULT"} | pipeline.env()
    process = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120, check=False
    )

    assert process.returncode == 0, process.stderr
    assert "lineage intact: 10 links" in process.stdout
    assert process.stdout.strip().splitlines()[-1] == "HEAVY []"


def test_a_training_run_that_reused_the_version_from_the_cache_is_named_on_the_model_link(
    pipeline: PipelineRun, lake_copy: Lake, capsys: pytest.CaptureFixture[str], tmp_path: Any
) -> None:
    row = pipeline.predictions()[0]["transaction_id"]
    with environment(pipeline.env(lake_copy.uri)):
        reused = step(["train", "--training-run", TRAINING_RUN, "--dag-id", "ml_training",
                       "--run-id", "manual__again"], tmp_path / "train.json")  # fmt: skip
    capsys.readouterr()  # the train step's own summary line

    code, out, _ = trace(pipeline, capsys, "--row-id", row, "--json", lake=lake_copy.uri)

    assert code == 0
    assert reused["cached_from"]["run_id"] == "manual__lineage"
    model = links(json.loads(out))["model"]["facts"]
    assert model["cache_key"] == reused["cached_from"]["key"]
    assert model["reused_by"] == ["ml_training run manual__again: train cached from run manual__lineage"]
