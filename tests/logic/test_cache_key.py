"""The cache key: every input that decides a step's outputs changes it; the run's identity does not."""

from __future__ import annotations

from typing import Any

import pytest

from mlsteps.logic.cache_key import cache_key, keyed_options

BASE: dict[str, Any] = {
    "step": "train",
    "inputs": {"snapshot_fingerprint": "f1"},
    "code": {"git_sha": "abc", "image": "mlsteps:1", "versions": {"xgboost": "3.0.0"}},
    "config_hash": "c1",
    "options": {"training_run": "r1", "device": "cpu", "n_trials": 0},
}


def key(**changes: Any) -> str:
    parts = {**BASE, **changes}
    return cache_key(parts["step"], parts["inputs"], parts["code"], parts["config_hash"], parts["options"])


@pytest.mark.parametrize(
    "change",
    [
        {"step": "evaluate"},
        {"inputs": {"snapshot_fingerprint": "f2"}},
        {"code": {**BASE["code"], "git_sha": "def"}},
        {"code": {**BASE["code"], "image": "mlsteps:2"}},
        {"code": {**BASE["code"], "versions": {"xgboost": "3.0.1"}}},
        {"config_hash": "c2"},
        {"options": {**BASE["options"], "n_trials": 5}},
    ],
    ids=["step", "input data", "git sha", "image", "package version", "config hash", "option"],
)
def test_changing_any_input_changes_the_key(change: dict[str, Any]) -> None:
    assert key(**change) != key()


def test_the_key_is_canonical_whatever_the_order_of_inputs() -> None:
    reordered = dict(reversed(list(BASE["options"].items())))
    assert key(options=reordered) == key()
    assert len(key()) == 64


def test_run_identity_force_and_locations_never_enter_the_key() -> None:
    options = {"training_run": "r1", "run_id": "scheduled__1", "dag_id": "ml_training", "force": True,
               "config": "/a.yaml", "lake": "/lake", "step": "train"}  # fmt: skip
    other_run = {**options, "run_id": "manual__2", "dag_id": "other", "force": False, "config": "/b.yaml"}
    assert keyed_options(options) == keyed_options(other_run) == {"training_run": "r1"}


def test_an_option_that_only_names_an_output_can_be_left_out() -> None:
    assert keyed_options({"training_run": "r1", "end": "2026-10-11"}, excluded=("training_run",)) == {
        "end": "2026-10-11"
    }
