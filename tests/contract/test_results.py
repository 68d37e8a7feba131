"""Every step declares the result it writes, and every result has the UI's summary."""

from __future__ import annotations

from mlsteps.cli import STEPS
from mlsteps.contract.results import RESULTS, result_keys


def test_every_step_declares_a_result() -> None:
    assert set(RESULTS) == set(STEPS)


def test_every_result_has_a_summary() -> None:
    for step in RESULTS:
        assert "summary" in result_keys(step), step


def test_keys_only_some_paths_write_are_still_keys_of_the_result() -> None:
    assert {"ds", "uri", "positive_rate", "files"} <= result_keys("score")
    assert {"run_id", "conf"} <= result_keys("decide-retrain")
