"""Step caching: a cacheable step whose inputs are unchanged since a successful run reuses that run.

One mechanism for every cacheable step (:data:`mlsteps.cli.CACHEABLE_STEPS`). Each such step module
declares what keys it and what it leaves behind:

- ``cache_inputs(context, args)``: fingerprints of its input data (partition digests, a snapshot's
  fingerprint, a model version's content hash);
- ``cache_outputs(context, args, result)``: the lake paths it wrote (committed partitions are
  recorded with their digest, other files by their presence);
- optionally ``CACHE_EXCLUDED_OPTIONS`` (options that only name an output) and
  ``cache_reusable(context, result)``: outputs outside the lake (a registry version) still usable.

The key (:func:`mlsteps.logic.cache_key.cache_key`) covers those inputs, the code (git SHA, image,
package versions), the config hash and the options minus the run's identity. After a step succeeds
its record (``cache/<step>/<key>.json``: the run and DAG that produced it, its result and its
outputs) is written in one atomic put. A later run with the same key, from another DAG run, reuses
the result when every recorded output is still there and unchanged; it records the reuse
(``cache/<step>/<key>/reused-by/<run>.json``) and its result carries ``cached_from``. A run without a
run id, a run of the same DAG run (a retry: the steps are idempotent for those on their own),
``--force`` and ``cache.enabled: false`` all run the step.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
from typing import Any, Protocol, cast

from mlsteps.contract import layout
from mlsteps.contract.results import CachedFrom
from mlsteps.errors import StepError
from mlsteps.logic.cache_key import cache_key, keyed_options
from mlsteps.platform.context import StepContext
from mlsteps.platform.lake import Lake
from mlsteps.platform.lineage import code_version, package_versions, partition_digest

log = logging.getLogger(__name__)

#: The recorded "digest" of an output that is a plain file, not a committed partition.
FILE = "file"


class CacheableStep(Protocol):
    """What a cacheable step module provides besides ``run``."""

    def run(self, args: argparse.Namespace) -> Any: ...

    def cache_inputs(self, context: StepContext, args: argparse.Namespace) -> dict[str, Any]: ...

    def cache_outputs(self, context: StepContext, args: argparse.Namespace, result: Any) -> list[str]: ...


def run_cached(step: str, module: Any, args: argparse.Namespace) -> Any:
    """Run ``step`` through its cache: reuse a valid record of its key, else run it and record it."""
    cacheable = cast(CacheableStep, module)
    context = StepContext.from_args(args)
    if not context.run_id or not context.config.cache.enabled:
        return cacheable.run(args)
    key = step_key(step, module, context, args)
    args.cache_key = key
    if key is not None and not getattr(args, "force", False):
        record = reusable_record(context, step, key, module)
        if record is not None:
            return reuse(context, step, key, record)
    result = cacheable.run(args)
    if key is not None:
        store(context, step, key, result, cacheable.cache_outputs(context, args, result))
    return result


def step_key(step: str, module: Any, context: StepContext, args: argparse.Namespace) -> str | None:
    """The run's cache key, or None when an input cannot be read (the step then says why, uncached)."""
    try:
        inputs = cast(CacheableStep, module).cache_inputs(context, args)
    except StepError as err:
        log.info("cache: %s runs uncached, its inputs cannot be keyed (%s)", step, err)
        return None
    excluded = getattr(module, "CACHE_EXCLUDED_OPTIONS", ())
    return cache_key(
        step, inputs, code_identity(context), context.config.config_hash, keyed_options(vars(args), excluded)
    )


def code_identity(context: StepContext) -> dict[str, Any]:
    """What the code is: its git SHA (as lineage records it), the step image and package versions."""
    return {
        "git_sha": code_version(context.settings),
        "image": context.settings.step_image,
        "versions": package_versions(),
    }


def reusable_record(context: StepContext, step: str, key: str, module: Any) -> dict[str, Any] | None:
    """The record of ``key`` if another run wrote it and its outputs are still there, unchanged."""
    lake = context.lake
    path = layout.step_cache_record_path(step, key)
    if not lake.exists(path):
        return None
    record: dict[str, Any] = lake.read_json(path)
    if (record.get("dag_id"), record.get("run_id")) == (context.dag_id, context.run_id):
        return None  # a retry or a cleared task of the same run: the step runs (and is idempotent)
    missing = changed_outputs(lake, record.get("outputs") or {})
    if missing:
        log.info(
            "cache: %s of run %s is gone or changed (%s); running again", step, record["run_id"], missing[0]
        )
        return None
    still = getattr(module, "cache_reusable", None)
    if still is not None and not still(context, record["result"]):
        log.info(
            "cache: the outputs of %s in run %s are no longer usable; running again", step, record["run_id"]
        )
        return None
    return record


def changed_outputs(lake: Lake, outputs: dict[str, str | None]) -> list[str]:
    """The recorded outputs that are missing, or whose partition digest differs from the recorded one."""
    changed = []
    for path, digest in sorted(outputs.items()):
        intact = (
            lake.exists(path)
            if digest == FILE
            else digest is not None and partition_digest(lake, path) == digest
        )
        if not intact:
            changed.append(lake.url(path))
    return changed


def store(context: StepContext, step: str, key: str, result: dict[str, Any], outputs: list[str]) -> None:
    """Record a successful run of ``key`` (one atomic write, after the step's own outputs)."""
    lake = context.lake
    recorded = {path: partition_digest(lake, path) if lake.manifest(path) else FILE for path in outputs}
    lake.write_json(
        layout.step_cache_record_path(step, key),
        {
            "step": step,
            "key": key,
            "run_id": context.run_id,
            "dag_id": context.dag_id,
            "committed_at": _now(),
            "result": result,
            "outputs": recorded,
            "lineage": context.lineage(),
        },
    )


def reuse(context: StepContext, step: str, key: str, record: dict[str, Any]) -> dict[str, Any]:
    """The recorded result, marked ``cached_from``; the reuse itself is recorded for lineage."""
    origin = CachedFrom(run_id=str(record["run_id"]), dag_id=str(record.get("dag_id") or ""), key=key)
    context.lake.write_json(
        layout.step_cache_reuse_path(step, key, context.run_id),
        {"step": step, "key": key, "run_id": context.run_id, "dag_id": context.dag_id, "at": _now(),
         "cached_from": origin},
    )  # fmt: skip
    result = dict(record["result"])
    log.info("cache: %s reuses the outputs of run %s (key %s)", step, origin["run_id"], key[:12])
    return {
        **result,
        "cached_from": origin,
        "summary": f"cached from run {origin['run_id']}: {result.get('summary', '')}",
    }


def reuses(lake: Lake, step: str, key: str) -> list[dict[str, Any]]:
    """The runs that reused the record of ``key``, oldest first (what ``trace`` shows)."""
    prefix = layout.step_cache_reuses_prefix(step, key)
    found = [lake.read_json(f"{prefix}/{name}") for name in lake.list_dir(prefix) if name.endswith(".json")]
    return sorted(found, key=lambda entry: str(entry.get("at")))


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
