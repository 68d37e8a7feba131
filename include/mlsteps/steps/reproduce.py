"""Rebuild a registered model version from its records and compare it with the registered one.

From the version's records (registry tags, MLflow run, training snapshot manifest) the step takes
the raw data interval, the pipeline config and the training parameters. It copies that interval's
raw partitions into a scratch prefix of the lake (``_scratch/reproduce/...``), re-runs the real
feature code there (each day in the pass it was computed in, as recorded) and ``build-training-set``
against a private Feast registry, retrains with the recorded config, seed, device and trial count,
and compares in order: the config, the training-set fingerprint, the hyperparameters, the
booster's content hash and, when the hashes differ, the predictions on the holdout. Originals are
only read, never written.

Verdicts: ``identical`` (same inputs, same booster bytes), ``equivalent`` (same inputs, different
bytes, holdout predictions within ``--tolerance``), ``differs`` (anything else), with the first
difference found. Every verdict is a result (exit 0); a missing record is a refusal (exit 2).
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib
import json
import logging
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlsteps.contract.config import PipelineConfig
from mlsteps.contract.layout import partition, snapshot_prefix
from mlsteps.contract.results import ReproduceResult, ReproductionReport
from mlsteps.contract.settings import StepSettings
from mlsteps.errors import StepError
from mlsteps.logic.reproduction import (
    Check,
    changed_raw_partitions,
    config_check,
    feature_passes,
    first_value_difference,
    package_changes,
    params_check,
    render,
    verdict,
)
from mlsteps.platform import mlflow_registry
from mlsteps.platform.context import DataInterval, StepContext
from mlsteps.platform.lake import MARKER, Lake
from mlsteps.platform.lineage import (
    MODEL_SHA256_TAG,
    VERSIONS_TAG,
    booster_sha256,
    code_version,
    config_document,
    package_versions,
    raw_days,
)

if TYPE_CHECKING:
    import xgboost as xgb
    from mlflow import MlflowClient
    from mlflow.entities import Run
    from mlflow.entities.model_registry import ModelVersion

    from mlsteps.logic.training import Fit

log = logging.getLogger(__name__)

#: The CLI prints this step's own report (text or JSON) instead of a summary line.
PRINTS_OWN_OUTPUT = True
SCRATCH_ROOT = "_scratch/reproduce"


@dataclass(frozen=True)
class Records:
    """Everything stored about one version that its reproduction needs."""

    version: ModelVersion
    run: Run
    snapshot: dict[str, Any]
    snapshot_config: PipelineConfig
    training_config: PipelineConfig

    @property
    def training_run(self) -> str:
        return str(self.snapshot["training_run"])

    @property
    def interval(self) -> tuple[dt.datetime, dt.datetime]:
        bounds = self.snapshot["interval"]
        return dt.datetime.fromisoformat(bounds["start"]), dt.datetime.fromisoformat(bounds["end"])

    @property
    def trials(self) -> int:
        """The Optuna trials the version was trained with (0: one fit with the configured params)."""
        from mlsteps.steps.train import TRIALS_TAG

        return int((self.version.tags or {}).get(TRIALS_TAG) or 0)


@dataclass(frozen=True)
class Rebuilt:
    """The reproduction: the scratch lake, the rebuilt snapshot's manifest and the retrained model."""

    scratch: Lake
    manifest: dict[str, Any]
    fit: Fit


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model-version", required=True, help="The registered version to rebuild.")
    parser.add_argument("--model", help="Registered model name (default: model.registered_name).")
    parser.add_argument(
        "--tolerance",
        type=float,
        default=1e-6,
        help="Largest |Δp| on the holdout still called equivalent when the booster bytes differ.",
    )
    parser.add_argument("--keep-scratch", action="store_true", help="Keep the scratch prefix for inspection.")
    parser.add_argument("--json", action="store_true", help="Print the report as JSON instead of text.")


def run(args: argparse.Namespace) -> ReproduceResult:
    context = StepContext.from_args(args)
    name = args.model or context.config.model.registered_name
    number = mlflow_registry.parse_version(args.model_version)
    if not 0.0 <= args.tolerance < 1.0:
        raise StepError(f"--tolerance must be in [0, 1), got {args.tolerance}")
    client = mlflow_registry.mlflow_client()
    version = mlflow_registry.get_version(client, name, number)
    mlflow_registry.require_lineage(version, context.config)
    records = load_records(context.lake, client, version)
    token = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:8]}"
    scratch = Lake(context.lake.url(f"{SCRATCH_ROOT}/{name}-v{number}-{token}"), context.settings)
    try:
        rebuilt = rebuild(context.lake, scratch, records, context.settings)
        checks = compare(context.lake, records, rebuilt, args.tolerance)
    finally:
        if not args.keep_scratch:
            scratch.delete("")
    kept = scratch.uri if args.keep_scratch else None
    report = verdict_document(name, number, records, checks, kept, code_version(context.settings))
    print(json.dumps(report, indent=2, default=str) if args.json else render(report), flush=True)
    return {"summary": f"{name} version {number}: {report['verdict_text']}", **report}


# --- records --------------------------------------------------------------------------------


def load_records(lake: Lake, client: MlflowClient, version: ModelVersion) -> Records:
    """The version's run, training snapshot manifest and configs.

    Raises:
        StepError: A record reproduction needs is missing (the message names it).
    """
    from mlflow.exceptions import MlflowException

    tags = version.tags or {}
    training_run = tags.get("training_run")
    if not training_run:
        raise StepError(
            f"version {version.version} of {version.name} has no training_run tag; cannot rebuild it"
        )
    prefix = snapshot_prefix(training_run)
    snapshot = lake.manifest(prefix)
    if snapshot is None:
        raise StepError(
            f"training snapshot record {lake.url(f'{prefix}/{MARKER}')} of version {version.version} is "
            "missing, so its data interval and config are unknown; it cannot be reproduced"
        )
    try:
        run = client.get_run(str(version.run_id))
    except MlflowException:
        raise StepError(f"MLflow run {version.run_id} of version {version.version} is missing") from None
    snapshot_config = recorded_config(snapshot)
    training_config = logged_config(client, run) or snapshot_config
    return Records(version, run, snapshot, snapshot_config, training_config)


def recorded_config(snapshot: dict[str, Any]) -> PipelineConfig:
    """The pipeline config the snapshot was built with, from its manifest.

    Raises:
        StepError: The snapshot predates recorded configs.
    """
    document = snapshot.get("config")
    if document is None:
        raise StepError(
            f"training snapshot {snapshot['training_run']} records only the config hash "
            f"{snapshot.get('config_hash')}, not the config; rebuild it with this version of mlsteps"
        )
    return PipelineConfig.model_validate(document)


def logged_config(client: MlflowClient, run: Run) -> PipelineConfig | None:
    """The config train logged on its run (None when the run predates that record)."""
    from mlflow.exceptions import MlflowException

    from mlsteps.steps.train import CONFIG_ARTIFACT

    with tempfile.TemporaryDirectory() as directory:
        try:
            path = client.download_artifacts(run.info.run_id, CONFIG_ARTIFACT, directory)
        except (MlflowException, OSError):
            return None
        return PipelineConfig.model_validate(json.loads(Path(path).read_text()))


# --- rebuild --------------------------------------------------------------------------------


def rebuild(lake: Lake, scratch: Lake, records: Records, settings: StepSettings) -> Rebuilt:
    """Copy the raw data into the scratch lake, recompute features and the snapshot there, retrain.

    The steps it runs get ``settings`` with a private Feast state (:func:`private_feast_state`).
    """
    from mlsteps.steps.features import DEFAULT_BATCH_DAYS

    start, end = records.interval
    window = end - start
    if window % dt.timedelta(days=1):
        raise StepError(f"snapshot {records.training_run} spans {window}, not whole days; cannot rebuild it")
    passes = feature_passes(records.snapshot, start, end, DEFAULT_BATCH_DAYS)
    first, last = min(batch.start for batch, _ in passes), max(batch.end for batch, _ in passes)
    copy_raw(lake, scratch, records.snapshot_config, first, last)
    with private_feast_state(settings) as private, tempfile.TemporaryDirectory() as directory:
        config_file = Path(directory, "pipeline.yaml")
        config_file.write_text(json.dumps(config_document(records.snapshot_config)))  # JSON is YAML
        run_id = f"reproduce-{records.training_run}"
        rebuild_features(StepContext(str(config_file), scratch.uri, "", run_id, private), passes)
        run_step(
            "build-training-set",
            ["--end", end.isoformat(), "--window-days", str(window.days), "--training-run",
             records.training_run, "--config", str(config_file), "--lake", scratch.uri, "--run-id", run_id],
            private,
        )  # fmt: skip
    manifest = scratch.manifest(snapshot_prefix(records.training_run))
    assert manifest is not None
    return Rebuilt(scratch, manifest, retrain(scratch, records, settings))


def rebuild_features(context: StepContext, passes: list[tuple[DataInterval, list[dt.date]]]) -> None:
    """Recompute each pass with the real feature code, committing only the days recorded for it."""
    from mlsteps.steps.features import build_batch

    for batch, days in passes:
        log.info("reproduce: features of %s computed in %s", ", ".join(map(str, days)), batch)
        build_batch(context, batch, days)


def copy_raw(lake: Lake, scratch: Lake, config: PipelineConfig, start: dt.datetime, end: dt.datetime) -> None:
    """Copy the raw partitions features of ``[start, end)`` read (look-back included) as they are now."""
    for day in raw_days(config, start, end):
        prefix = partition(config.dataset.source, day)
        names = [name for name in lake.list_dir(prefix) if name == MARKER or name.endswith(".parquet")]
        if names and scratch.is_local:  # on S3 a copy needs no directory (see mlsteps.platform.lake)
            scratch.fs.create_dir(scratch.path(prefix), recursive=True)
        for name in names:  # on S3 a server-side copy between the two prefixes
            lake.fs.copy_file(lake.path(f"{prefix}/{name}"), scratch.path(f"{prefix}/{name}"))


@contextmanager
def private_feast_state(settings: StepSettings) -> Iterator[StepSettings]:
    """``settings`` with a throw-away local Feast registry and online store beside the store config in
    use (:func:`~mlsteps.platform.feature_store.private_store_yaml`), so the real registry is never
    touched; the directory is removed on exit."""
    from mlsteps.platform.feature_store import private_store_yaml

    with tempfile.TemporaryDirectory(prefix="mlsteps-reproduce-") as directory:
        store_yaml = private_store_yaml(settings, Path(directory))
        yield replace(settings, state_dir_path=directory, store_yaml=str(store_yaml))


def run_step(step: str, argv: list[str], settings: StepSettings) -> dict[str, Any]:
    """Run a step's real code in this process, with options parsed exactly as the CLI parses them."""
    from mlsteps.cli import STEPS, build_parser

    args = build_parser(step).parse_args([step, *argv])
    args.settings = settings  # what the CLI would have read, with this run's own values
    log.info("reproduce: %s %s", step, " ".join(argv))
    result: dict[str, Any] = importlib.import_module(STEPS[step][0]).run(args)
    return result


def retrain(scratch: Lake, records: Records, settings: StepSettings) -> Fit:
    """Train on the rebuilt snapshot with the recorded config, device, trial count and engine (a
    ``dask`` version retrains on a Dask cluster with its recorded worker count)."""
    from mlsteps.logic.training import train_model, training_splits
    from mlsteps.platform.datasets import load_training_set
    from mlsteps.platform.device import cuda_problem
    from mlsteps.steps import train

    tags = records.version.tags or {}
    device = tags.get(train.DEVICE_TAG, "cpu")
    if device == "cuda" and cuda_problem():
        log.warning("the version was trained on cuda, which is not usable here; retraining on cpu")
        device = "cpu"
    config = records.training_config
    if tags.get(train.ENGINE_TAG) == "dask":
        from mlsteps.platform.dask_engine import dask_client, train_on_dask

        workers = int(tags.get(train.WORKERS_TAG, config.model.dask.workers))
        dask = config.model.dask.model_copy(update={"workers": workers})
        manifest = scratch.manifest(snapshot_prefix(records.training_run))
        assert manifest is not None
        with dask_client(dask, settings) as client:
            return train_on_dask(client, scratch, manifest, config, device).fit
    snapshot = load_training_set(scratch, records.training_run)
    splits = training_splits(snapshot, config)
    return train_model(splits, snapshot, config, device, records.trials)


# --- comparison -----------------------------------------------------------------------------


def compare(lake: Lake, records: Records, rebuilt: Rebuilt, tolerance: float) -> list[Check]:
    """Every comparison, in the order a difference would propagate: inputs first, then the model."""
    checks = [
        config_check(
            (records.version.tags or {}).get("config_hash"),
            records.snapshot.get("config_hash"),
            records.snapshot_config.config_hash,
            records.training_config.config_hash,
        ),
        fingerprint_check(lake, records, rebuilt),
        params_check(records.run.data.params, rebuilt.fit.params, records.trials),
        booster_check(records, rebuilt.fit.booster),
    ]
    if not checks[-1].same:
        checks.append(predictions_check(records, rebuilt, tolerance))
    return checks


def fingerprint_check(lake: Lake, records: Records, rebuilt: Rebuilt) -> Check:
    """The rebuilt training set's fingerprint against the one the version was trained on."""
    recorded = (records.version.tags or {}).get("data_fingerprint") or records.snapshot.get("fingerprint")
    fingerprint = rebuilt.manifest["fingerprint"]
    detail = "" if fingerprint == recorded else fingerprint_difference(lake, records, rebuilt)
    return Check("training-set fingerprint", fingerprint == recorded, recorded, fingerprint, detail)


def fingerprint_difference(lake: Lake, records: Records, rebuilt: Rebuilt) -> str:
    """Where the rebuilt snapshot differs: raw partitions changed since training, and the first value."""
    from mlsteps.platform.datasets import load_training_set

    before = (records.snapshot.get("raw") or {}).get("partitions", {})
    after = (rebuilt.manifest.get("raw") or {}).get("partitions", {})
    parts = [changed_raw_partitions(before, after)]
    if records.snapshot.get("fingerprint") == (records.version.tags or {}).get("data_fingerprint"):
        original = load_training_set(lake, records.training_run)
        again = load_training_set(rebuilt.scratch, records.training_run)
        parts.append(first_value_difference(original, again))
    return "; ".join(part for part in parts if part)


def booster_check(records: Records, booster: xgb.Booster) -> Check:
    """The booster's content hash against the one recorded at training (or the registered model's)."""
    tags = records.version.tags or {}
    recorded, detail = tags.get(MODEL_SHA256_TAG), ""
    if not recorded:
        recorded = booster_sha256(
            mlflow_registry.load_booster(records.version.name, str(records.version.version))
        )
        detail = "no hash was recorded at training: compared with the registered model's bytes"
    rebuilt = booster_sha256(booster)
    return Check("booster sha256", rebuilt == recorded, recorded, rebuilt, detail)


def predictions_check(records: Records, rebuilt: Rebuilt, tolerance: float) -> Check:
    """Registered vs retrained predictions (calibrated, as each model scores) on the rebuilt holdout."""
    from mlsteps.logic import reproduction
    from mlsteps.logic.training import predict
    from mlsteps.platform.datasets import load_training_set

    registered = mlflow_registry.load_model(records.version.name, str(records.version.version))
    holdout = load_training_set(rebuilt.scratch, records.training_run).holdout
    config = records.training_config
    return reproduction.predictions_check(
        predict(registered.booster, holdout, config, registered.calibrator),
        predict(rebuilt.fit.booster, holdout, config, rebuilt.fit.calibrator),
        tolerance,
    )


# --- output ---------------------------------------------------------------------------------


def verdict_document(
    name: str, number: str, records: Records, checks: list[Check], scratch: str | None, code_now: str
) -> ReproductionReport:
    """The verdict, the first difference and every check; ``code_now`` is the code version running."""
    found, text, first = verdict(checks)
    return {
        "model_name": name,
        "model_version": number,
        "training_run": records.training_run,
        "interval": mlflow_registry.describe_interval(records.snapshot.get("interval")),
        "verdict": found,
        "verdict_text": text,
        "first_difference": asdict(first) if first else None,
        "checks": [asdict(check) for check in checks],
        "environment": environment_changes(records, code_now),
        "scratch": scratch,
    }


def environment_changes(records: Records, code_now: str) -> dict[str, Any]:
    """Code version then and ``code_now``, and the packages whose version changed (context for a diff)."""
    tags = records.version.tags or {}
    then = json.loads(tags[VERSIONS_TAG]) if VERSIONS_TAG in tags else {}
    now = package_versions()
    return {
        "code_version": {"recorded": tags.get("git_sha", "unknown"), "now": code_now},
        "packages_changed": package_changes(then, now),
    }
