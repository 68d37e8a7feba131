"""The lake layout: the one module that builds lake paths. No ML library, no I/O.

Lake-relative paths, from the lake's root (``$ML_LAKE_URI``)::

    <dataset.source>/ds=<day>/                         raw events, as they land
    features/<dataset>/ds=<day>/                       computed features (Feast's file source)
    training/<training run>/                           a training-set snapshot (train, holdout)
    reference/<model>/<version>/                       a version's drift reference sample
    predictions/<model>/ds=<day>/                      a scored day (the champion's: what consumers read)
    shadow/predictions/<model>/ds=<day>/               the same day scored by the challenger (shadow)
    reports/validation/ds=<first day>/<purpose>/       validate's report (training or scoring)
    reports/evaluation/ds=<day>/<model>-v<version>/    evaluate's report
    reports/drift/ds=<day>/                            the drift monitor's report
    reports/performance/ds=<day>/                      the performance monitor's report
    reports/shadow/ds=<day>/                           champion vs shadow on one scored day
    monitoring/<model>/retrains/                       the retrain requests the monitors made
    monitoring/<model>/performance/ds=<day>.json       a day's realized performance on its labels
    ledger/<model>/                                    the promotion ledger and recorded decisions
    locks/<model>/champion.lock                        the champion-change lease
    cache/<step>/<key>.json                            a cacheable step's record of a successful run
    cache/<step>/<key>/reused-by/<run>.json            one record per run that reused it

A prefix that holds one day is a partition: ``<prefix>/ds=<YYYY-MM-DD>``
(:func:`mlsteps.contract.layout.partition`).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from mlsteps.errors import StepError

if TYPE_CHECKING:
    from mlsteps.contract.config import PipelineConfig


def partition(prefix: str, day: dt.date | str) -> str:
    """The lake-relative path of one day's partition, e.g. ``raw/events/ds=2026-11-01``."""
    day_text = day if isinstance(day, str) else day.isoformat()
    return f"{prefix.rstrip('/')}/ds={day_text}"


LEDGER_ROOT = "ledger"
#: Locks live apart from the ledger, so listing the ledger shows entries only.
LOCK_ROOT = "locks"
REPORTS_ROOT = "reports"
CACHE_ROOT = "cache"


def training_run_name(run_id: str) -> str:
    """A lake-safe, deterministic snapshot name from an Airflow run id (or any label).

    Raises:
        StepError: Nothing lake-safe is left of ``run_id``.
    """
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", run_id).strip("._")[:100]
    if not slug:
        raise StepError("a training run needs a name: pass --training-run or --run-id")
    return slug


def features_prefix(config: PipelineConfig) -> str:
    """The directory holding the dataset's feature partitions (Feast's FileSource)."""
    return f"features/{config.dataset.name}"


def snapshot_prefix(training_run: str) -> str:
    """A training-set snapshot: ``training/<training run>``."""
    return f"training/{training_run_name(training_run)}"


def reference_prefix(config: PipelineConfig, version: str) -> str:
    """Where ``train`` commits a version's reference sample: ``reference/<model>/<version>``."""
    return f"reference/{config.model.registered_name}/{version}"


def predictions_prefix(model: str, day: dt.date | str) -> str:
    """A scored day of a registered model: ``predictions/<model>/ds=<day>``."""
    return partition(f"predictions/{model}", day)


def shadow_predictions_prefix(model: str, day: dt.date | str) -> str:
    """The challenger's shadow-scored day: ``shadow/predictions/<model>/ds=<day>``.

    It lives outside ``predictions/`` so that nothing listing or reading the champion's predictions
    (the drift and performance monitors, ``trace``, downstream consumers) can ever see it.
    """
    return partition(f"shadow/predictions/{model}", day)


def shadow_report_prefix(day: dt.date | str) -> str:
    """``compare-shadow``'s report: champion vs shadow scores of one day."""
    return partition(f"{REPORTS_ROOT}/shadow", day)


def validation_report_prefix(first_day: dt.date | str, purpose: str) -> str:
    """``validate``'s report for an interval starting on ``first_day``; ``purpose``: training or scoring."""
    return f"{partition(f'{REPORTS_ROOT}/validation', first_day)}/{purpose}"


def evaluation_report_prefix(day: dt.date | str, model: str, version: str) -> str:
    """``evaluate``'s report on one version, filed under the day the evaluation is about."""
    return f"{partition(f'{REPORTS_ROOT}/evaluation', day)}/{model}-v{version}"


def drift_report_prefix(day: dt.date | str) -> str:
    """The drift monitor's report on a scored day."""
    return partition(f"{REPORTS_ROOT}/drift", day)


def performance_report_prefix(day: dt.date | str) -> str:
    """The performance monitor's report on a labelled day."""
    return partition(f"{REPORTS_ROOT}/performance", day)


def performance_prefix(model: str) -> str:
    """One record per judged (or waiting) day of a registered model: realized metrics and verdict."""
    return f"monitoring/{model}/performance"


def performance_record_path(model: str, day: dt.date | str) -> str:
    """A day's realized-performance record (``<prefix>/ds=<day>.json``, rewritten as labels arrive)."""
    day_text = day if isinstance(day, str) else day.isoformat()
    return f"{performance_prefix(model)}/ds={day_text}.json"


def report_kind_prefix(kind: str) -> str:
    """Every day's reports of one kind (validation, evaluation, drift or performance)."""
    return f"{REPORTS_ROOT}/{kind}"


def retrains_prefix(model: str) -> str:
    """The retrain requests the drift monitor made for a model (its cooldown and budget read them)."""
    return f"monitoring/{model}/retrains"


def ledger_prefix(model: str) -> str:
    """Where a registered model's promotion ledger lives."""
    return f"{LEDGER_ROOT}/{model}"


def champion_lock_path(model: str) -> str:
    """The lease that serializes champion changes of a model."""
    return f"{LOCK_ROOT}/{model}/champion.lock"


def step_cache_record_path(step: str, key: str) -> str:
    """The record of a cacheable step's successful run with inputs ``key``: ``cache/<step>/<key>.json``."""
    return f"{CACHE_ROOT}/{step}/{key}.json"


def step_cache_reuses_prefix(step: str, key: str) -> str:
    """Where the runs that reused that record are recorded, one file each (lineage; ``trace`` reads it)."""
    return f"{CACHE_ROOT}/{step}/{key}/reused-by"


def step_cache_reuse_path(step: str, key: str, run_id: str) -> str:
    """The record that run ``run_id`` reused the outputs of ``cache/<step>/<key>.json``."""
    return f"{step_cache_reuses_prefix(step, key)}/{training_run_name(run_id)}.json"
