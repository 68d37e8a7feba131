"""The scoring loop's parts: Arrow encoding equals the training encoding; the read-ahead loop is faithful."""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import xgboost as xgb

from mlsteps.contract.config import PipelineConfig, load_config
from mlsteps.errors import StepError
from mlsteps.platform import scoring
from mlsteps.platform.datasets import model_input
from mlsteps.platform.lake import Lake
from mlsteps.platform.mlflow_registry import LoadedModel
from mlsteps.platform.scoring import PredictThreads, available_cores, encode_batch, score_units

FEATURES = ["amount", "merchant_category", "card_present", "distance_from_home_km"]


def _batch(rows: int, seed: int = 0, id_width: int = 0) -> pa.RecordBatch:
    """``rows`` events; ``id_width`` zero-pads the row ids (long ids cost more to read, not to predict)."""
    rng = np.random.default_rng(seed)
    categories = list(load_config().dataset.columns["merchant_category"].categories or ())
    merchant = rng.choice([*categories, "unseen_category"], rows).astype(object)
    merchant[::17] = None
    distance = rng.exponential(30, rows)
    return pa.RecordBatch.from_pydict(
        {
            "transaction_id": [f"t{i:0{id_width}d}" for i in range(rows)],
            "customer_id": [f"c{i % 50}" for i in range(rows)],
            "event_time": pa.array(pd.date_range("2026-11-05", periods=rows, freq="s", tz="UTC")),
            "amount": rng.gamma(2, 40, rows),
            "merchant_category": pa.array(merchant, pa.string()),
            "card_present": rng.random(rows) < 0.5,
            "distance_from_home_km": pa.array(
                [None if i % 13 == 0 else d for i, d in enumerate(distance)], pa.float64()
            ),
        }
    )


def _booster(seed: int = 0) -> xgb.Booster:
    """A small model trained on ``model_input``'s encoding (categorical split on merchant_category)."""
    config = load_config()
    frame = _batch(4000, seed).to_pandas()
    features = model_input(frame, FEATURES, config)
    risky = frame["merchant_category"].isin(["travel", "online_retail"])
    label = (risky ^ (frame["amount"] > 80)).astype(int)
    train = xgb.DMatrix(features, label, enable_categorical=True)
    return xgb.train({"tree_method": "hist", "max_cat_to_onehot": 1, "seed": 1}, train, num_boost_round=20)


def test_arrow_encoding_predicts_exactly_as_the_training_encoding() -> None:
    config = load_config()
    booster = _booster()
    batch = _batch(3000, seed=1)
    encoded = encode_batch(batch, FEATURES, config)
    assert encoded.dtype == np.float32
    assert encoded.flags.f_contiguous
    merchant = batch.column("merchant_category").to_pylist()
    nulls = [i for i, value in enumerate(merchant) if value is None]
    unseen = [i for i, value in enumerate(merchant) if value == "unseen_category"]
    assert nulls
    assert unseen
    assert np.isnan(encoded[nulls, 1]).all()
    other = len(config.dataset.columns["merchant_category"].categories or ())
    assert (encoded[unseen, 1] == other).all()  # the one "other" category, after the configured ones
    reference = booster.inplace_predict(model_input(batch.to_pandas(), FEATURES, config))
    ours = booster.inplace_predict(encoded, validate_features=False)
    np.testing.assert_array_equal(ours, reference)


def test_a_feature_that_is_not_a_number_is_refused_by_name() -> None:
    batch = _batch(10).to_pandas()
    batch["amount"] = "lots"
    with pytest.raises(StepError, match="'amount'"):
        encode_batch(pa.RecordBatch.from_pandas(batch), FEATURES, load_config())


def _write_parts(root: Path, parts: int, rows: int, id_width: int = 0) -> list[tuple[str, int]]:
    units = []
    for number in range(parts):
        table = pa.Table.from_batches([_batch(rows, seed=10 + number, id_width=id_width)])
        pq.write_table(table, root / f"part-{number}.parquet", row_group_size=rows // 2)
        units += [(f"part-{number}.parquet", 0), (f"part-{number}.parquet", 1)]
    return units


def test_read_ahead_loop_scores_every_row_once_in_order(tmp_path: Path) -> None:
    config = load_config()
    booster = _booster()
    units = _write_parts(tmp_path, parts=3, rows=1000)
    scored = list(score_units(Lake(str(tmp_path)), config, _model(booster), units, batch_rows=300))
    assert [(s.unit_number, s.batch_number) for s in scored][:3] == [(0, 0), (0, 1)] + [(1, 0)]
    output = pa.concat_tables([s.table for s in scored])
    assert output.column_names == ["transaction_id", "customer_id", "event_time", "score", "decision"]
    expected = []
    for number in range(3):
        frame = pq.read_table(tmp_path / f"part-{number}.parquet").to_pandas()
        expected.append(booster.inplace_predict(model_input(frame, FEATURES, config)))
    np.testing.assert_allclose(output.column("score").to_numpy(), np.concatenate(expected), rtol=1e-6)
    assert output.column("decision").to_pylist() == list(
        output.column("score").to_numpy() >= config.scoring.decision_threshold
    )


def _model(booster: xgb.Booster) -> Future[LoadedModel]:
    """The model as the score step hands it over: a download that has finished."""
    loaded: Future[LoadedModel] = Future()
    loaded.set_result(LoadedModel(booster, None))
    return loaded


@pytest.mark.parametrize("held_bytes", [2**30, 1])  # every batch held before the model, or one
def test_batches_read_while_the_model_loads_are_scored_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, held_bytes: int
) -> None:
    monkeypatch.setattr(scoring, "BYTES_BEFORE_MODEL", held_bytes)
    config, booster, parts = load_config(), _booster(), 3
    units = _write_parts(tmp_path, parts=parts, rows=400)
    loading: Future[LoadedModel] = Future()
    timer = threading.Timer(0.5, lambda: loading.set_result(LoadedModel(booster, None)))
    timer.start()
    scored = list(score_units(Lake(str(tmp_path)), config, loading, units, batch_rows=100))
    assert [(s.unit_number, s.batch_number) for s in scored] == [
        (u, b) for u in range(2 * parts) for b in (0, 1)
    ]
    expected = [
        booster.inplace_predict(
            model_input(pq.read_table(tmp_path / f"part-{n}.parquet").to_pandas(), FEATURES, config)
        )
        for n in range(parts)
    ]
    output = pa.concat_tables([s.table for s in scored]).column("score").to_numpy()
    np.testing.assert_allclose(output, np.concatenate(expected), rtol=1e-6)


def _nthread(booster: xgb.Booster) -> str:
    return str(json.loads(booster.save_config())["learner"]["generic_param"]["nthread"])


def test_predicting_starts_on_every_core() -> None:
    booster = _booster()
    PredictThreads(cores=2).start(booster)
    assert _nthread(booster) == "0"  # XGBoost's default


def _probe(threads: PredictThreads, booster: xgb.Booster, reading: float, predicting: float) -> None:
    """One probe's batches, each read and predicted in these times."""
    for _ in range(threads.probe_batches):
        threads.record(booster, reading=reading, predicting=predicting)


def _started(cores: int = 2) -> tuple[xgb.Booster, PredictThreads]:
    """A booster on every core, its first batch (XGBoost's set-up, not timed) predicted."""
    booster, threads = _booster(), PredictThreads(cores=cores, probe_batches=3)
    threads.start(booster)
    threads.record(booster, reading=0.001, predicting=5.0)
    return booster, threads


def test_a_model_predicted_slower_than_its_input_is_read_stays_on_every_core() -> None:
    booster, threads = _started()
    _probe(threads, booster, reading=0.002, predicting=0.010)
    assert (_nthread(booster), threads.chosen, threads.one_thread) == ("0", True, False)


def test_a_model_predicted_faster_than_reading_even_times_the_cores_moves_to_one_thread() -> None:
    booster, threads = _started(cores=2)
    _probe(threads, booster, reading=0.010, predicting=0.002)
    assert (_nthread(booster), threads.chosen, threads.one_thread) == ("1", True, True)


def test_in_between_the_next_batches_are_probed_on_one_thread() -> None:
    booster, threads = _started(cores=4)
    _probe(threads, booster, reading=0.010, predicting=0.004)  # 4 cores x 0.004 s > 0.010 s
    assert (_nthread(booster), threads.chosen) == ("1", False)


def test_a_model_one_thread_predicts_faster_than_reading_stays_on_one_thread() -> None:
    booster, threads = _started(cores=4)
    _probe(threads, booster, reading=0.010, predicting=0.004)
    _probe(threads, booster, reading=0.010, predicting=0.008)
    assert (_nthread(booster), threads.chosen, threads.one_thread) == ("1", True, True)


def test_a_model_one_thread_predicts_slower_than_reading_goes_back_to_every_core() -> None:
    booster, threads = _started(cores=4)
    _probe(threads, booster, reading=0.010, predicting=0.004)
    _probe(threads, booster, reading=0.010, predicting=0.012)
    assert (_nthread(booster), threads.chosen, threads.one_thread) == ("0", True, False)


def test_the_first_batch_is_not_part_of_the_probe() -> None:
    booster, threads = _started(cores=2)  # its first batch took 5 s to predict
    _probe(threads, booster, reading=0.010, predicting=0.002)
    assert _nthread(booster) == "1"


def test_the_choice_is_made_once() -> None:
    booster, threads = _started(cores=2)
    _probe(threads, booster, reading=0.010, predicting=0.002)
    _probe(threads, booster, reading=0.001, predicting=1.0)  # after the choice: no second one
    assert _nthread(booster) == "1"


def _cgroup(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(text)
    return root


def test_a_cgroup_v2_quota_caps_the_cores_rounded_up(tmp_path: Path) -> None:
    assert available_cores(_cgroup(tmp_path, {"cpu.max": "50000 100000\n"})) == 1


def test_a_cgroup_v2_without_a_quota_leaves_the_affinity(tmp_path: Path) -> None:
    cgroup = _cgroup(tmp_path, {"cpu.max": "max 100000\n"})
    assert available_cores(cgroup) == len(os.sched_getaffinity(0))


def test_a_cgroup_v1_quota_caps_the_cores(tmp_path: Path) -> None:
    cgroup = _cgroup(tmp_path, {"cpu/cpu.cfs_quota_us": "100000\n", "cpu/cpu.cfs_period_us": "100000\n"})
    assert available_cores(cgroup) == 1


def test_no_cgroup_files_leave_the_affinity(tmp_path: Path) -> None:
    assert available_cores(tmp_path) == len(os.sched_getaffinity(0))


def test_an_io_bound_model_is_predicted_on_one_thread(tmp_path: Path) -> None:
    # Batches large enough that predicting them on every core costs far less than reading them,
    # even with the threads' start-up: 6 of 20,000 rows (the probe ends before the input does), with
    # 64-digit row ids, so reading costs several times what two threads take to predict.
    units = _write_parts(tmp_path, parts=3, rows=40_000, id_width=64)
    frame = _batch(500).to_pandas()
    tiny = xgb.train(
        {"max_depth": 2},
        xgb.DMatrix(
            model_input(frame, FEATURES, load_config()), frame["amount"] > 80, enable_categorical=True
        ),
        num_boost_round=2,
    )
    scored = list(score_units(Lake(str(tmp_path)), load_config(), _model(tiny), units, batch_rows=20_000))
    assert sum(s.table.num_rows for s in scored) == 3 * 40_000
    assert _nthread(tiny) == "1"


def test_a_compute_bound_model_is_predicted_on_every_core(tmp_path: Path) -> None:
    config = load_config()
    frame = _batch(2000).to_pandas()
    # Random labels cannot be learnt, so every tree grows out: about ten times the reading cost to
    # predict on one thread (a learnable label gave stumps, and a margin too thin for a loaded machine).
    labels = np.random.default_rng(0).random(len(frame)) > 0.5
    heavy = xgb.train(
        {"tree_method": "hist", "max_depth": 8, "min_child_weight": 0, "max_cat_to_onehot": 1},
        xgb.DMatrix(model_input(frame, FEATURES, config), labels, enable_categorical=True),
        num_boost_round=1000,
    )
    units = _write_parts(tmp_path, parts=2, rows=8000)
    scored = list(score_units(Lake(str(tmp_path)), config, _model(heavy), units, batch_rows=2000))
    assert sum(s.table.num_rows for s in scored) == 2 * 8000
    assert _nthread(heavy) == "0"


def test_columns_the_model_does_not_use_are_not_in_the_output(tmp_path: Path) -> None:
    table = pa.Table.from_batches([_batch(200)]).append_column("unused", pa.array(range(200)))
    pq.write_table(table, tmp_path / "wide.parquet", row_group_size=100)
    units = [("wide.parquet", 0), ("wide.parquet", 1)]
    scored = list(score_units(Lake(str(tmp_path)), load_config(), _model(_booster()), units, batch_rows=50))
    assert {tuple(s.table.column_names) for s in scored} == {
        ("transaction_id", "customer_id", "event_time", "score", "decision")
    }
    assert sum(s.table.num_rows for s in scored) == 200


def test_a_model_whose_features_the_input_lacks_is_refused_before_any_output(tmp_path: Path) -> None:
    table = pa.Table.from_batches([_batch(100)]).drop_columns(["card_present"])
    pq.write_table(table, tmp_path / "narrow.parquet")
    scored = score_units(Lake(str(tmp_path)), load_config(), _model(_booster()), [("narrow.parquet", 0)], 50)
    with pytest.raises(StepError, match="missing feature column\\(s\\) \\['card_present'\\]"):
        next(scored)


def test_a_model_that_cannot_load_reaches_the_caller(tmp_path: Path) -> None:
    failed: Future[LoadedModel] = Future()
    failed.set_exception(StepError("registered model 'm' has no alias 'champion'"))
    units = _write_parts(tmp_path, parts=1, rows=200)
    with pytest.raises(StepError, match="no alias 'champion'"):
        list(score_units(Lake(str(tmp_path)), load_config(), failed, units, batch_rows=100))


def test_reader_errors_reach_the_caller_and_stop_the_reader(tmp_path: Path) -> None:
    config = load_config()
    units = [*_write_parts(tmp_path, parts=1, rows=400), ("missing.parquet", 0)]
    scored = score_units(Lake(str(tmp_path)), config, _model(_booster()), units, batch_rows=100)
    with pytest.raises(FileNotFoundError):
        list(scored)
    # A consumer that stops early does not leave the reader blocked on a full queue.
    early = score_units(Lake(str(tmp_path)), config, _model(_booster()), units[:2], batch_rows=10)
    next(early)
    early.close()


def _with_policy(policy: str) -> PipelineConfig:
    config = load_config()
    columns = dict(config.dataset.columns)
    columns["merchant_category"] = columns["merchant_category"].model_copy(update={"unseen": policy})
    return config.model_copy(update={"dataset": config.dataset.model_copy(update={"columns": columns})})


@pytest.mark.parametrize("policy", ["other", "fail"])
def test_arrow_and_pandas_encode_categories_alike_under_each_policy(policy: str) -> None:
    config = _with_policy(policy)
    batch = _batch(500, seed=3)

    arrow = encode_batch(batch, FEATURES, config)[:, 1]
    codes = model_input(batch.to_pandas(), FEATURES, config)["merchant_category"].cat.codes
    pandas = codes.to_numpy(dtype="float32")
    pandas[codes.to_numpy() == -1] = np.nan

    np.testing.assert_array_equal(arrow, pandas)


def test_under_fail_an_unseen_value_is_missing_to_the_model() -> None:
    batch = _batch(500, seed=3)
    unseen = [
        i for i, v in enumerate(batch.column("merchant_category").to_pylist()) if v == "unseen_category"
    ]

    assert np.isnan(encode_batch(batch, FEATURES, _with_policy("fail"))[unseen, 1]).all()


def test_a_rare_configured_value_keeps_its_own_code() -> None:
    config = load_config()
    categories = list(config.dataset.columns["merchant_category"].categories or ())
    frame = _batch(200, seed=4).to_pandas()
    frame["merchant_category"] = [categories[0]] * 199 + [categories[-1]]

    codes = model_input(frame, FEATURES, config)["merchant_category"].cat.codes

    assert codes.iloc[-1] == len(categories) - 1
