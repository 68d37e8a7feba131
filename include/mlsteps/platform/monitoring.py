"""MLflow monitoring runs: one run per monitor, day, model version and DAG run, in one experiment.

A retried or cleared monitor task finds the run its earlier attempt logged (same monitor, day,
version and DAG run) and updates it instead of adding a duplicate. Runs without a DAG run id
(manual runs) always get a new run.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlflow import MlflowClient

    from mlsteps.contract.config import PipelineConfig
    from mlsteps.reports.html import Report

#: Tags that identify a monitoring run, besides the DAG run.
IDENTITY = ("monitor", "ds", "model_version")


def monitoring_experiment(config: PipelineConfig) -> str:
    """The MLflow experiment every monitor logs to."""
    return f"{config.model.experiment}-monitoring"


def experiment_id(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it; a concurrent creation is fine."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is not None:
        return str(found.experiment_id)
    try:
        return str(client.create_experiment(name))
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return str(found.experiment_id)


def find_or_create_run(client: MlflowClient, experiment: str, tags: Mapping[str, str]) -> tuple[str, bool]:
    """The run an earlier attempt of this DAG run logged for the same identity, else a new run.

    Returns:
        The run id, and whether the run is new.
    """
    keys = (*IDENTITY, "dag_run")
    if tags.get("dag_run") and all("'" not in tags[key] for key in keys):
        query = " and ".join(f"tags.{key} = '{tags[key]}'" for key in keys)
        for earlier in client.search_runs([experiment], filter_string=query, max_results=1):
            for key, value in tags.items():
                client.set_tag(earlier.info.run_id, key, value)
            return str(earlier.info.run_id), False
    run = client.create_run(experiment, run_name=f"{tags['monitor']}-{tags['ds']}", tags=dict(tags))
    return str(run.info.run_id), True


def log_monitoring_run(
    config: PipelineConfig,
    tags: Mapping[str, str],
    metrics: Mapping[str, float],
    params: Mapping[str, str],
    report: Report,
    document: dict[str, Any],
) -> tuple[str, str]:
    """Log one monitor's figures, tags and report files as the day's run.

    Args:
        config: The pipeline config (names the experiment).
        tags: At least ``monitor``, ``ds``, ``model_version`` and ``dag_run``.
        metrics: The figures to log.
        params: Logged once (MLflow params are write-once): a run found again gets only those it
            lacks, which an attempt killed between creating the run and logging leaves out.
        report: Saved as ``report.html`` under ``<monitor>/ds=<ds>``.
        document: Saved as ``report.json`` beside it.

    Returns:
        The run id and its experiment id.
    """
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param

    client = MlflowClient()
    experiment = experiment_id(client, monitoring_experiment(config))
    run_id, new = find_or_create_run(client, experiment, tags)
    try:
        now = int(time.time() * 1000)
        logged = [Metric(key, value, now, 0) for key, value in metrics.items()]
        present = {} if new else client.get_run(run_id).data.params
        logged_params = [Param(key, value) for key, value in params.items() if key not in present]
        for start in range(0, max(len(logged), 1), 1000):
            client.log_batch(
                run_id, metrics=logged[start : start + 1000], params=logged_params if not start else []
            )
        with tempfile.TemporaryDirectory() as directory:
            Path(directory, "report.html").write_text(report.render())
            Path(directory, "report.json").write_text(json.dumps(document, indent=2, default=str))
            client.log_artifacts(run_id, directory, artifact_path=f"{tags['monitor']}/ds={tags['ds']}")
    except Exception:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)
    return run_id, experiment
