"""The cache key of a step run: SHA-256 over a canonical JSON of everything that decides its outputs.

Pure: the caller gathers the inputs (``mlsteps.platform.step_cache``); this module only decides which
options count and hashes them. Options that name the run (``--run-id``, ``--dag-id``), that only say
how to run (``--force``) or where the config and lake are (their content is keyed by the config hash
and by the lake the record lives in) never change the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from typing import Any

#: Options (argparse names) that never enter a key: run identity, cache control, locations.
RUN_IDENTITY_OPTIONS = frozenset({"run_id", "dag_id", "force", "config", "lake", "step", "settings"})


def keyed_options(options: Mapping[str, Any], excluded: Collection[str] = ()) -> dict[str, Any]:
    """The options that enter the key: all but :data:`RUN_IDENTITY_OPTIONS` and the step's ``excluded``
    (options that only name an output, such as a snapshot's name)."""
    return {
        name: value
        for name, value in sorted(options.items())
        if name not in RUN_IDENTITY_OPTIONS and name not in excluded
    }


def cache_key(
    step: str,
    inputs: Mapping[str, Any],
    code: Mapping[str, Any],
    config_hash: str,
    options: Mapping[str, Any],
) -> str:
    """SHA-256 (hex) of the canonical JSON of ``{step, inputs, code, config_hash, options}``.

    Args:
        step: The step name, as on the command line.
        inputs: Fingerprints of the input data (partition digests, a snapshot's fingerprint, a
            model version's content hash), by name.
        code: What the code is: git SHA, image and package versions.
        config_hash: The pipeline config's ``config_hash``.
        options: The step's options, already filtered by :func:`keyed_options`.
    """
    document = {
        "step": step,
        "inputs": dict(inputs),
        "code": dict(code),
        "config_hash": config_hash,
        "options": dict(options),
    }
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()
