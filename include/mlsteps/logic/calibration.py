"""Post-hoc calibration of the booster's scores, and the scored day's flagged-share warnings.

A calibrator maps the booster's raw probability to a calibrated one. It is fitted with
scikit-learn on rows the booster never learnt from (the latest slice of the train split, see
:func:`mlsteps.logic.training.split_by_time`), kept as a small JSON-able document logged with the
model, and applied everywhere through :func:`calibrate`:

- ``isotonic``: ``IsotonicRegression(out_of_bounds="clip")`` on the raw score, kept as its
  thresholds and applied as its ``predict`` does (linear interpolation, clipped at both ends).
- ``platt``: ``LogisticRegression`` (scikit-learn's default mild L2, which keeps the fit finite when
  the slice separates perfectly) on the logit of the raw score, kept as slope and intercept and
  applied as its ``predict_proba`` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

#: The methods ``model.calibration`` may name besides ``none``.
METHODS = ("isotonic", "platt")
#: Raw scores are kept this far from 0 and 1 before the logit (a float32 score can be exactly 0 or 1).
LOGIT_EPSILON = 1e-7


@dataclass(frozen=True)
class Calibrator:
    """A fitted calibration map: isotonic thresholds, or Platt's slope and intercept on the logit."""

    method: str
    #: Isotonic only: raw-score thresholds (increasing) and the calibrated score at each.
    x: tuple[float, ...] = ()
    y: tuple[float, ...] = ()
    #: Platt only: calibrated = sigmoid(slope * logit(raw) + intercept).
    slope: float = 1.0
    intercept: float = 0.0
    #: Rows (and positives among them) it was fitted on.
    rows: int = 0
    positives: int = 0

    def document(self) -> dict[str, Any]:
        """The calibrator as plain JSON values (logged with the model)."""
        fitted: dict[str, Any] = (
            {"x": list(self.x), "y": list(self.y)}
            if self.method == "isotonic"
            else {"slope": self.slope, "intercept": self.intercept}
        )
        return {"method": self.method, **fitted, "rows": self.rows, "positives": self.positives}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> Calibrator:
        """The calibrator a :meth:`document` describes.

        Raises:
            ValueError: The document names no known method or lacks its fitted values.
        """
        method = document.get("method")
        if method not in METHODS:
            raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
        fitted: dict[str, Any]
        if method == "isotonic":
            fitted = {"x": tuple(map(float, document["x"])), "y": tuple(map(float, document["y"]))}
            if not fitted["x"] or len(fitted["x"]) != len(fitted["y"]):
                raise ValueError(
                    "an isotonic calibrator needs as many thresholds x as values y, at least one"
                )
        else:
            fitted = {"slope": float(document["slope"]), "intercept": float(document["intercept"])}
        rows, positives = int(document.get("rows", 0)), int(document.get("positives", 0))
        return cls(str(method), rows=rows, positives=positives, **fitted)


def fit_calibrator(method: str, y: np.ndarray, raw: np.ndarray) -> Calibrator:
    """Fit ``method`` on 0/1 labels ``y`` and the booster's raw scores ``raw`` of the same rows.

    Raises:
        ValueError: ``method`` is not one of :data:`METHODS`.
    """
    import numpy as np

    labels = np.asarray(y, dtype="float64")
    scores = np.asarray(raw, dtype="float64")
    fitted: dict[str, Any]
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        isotonic = IsotonicRegression(y_min=0.0, y_max=1.0, increasing=True, out_of_bounds="clip")
        isotonic.fit(scores, labels)
        fitted = {
            "x": tuple(float(v) for v in isotonic.X_thresholds_),
            "y": tuple(float(v) for v in isotonic.y_thresholds_),
        }
    elif method == "platt":
        from sklearn.linear_model import LogisticRegression

        platt = LogisticRegression().fit(logit(scores).reshape(-1, 1), labels.astype(int))
        fitted = {"slope": float(platt.coef_[0, 0]), "intercept": float(platt.intercept_[0])}
    else:
        raise ValueError(f"unknown calibration method {method!r}; expected one of {METHODS}")
    return Calibrator(method, rows=int(len(labels)), positives=int(labels.sum()), **fitted)


def calibrate(calibrator: Calibrator | None, raw: np.ndarray) -> np.ndarray:
    """The calibrated scores of raw booster scores, in their dtype; ``None`` leaves them as they are.

    The one function that turns a booster's output into the model's score: training's reference
    sample, evaluation, scoring and reproduction all call it.
    """
    import numpy as np
    from scipy.special import expit

    if calibrator is None:
        return raw
    scores = np.asarray(raw, dtype="float64")
    if calibrator.method == "isotonic":
        calibrated = np.interp(scores, calibrator.x, calibrator.y)  # constant beyond both ends: "clip"
    else:
        calibrated = expit(calibrator.slope * logit(scores) + calibrator.intercept)
    return calibrated.astype(np.asarray(raw).dtype, copy=False)


def logit(scores: np.ndarray) -> np.ndarray:
    """The log-odds of probabilities kept :data:`LOGIT_EPSILON` away from 0 and 1."""
    import numpy as np
    from scipy.special import logit as log_odds

    return np.asarray(log_odds(np.clip(scores, LOGIT_EPSILON, 1 - LOGIT_EPSILON)))


# --- the scored day's flagged share -----------------------------------------------------------


def flagged_rate_warnings(
    rows: int, flagged: int, threshold: float, base_rate: float | None, ratio: float | None
) -> list[str]:
    """Warnings about a scored day's flagged share; empty when it looks plausible.

    A day with rows but none flagged always warns. With the model's training ``base_rate`` known
    and a ``ratio`` set, a share outside ``[base_rate / ratio, base_rate * ratio]`` warns too:
    scores that are badly calibrated, or a decision threshold far from the scores' range, show
    first as a flagged share far from how often the positive class occurred in training.
    """
    if rows <= 0:
        return []
    rate = flagged / rows
    base = f"; the training base rate is {base_rate:.2%}" if base_rate is not None else ""
    advice = "check the model's calibration (model.calibration) and scoring.decision_threshold"
    if flagged == 0:
        return [f"no row of {rows} was flagged (0% at decision threshold {threshold:g}){base}: {advice}"]
    if base_rate is None or ratio is None or base_rate <= 0:
        return []
    low, high = base_rate / ratio, base_rate * ratio
    if low <= rate <= high:
        return []
    return [
        f"{rate:.2%} of {rows} rows were flagged at decision threshold {threshold:g}, outside "
        f"[{low:.2%}, {high:.2%}] (the training base rate {base_rate:.2%} divided and multiplied by "
        f"scoring.flagged_rate_warning_ratio {ratio:g}): {advice}"
    ]
