"""The drift step on small real partitions: verdicts, refusals, the reports and the MLflow run."""

from __future__ import annotations

import datetime as dt
import json
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
import yaml

from mlsteps.cli import main
from mlsteps.contract.config import load_config
from mlsteps.contract.feature_schema import feature_columns, feature_types
from mlsteps.contract.layout import partition, predictions_prefix, reference_prefix
from mlsteps.logic.drift import sample_positions
from mlsteps.logic.features import arrow_schema
from mlsteps.platform.lake import Lake
from mlsteps.platform.monitoring import monitoring_experiment
from mlsteps.platform.sampling import sample_partition
from mlsteps.platform.scoring import features_prefix
from tests.conftest import DEFAULT_CONFIG
from tests.steps.report_fixtures import assert_figures, external_references

DAY = dt.date(2026, 11, 3)
ROWS = 20_000
REFERENCE_ROWS = 12_000
SAMPLE_ROWS = 10_000
VERSION = "3"
RESULT_KEYS = {
    "ds", "drift", "drifted_columns", "drift_share", "columns_checked", "prediction_drift",
    "model_version", "report_html", "report_json", "summary",
}  # fmt: skip
DAY_OF_WEEK = "event_time_day_of_week"


#: Every drift run logs to the loopback MLflow server (artifacts on the loopback S3 API).
pytestmark = pytest.mark.usefixtures("tracking")


@pytest.fixture
def config_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The bundled config with a sample smaller than the test partitions, so sampling is exercised."""
    document = yaml.safe_load(DEFAULT_CONFIG.read_text())
    document["drift"]["sample_rows"] = SAMPLE_ROWS
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    monkeypatch.setenv("ML_PIPELINE_CONFIG", str(path))
    return str(path)


# --- synthetic partitions --------------------------------------------------------------------------


def feature_values(name: str, kind: str, rows: int, rng: np.random.Generator, shifted: bool) -> Any:
    """One feature column; ``shifted`` gives a clearly different distribution of the same kind."""
    if name == "merchant_category":
        categories = ["grocery", "restaurant", "fuel", "travel", "electronics", "online_retail"]
        weights = np.array([6, 5, 4, 2, 2, 3] if not shifted else [3, 3, 4, 5, 4, 3], dtype=float)
        return rng.choice(categories, rows, p=weights / weights.sum())
    if kind == "bool":
        return rng.random(rows) < (0.3 if shifted else 0.15)
    if name == DAY_OF_WEEK:
        return np.full(rows, DAY.weekday())
    if name == "event_time_hour":
        return rng.integers(0, 24, rows)
    if kind == "int":
        return rng.poisson(12.0 if shifted else 8.0, rows)
    values = rng.lognormal(3.0, 0.8, rows) * (1.6 if shifted else 1.0)
    if name == "distance_from_home_km":
        values[rng.random(rows) < 0.02] = np.nan
    return values


def feature_frame(rows: int, seed: int, drifted: tuple[str, ...] = ()) -> pd.DataFrame:
    """A feature partition's rows: keys, event time and the bundled config's features."""
    config = load_config(DEFAULT_CONFIG)
    rng = np.random.default_rng(seed)
    start = pd.Timestamp(DAY, tz="UTC")
    columns: dict[str, Any] = {
        "transaction_id": [f"t{seed}-{i}" for i in range(rows)],
        "customer_id": [f"c{i % 997}" for i in range(rows)],
        "event_time": start + pd.to_timedelta(np.sort(rng.integers(0, 86_400, rows)), unit="s"),
    }
    for name, kind in feature_types(config).items():
        columns[name] = feature_values(name, kind, rows, rng, name in drifted)
    return pd.DataFrame(columns)


def commit_reference(lake: Lake, seed: int) -> None:
    """What train.save_reference commits: features from several days plus the score."""
    config = load_config(DEFAULT_CONFIG)
    rng = np.random.default_rng(seed + 1_000)
    frame = feature_frame(REFERENCE_ROWS, seed + 1_000).loc[:, feature_columns(config)]
    frame[DAY_OF_WEEK] = rng.integers(0, 7, REFERENCE_ROWS)
    frame["score"] = rng.beta(0.5, 20.0, REFERENCE_ROWS)
    staging = lake.stage(reference_prefix(config, VERSION))
    staging.write_parquet("sample.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    lake.commit(
        staging,
        {
            "producer": "train",
            "model": config.model.registered_name,
            "version": VERSION,
            "feature_columns": feature_columns(config),
            "categorical_columns": ["merchant_category"],
            "score_column": "score",
            "training_run": "train_run_1",
            "data_fingerprint": "f" * 64,
        },
    )


def commit_day(
    lake: Lake, seed: int, drifted: tuple[str, ...] = (), scores_drift: bool = False, new_categories: int = 0
) -> None:
    """The day's committed features (two files) and the predictions scored from them.

    ``new_categories``: that many rows get a merchant category the config does not list.
    """
    config = load_config(DEFAULT_CONFIG)
    frame = feature_frame(ROWS, seed, drifted)
    frame.loc[frame.index[:new_categories], "merchant_category"] = "casino"
    staging = lake.stage(partition(features_prefix(config), DAY))
    half = ROWS // 2
    for name, part in (("00000.parquet", frame.iloc[:half]), ("00001.parquet", frame.iloc[half:])):
        table = pa.Table.from_pandas(part, schema=arrow_schema(config), preserve_index=False)
        staging.write_parquet(name, table)
    lake.commit(staging, {"producer": "build-features", "ds": DAY.isoformat()})
    scores = np.random.default_rng(seed + 7).beta(0.5, 6.0 if scores_drift else 20.0, ROWS)
    keys = frame.loc[:, ["transaction_id", "customer_id", "event_time"]]
    predictions = pa.Table.from_pandas(
        keys.assign(score=scores.astype("float32"), decision=scores >= 0.5), preserve_index=False
    )
    staging = lake.stage(predictions_prefix(config.model.registered_name, DAY))
    staging.write_parquet("shard-00000.parquet", predictions)
    lake.commit(
        staging,
        {"ds": DAY.isoformat(), "model_name": config.model.registered_name, "model_version": VERSION},
    )


def run_drift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *extra: str) -> tuple[int, dict[str, Any]]:
    result_file = tmp_path / "result.json"
    result_file.unlink(missing_ok=True)
    monkeypatch.setenv("ML_STEP_RESULT", str(result_file))
    code = main(["drift", "--ds", DAY.isoformat(), "--run-id", "manual__drift", *extra])
    return code, json.loads(result_file.read_text()) if result_file.exists() else {}


# --- verdicts --------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_identical_distributions_do_not_drift(
    seed: int, local_lake: str, config_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, seed)
    commit_day(lake, seed)

    code, result = run_drift(tmp_path, monkeypatch)

    assert code == 0
    assert RESULT_KEYS <= set(result)
    assert result["drift"] is False
    assert result["drifted_columns"] == []
    assert result["prediction_drift"] is False
    assert result["columns_checked"] == 21  # 22 features less the day of week
    assert result["model_version"] == VERSION
    assert result["summary"].startswith("no drift in 21 columns")


@pytest.mark.parametrize(
    ("drifted", "verdict"),
    [
        (("amount",), False),
        (("merchant_category", "is_international", "amount_mean_7d", "amount_count_30d"), False),
        (
            (
                "amount", "merchant_category", "card_present", "distance_from_home_km",
                "amount_count_1d", "amount_max_30d", "log_amount",
            ),
            True,
        ),
    ],
)  # fmt: skip
def test_exactly_the_drifted_columns_are_flagged(
    drifted: tuple[str, ...],
    verdict: bool,
    local_lake: str,
    config_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, 11)
    commit_day(lake, 11, drifted, scores_drift=verdict)

    code, result = run_drift(tmp_path, monkeypatch)

    assert code == 0
    assert sorted(result["drifted_columns"]) == sorted(drifted)
    assert result["drift_share"] == pytest.approx(len(drifted) / 21, abs=1e-6)
    assert result["drift"] is verdict
    assert result["prediction_drift"] is verdict
    assert result["summary"].startswith(f"drift in {len(drifted)} of 21 columns")
    assert ("retrain suggested" in result["summary"]) is verdict


def test_new_categories_in_the_sample_are_counted_in_the_report(
    local_lake: str, config_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, 12)
    commit_day(lake, 12, new_categories=ROWS)  # every row: the sample holds all the same number

    code, result = run_drift(tmp_path, monkeypatch)

    assert code == 0
    document = json.loads(Path(result["report_json"]).read_text())
    assert document["unseen_categories"] == [
        {"column": "merchant_category", "count": SAMPLE_ROWS, "examples": ["casino"]}
    ]
    assert "New categories in the current sample" in Path(result["report_html"]).read_text()


# --- refusals --------------------------------------------------------------------------------------


def test_uncommitted_predictions_are_refused(
    local_lake: str,
    config_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, 5)
    commit_day(lake, 5)
    lake.delete(f"{predictions_prefix(load_config(config_file).model.registered_name, DAY)}/_SUCCESS.json")

    code, result = run_drift(tmp_path, monkeypatch)

    assert code == 2
    assert result == {}
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("ERROR: no committed predictions of ds=2026-11-03")
    assert "ml_batch_scoring" in error


def test_missing_reference_is_refused(
    local_lake: str,
    config_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    commit_day(Lake(local_lake), 5)

    code, _ = run_drift(tmp_path, monkeypatch)

    assert code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith("ERROR: no committed drift reference for card_fraud_xgb version 3")
    assert "retrain" in error


def test_features_lacking_a_reference_column_are_refused(
    local_lake: str,
    config_file: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, 5)
    commit_day(lake, 5)
    prefix = reference_prefix(load_config(config_file), VERSION)
    manifest = lake.manifest(prefix)
    assert manifest is not None
    manifest["feature_columns"] = [*manifest["feature_columns"], "merchant_risk"]
    lake.write_json(f"{prefix}/_SUCCESS.json", manifest)

    code, _ = run_drift(tmp_path, monkeypatch)

    assert code == 2
    assert "lacks column(s) ['merchant_risk']" in capsys.readouterr().err


# --- outputs ---------------------------------------------------------------------------------------


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.text: list[str] = []
        self.tags: list[str] = []
        self.sources: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.sources += [value or "" for key, value in attrs if key in ("src", "href")]
        if tag in ("html", "body", "table", "tr", "h1", "h2"):
            self.open.append(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in ("html", "body", "table", "tr", "h1", "h2"):
            assert self.open.pop() == tag

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def test_reports_are_self_contained_and_complete(
    local_lake: str, config_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, 21)
    commit_day(lake, 21, ("amount", "card_present"))

    code, result = run_drift(tmp_path, monkeypatch)

    assert code == 0
    assert result["report_html"] == f"{local_lake}/reports/drift/ds=2026-11-03/report.html"
    html = Path(result["report_html"]).read_text()
    parser = _Collector()
    parser.feed(html)
    parser.close()
    text = " ".join(parser.text)
    assert parser.open == []
    assert parser.tags.count("img") >= 3  # drift per column, drifted distributions, score
    assert all(source.startswith("data:image/png;base64,") for source in parser.sources)
    headings = [
        "Drift per feature column",
        "Distributions of drifted columns",
        "Distribution of the model score",
    ]
    assert list(assert_figures(html, headings)) == headings
    assert external_references(html) == []
    assert "<script" not in html  # no Evidently widgets: only its stat tests run, the plots are inline PNGs
    assert "Drift of card_fraud_xgb v3 on ds=2026-11-03" in text
    for column in feature_columns(load_config(config_file)):
        assert column in text

    document = json.loads(Path(result["report_json"]).read_text())
    assert {"ds", "model_version", "drift", "drift_share", "drifted_columns", "columns", "prediction"} <= set(
        document
    )
    assert document["drifted_columns"] == ["amount", "card_present"]
    assert document["skipped_columns"] == {DAY_OF_WEEK: "constant within one day's partition by construction"}
    amount, card_present = document["columns"]["amount"], document["columns"]["card_present"]
    assert (amount["method"], amount["test"], amount["drifted"]) == ("wasserstein", "ks", True)
    assert (card_present["method"], card_present["test"]) == ("jensenshannon", "chisquare")
    assert amount["p_value"] < 0.05
    assert amount["score"] >= amount["threshold"]
    assert document["columns"]["log_amount"]["drifted"] is False
    samples = document["samples"]
    assert (samples["reference_rows"], samples["current_rows"], samples["prediction_rows"]) == (
        SAMPLE_ROWS,
        SAMPLE_ROWS,
        SAMPLE_ROWS,
    )
    assert (samples["current_total_rows"], samples["reference_total_rows"]) == (ROWS, REFERENCE_ROWS)


def test_the_run_is_logged_to_the_monitoring_experiment(
    local_lake: str, config_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(local_lake)
    commit_reference(lake, 31)
    commit_day(lake, 31, ("amount",))

    code, result = run_drift(tmp_path, monkeypatch, "--dag-id", "ml_drift_monitor")

    assert code == 0
    client = mlflow.MlflowClient()
    run = client.get_run(result["mlflow_run_id"])
    experiment = client.get_experiment(run.info.experiment_id)
    assert result["experiment_id"] == run.info.experiment_id  # with the run id, what the task's link needs
    assert result["model_name"] == run.data.tags["model_name"]
    assert (
        experiment.name == monitoring_experiment(load_config(config_file)) == "card-fraud-training-monitoring"
    )
    assert run.info.run_name == "drift-2026-11-03"
    assert run.info.status == "FINISHED"
    assert run.data.tags["ds"] == "2026-11-03"
    assert run.data.tags["model_version"] == VERSION
    assert run.data.tags["dag_run"] == "manual__drift"
    assert run.data.metrics["drift_share"] == pytest.approx(1 / 21)
    assert run.data.metrics["drifted_columns"] == 1
    assert run.data.metrics["columns_checked"] == 21
    assert run.data.metrics["distance.amount"] >= 0.1
    assert "p_value.merchant_category" in run.data.metrics
    assert "distance.prediction.score" in run.data.metrics
    artifacts = {item.path for item in client.list_artifacts(run.info.run_id, "drift/ds=2026-11-03")}
    assert artifacts == {"drift/ds=2026-11-03/report.html", "drift/ds=2026-11-03/report.json"}


def test_drift_on_the_s3_lake(
    s3_lake: str, config_file: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lake = Lake(s3_lake)
    commit_reference(lake, 41)
    commit_day(lake, 41, ("amount_sum_7d",))

    code, result = run_drift(tmp_path, monkeypatch)

    assert code == 0
    assert result["drifted_columns"] == ["amount_sum_7d"]
    assert result["report_json"] == f"{s3_lake}/reports/drift/ds=2026-11-03/report.json"
    assert lake.read_json("reports/drift/ds=2026-11-03/report.json")["drifted_columns"] == ["amount_sum_7d"]


# --- sampling --------------------------------------------------------------------------------------


def test_sampling_is_uniform_deterministic_and_bounded(local_lake: str) -> None:
    lake = Lake(local_lake)
    staging = lake.stage("sample_test")
    for index in range(3):
        values = np.arange(index * 10_000, (index + 1) * 10_000)
        staging.write_parquet(f"{index}.parquet", pa.table({"position": values, "other": values * 2}))
    lake.commit(staging, {})
    files = lake.partition_files("sample_test")

    def draw(seed: int) -> pd.DataFrame:
        return sample_partition(lake, files, ["position"], 30_000, 3_000, np.random.default_rng(seed), 4_096)

    first, again, other = draw(1), draw(1), draw(2)

    assert list(first.columns) == ["position"]
    assert len(first) == 3_000
    assert first["position"].is_unique
    assert first["position"].is_monotonic_increasing
    assert first.equals(again)
    assert not first.equals(other)
    assert abs(first["position"].mean() - 15_000) < 1_000  # spread over all three files
    assert (np.bincount(first["position"] // 10_000, minlength=3) > 800).all()
    assert len(sample_positions(500, 3_000, np.random.default_rng(0))) == 500
