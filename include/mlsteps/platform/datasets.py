"""Training-set snapshots in the lake and the one way feature rows become model input.

A snapshot lives at ``training/<training_run>/`` as a committed partition with two files,
``train`` and ``holdout``, and a manifest holding the column roles and a data fingerprint.
Training, evaluation, scoring and reproduction all read features through :func:`model_input`,
so a feature is encoded the same way everywhere.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import OTHER_CATEGORY
from mlsteps.contract.layout import snapshot_prefix, training_run_name
from mlsteps.errors import StepError

if TYPE_CHECKING:
    import pandas as pd

    from mlsteps.contract.config import ColumnSpec, PipelineConfig
    from mlsteps.platform.lake import Lake

SPLITS = ("train", "holdout")


@dataclass(frozen=True)
class TrainingSet:
    """A committed snapshot: the two splits plus the manifest that describes them."""

    train: pd.DataFrame
    holdout: pd.DataFrame
    manifest: dict[str, Any]

    @property
    def feature_columns(self) -> list[str]:
        return list(self.manifest["feature_columns"])

    @property
    def categorical_columns(self) -> list[str]:
        return list(self.manifest["categorical_columns"])

    @property
    def label(self) -> str:
        return str(self.manifest["label"])


def fingerprint(frame: pd.DataFrame) -> str:
    """A content hash of a frame: same rows, columns and values give the same hash."""
    import pandas as pd

    hashed = pd.util.hash_pandas_object(frame.reset_index(drop=True), index=False).to_numpy()
    digest = hashlib.sha256(hashed.tobytes())
    digest.update(",".join(f"{c}:{t}" for c, t in frame.dtypes.astype(str).items()).encode())
    return digest.hexdigest()


def save_training_set(
    lake: Lake, training_run: str, train: pd.DataFrame, holdout: pd.DataFrame, metadata: dict[str, Any]
) -> dict[str, Any]:
    """Commit both splits and the manifest; rerunning replaces the snapshot atomically.

    ``metadata`` must carry the column roles: ``feature_columns``, ``categorical_columns``,
    ``label``, ``row_id``, ``entity_keys`` and ``event_time``. The fingerprint covers both splits.
    """
    import pyarrow as pa

    required = ("feature_columns", "categorical_columns", "label", "row_id", "entity_keys", "event_time")
    missing = [key for key in required if key not in metadata]
    if missing:
        raise ValueError(f"training-set metadata lacks {missing}")
    staging = lake.stage(snapshot_prefix(training_run))
    for split, frame in zip(SPLITS, (train, holdout), strict=True):
        staging.write_parquet(f"{split}.parquet", pa.Table.from_pandas(frame, preserve_index=False))
    return lake.commit(
        staging,
        {
            **metadata,
            "training_run": training_run_name(training_run),
            "fingerprint": fingerprint(pd_concat_splits(train, holdout)),
            "split_rows": {"train": len(train), "holdout": len(holdout)},
        },
    )


def pd_concat_splits(train: pd.DataFrame, holdout: pd.DataFrame) -> pd.DataFrame:
    import pandas as pd

    return pd.concat([train.assign(_split="train"), holdout.assign(_split="holdout")], ignore_index=True)


def load_training_set(lake: Lake, training_run: str) -> TrainingSet:
    """Read a committed snapshot.

    Raises:
        StepError: The snapshot was never committed (build-training-set did not finish).
    """
    prefix = snapshot_prefix(training_run)
    manifest = lake.manifest(prefix)
    if manifest is None:
        raise StepError(
            f"training set {lake.url(prefix)} does not exist or was never committed; "
            "run build-training-set for this training run first"
        )
    frames = {}
    for entry in manifest["files"]:
        split = next(s for s in SPLITS if entry["path"].endswith(f"-{s}.parquet"))
        frames[split] = lake.read_table([f"{prefix}/{entry['path']}"]).to_pandas()
    return TrainingSet(frames["train"], frames["holdout"], manifest)


def model_input(frame: pd.DataFrame, feature_columns: list[str], config: PipelineConfig) -> pd.DataFrame:
    """Select and encode feature columns for XGBoost: categories fixed by the config, bools as 0/1.

    A categorical value outside the configured categories becomes ``OTHER_CATEGORY`` (policy
    ``unseen: other``) or missing (``unseen: fail``, whose validation refuses such a day anyway).

    Raises:
        StepError: A feature column is missing from ``frame``.
    """
    import pandas as pd

    missing = [c for c in feature_columns if c not in frame.columns]
    if missing:
        raise StepError(f"input lacks feature column(s) {missing}; it does not match the model's signature")
    encoded = {}
    for column in feature_columns:
        series = frame[column]
        spec = config.dataset.columns.get(column)
        if spec is not None and spec.type == "categorical":
            encoded[column] = pd.Categorical(
                categorical_values(series, spec), categories=spec.encoded_categories
            )
        elif pd.api.types.is_bool_dtype(series):
            encoded[column] = series.astype("float32")
        else:
            encoded[column] = pd.to_numeric(series, errors="raise").astype("float32")
    return pd.DataFrame(encoded, index=frame.index)


def categorical_values(series: pd.Series, spec: ColumnSpec) -> pd.Series:
    """The column's values with every non-null value outside ``spec.categories`` replaced by "other"."""
    if spec.unseen == "fail":
        return series
    known = series.isna() | series.isin(list(spec.categories or ()))
    return series.astype(object).where(known, OTHER_CATEGORY)
