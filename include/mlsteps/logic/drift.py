"""Per-column drift between two samples, the day's verdict, and the figures logged for it.

Each column gets two of Evidently's stat tests, chosen by the column's kind, and drifts only when
both agree: a p-value test (is the difference real?) and a distance with a threshold (is it big
enough to matter?). A p-value test alone flags about ``column_p_value`` of unchanged columns by
chance and flags negligible differences once samples are large; a distance alone is noisy on
small samples. Univariate tests need no row alignment, so features and scores are sampled apart.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import datetime as dt

    import numpy as np
    import pandas as pd


@dataclass(frozen=True)
class ColumnMethod:
    """The two Evidently stat tests a column kind gets: a p-value test and a thresholded distance."""

    test: str
    distance: str
    distance_threshold: float


#: Wasserstein distance is normed by the reference's standard deviation, so 0.1 means a shift of about
#: a tenth of a standard deviation (Evidently's default). Jensen-Shannon distance is about 0.35 times a
#: standardized effect for small changes, so 0.05 is about as sensitive; Evidently's default of 0.1
#: would let a boolean's rate double from 5% to 10% unflagged. Under no drift both stay below 0.02
#: at 50k rows, so unchanged columns never reach them.
METHODS: dict[str, ColumnMethod] = {
    "numeric": ColumnMethod(test="ks", distance="wasserstein", distance_threshold=0.1),
    "categorical": ColumnMethod(test="chisquare", distance="jensenshannon", distance_threshold=0.05),
}


@dataclass(frozen=True)
class ColumnDrift:
    """The verdict on one column."""

    column: str
    kind: str
    test: str
    p_value: float | None
    method: str
    score: float | None
    threshold: float
    drifted: bool
    reference_rows: int
    current_rows: int
    reference_missing: float
    current_missing: float
    note: str = ""

    def as_dict(self) -> dict[str, Any]:
        """The JSON form; ``column`` is the key it is stored under."""
        document = asdict(self)
        del document["column"]
        return document

    @property
    def relative_score(self) -> float:
        """The distance as a multiple of its threshold (1.0 is the line), comparable across kinds."""
        if self.score is None:
            return 1.0 if self.drifted else 0.0
        return self.score / self.threshold


@dataclass(frozen=True)
class Samples:
    """The seeded samples compared: reference and current features, and both sides' scores."""

    reference: pd.DataFrame
    current: pd.DataFrame
    current_scores: pd.DataFrame
    seed: list[int]


def sample_seed(model_seed: int, day: dt.date) -> list[int]:
    """The entropy of a day's samples: the same for reruns of that day, different across days."""
    return [model_seed, day.toordinal()]


def sample_positions(total_rows: int, limit: int, rng: np.random.Generator) -> np.ndarray:
    """Sorted row positions of a uniform sample without replacement of ``min(total_rows, limit)`` rows."""
    import numpy as np

    if total_rows <= limit:
        return np.arange(total_rows, dtype=np.int64)
    return np.sort(rng.choice(total_rows, size=limit, replace=False)).astype(np.int64)


def column_kind(series: pd.Series, categorical: bool) -> str:
    """``categorical`` for declared categories, booleans and text; ``numeric`` otherwise."""
    import pandas as pd

    if categorical or pd.api.types.is_bool_dtype(series) or not pd.api.types.is_numeric_dtype(series):
        return "categorical"
    return "numeric"


def present_values(series: pd.Series, kind: str) -> pd.Series:
    """Values a stat test can take: no missing values, and no infinities in numeric columns."""
    import numpy as np

    if kind == "numeric":
        series = series.astype("float64").replace([np.inf, -np.inf], np.nan)
    return series.dropna()


def _missing_share(series: pd.Series) -> float:
    return round(float(series.isna().mean()), 6) if len(series) else 0.0


def _finite(value: Any) -> float | None:
    number = float(value)
    return number if math.isfinite(number) else None


def column_drift(
    column: str, reference: pd.Series, current: pd.Series, kind: str, p_value_threshold: float
) -> ColumnDrift:
    """Run the kind's p-value test and distance on one column; it drifts when both say so.

    A column with no values on one side only drifts (a feature appeared or vanished); with no
    values on either side it does not.
    """
    method = METHODS[kind]
    reference_values, current_values = present_values(reference, kind), present_values(current, kind)
    base = ColumnDrift(
        column=column,
        kind=kind,
        test=method.test,
        p_value=None,
        method=method.distance,
        score=None,
        threshold=method.distance_threshold,
        drifted=False,
        reference_rows=len(reference_values),
        current_rows=len(current_values),
        reference_missing=_missing_share(reference),
        current_missing=_missing_share(current),
    )
    if reference_values.empty or current_values.empty:
        empty = [
            side for side, v in (("reference", reference_values), ("current", current_values)) if v.empty
        ]
        return replace(base, drifted=len(empty) == 1, note=f"no values in {' and '.join(empty)}")
    p_value, significant = evidently_test(
        reference_values, current_values, kind, method.test, p_value_threshold
    )
    score, large = evidently_test(
        reference_values, current_values, kind, method.distance, method.distance_threshold
    )
    return replace(base, p_value=_finite(p_value), score=_finite(score), drifted=significant and large)


def evidently_test(
    reference: pd.Series, current: pd.Series, kind: str, name: str, threshold: float
) -> tuple[float, bool]:
    """One of Evidently's registered stat tests; returns its score and its own drift decision.

    These are the tests Evidently's ``ValueDrift`` metric runs; calling them directly skips the
    Plotly widgets that metric renders for every column, which cost more than the tests.
    """
    import warnings

    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    column_type = ColumnType.Numerical if kind == "numeric" else ColumnType.Categorical
    stat_test = get_stattest(reference, current, column_type, name)
    with warnings.catch_warnings():  # a category absent from the reference is drift, not a warning
        warnings.simplefilter("ignore", RuntimeWarning)
        result = stat_test(reference, current, column_type, threshold)
    return float(result.drift_score), bool(result.drifted)


def compare_columns(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: list[str],
    categorical: list[str],
    p_value_threshold: float,
) -> list[ColumnDrift]:
    """Per-column drift of ``columns`` between two samples, each tested by its kind."""
    results = []
    for column in columns:
        kind = column_kind(reference[column], column in categorical)
        results.append(column_drift(column, reference[column], current[column], kind, p_value_threshold))
    return results


def drift_verdict(features: list[ColumnDrift], drift_share: float) -> tuple[list[str], float, bool]:
    """The drifted feature columns, their share, and whether the share reaches ``drift_share``."""
    drifted = [c.column for c in features if c.drifted]
    share = len(drifted) / len(features) if features else 0.0
    return drifted, share, bool(features) and share >= drift_share


def summary_line(document: dict[str, Any]) -> str:
    """One line for people: how many columns drifted, which, and what it means."""
    drifted, checked = document["drifted_columns"], document["columns_checked"]
    if drifted:
        names = ", ".join(drifted[:6]) + (", ..." if len(drifted) > 6 else "")
        line = f"drift in {len(drifted)} of {checked} columns ({names})"
    else:
        line = f"no drift in {checked} columns"
    if document["drift"]:
        line += ": retrain suggested"
    elif drifted:
        line += f": below the {document['thresholds']['drift_share']:.0%} share that suggests retraining"
    if document["prediction_drift"]:
        line += "; the model's scores drifted too" if drifted else "; the model's scores drifted all the same"
    return f"{line} (ds={document['ds']}, model v{document['model_version']})"


def mlflow_metrics(document: dict[str, Any]) -> dict[str, float]:
    """The figures logged per run: verdict, share, counts and every column's scores."""
    values: dict[str, float] = {
        "drift": float(document["drift"]),
        "drift_share": float(document["drift_share"]),
        "drifted_columns": float(len(document["drifted_columns"])),
        "columns_checked": float(document["columns_checked"]),
        "prediction_drift": float(document["prediction_drift"]),
    }
    prediction = document["prediction"]
    columns = {**document["columns"], f"prediction.{prediction['column']}": prediction}
    for name, result in columns.items():
        if result["score"] is not None:
            values[f"distance.{name}"] = float(result["score"])
        if result["p_value"] is not None:
            values[f"p_value.{name}"] = float(result["p_value"])
    return values
