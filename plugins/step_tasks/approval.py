"""The human approval of a promotion: Airflow's own ``HITLBranchOperator``, Approve or Reject.

The form (the task's *Required actions* in the Airflow UI, or ``PATCH .../hitlDetails`` in the
REST API) shows the evaluation's one-line summary, champion and challenger with their key holdout
metrics, why the run retrained, and the links to the evaluation report and MLflow. It has one
field, ``comment``. *Approve* branches to the promote task, *Reject* to the task recording the
rejection; no answer within the timeout takes the configured default (recorded as such).

The decision is pushed as the ``decision`` XCom (``decision``, ``by``, ``at``, ``comment``,
``timed_out``), which the next step receives as separate argv elements.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param

from step_tasks.links import mlflow_run_url, model_version_url, report_url
from step_tasks.notify import PipelineNotifier, describe_reason, notify_event
from step_tasks.settings import ExecutionSettings, load_settings

APPROVE = "Approve"
REJECT = "Reject"
DECISION_KEY = "decision"
KEY_METRICS = ("roc_auc", "pr_auc", "log_loss", "brier")
MAX_COMMENT = 2000


def approval_body(
    evaluation: Mapping[str, Any], params: Mapping[str, Any], settings: ExecutionSettings
) -> str:
    """The form's Markdown: summary, champion vs challenger, retrain reason, links."""
    metrics = evaluation.get("metrics") or {}
    challenger, champion = metrics.get("challenger") or {}, metrics.get("champion") or {}
    champion_version = evaluation.get("champion_version")
    lines = [
        f"**{evaluation.get('summary') or 'No evaluation summary.'}**",
        "",
        "| model | version | " + " | ".join(KEY_METRICS) + " |",
        "|---|---|" + "---|" * len(KEY_METRICS),
        _row("challenger", evaluation.get("model_version"), challenger),
        _row("champion", champion_version, champion) if champion_version else "| champion | none |",
        "",
        f"**Why this run retrained:** {describe_reason(params)}",
        "",
    ]
    links = {
        "Evaluation report": report_url(evaluation, settings),
        "Challenger in MLflow": model_version_url(evaluation, settings),
        "Evaluation run in MLflow": mlflow_run_url(evaluation, settings),
    }
    lines += [f"- [{name}]({url})" for name, url in links.items() if url]
    if not any(links.values()):
        lines.append("(no report link: `ML_REPORTS_URL`/`ML_MLFLOW_UI_URL` are not set)")
    return "\n".join(lines)


def _row(role: str, version: Any, metrics: Mapping[str, Any]) -> str:
    values = [_number(metrics.get(name)) for name in KEY_METRICS]
    return f"| {role} | {version} | " + " | ".join(values) + " |"


def _number(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, int | float) else "-"


class PromotionApproval(HITLBranchOperator):
    """Approve or reject promoting the challenger `evaluate` approved.

    Args:
        promote_task: The task *Approve* leads to.
        reject_task: The task *Reject* (or a timeout taken as reject) leads to.
        evaluate_task: The task whose result the form shows.
        response_timeout: How long to wait for an answer.
        on_timeout: ``reject`` or ``approve``: the answer taken when nobody responds in time.
    """

    def __init__(
        self,
        *,
        promote_task: str,
        reject_task: str,
        evaluate_task: str,
        response_timeout: dt.timedelta,
        on_timeout: str = "reject",
        **kwargs: Any,
    ) -> None:
        if on_timeout not in ("reject", "approve"):
            raise ValueError(f"on_timeout must be reject or approve, not {on_timeout!r}")
        self.evaluate_task = evaluate_task
        kwargs.setdefault("subject", "Promote the challenger?")
        # The DAG's params arrive here too; the form has only its own field.
        kwargs.pop("params", None)
        comment = Param(
            "",
            type="string",
            maxLength=MAX_COMMENT,
            title="Comment",
            description="Why (recorded in the promotion ledger and on the model version).",
            source="task",
        )
        super().__init__(
            options=[APPROVE, REJECT],
            options_mapping={APPROVE: promote_task, REJECT: reject_task},
            defaults=[APPROVE if on_timeout == "approve" else REJECT],
            multiple=False,
            params={"comment": comment},
            response_timeout=response_timeout,
            notifiers=[PipelineNotifier("approval_requested", result_task=evaluate_task)],
            **kwargs,
        )

    def execute(self, context: Any) -> Any:
        evaluation = context["ti"].xcom_pull(task_ids=self.evaluate_task) or {}
        version = evaluation.get("model_version", "?")
        self.subject = f"Promote {evaluation.get('model_name', 'the model')} version {version}?"
        self.body = approval_body(evaluation, run_params(context), load_settings())
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        if "error" not in event:
            decision = decision_from_event(event)
            context["ti"].xcom_push(key=DECISION_KEY, value=decision)
            how = "no answer in time" if decision["timed_out"] else f"by {decision['by']}"
            word = "approved" if decision["decision"] == "approved" else "rejected"
            evaluation = context["ti"].xcom_pull(task_ids=self.evaluate_task) or {}
            model = f"{evaluation.get('model_name', 'model')} version {evaluation.get('model_version')}"
            summary = f"{model} {word} {how}"
            if decision["comment"]:
                summary += f": {decision['comment'][:200]}"
            notify_event(word, context, summary=summary, result=evaluation)
        return super().execute_complete(context, event)


def run_params(context: Any) -> dict[str, Any]:
    """The run's DAG params (defaults, then the run's conf): the form's task has only ``comment``."""
    params: dict[str, Any] = {}
    dag = context.get("dag")
    if dag is not None:
        params.update(dag.params.dump())
    dag_run = context.get("dag_run")
    params.update(getattr(dag_run, "conf", None) or {})
    return params


def decision_from_event(event: Mapping[str, Any]) -> dict[str, Any]:
    """The decision the next step records, from a HITL response (a person's, or the timeout default)."""
    chosen = list(event.get("chosen_options") or [])
    user = event.get("responded_by_user") or {}
    by = str(user.get("name") or user.get("id") or "") if isinstance(user, Mapping) else ""
    at = event.get("responded_at")
    params_input = event.get("params_input") or {}
    return {
        "decision": "approved" if chosen == [APPROVE] else "rejected",
        "by": by,
        "at": at.isoformat() if isinstance(at, dt.datetime) else str(at or ""),
        "comment": str(params_input.get("comment") or "")[:MAX_COMMENT],
        "timed_out": bool(event.get("timedout")) or not by,
    }
