"""The Feast feature store of the pipeline: repo config from YAML, and objects derived from the config.

The entity, feature view and feature service are built from the pipeline config, never written
by hand, so a different dataset needs only a different config. The repo config (registry, online
and offline store) comes from ``include/feature_repo/feature_store.yaml`` or the file named by
``$ML_FEAST_STORE_YAML``, with ``${VAR}`` replaced from the environment the step's settings read.
"""

from __future__ import annotations

import datetime as dt
import importlib.util
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.feature_schema import column_value_type, feature_columns, feature_types
from mlsteps.contract.layout import features_prefix, partition
from mlsteps.contract.settings import STATE_DIR_ENV_VAR, STORE_YAML_ENV_VAR, StepSettings
from mlsteps.errors import StepError
from mlsteps.platform.lake import Lake

if TYPE_CHECKING:
    from feast import Entity, FeatureService, FeatureStore, FeatureView, RepoConfig

    from mlsteps.platform.context import StepContext

#: The checkout's feature repo (``include/feature_repo``); an image selects its copy of a file there
#: with ``$ML_FEAST_STORE_YAML``, as this path does not exist where the package is installed.
FEATURE_REPO = Path(__file__).resolve().parents[2] / "feature_repo"
DEFAULT_STORE_YAML = FEATURE_REPO / "feature_store.yaml"
#: A private Feast state (:func:`private_store_yaml`): SQLite registry and online store under ML_STATE_DIR.
PRIVATE_REGISTRY = {
    "registry_type": "file",
    "path": "${ML_STATE_DIR}/feast/registry.db",
    "cache_ttl_seconds": 60,
}
PRIVATE_ONLINE_STORE = {"type": "sqlite", "path": "${ML_STATE_DIR}/feast/online_store.db"}
#: The registry store Feast builds for an S3 registry: ours, which takes the endpoint from the settings.
S3_REGISTRY_STORE = "mlsteps.platform.feast_registry.EndpointS3RegistryStore"
_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


@dataclass(frozen=True)
class FeastObjects:
    """Everything the pipeline registers in Feast.

    Two views read the same feature table. ``feature_view`` is keyed by the entity keys: it is
    materialized and served online, through ``feature_service``. ``event_feature_view`` is also
    keyed by the row id and stays offline: training joins each event to its own feature row
    through ``training_service``. Joining on the entity keys alone would make Feast's file store
    pair every event with every feature row of its entity before filtering (measured: 140k events
    took 89 s and 8 GB that way, and 8 s and 0.7 GB keyed by row id).
    """

    entities: list[Entity]
    feature_view: FeatureView
    event_feature_view: FeatureView
    feature_service: FeatureService
    training_service: FeatureService

    def all(self) -> list[Any]:
        return [
            *self.entities,
            self.feature_view,
            self.event_feature_view,
            self.feature_service,
            self.training_service,
        ]


def store_yaml_path(settings: StepSettings | None = None) -> Path:
    """The repo config in use: ``$ML_FEAST_STORE_YAML``, else the local one under ``include/feature_repo``."""
    return Path((settings or StepSettings.from_env()).store_yaml or DEFAULT_STORE_YAML)


def private_store_yaml(settings: StepSettings, directory: Path) -> Path:
    """The repo config in use, written to ``directory`` with its registry and online store replaced
    by SQLite files under ``${ML_STATE_DIR}``; the offline store (the lake) and the rest unchanged.

    For ``reproduce``: with settings whose state dir is private, the real registry and online store
    are never opened, and no variable they need (``ML_FEAST_REDIS``, …) has to be set.

    Raises:
        StepError: The repo config in use is missing or not a YAML mapping.
    """
    import yaml

    source = store_yaml_path(settings)
    document = yaml.safe_load(_read_store_yaml(source))
    if not isinstance(document, dict):
        raise StepError(f"Feast repo config {source} must be a YAML mapping; fix the file")
    document.update(registry=dict(PRIVATE_REGISTRY), online_store=dict(PRIVATE_ONLINE_STORE))
    target = directory / "feature_store.yaml"
    target.write_text(yaml.safe_dump(document, sort_keys=False))
    return target


def _read_store_yaml(file: Path) -> str:
    try:
        return file.read_text()
    except FileNotFoundError:
        raise StepError(
            f"Feast repo config {file} does not exist; set {STORE_YAML_ENV_VAR} to a valid file"
        ) from None


def feature_view_name(config: PipelineConfig) -> str:
    """The feature view of the dataset's features."""
    return f"{config.dataset.name}_features"


def event_feature_view_name(config: PipelineConfig) -> str:
    """The offline-only feature view keyed by row id as well, for training joins."""
    return f"{config.dataset.name}_event_features"


def feature_service_name(config: PipelineConfig) -> str:
    """The feature service the model is served with (online, by entity keys)."""
    return f"{config.name}_model"


def training_service_name(config: PipelineConfig) -> str:
    """The feature service training sets are joined with (offline, by row id and entity keys)."""
    return f"{config.name}_model_training"


def expand_variables(text: str, source: Path, settings: StepSettings | None = None) -> str:
    """Replace ``${VAR}`` from the settings' environment (``ML_STATE_DIR`` has a default); drop comment lines.

    Raises:
        StepError: A variable is not set.
    """
    settings = settings or StepSettings.from_env()
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    state = str(settings.state_dir())  # always absolute
    values = {**settings.environ, STATE_DIR_ENV_VAR: state}
    unset = sorted({name for name in _VARIABLE.findall(text) if not values.get(name)})
    if unset:
        raise StepError(
            f"Feast repo config {source} uses unset environment variable(s) {unset}; "
            f"set them or point {STORE_YAML_ENV_VAR} at another file"
        )
    return _VARIABLE.sub(lambda match: values[match.group(1)], text)


def load_repo_config(
    config: PipelineConfig, path: Path | None = None, settings: StepSettings | None = None
) -> RepoConfig:
    """Read the Feast repo config; ``project`` defaults to the pipeline's name.

    ``settings`` (read from this process's environment by default) say which file, and fill ``${VAR}``.

    Raises:
        StepError: The file is missing, is not a YAML mapping, uses unset variables or is invalid.
    """
    import yaml
    from feast import RepoConfig

    settings = settings or StepSettings.from_env()
    file = path or store_yaml_path(settings)
    raw = yaml.safe_load(expand_variables(_read_store_yaml(file), file, settings))
    if not isinstance(raw, dict):
        raise StepError(f"Feast repo config {file} must be a YAML mapping; fix the file")
    raw.setdefault("project", config.name)
    _prepare_paths(raw)
    try:
        repo_config = RepoConfig(**raw)
    except Exception as err:  # pydantic and Feast raise several types here
        reason = str(err).splitlines()[0]
        raise StepError(
            f"Feast repo config {file} could not be loaded ({reason}); fix the file, "
            "or install the Feast extra its stores need"
        ) from None
    repo_config.repo_path = file.parent  # Feast's repo is where its feature_store.yaml is
    return repo_config


def _prepare_paths(raw: dict[str, Any]) -> None:
    """Create parent directories of local SQLite/registry files; point Feast's S3 registry at our endpoint."""
    registry = raw.get("registry")
    registry_path = registry.get("path", "") if isinstance(registry, dict) else str(registry or "")
    online = raw.get("online_store")
    online_path = (
        online.get("path", "") if isinstance(online, dict) and online.get("type") == "sqlite" else ""
    )
    for path in (registry_path, online_path):
        if path and "://" not in path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
    # Feast's own S3 store reads its endpoint from $FEAST_S3_ENDPOINT_URL only; ours from the settings.
    if registry_path.startswith("s3://"):
        registry = registry if isinstance(registry, dict) else {"path": registry_path}
        registry.setdefault("registry_store_type", S3_REGISTRY_STORE)
        raw["registry"] = registry


def offline_source_path(lake: Lake, config: PipelineConfig) -> str:
    """Where Feast reads the feature partitions: a local directory or an ``s3://`` prefix.

    On S3, Feast's file store reads through dask and s3fs, with the source's
    ``s3_endpoint_override`` as the client's ``endpoint_url``.
    """
    prefix = features_prefix(config)
    return lake.path(prefix) if lake.is_local else lake.url(prefix)


def feast_objects(config: PipelineConfig, lake: Lake) -> FeastObjects:
    """The entities, feature views and feature services for the config's features.

    The views read the whole ``features/<dataset>/`` directory; Parquet dataset discovery skips
    names starting with ``_`` or ``.``, so manifests (``_SUCCESS.json``) are not read as data.
    """
    from feast import FeatureService, FeatureView, Field, FileSource
    from feast.data_format import ParquetFormat

    dataset = config.dataset
    entities = [_entity(config, key) for key in dataset.entity_keys]
    event = _entity(config, dataset.row_id)
    source = FileSource(
        name=f"{dataset.name}_feature_table",
        path=offline_source_path(lake, config),
        timestamp_field=dataset.event_time,
        file_format=ParquetFormat(),
        s3_endpoint_override=None if lake.is_local else lake.s3_endpoint,
    )
    keys = [Field(name=key, dtype=_feast_type(column_value_type(config, key))) for key in dataset.key_columns]
    features = [Field(name=name, dtype=_feast_type(kind)) for name, kind in feature_types(config).items()]
    common: dict[str, Any] = {
        "ttl": dt.timedelta(days=config.features.ttl_days),
        "source": source,
        "tags": {"pipeline": config.name, "config_hash": config.config_hash},
    }
    view = FeatureView(
        name=feature_view_name(config),
        entities=entities,
        schema=keys[1:] + features,
        online=True,
        description=f"Features of {dataset.name} by entity; online it holds the latest event's.",
        **common,
    )
    event_view = FeatureView(
        name=event_feature_view_name(config),
        entities=[event, *entities],
        schema=keys + features,
        online=False,
        description=f"Features of each {dataset.name} event by {dataset.row_id}, for training joins.",
        **common,
    )
    tags = common["tags"]
    return FeastObjects(
        entities=[event, *entities],
        feature_view=view,
        event_feature_view=event_view,
        feature_service=FeatureService(name=feature_service_name(config), features=[view], tags=tags),
        training_service=FeatureService(name=training_service_name(config), features=[event_view], tags=tags),
    )


def describe_feature_views(config: PipelineConfig, lake: Lake) -> list[dict[str, Any]]:
    """The Feast feature views and services the config defines, as plain data for lineage records."""
    objects = feast_objects(config, lake)
    views = [
        {
            "name": view.name,
            "entities": list(view.entities),
            "features": {field.name: _type_name(field.dtype) for field in view.features},
            "ttl_seconds": int(view.ttl.total_seconds()) if view.ttl else None,
            "online": bool(view.online),
            "source": getattr(view.batch_source, "path", None),
            "tags": dict(view.tags),
        }
        for view in (objects.feature_view, objects.event_feature_view)
    ]
    services = [
        {"service": service.name, "views": [p.name for p in service.feature_view_projections]}
        for service in (objects.feature_service, objects.training_service)
    ]
    return views + services


def _type_name(dtype: Any) -> str:
    return str(getattr(dtype, "name", dtype))


def _entity(config: PipelineConfig, column: str) -> Entity:
    from feast import Entity

    return Entity(name=column, join_keys=[column], value_type=_value_type(column_value_type(config, column)))


def _feast_type(kind: str) -> Any:
    from feast.types import Bool, Float64, Int64, String, UnixTimestamp

    return {"float": Float64, "int": Int64, "bool": Bool, "string": String, "timestamp": UnixTimestamp}[kind]


def _value_type(kind: str) -> Any:
    from feast import ValueType

    if kind not in ("int", "string"):
        raise StepError(
            f"entity keys and the row id must be string or integer columns, not {kind}; "
            "fix the dataset section of the pipeline config"
        )
    return ValueType.INT64 if kind == "int" else ValueType.STRING


def check_feature_table(lake: Lake, config: PipelineConfig) -> None:
    """Every partition Feast will read was committed with the current feature columns.

    Feast reads every file under ``features/<dataset>/``, ignoring manifests, and takes one
    schema for all of them, so one stale or half-written day would break or skew every read.

    Raises:
        StepError: Some partitions are uncommitted or hold other feature columns.
    """
    prefix = features_prefix(config)
    expected = feature_columns(config)
    stale = []
    for day in lake.partitions(prefix):
        manifest = lake.manifest(partition(prefix, day))
        if manifest is None or manifest.get("feature_columns") != expected:
            stale.append(day)
    if stale:
        days = ", ".join(stale) if len(stale) <= 4 else f"{stale[0]} .. {stale[-1]} ({len(stale)} days)"
        raise StepError(
            f"feature partitions {days} under {lake.url(prefix)} are uncommitted or hold other feature "
            "columns than the config; Feast reads them all, so rebuild them (build-features) or delete them"
        )


def feature_store(context: StepContext) -> FeatureStore:
    """A Feast store for the step's config and lake, with the pipeline's objects applied.

    Applying is idempotent: the same config gives the same registry content, and a changed config
    (or lake) replaces the objects.

    Raises:
        StepError: The lake is on S3 and s3fs is missing, the feature table has stale
            partitions, or the repo config is unusable.
    """
    from feast import FeatureStore

    config = context.config
    if not context.lake.is_local:
        _fresh_s3_listings(offline_source_path(context.lake, config))
    check_feature_table(context.lake, config)
    logging.getLogger("feast.infra.registry.registry").setLevel(logging.WARNING)  # one line per registry read
    repo_config = load_repo_config(config, settings=context.settings)
    store = FeatureStore(config=repo_config, repo_path=str(repo_config.repo_path))
    store.apply(feast_objects(config, context.lake).all())
    return store


def _fresh_s3_listings(source: str) -> None:
    """Check that s3fs is there, and drop its cached clients with their directory listings.

    fsspec reuses one s3fs client per set of options for the life of the process, listings
    included, so a process that rebuilt a partition after an earlier Feast read would otherwise
    be handed part files that no longer exist.

    Raises:
        StepError: s3fs is not installed.
    """
    if importlib.util.find_spec("s3fs") is None:
        raise StepError(
            f"Feast reads its offline source {source} through s3fs, which is not installed; "
            "add feast's aws extra (s3fs) to the image, or use a local lake"
        )
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()
