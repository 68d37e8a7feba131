"""Calibration on small in-memory scores: scikit-learn fits, one apply function, the flagged-share rule."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import logit
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from mlsteps.logic.calibration import Calibrator, calibrate, fit_calibrator, flagged_rate_warnings
from mlsteps.logic.metrics import expected_calibration_error


def overconfident(rows: int = 4_000, seed: int = 3) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn at a true probability, and raw scores that push it towards 0 and 1 (float32)."""
    rng = np.random.default_rng(seed)
    truth = rng.uniform(0.02, 0.6, rows)
    y = (rng.random(rows) < truth).astype(int)
    raw = 1 / (1 + np.exp(-3 * logit(truth)))
    return y, raw.astype("float32")


def test_isotonic_applies_as_scikit_learn_predicts() -> None:
    y, raw = overconfident()
    fitted = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(raw.astype("float64"), y)
    probes = np.array([0.0, 1e-4, 0.05, 0.3, 0.5, 0.77, 0.999, 1.0])

    ours = calibrate(fit_calibrator("isotonic", y, raw), probes)

    np.testing.assert_allclose(ours, fitted.predict(probes), rtol=0, atol=1e-12)


def test_platt_applies_as_scikit_learn_predicts_on_the_logit() -> None:
    y, raw = overconfident()
    fitted = LogisticRegression().fit(logit(raw.astype("float64")).reshape(-1, 1), y)
    probes = np.array([0.01, 0.2, 0.5, 0.9])

    ours = calibrate(fit_calibrator("platt", y, raw), probes)

    np.testing.assert_allclose(ours, fitted.predict_proba(logit(probes).reshape(-1, 1))[:, 1], atol=1e-12)


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_calibration_lowers_the_calibration_error_of_overconfident_scores(method: str) -> None:
    y, raw = overconfident(seed=3)
    unseen_y, unseen_raw = overconfident(seed=4)

    calibrated = calibrate(fit_calibrator(method, y, raw), unseen_raw)

    before = expected_calibration_error(unseen_y, unseen_raw.astype("float64"))
    assert expected_calibration_error(unseen_y, calibrated.astype("float64")) < before / 2


@pytest.mark.parametrize("method", ["isotonic", "platt"])
def test_a_calibrator_survives_its_json_document(method: str) -> None:
    y, raw = overconfident()
    calibrator = fit_calibrator(method, y, raw)

    again = Calibrator.from_document(json.loads(json.dumps(calibrator.document())))

    np.testing.assert_array_equal(calibrate(again, raw), calibrate(calibrator, raw))


def test_calibrated_scores_keep_the_raw_dtype() -> None:
    y, raw = overconfident()

    assert calibrate(fit_calibrator("isotonic", y, raw), raw).dtype == np.float32


def test_no_calibrator_leaves_the_scores_as_they_are() -> None:
    raw = np.array([0.1, 0.7], dtype="float32")

    assert calibrate(None, raw) is raw


def test_a_document_with_an_unknown_method_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown calibration method 'beta'"):
        Calibrator.from_document({"method": "beta"})


# --- the flagged share of a scored day -----------------------------------------------------------


def test_a_day_with_nothing_flagged_warns() -> None:
    warnings = flagged_rate_warnings(1_000, 0, 0.4, 0.05, 3.0)

    assert len(warnings) == 1
    assert warnings[0].startswith("no row of 1000 was flagged (0% at decision threshold 0.4)")


def test_a_day_with_nothing_flagged_warns_even_without_a_base_rate() -> None:
    assert len(flagged_rate_warnings(1_000, 0, 0.5, None, 3.0)) == 1


@pytest.mark.parametrize("flagged", [17, 50, 150])
def test_a_share_within_the_ratio_of_the_base_rate_does_not_warn(flagged: int) -> None:
    assert flagged_rate_warnings(1_000, flagged, 0.5, 0.05, 3.0) == []


@pytest.mark.parametrize("flagged", [16, 151])
def test_a_share_beyond_the_ratio_of_the_base_rate_warns(flagged: int) -> None:
    (warning,) = flagged_rate_warnings(1_000, flagged, 0.5, 0.05, 3.0)

    assert "outside [1.67%, 15.00%]" in warning


def test_without_a_ratio_only_a_zero_share_warns() -> None:
    assert flagged_rate_warnings(1_000, 900, 0.5, 0.05, None) == []
