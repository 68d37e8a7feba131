"""The MLflow model registry as the steps use it: the client, aliases, lineage tags, versions, UI links.

The alias ``champion`` is the source of truth for what serves; :mod:`mlsteps.platform.champion`
moves it. Nothing heavy is imported at module level: the Airflow plugins import the link helpers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlsteps.errors import StepError
from mlsteps.logic.calibration import Calibrator

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.platform.context import StepContext

CHAMPION = "champion"
CHALLENGER = "challenger"
PREVIOUS_CHAMPION = "previous-champion"
#: The version tag that marks a model version as produced by this pipeline (value: config name).
PIPELINE_TAG = "mlsteps.pipeline"
#: Set by `evaluate` on the version: "true" or "false".
APPROVED_TAG = "mlsteps.evaluation.approved"
#: Set by `evaluate` on the version: the champion version it compared against, or "none".
EVALUATED_AGAINST_TAG = "mlsteps.evaluation.champion_version"
#: Set by `evaluate` on the version: the gate thresholds it applied (compact JSON).
THRESHOLDS_TAG = "mlsteps.evaluation.thresholds"
#: Set by `train` on the run and version of a drift retrain: the day whose drift triggered it.
RETRAIN_DS_TAG = "mlsteps.retrain.ds"
#: Set by `train` on the run and version of a drift retrain: the drifted columns, comma-separated.
RETRAIN_COLUMNS_TAG = "mlsteps.retrain.drifted_columns"
#: Set by `train` on the run and version: the calibration method (``model.calibration``).
CALIBRATION_TAG = "mlsteps.calibration"
#: The key of the logged model's MLmodel ``metadata`` that holds the calibrator's document.
CALIBRATION_METADATA_KEY = "mlsteps_calibration"


# --- lineage ------------------------------------------------------------------------------


def lineage_tags(context: StepContext, manifest: dict[str, Any]) -> dict[str, str]:
    """Tags tying a run or model version to its DAG run, code, config and training data.

    Args:
        context: The step context (DAG ids, config hash, git SHA, image).
        manifest: The training snapshot's manifest (training run, fingerprint, data interval).

    Returns:
        String tags, including :data:`PIPELINE_TAG` naming this pipeline.
    """
    return {
        PIPELINE_TAG: context.config.name,
        **context.lineage(),
        "training_run": str(manifest.get("training_run", "")),
        "data_fingerprint": str(manifest.get("fingerprint", "")),
        "data_interval": describe_interval(manifest.get("interval")),
    }


def describe_interval(interval: Any) -> str:
    """A data interval from a manifest (a mapping with start/end, a pair, or text) as ``[start, end)``."""
    if isinstance(interval, dict) and "start" in interval and "end" in interval:
        return f"[{interval['start']}, {interval['end']})"
    if isinstance(interval, list | tuple) and len(interval) == 2:
        return f"[{interval[0]}, {interval[1]})"
    return "" if interval is None else str(interval)


# --- versions and aliases -----------------------------------------------------------------


def mlflow_client() -> MlflowClient:
    """An MLflow client for ``$MLFLOW_TRACKING_URI``."""
    from mlflow import MlflowClient

    skip_feast_header_provider()
    return MlflowClient()


#: MLflow plugin group whose Feast entry imports all of Feast on a process's first REST call.
_HEADER_PROVIDERS = "mlflow.request_header_provider"


def skip_feast_header_provider() -> None:
    """Keep Feast's MLflow request-header plugin from loading in this process.

    Feast registers a provider that adds a token to MLflow calls made *from Feast data sources*;
    loading it imports the whole Feast package (seconds) on the first REST call of any step, and
    none of our steps needs it. Effective only before MLflow loads its header providers.
    """
    import sys

    from mlflow.utils import plugins

    if "mlflow.tracking.request_header.registry" in sys.modules or hasattr(plugins, "_mlsteps_filtered"):
        return
    original = plugins.get_entry_points

    def without_feast(group: str) -> Any:
        found = original(group)
        if group != _HEADER_PROVIDERS:
            return found
        return [entry for entry in found if not str(entry.value).startswith("feast.")]

    plugins.get_entry_points = without_feast
    plugins._mlsteps_filtered = True  # type: ignore[attr-defined]


def parse_version(text: str | int, option: str = "--model-version") -> str:
    """A registry version number as MLflow spells it ("7").

    Raises:
        StepError: ``text`` is not a positive integer.
    """
    value = str(text).strip().removeprefix("v")
    if not value.isascii() or not value.isdigit() or int(value) < 1:  # not "²" or "١٢": int() refuses those
        raise StepError(f"{option} must be a positive model version number such as 7, got {text!r}")
    return str(int(value))


def get_version(client: MlflowClient, name: str, version: str) -> ModelVersion:
    """Fetch one registered model version.

    Raises:
        StepError: The registered model or the version does not exist.
    """
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version(name, version)
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            raise StepError(
                f"model {name} has no version {version} in the MLflow registry at {_tracking_uri()}; "
                "check --model-version and MLFLOW_TRACKING_URI"
            ) from None
        raise


def require_lineage(version: ModelVersion, config: PipelineConfig) -> None:
    """Refuse a version this pipeline did not produce (its tag :data:`PIPELINE_TAG` is not ours).

    Raises:
        StepError: The tag is missing or names another pipeline.
    """
    owner = (version.tags or {}).get(PIPELINE_TAG)
    if owner != config.name:
        found = f"is tagged {PIPELINE_TAG}={owner}" if owner else f"has no {PIPELINE_TAG} tag"
        raise StepError(
            f"model {version.name} version {version.version} {found}, so pipeline {config.name} did not "
            "produce it; refusing to use a model without this pipeline's lineage"
        )


def aliases(client: MlflowClient, name: str) -> dict[str, str]:
    """The registered model's aliases (alias -> version); empty when the model does not exist yet."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_registered_model(name).aliases or {}
    except MlflowException as err:
        if err.error_code == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: str(version) for alias, version in found.items()}  # the SQL store gives ints, REST strings


def champion_version(client: MlflowClient, name: str) -> str | None:
    """The version the alias ``champion`` points to, or None when there is no champion."""
    return aliases(client, name).get(CHAMPION)


@dataclass(frozen=True)
class LoadedModel:
    """A registered version as it scores: its booster, and the calibrator logged with it (None: raw scores).

    Turn the booster's output into the model's score with :func:`mlsteps.logic.calibration.calibrate`.
    """

    booster: xgb.Booster
    calibrator: Calibrator | None


def load_model(name: str, version: str, source: str | None = None) -> LoadedModel:
    """Load a registered version's XGBoost booster and the calibrator in its MLmodel metadata.

    The booster is the native flavor, which takes categorical input: its feature columns are in
    ``booster.feature_names``; encode them with :func:`mlsteps.platform.datasets.model_input`
    (or :func:`mlsteps.platform.scoring.encode_batch`) before predicting. Only the two files
    needed are downloaded, once for both: ``MLmodel`` and the booster's file it names (not the
    environment files and input examples logged beside them), from the version's ``source``
    (looked up when not given): one registry call and two downloads, where resolving
    ``models:/<name>/<version>`` and downloading everything takes four calls and nine.

    Raises:
        StepError: The version has no XGBoost flavor, or its calibration metadata is unreadable.
    """
    import tempfile

    import mlflow.xgboost
    from mlflow.models import Model
    from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

    if source is None:
        source = str(mlflow_client().get_model_version(name, version).source)
    with tempfile.TemporaryDirectory(prefix="mlsteps-model-") as directory:
        repository = get_artifact_repository(source)
        metadata = Model.load(repository.download_artifacts("MLmodel", directory))
        flavor = metadata.flavors.get(mlflow.xgboost.FLAVOR_NAME)
        if flavor is None:
            raise StepError(
                f"model {name} version {version} has no {mlflow.xgboost.FLAVOR_NAME} flavor "
                f"(flavors: {sorted(metadata.flavors)}); this pipeline did not log it"
            )
        repository.download_artifacts(flavor["data"], directory)
        booster = mlflow.xgboost.load_model(directory)
        document = (metadata.metadata or {}).get(CALIBRATION_METADATA_KEY)
    if not document:
        return LoadedModel(booster, None)
    try:
        return LoadedModel(booster, Calibrator.from_document(document))
    except (KeyError, TypeError, ValueError) as err:
        raise StepError(
            f"model {name} version {version} has unreadable calibration metadata ({err}); retrain it"
        ) from None


def load_booster(name: str, version: str) -> xgb.Booster:
    """A registered version's booster alone (its raw scores): for its feature names and content hash."""
    return load_model(name, version).booster


def holdout_metrics(client: MlflowClient, version: ModelVersion) -> dict[str, float]:
    """The ``holdout_*`` metrics `evaluate` logged on a version's training run (empty if none)."""
    if not version.run_id:
        return {}
    metrics = client.get_run(version.run_id).data.metrics
    return {
        key: round(float(value), 6) for key, value in sorted(metrics.items()) if key.startswith("holdout_")
    }


# --- MLflow UI links ----------------------------------------------------------------------


def _tracking_uri() -> str:
    import mlflow

    return public_uri(str(mlflow.get_tracking_uri()))


def run_url(experiment_id: str, run_id: str) -> str | None:
    """The MLflow UI link of a run when the tracking server is HTTP(S)."""
    uri = _tracking_uri()
    return run_page(uri, experiment_id, run_id) if uri.startswith(("http://", "https://")) else None


def run_page(ui_url: str, experiment_id: str, run_id: str) -> str:
    """The page of a run in the MLflow UI at ``ui_url``."""
    from urllib.parse import quote

    return f"{ui_url.rstrip('/')}/#/experiments/{quote(str(experiment_id))}/runs/{quote(str(run_id))}"


def model_version_page(ui_url: str, name: str, version: str) -> str:
    """The page of a registered model version in the MLflow UI at ``ui_url``."""
    from urllib.parse import quote

    return f"{ui_url.rstrip('/')}/#/models/{quote(str(name), safe='')}/versions/{quote(str(version))}"


def public_uri(uri: str) -> str:
    """``uri`` fit for messages, results and links: a password in its userinfo becomes ``***``."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))
