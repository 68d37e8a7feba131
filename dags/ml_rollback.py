"""
# ml_rollback

Moves the MLflow alias `champion` back to a version that was champion before, and records the
rollback in the promotion ledger. Trigger it by hand when a new champion misbehaves.

- `version`: a model version number, or `previous` for the version the current champion replaced.
- A version that was never promoted by this pipeline is refused: rollback only returns to a
  model that once passed the evaluation gate.

Nightly scoring picks up the new champion on its next run; nothing else needs to change.

A `rolled_back` notification goes to the pipeline's channels (config `notifications:`).
"""

from __future__ import annotations

from airflow.sdk import Param, dag

from mlsteps.contract.config import load_config
from step_tasks import dag_default_args, step_task
from step_tasks.notify import PipelineNotifier
from step_tasks.params import reason_param

CONFIG = load_config()


@dag(
    dag_id="ml_rollback",
    doc_md=__doc__,
    schedule=None,
    catchup=False,
    max_active_runs=1,
    tags=["ml", "registry", CONFIG.name],
    default_args=dag_default_args(),
    params={
        "version": Param(
            "previous",
            type="string",
            pattern=r"^([1-9][0-9]{0,8}|previous)$(?!\n)",
            maxLength=9,
            title="Version to restore",
            description="A model version number that was champion before, or 'previous'.",
        ),
        "reason": reason_param("manual rollback", "Why you roll back; recorded in the promotion ledger."),
    },
)
def ml_rollback() -> None:
    step_task(
        "rollback",
        options={"--version": "{{ params.version }}", "--reason": "{{ params.reason }}"},
        doc_md=f"Move `champion` of `{CONFIG.model.registered_name}` back and ledger it.",
        on_success_callback=PipelineNotifier("rolled_back"),
    )


ml_rollback()
