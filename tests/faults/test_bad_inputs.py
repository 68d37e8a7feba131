"""Bad inputs: each malformed dataset or config ends a real step run with one ``ERROR:`` line and exit 2.

No bare traceback, and nothing is published: no predictions partition, no alias change, no new
ledger entry. The steps run as real subprocesses (``python -m mlsteps ...``) against a local lake,
and a few against the lake on the loopback S3 API.
"""

from __future__ import annotations

import datetime as dt
import io
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from mlsteps.contract.config import DEFAULT_CONFIG_PATH
from mlsteps.contract.layout import partition
from mlsteps.platform.lake import Lake
from mlsteps.steps.generate import generate_events

DAY = dt.date(2026, 1, 1)
ONE_DAY = ["--start", "2026-01-01", "--end", "2026-01-02"]
SOURCE = "raw/transactions"


def step(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m mlsteps <argv>`` in a fresh interpreter."""
    return subprocess.run(
        [sys.executable, "-m", "mlsteps", *argv],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
        check=False,
    )


def assert_refused(process: subprocess.CompletedProcess, *words: str) -> str:
    """Exit 2, no traceback, and one ``ERROR:`` line last on stderr that names the problem."""
    assert process.returncode == 2, f"exit {process.returncode}\n{process.stderr[-3000:]}"
    assert "Traceback" not in process.stderr, process.stderr[-3000:]
    lines = process.stderr.rstrip("\n").splitlines()
    assert lines, "nothing on stderr"
    assert lines[-1].startswith("ERROR: "), process.stderr[-2000:]
    assert sum(line.startswith("ERROR:") for line in lines) == 1, process.stderr[-2000:]
    for word in words:
        assert word in lines[-1], f"{word!r} not in {lines[-1]!r}"
    return lines[-1]


# --- raw data and configs: validate ---------------------------------------------------------------


@pytest.fixture(scope="module")
def good_day() -> pd.DataFrame:
    """One generated day (~600 rows; the bundled config wants at least 500)."""
    return generate_events([DAY], rows_per_day=600, customers=300, seed=5).reset_index(drop=True)


def parquet_bytes(frame: pd.DataFrame) -> bytes:
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink)
    return sink.getvalue()


@dataclass(frozen=True)
class BadData:
    """Landing files of one bad day (name -> bytes), or extra CLI options, and the words the error needs."""

    files: Callable[[pd.DataFrame], dict[str, bytes]]
    words: tuple[str, ...]
    config: Callable[[Path], Path] | None = None


def _frame(change: Callable[[pd.DataFrame], pd.DataFrame]) -> Callable[[pd.DataFrame], dict[str, bytes]]:
    return lambda frame: {"part-0.parquet": parquet_bytes(change(frame.copy()))}


def _raw(data: bytes) -> Callable[[pd.DataFrame], dict[str, bytes]]:
    return lambda frame: {"part-0.parquet": data}


def _truncated(frame: pd.DataFrame) -> dict[str, bytes]:
    data = parquet_bytes(frame)
    return {"part-0.parquet": data[: len(data) // 2]}


def _disagreeing_files(frame: pd.DataFrame) -> dict[str, bytes]:
    half = len(frame) // 2
    first, second = frame.iloc[:half], frame.iloc[half:].assign(amount=lambda f: f["amount"].astype(str))
    return {"part-0.parquet": parquet_bytes(first), "part-1.parquet": parquet_bytes(second)}


def _config(change: Callable[[dict[str, Any]], Any] | str | bytes) -> Callable[[Path], Path]:
    def write(directory: Path) -> Path:
        path = directory / "pipeline.yaml"
        if isinstance(change, bytes):
            path.write_bytes(change)
        elif isinstance(change, str):
            path.write_text(change)
        else:
            document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
            document = change(document) or document
            path.write_text(yaml.safe_dump(document, sort_keys=False))
        return path

    return write


def _good(frame: pd.DataFrame) -> dict[str, bytes]:
    return {"part-0.parquet": parquet_bytes(frame)}


def _set(section: str, key: str, value: Any) -> Callable[[dict[str, Any]], None]:
    return lambda document: document[section].__setitem__(key, value)


BAD_DATA: dict[str, BadData] = {
    "inf flood": BadData(_frame(lambda f: f.assign(amount=np.inf)), ("column 'amount'", "outside")),
    "-inf in a numeric column": BadData(
        _frame(lambda f: f.assign(distance_from_home_km=-np.inf)), ("distance_from_home_km", "outside")
    ),
    "NaN flood in a non-nullable column": BadData(
        _frame(lambda f: f.assign(amount=np.nan)), ("column 'amount'", "entirely null")
    ),
    "NaN in half a non-nullable column": BadData(
        _frame(lambda f: f.assign(amount=f["amount"].where(f.index % 2 == 0))),
        ("column 'amount'", "null value(s)"),
    ),
    "timestamps as text": BadData(
        _frame(lambda f: f.assign(event_time=f["event_time"].astype(str))), ("event_time", "dtype")
    ),
    "label as text": BadData(
        _frame(lambda f: f.assign(is_fraud=f["is_fraud"].map({True: "yes", False: "no"}))),
        ("is_fraud", "dtype", "boolean"),
    ),
    "integers where booleans belong": BadData(
        _frame(lambda f: f.assign(card_present=f["card_present"].astype(int))), ("card_present", "dtype")
    ),
    "missing label column": BadData(_frame(lambda f: f.drop(columns=["is_fraud"])), ("is_fraud", "missing")),
    "missing key column": BadData(
        _frame(lambda f: f.drop(columns=["transaction_id"])), ("transaction_id", "missing")
    ),
    "empty day (a file with no rows)": BadData(_frame(lambda f: f.head(0)), ("hold no rows",)),
    "zero-byte .parquet": BadData(_raw(b""), ("part-0.parquet", "not readable Parquet")),
    "garbage bytes named .parquet": BadData(
        _raw(np.random.default_rng(0).bytes(4096)), ("part-0.parquet", "not readable Parquet")
    ),
    "CSV named .parquet": BadData(
        _raw(b"transaction_id,amount\nt1,3.5\n"), ("part-0.parquet", "not readable Parquet")
    ),
    "truncated Parquet": BadData(_truncated, ("part-0.parquet", "not readable Parquet")),
    "files that disagree on a column's type": BadData(_disagreeing_files, ("disagree",)),
    "config: bad YAML": BadData(_good, ("not valid YAML", "line"), _config("dataset: [unclosed\n  name: x")),
    "config: unknown key": BadData(
        _good, ("model.num_rounds", "not a known setting"), _config(_set("model", "num_rounds", 5))
    ),
    "config: wrong type": BadData(
        _good, ("dataset.min_rows_per_day", "many"), _config(_set("dataset", "min_rows_per_day", "many"))
    ),
    "config: out of range": BadData(
        _good, ("gates.min_roc_auc", "1.5"), _config(_set("gates", "min_roc_auc", 1.5))
    ),
    "config: a list, not a mapping": BadData(_good, ("YAML mapping",), _config("- name: x\n- name: y\n")),
    "config: empty file": BadData(_good, ("YAML mapping",), _config("")),
    "config: binary garbage": BadData(
        _good, ("cannot be read", "UnicodeDecodeError"), _config(b"\xff\xfe\x00garbage\x81" * 50)
    ),
    "config: label used as a feature": BadData(
        _good,
        ("features.passthrough", "leak"),
        _config(lambda d: d["features"]["passthrough"].append("is_fraud")),
    ),
    "config: missing file": BadData(_good, ("does not exist",), lambda directory: directory / "absent.yaml"),
}


def _run_bad_data(name: str, case: BadData, frame: pd.DataFrame, root: Path) -> subprocess.CompletedProcess:
    directory = root / name.replace(" ", "_").replace(":", "").replace(",", "").replace("'", "")
    lake = directory / "lake"
    landing = lake / partition(SOURCE, DAY)
    landing.mkdir(parents=True)
    for file_name, data in case.files(frame).items():
        (landing / file_name).write_bytes(data)
    options = ["--config", str(case.config(directory))] if case.config else []
    return step("validate", *ONE_DAY, "--lake", str(lake), *options)


@pytest.fixture(scope="module")
def bad_data_runs(good_day: pd.DataFrame, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Every bad-data case as a real validate run, three at a time."""
    root = tmp_path_factory.mktemp("bad-data")
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = {
            name: pool.submit(_run_bad_data, name, case, good_day, root) for name, case in BAD_DATA.items()
        }
        return {name: future.result() for name, future in futures.items()}


def test_there_are_enough_bad_inputs() -> None:
    assert len(BAD_DATA) + len(BAD_SCORING) + len(BAD_REGISTRY) >= 20


@pytest.mark.parametrize("name", list(BAD_DATA))
def test_bad_data_or_config_is_refused_in_one_line(bad_data_runs: dict[str, Any], name: str) -> None:
    assert_refused(bad_data_runs[name], *BAD_DATA[name].words)


def test_good_day_passes(good_day: pd.DataFrame, tmp_path: Path) -> None:
    """The control: the same day, unharmed, validates; so each refusal above is the harm's doing."""
    landing = tmp_path / partition(SOURCE, DAY)
    landing.mkdir(parents=True)
    (landing / "part-0.parquet").write_bytes(parquet_bytes(good_day))
    process = step("validate", *ONE_DAY, "--lake", str(tmp_path))
    assert process.returncode == 0, process.stderr


@pytest.mark.parametrize(
    "name", ["garbage bytes named .parquet", "missing label column", "config: unknown key"]
)
def test_bad_data_on_the_s3_lake(s3_lake: str, good_day: pd.DataFrame, tmp_path: Path, name: str) -> None:
    case = BAD_DATA[name]
    lake = Lake(s3_lake)
    for file_name, data in case.files(good_day).items():
        lake.write_bytes(f"{partition(SOURCE, DAY)}/{file_name}", data)
    options = ["--config", str(case.config(tmp_path))] if case.config else []
    assert_refused(step("validate", *ONE_DAY, *options), *case.words)


# --- scoring and the registry: nothing scored, nothing promoted ----------------------------------

KEYS = ["transaction_id", "customer_id", "event_time"]


@dataclass
class Champion:
    """A model trained by the real train step and made champion, and the features of one day."""

    name: str
    version: str
    config: str
    tracking_uri: str
    day: dt.date
    features: pd.DataFrame
    feature_names: list[str]

    def env(self, lake: str, **extra: str) -> dict[str, str]:
        return {
            "ML_PIPELINE_CONFIG": self.config,
            "MLFLOW_TRACKING_URI": self.tracking_uri,
            "ML_LAKE_URI": lake,
            **extra,
        }


@pytest.fixture(scope="module")
def champion(mlflow_tracking: Any, s3: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Champion]:
    from mlflow import MlflowClient

    from tests.steps.training_fixtures import (
        FEATURES,
        build_features,
        build_snapshot,
        run_step,
        unique_model_name,
        write_config,
    )

    directory = tmp_path_factory.mktemp("champion")
    name = unique_model_name("bad_inputs")
    config = write_config(directory, name)
    lake = str(directory / "lake")
    frame = build_features(days=6, rows_per_day=800)
    with pytest.MonkeyPatch.context() as patch:
        for key, value in {**s3.env, "MLFLOW_TRACKING_URI": mlflow_tracking.tracking_uri}.items():
            patch.setenv(key, value)
        patch.setenv("ML_PIPELINE_CONFIG", config)
        patch.setenv("ML_LAKE_URI", lake)
        build_snapshot(lake, "r1", frame=frame)
        code, trained = run_step(["train", "--training-run", "r1"], directory / "train.json", patch)
        assert code == 0
        MlflowClient(mlflow_tracking.tracking_uri).set_registered_model_alias(
            name, "champion", trained["model_version"]
        )
    day = frame["event_time"].max().date()
    features = frame[frame["event_time"].dt.date == day].drop(columns=["is_fraud"])[KEYS + FEATURES]
    return Champion(
        name, trained["model_version"], config, mlflow_tracking.tracking_uri, day, features, FEATURES
    )


def commit_features(lake: Lake, day: dt.date, table: pa.Table | bytes) -> None:
    """A committed feature partition, as build-features leaves it (bytes: a file that is not Parquet)."""
    staging = lake.stage(partition("features/transactions", day))
    if isinstance(table, bytes):
        staging.write_parquet("00000.parquet", pa.table({"x": [1]}))
        lake.commit(staging, {})
        files = lake.partition_files(partition("features/transactions", day))
        lake.write_bytes(files[0], table)  # corrupted after the commit (a bad disk, a bad copy)
        return
    staging.write_parquet("00000.parquet", table)
    lake.commit(staging, {})


def _table(frame: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(frame, preserve_index=False)


#: Feature partitions that must not be scored: (how to build it, the words the error needs).
BAD_SCORING: dict[str, tuple[Callable[[Champion], pa.Table | bytes | None], tuple[str, ...]]] = {
    "no features for the day": (lambda c: None, ("no committed features",)),
    "empty features": (lambda c: _table(c.features.head(0)), ("empty", "nothing to score")),
    "mismatched model signature": (
        lambda c: _table(c.features.drop(columns=["log_amount"])),
        ("signature", "log_amount"),
    ),
    "renamed feature column": (
        lambda c: _table(c.features.rename(columns={"amount": "Amount"})),
        ("signature", "amount"),
    ),
    "feature column of the wrong type": (
        lambda c: _table(c.features.assign(amount=c.features["amount"].map(lambda v: f"{v:.2f} EUR"))),
        ("amount", "cannot be scored"),
    ),
    "garbage bytes in a committed feature file": (
        lambda c: b"\x00\x01 not parquet" * 100,
        ("00000.parquet",),
    ),
    "inf flood in a feature": (
        lambda c: _table(c.features.assign(log_amount=np.inf)),
        ("log_amount", "infinite"),
    ),
}


def predictions_published(lake: Lake, champion: Champion) -> bool:
    return lake.exists(f"{partition(f'predictions/{champion.name}', champion.day)}/_SUCCESS.json")


def aliases(champion: Champion) -> dict[str, str]:
    from mlflow import MlflowClient

    return dict(MlflowClient(champion.tracking_uri).get_registered_model(champion.name).aliases)


@pytest.mark.faults
@pytest.mark.parametrize("name", list(BAD_SCORING))
def test_bad_scoring_input_is_refused_and_nothing_is_published(
    champion: Champion, tmp_path: Path, name: str
) -> None:
    build, words = BAD_SCORING[name]
    lake = Lake(str(tmp_path / "lake"))
    table = build(champion)
    if table is not None:
        commit_features(lake, champion.day, table)
    before = aliases(champion)
    env = champion.env(lake.uri)
    ds = champion.day.isoformat()

    plan = step("plan-scoring", "--ds", ds, env=env)
    score = step("score", "--ds", ds, env=env)  # alone it would score and publish in one go

    refusals = [p for p in (plan, score) if p.returncode != 0]
    assert score in refusals
    for process in refusals:
        assert_refused(process, *words)
    assert not predictions_published(lake, champion)
    assert aliases(champion) == before


def _no_champion(champion: Champion, lake: Lake, directory: Path) -> list[str]:
    from tests.steps.training_fixtures import unique_model_name, write_config

    commit_features(lake, champion.day, _table(champion.features))
    config = write_config(directory, unique_model_name("never_trained"))
    return ["--config", config, "plan-scoring", "--ds", champion.day.isoformat()]


def _unapproved(champion: Champion, lake: Lake, directory: Path) -> list[str]:
    from tests.steps.training_fixtures import register_stub_versions

    register_stub_versions(champion.name + "_stubs", 1, approved=False)
    config = yaml.safe_load(Path(champion.config).read_text())
    config["model"]["registered_name"] = champion.name + "_stubs"
    path = directory / "stubs.yaml"
    path.write_text(yaml.safe_dump(config))
    return ["--config", str(path), "promote", "--model-version", "1", "--expected-champion", "none"]


#: Registry refusals: (argv builder, the words the error needs).
BAD_REGISTRY: dict[str, tuple[Callable[[Champion, Lake, Path], list[str]], tuple[str, ...]]] = {
    "missing champion": (_no_champion, ("has no alias 'champion'",)),
    "promoting a version evaluate never approved": (_unapproved, ("only a version evaluate approved",)),
    "rollback with nothing promoted": (
        lambda c, lake, d: ["rollback", "--version", "previous"],
        ("nothing to roll back to",),
    ),
    "promoting a version that does not exist": (
        lambda c, lake, d: ["promote", "--model-version", "999", "--expected-champion", "none"],
        ("999",),
    ),
    "evaluating against a snapshot that does not exist": (
        lambda c, lake, d: ["evaluate", "--model-version", c.version, "--training-run", "r1"],
        ("r1",),
    ),
    "training on a snapshot that does not exist": (
        lambda c, lake, d: ["train", "--training-run", "never-built"],
        ("never-built",),
    ),
    "drift without a committed predictions partition": (
        lambda c, lake, d: ["drift", "--ds", c.day.isoformat()],
        ("no committed predictions",),
    ),
}


@pytest.mark.faults
@pytest.mark.parametrize("name", list(BAD_REGISTRY))
def test_registry_refusals_change_nothing(
    champion: Champion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    build, words = BAD_REGISTRY[name]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", champion.tracking_uri)
    lake = Lake(str(tmp_path / "lake"))
    argv = build(champion, lake, tmp_path)
    if argv[0] == "--config":  # the CLI takes common options after the step name
        argv = [argv[2], "--config", argv[1], *argv[3:]]
    before = aliases(champion)
    ledger_before = sorted(p.name for p in (tmp_path / "lake").rglob("ledger/**/*.json"))

    assert_refused(step(*argv, env=champion.env(lake.uri)), *words)

    assert aliases(champion) == before
    assert sorted(p.name for p in (tmp_path / "lake").rglob("ledger/**/*.json")) == ledger_before
    assert not predictions_published(lake, champion)
