"""Shared registry helpers: lineage tags, the champion, model loading, the promotion ledger and its lock.

The MLflow alias ``champion`` is the source of truth for what serves. The ledger in the lake
(``ledger/<model>/``, one immutable JSON object per promotion or rollback, names sortable by
time) is the audit trail that rollback reads. Both change only under :class:`LakeLock`, an
exclusive-create lock object with a lease, so two promotions can never both win.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from mlsteps.contract.layout import champion_lock_path, ledger_prefix
from mlsteps.errors import StepError

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.platform.context import StepContext
    from mlsteps.platform.lake import Lake

log = logging.getLogger(__name__)

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
LEDGER_ENTRY = re.compile(r"^\d{8}T\d{12}Z-(promote|rollback)-v\d+\.json$")
#: A human decision that changed no alias (a rejected promotion); beside the entries, never one of them.
DECISION_ENTRY = re.compile(r"^\d{8}T\d{12}Z-reject-v\d+\.json$")
DEFAULT_LEASE_SECONDS = 120.0


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


# --- registry -----------------------------------------------------------------------------


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


def load_booster(name: str, version: str) -> xgb.Booster:
    """Load a registered version's XGBoost booster (the native flavor, which takes categorical input).

    Feature columns are in ``booster.feature_names``; encode them with
    :func:`mlsteps.platform.datasets.model_input` before predicting.
    """
    import mlflow.xgboost

    booster = mlflow.xgboost.load_model(f"models:/{name}/{version}")
    return booster


def holdout_metrics(client: MlflowClient, version: ModelVersion) -> dict[str, float]:
    """The ``holdout_*`` metrics `evaluate` logged on a version's training run (empty if none)."""
    if not version.run_id:
        return {}
    metrics = client.get_run(version.run_id).data.metrics
    return {
        key: round(float(value), 6) for key, value in sorted(metrics.items()) if key.startswith("holdout_")
    }


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


# --- exclusive create ---------------------------------------------------------------------


def create_exclusive(lake: Lake, relative: str, data: bytes) -> bool:
    """Create a lake object only if it does not exist yet, atomically with its content.

    Local lakes write a private temporary file and hard-link it into place (``link`` fails when
    the target exists, and readers never see a partial file). S3 lakes use a conditional PUT
    (``If-None-Match: *``), honouring ``AWS_ENDPOINT_URL``.

    Returns:
        True when this call created the object, False when it already existed.
    """
    if lake.is_local:
        return _local_create_exclusive(lake.path(relative), data)
    bucket, key = _bucket_key(lake, relative)
    return _S3Object(bucket, key, lake.s3_endpoint).create(data) is not None


def _local_create_exclusive(target: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(target), exist_ok=True)
    temporary = f"{target}.tmp-{uuid.uuid4().hex}"
    with open(temporary, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    try:
        os.link(temporary, target)
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(temporary)


def _bucket_key(lake: Lake, relative: str) -> tuple[str, str]:
    bucket, _, key = lake.path(relative).partition("/")
    return bucket, key


def _s3_client(endpoint: str | None) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=endpoint)


def _error_code(err: Exception) -> str:
    response = getattr(err, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


# --- the lock -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Holder:
    """Who holds a lock, until when, and the token that proves which acquisition it is."""

    owner: str
    expires_at: float
    token: str
    document: dict[str, Any]

    @property
    def expired(self) -> bool:
        return time.time() >= self.expires_at


class _LockObject(Protocol):
    """Storage for one lock: each write returns a token that identifies exactly that write."""

    def create(self, data: bytes) -> str | None: ...

    def read(self) -> Holder | None: ...

    def replace_if(self, token: str, data: bytes) -> str | None: ...

    def delete_if(self, token: str) -> bool: ...


class _LocalFile:
    """A lock file whose token is the owner id inside; takeovers serialize on ``flock`` of a guard file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.guard = f"{path}.guard"

    def create(self, data: bytes) -> str | None:
        return str(json.loads(data)["owner"]) if _local_create_exclusive(self.path, data) else None

    def read(self) -> Holder | None:
        try:
            with open(self.path, "rb") as handle:
                raw = handle.read()
            modified = os.stat(self.path).st_mtime
        except FileNotFoundError:
            return None
        return _holder(raw, None, fallback_time=modified)

    @contextmanager
    def _guarded(self) -> Iterator[None]:
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        with open(self.guard, "a") as guard:
            fcntl.flock(guard, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(guard, fcntl.LOCK_UN)

    def replace_if(self, token: str, data: bytes) -> str | None:
        with self._guarded():
            current = self.read()
            if current is None or current.token != token:
                return None
            os.unlink(self.path)
            return self.create(data)

    def delete_if(self, token: str) -> bool:
        with self._guarded():
            current = self.read()
            if current is None or current.token != token:
                return False
            os.unlink(self.path)
            return True


class _S3Object:
    """A lock object on S3: its token is the ETag. Conditional PUT creates; If-Match swaps and deletes."""

    def __init__(self, bucket: str, key: str, endpoint: str | None) -> None:
        self.bucket, self.key = bucket, key
        self.client = _s3_client(endpoint)

    def create(self, data: bytes) -> str | None:
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, IfNoneMatch="*")
        except self.client.exceptions.ClientError as err:
            if _error_code(err) in ("PreconditionFailed", "ConditionalRequestConflict"):
                return None
            raise
        return str(response["ETag"])

    def read(self) -> Holder | None:
        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self.key)
        except self.client.exceptions.NoSuchKey:
            return None
        modified = response["LastModified"].timestamp()
        return _holder(response["Body"].read(), str(response["ETag"]), fallback_time=modified)

    def replace_if(self, token: str, data: bytes) -> str | None:
        try:
            response = self.client.put_object(Bucket=self.bucket, Key=self.key, Body=data, IfMatch=token)
        except self.client.exceptions.ClientError as err:
            if _error_code(err) in ("PreconditionFailed", "ConditionalRequestConflict", "NoSuchKey"):
                return None
            raise
        return str(response["ETag"])

    def delete_if(self, token: str) -> bool:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self.key, IfMatch=token)
        except self.client.exceptions.ClientError as err:
            code = _error_code(err)
            if code in ("PreconditionFailed", "NoSuchKey", "404"):
                return False
            if code not in ("NotImplemented", "InvalidArgument", "InvalidRequest"):
                raise
            return self._delete_if_unchanged(token)  # a store without conditional deletes
        return True

    def _delete_if_unchanged(self, token: str) -> bool:
        current = self.read()
        if current is None or current.token != token:
            return False
        self.client.delete_object(Bucket=self.bucket, Key=self.key)
        return True


def _holder(raw: bytes, etag: str | None, fallback_time: float) -> Holder:
    """Parse a lock document.

    The token is the S3 ETag, or for a local file the owner id inside it. An unreadable document
    (its writer died mid-write) expires one default lease after it was written.
    """
    try:
        document = json.loads(raw)
        owner, expires_at = str(document["owner"]), float(document["expires_at"])
    except (ValueError, KeyError, TypeError):
        token = etag if etag is not None else raw.decode(errors="replace")
        return Holder("unknown", fallback_time + DEFAULT_LEASE_SECONDS, token, {})
    return Holder(owner, expires_at, etag if etag is not None else owner, document)


class LakeLock:
    """A mutual-exclusion lock stored as one lake object, leased so that a killed holder cannot block forever.

    Acquire creates the object exclusively; a waiter polls until the holder releases it or its lease
    expires, and then takes it over with a compare-and-swap, so only one waiter wins. Release
    deletes the object only if it is still ours. Clocks of lock users are assumed NTP-synchronized
    (the lease is far longer than any realistic skew).

    Use it as a context manager; call :meth:`ensure_held` before each write in the critical section.
    """

    def __init__(
        self,
        lake: Lake,
        relative: str,
        lease_seconds: float = DEFAULT_LEASE_SECONDS,
        wait_seconds: float | None = None,
        purpose: str = "",
    ) -> None:
        self.lake, self.relative, self.purpose = lake, relative, purpose
        self.lease_seconds = lease_seconds
        self.wait_seconds = lease_seconds + 30.0 if wait_seconds is None else wait_seconds
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:12]}"
        self._token: str | None = None
        self._expires_at = 0.0
        self._object: _LockObject = (
            _LocalFile(lake.path(relative))
            if lake.is_local
            else _S3Object(*_bucket_key(lake, relative), lake.s3_endpoint)
        )

    def __enter__(self) -> LakeLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    def _document(self) -> bytes:
        self._expires_at = time.time() + self.lease_seconds
        return json.dumps(
            {
                "owner": self.owner,
                "purpose": self.purpose,
                "acquired_at": dt.datetime.now(dt.UTC).isoformat(),
                "expires_at": self._expires_at,
            }
        ).encode()

    def acquire(self) -> None:
        """Take the lock, waiting up to ``wait_seconds``.

        Raises:
            StepError: Another holder kept it for longer than the wait.
        """
        deadline = time.monotonic() + self.wait_seconds
        delay = 0.05
        while True:
            if self._try_once():
                log.info("lock %s acquired by %s", self.lake.url(self.relative), self.owner)
                return
            if time.monotonic() >= deadline:
                holder = self._object.read()
                who = f"{holder.owner} until {_iso(holder.expires_at)}" if holder else "someone"
                raise StepError(
                    f"lock {self.lake.url(self.relative)} is held by {who}; another promotion or rollback "
                    f"is running, retry after it finishes"
                )
            time.sleep(delay + random.uniform(0, delay))
            delay = min(delay * 2, 1.0)

    def _try_once(self) -> bool:
        data = self._document()
        token = self._object.create(data)
        if token is None:
            holder = self._object.read()
            if holder is None or not holder.expired:
                return False
            log.warning(
                "lock %s of %s expired at %s; taking it over",
                self.relative,
                holder.owner,
                _iso(holder.expires_at),
            )
            token = self._object.replace_if(holder.token, data)
        self._token = token
        return token is not None

    def ensure_held(self) -> None:
        """Check there is still lease left before a write.

        Raises:
            StepError: The lease ran out (this holder stalled), so another may have taken over.
        """
        if self._token is None or time.time() >= self._expires_at - 1.0:
            raise StepError(
                f"lock {self.lake.url(self.relative)} lease of {self.lease_seconds:g} s ran out before the "
                "change was written; nothing was changed after that point, re-run the step"
            )

    def release(self) -> None:
        """Delete the lock object if it is still ours."""
        if self._token is None:
            return
        if not self._object.delete_if(self._token):
            log.warning("lock %s was no longer ours at release (lease expired and taken over)", self.relative)
        self._token = None


def _iso(timestamp: float) -> str:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC).isoformat(timespec="seconds")


# --- the ledger ---------------------------------------------------------------------------


def champion_lock(
    lake: Lake, model: str, purpose: str, lease_seconds: float = DEFAULT_LEASE_SECONDS
) -> LakeLock:
    """The lock that serializes every change of a model's ``champion`` alias and ledger."""
    return LakeLock(lake, champion_lock_path(model), lease_seconds=lease_seconds, purpose=purpose)


def read_ledger(lake: Lake, model: str) -> list[dict[str, Any]]:
    """Every ledger entry of a model, oldest first, each with its lake-relative ``entry`` path."""
    prefix = ledger_prefix(model)
    entries = []
    for name in lake.list_dir(prefix):
        if LEDGER_ENTRY.match(name):
            entries.append({**lake.read_json(f"{prefix}/{name}"), "entry": f"{prefix}/{name}"})
    return entries


def read_decisions(lake: Lake, model: str) -> list[dict[str, Any]]:
    """Every recorded rejection of a promotion (who, when, why), oldest first; they move no alias."""
    prefix = ledger_prefix(model)
    return [
        {**lake.read_json(f"{prefix}/{name}"), "entry": f"{prefix}/{name}"}
        for name in lake.list_dir(prefix)
        if DECISION_ENTRY.match(name)
    ]


def append_ledger(lake: Lake, model: str, entry: dict[str, Any], previous: list[dict[str, Any]]) -> str:
    """Write one immutable ledger entry; its name sorts after every earlier entry.

    Call under :func:`champion_lock`. The name is the entry's UTC time to the microsecond, bumped
    past the newest existing name should clocks disagree, then the action and version.

    Returns:
        The entry's lake-relative path.

    Raises:
        StepError: The name is taken (only possible if the lock was bypassed).
    """
    now = dt.datetime.now(dt.UTC)
    if previous:
        newest = _entry_time(previous[-1]["entry"])
        now = max(now, newest + dt.timedelta(microseconds=1))
    relative = f"{ledger_prefix(model)}/{now:%Y%m%dT%H%M%S%fZ}-{entry['action']}-v{entry['version']}.json"
    document = {**entry, "at": now.isoformat()}
    data = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
    if not create_exclusive(lake, relative, data):
        raise StepError(f"ledger entry {lake.url(relative)} already exists; was the promotion lock bypassed?")
    return relative


def _entry_time(relative: str) -> dt.datetime:
    stamp = relative.rsplit("/", 1)[-1].split("-", 1)[0]
    return dt.datetime.strptime(stamp, "%Y%m%dT%H%M%S%fZ").replace(tzinfo=dt.UTC)


def promoted_versions(entries: list[dict[str, Any]]) -> set[str]:
    """Versions the ledger shows as champion at some point."""
    return {str(entry["version"]) for entry in entries}


def latest_entry_for(entries: list[dict[str, Any]], version: str) -> dict[str, Any] | None:
    """The newest ledger entry that made ``version`` champion, or None."""
    matching = [entry for entry in entries if str(entry["version"]) == version]
    return matching[-1] if matching else None


def move_champion(
    client: MlflowClient, model: str, version: str, current: str | None, tags: dict[str, str]
) -> None:
    """Point ``champion`` at ``version``, keep the replaced one as ``previous-champion``, tag the version."""
    if current is not None:
        client.set_registered_model_alias(model, PREVIOUS_CHAMPION, current)
    client.set_registered_model_alias(model, CHAMPION, version)
    for key, value in tags.items():
        client.set_model_version_tag(model, version, key, value)
