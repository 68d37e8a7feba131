"""The pipeline config: the bundled file loads, its hash is stable, and bad files give one clear line."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from mlsteps.contract.config import (
    DEFAULT_CONFIG_PATH,
    OTHER_CATEGORY,
    PipelineConfig,
    config_path,
    load_config,
    memory_bytes,
)
from mlsteps.contract.settings import CONFIG_ENV_VAR
from mlsteps.errors import StepError

Mutation = Callable[[dict[str, Any]], None]


def bundled() -> dict[str, Any]:
    return yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())


def write_config(directory: Path, document: dict[str, Any] | str, name: str = "pipeline.yaml") -> Path:
    path = directory / name
    path.write_text(document if isinstance(document, str) else yaml.safe_dump(document, sort_keys=False))
    return path


def mutated(mutation: Mutation) -> dict[str, Any]:
    document = copy.deepcopy(bundled())
    mutation(document)
    return document


def test_bundled_config_loads() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)

    assert isinstance(config, PipelineConfig)
    assert config.name == "card_fraud"
    dataset = config.dataset
    assert dataset.source == "raw/transactions"
    assert dataset.label == "is_fraud"
    assert dataset.key_columns == ["transaction_id", "customer_id"]
    assert dataset.columns["merchant_category"].type == "categorical"
    assert "online_retail" in (dataset.columns["merchant_category"].categories or ())
    assert dataset.columns["distance_from_home_km"].max_null_ratio == pytest.approx(0.05)
    assert dataset.min_rows_per_day == 500
    assert config.model.holdout_days < config.model.training_window_days
    assert config.scoring.schedule == "0 2 * * *"
    assert config.dataset.label not in config.features.passthrough


@pytest.mark.parametrize(
    ("label_names", "expected"),
    [(None, ("is_fraud=0", "is_fraud=1")), (["on time", "delayed"], ("on time", "delayed"))],
    ids=["default-from-the-label-column", "configured"],
)
def test_class_names_come_from_the_config(
    tmp_path: Path, label_names: list[str] | None, expected: tuple[str, str]
) -> None:
    config = load_config(write_config(tmp_path, mutated(_set("dataset", "label_names", label_names))))

    assert config.dataset.class_names == expected


def test_an_unseen_category_is_other_by_default() -> None:
    spec = load_config(DEFAULT_CONFIG_PATH).dataset.columns["merchant_category"]

    assert (spec.unseen, spec.encoded_categories[-1]) == ("other", OTHER_CATEGORY)


def test_a_column_whose_unseen_values_fail_has_only_its_categories() -> None:
    spec = load_config(DEFAULT_CONFIG_PATH).dataset.columns["merchant_category"]

    assert spec.model_copy(update={"unseen": "fail"}).encoded_categories == list(spec.categories or ())


def test_label_history_is_off_by_default() -> None:
    assert load_config(DEFAULT_CONFIG_PATH).features.label_history is None


def test_label_history_longer_than_the_label_delay_loads(tmp_path: Path) -> None:
    history = {"functions": ["count", "days_since_last_positive"], "windows": ["8d", "30d"]}
    config = load_config(write_config(tmp_path, mutated(_set("features", "label_history", history))))
    assert config.features.label_history is not None
    assert config.features.label_history.windows == ("8d", "30d")


def test_the_engine_is_single_by_default_and_dask_sizes_parse(tmp_path: Path) -> None:
    assert load_config(write_config(tmp_path, bundled())).model.engine == "single"
    document = mutated(lambda c: c["model"].update(engine="dask", dask={"memory_limit": "1.5GB"}))
    model = load_config(write_config(tmp_path, document, "dask.yaml")).model
    assert (model.engine, model.dask.workers, model.dask.threads_per_worker) == ("dask", 2, 1)
    assert memory_bytes(model.dask.memory_limit) == 1_500_000_000


def test_config_is_immutable() -> None:
    config = load_config(DEFAULT_CONFIG_PATH)
    with pytest.raises(ValueError, match="frozen"):
        config.name = "other"  # type: ignore[misc]


def test_config_hash_is_stable_and_follows_content(tmp_path: Path) -> None:
    first = load_config(DEFAULT_CONFIG_PATH).config_hash
    assert first == load_config(DEFAULT_CONFIG_PATH).config_hash
    assert len(first) == 16
    int(first, 16)  # hexadecimal

    # The same content with a different layout and key order hashes the same.
    reordered = dict(reversed(list(bundled().items())))
    assert load_config(write_config(tmp_path, reordered, "reordered.yaml")).config_hash == first

    changed = mutated(lambda c: c["gates"].__setitem__("min_roc_auc", 0.81))
    assert load_config(write_config(tmp_path, changed, "changed.yaml")).config_hash != first


def _set(section: str, key: str, value: Any) -> Mutation:
    return lambda c: c[section].__setitem__(key, value)


BAD_CONFIGS: list[tuple[str, Mutation | str, list[str]]] = [
    # (case, mutation of the bundled config or the raw file text, words the message must contain)
    ("missing field", lambda c: c["dataset"].pop("event_time"), ["dataset.event_time", "required"]),
    ("unknown field (typo)", _set("model", "num_boost_rounds", 5), ["model.num_boost_rounds", "spelling"]),
    ("wrong type", _set("model", "num_boost_round", "many"), ["model.num_boost_round", "integer", "many"]),
    ("out of range", _set("gates", "min_roc_auc", 1.5), ["gates.min_roc_auc", "1.5"]),
    (
        "min greater than max",
        lambda c: c["dataset"]["columns"]["amount"].update(min=10, max=1),
        ["dataset.columns.amount", "greater than max"],
    ),
    (
        "the reserved other category configured",
        lambda c: c["dataset"]["columns"]["merchant_category"].update(categories=["grocery", "__other__"]),
        ["dataset.columns.merchant_category", "reserved"],
    ),
    (
        "an unknown unseen policy",
        lambda c: c["dataset"]["columns"]["merchant_category"].update(unseen="drop"),
        ["dataset.columns.merchant_category.unseen", "drop"],
    ),
    (
        "categorical without categories",
        lambda c: c["dataset"]["columns"]["merchant_category"].pop("categories"),
        ["dataset.columns.merchant_category", "categories"],
    ),
    (
        "label used as a feature",
        lambda c: c["features"]["passthrough"].append("is_fraud"),
        ["features.passthrough", "is_fraud", "label"],
    ),
    ("role column not in columns", _set("dataset", "row_id", "txn_id"), ["dataset", "row_id", "txn_id"]),
    ("bad cron", _set("scoring", "schedule", "every night"), ["scoring", "every night", "cron"]),
    ("cron with four fields", _set("training", "schedule", "0 3 * *"), ["training", "0 3 * *", "cron"]),
    (
        "holdout longer than training window",
        _set("model", "holdout_days", 40),
        ["model", "holdout_days", "training_window_days"],
    ),
    (
        "aggregate of a non-numeric column",
        lambda c: c["features"]["aggregates"].append(
            {"column": "merchant_category", "functions": ["mean"], "windows": ["7d"]}
        ),
        ["features.aggregates", "merchant_category", "not numeric"],
    ),
    (
        "an aggregate of the label",
        lambda c: c["features"]["aggregates"].append(
            {"column": "is_fraud", "functions": ["mean"], "windows": ["30d"]}
        ),
        ["features.aggregates", "is_fraud", "leak"],
    ),
    (
        "a label-history window no longer than the label delay",
        _set("features", "label_history", {"functions": ["count"], "windows": ["7d", "30d"]}),
        ["features.label_history.windows", "'7d'", "performance.label_delay_days = 7"],
    ),
    (
        "label history with labels known at once",
        lambda c: c.update(
            features={**c["features"], "label_history": {"functions": ["mean"], "windows": ["30d"]}},
            performance={"label_delay_days": 0},
        ),
        ["features.label_history", "performance.label_delay_days", "at least 1"],
    ),
    (
        "label history with labels landing elsewhere",
        lambda c: c.update(
            features={**c["features"], "label_history": {"functions": ["mean"], "windows": ["30d"]}},
            performance={"label_source": "labels/chargebacks"},
        ),
        ["features.label_history", "performance.label_source", "labels/chargebacks"],
    ),
    (
        "an unknown label-history function",
        _set("features", "label_history", {"functions": ["sum"], "windows": ["30d"]}),
        ["features.label_history.functions", "sum"],
    ),
    (
        "a label-history window listed twice",
        _set("features", "label_history", {"functions": ["count"], "windows": ["30d", "30d"]}),
        ["features.label_history", "twice"],
    ),
    (
        "a segment column not in columns",
        _set("evaluation", "segments", [{"column": "region"}]),
        ["evaluation.segments[0]", "region", "not in dataset.columns"],
    ),
    (
        "segment bins on a categorical column",
        _set("evaluation", "segments", [{"column": "merchant_category", "bins": [1, 2]}]),
        ["evaluation.segments[0]", "bins", "categorical"],
    ),
    (
        "segment bins not strictly increasing",
        _set("evaluation", "segments", [{"column": "amount", "bins": [0, 500, 50]}]),
        ["evaluation.segments.0.bins", "strictly increasing"],
    ),
    (
        "a numeric segment column without bins",
        _set("evaluation", "segments", [{"column": "amount"}]),
        ["evaluation.segments[0]", "amount", "needs 'bins'"],
    ),
    (
        "the label as a segment",
        _set("evaluation", "segments", [{"column": "is_fraud"}]),
        ["evaluation.segments[0]", "is_fraud", "not the label"],
    ),
    (
        "segment regression without segments",
        lambda c: c.update(gates={**c["gates"], "segment_regression": True}, evaluation={"segments": []}),
        ["gates.segment_regression", "evaluation.segments"],
    ),
    ("unknown calibration method", _set("model", "calibration", "beta"), ["model.calibration", "isotonic"]),
    (
        "calibration error gate of 0",
        _set("gates", "max_calibration_error", 0),
        ["gates.max_calibration_error"],
    ),
    (
        "flagged-rate warning ratio of 1",
        _set("scoring", "flagged_rate_warning_ratio", 1),
        ["scoring.flagged_rate_warning_ratio", "greater than 1"],
    ),
    ("an unknown engine", _set("model", "engine", "ray"), ["model.engine", "single", "dask"]),
    (
        "no Dask workers",
        _set("model", "dask", {"workers": 0}),
        ["model.dask.workers", "greater than or equal to 1"],
    ),
    (
        "a Dask memory limit without a unit",
        _set("model", "dask", {"memory_limit": "2048"}),
        ["model.dask.memory_limit", "2GiB"],
    ),
    (
        "a Dask memory limit too small for a worker",
        _set("model", "dask", {"memory_limit": "64MiB"}),
        ["model.dask.memory_limit", "256MiB"],
    ),
    (
        "an Optuna search on the dask engine",
        lambda c: c["model"].update(engine="dask", n_trials=5),
        ["model", "engine dask", "n_trials"],
    ),
    ("invalid YAML", "name: [unclosed\ndataset: {\n", ["not valid YAML", "line"]),
    ("top level is a list", "- name\n- dataset\n", ["YAML mapping", "top level"]),
    ("empty file", "", ["YAML mapping", "top level"]),
]


@pytest.mark.parametrize(("case", "bad", "words"), BAD_CONFIGS, ids=[case for case, _, _ in BAD_CONFIGS])
def test_bad_config_names_file_and_field(
    tmp_path: Path, case: str, bad: Mutation | str, words: list[str]
) -> None:
    path = write_config(tmp_path, bad if isinstance(bad, str) else mutated(bad))

    with pytest.raises(StepError) as caught:
        load_config(path)

    message = str(caught.value)
    assert "\n" not in message, f"{case}: the message must be one line"
    assert str(path) in message, f"{case}: the message must name the file"
    for word in words:
        assert word in message, f"{case}: {word!r} missing from {message!r}"
    assert "got {" not in message, "a whole section must not be dumped into the message"


def test_several_bad_fields_are_all_named(tmp_path: Path) -> None:
    def two_mistakes(c: dict[str, Any]) -> None:
        c["gates"]["min_roc_auc"] = 7
        c["drift"]["cooldown_hour"] = 1

    with pytest.raises(StepError) as caught:
        load_config(write_config(tmp_path, mutated(two_mistakes)))
    assert "gates.min_roc_auc" in str(caught.value)
    assert "drift.cooldown_hour" in str(caught.value)


def test_missing_file_names_file_and_env_var(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(StepError, match="does not exist") as caught:
        load_config(missing)
    assert str(missing) in str(caught.value)
    assert CONFIG_ENV_VAR in str(caught.value)


def test_unreadable_path_is_a_step_error(tmp_path: Path) -> None:
    with pytest.raises(StepError, match="cannot be read") as caught:
        load_config(tmp_path)  # a directory, not a file
    assert str(tmp_path) in str(caught.value)


def test_env_var_overrides_the_bundled_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    other = mutated(lambda c: c.__setitem__("name", "other_use_case"))
    path = write_config(tmp_path, other)
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))

    assert config_path() == path
    assert load_config().name == "other_use_case"
    assert load_config(DEFAULT_CONFIG_PATH).name == "card_fraud"  # an explicit path still wins

    monkeypatch.delenv(CONFIG_ENV_VAR)
    assert config_path() == DEFAULT_CONFIG_PATH
    assert load_config().name == "card_fraud"


def test_env_var_pointing_at_a_bad_file_fails_with_its_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(tmp_path, mutated(_set("scoring", "decision_threshold", 2.0)))
    monkeypatch.setenv(CONFIG_ENV_VAR, str(path))
    with pytest.raises(StepError, match=r"scoring\.decision_threshold") as caught:
        load_config()
    assert str(path) in str(caught.value)
