"""Notifications through Airflow's notifier interface, configured per pipeline (``notifications:``).

Each message is one line of summary plus the links that matter (the Airflow run, the step's report,
the MLflow run or model version). Channels name Airflow connections only; what the connection
holds (host, password, token) never enters the config, the DAG files or the message.

- ``webhook``: an HTTP connection; a JSON ``{"text": ..., "event": ..., "summary": ..., "links": ...}``
  is POSTed to its host (plus ``endpoint`` from the connection's extra), which chat tools accept.
- ``smtp``: an SMTP connection (host, port, login/password; extra ``from_email``, ``ssl``,
  ``starttls``); a plain-text mail to the channel's ``to``.
- ``slack``: the Slack provider's webhook notifier, when that provider is installed.

Every message is also written to the task log. A channel that fails is logged and never fails
the task.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

from airflow.sdk import BaseNotifier

from mlsteps.contract.config import NotificationChannel, NotificationsConfig, load_config
from step_tasks.links import RETURN_KEY, mlflow_run_url, model_version_url, report_url
from step_tasks.settings import ExecutionSettings, load_settings

log = logging.getLogger(__name__)

TITLES: dict[str, str] = {
    "gate_rejected": "Challenger rejected by the gate",
    "approval_requested": "Approval requested",
    "approved": "Promotion approved",
    "rejected": "Promotion rejected",
    "promoted": "New champion",
    "rolled_back": "Champion rolled back",
    "retrain_triggered": "Retraining triggered",
    "validation_failed": "Data validation failed",
    "scoring_failed": "Scoring failed",
}
SEND_TIMEOUT_S = 10


def airflow_run_url(dag_id: str, run_id: str) -> str:
    """The run's page in the Airflow UI (``[api] base_url``), or ``""`` when that is not set."""
    from airflow.configuration import conf

    base = str(conf.get("api", "base_url", fallback="") or "").rstrip("/")
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}" if base else ""


def result_links(result: Mapping[str, Any] | None, settings: ExecutionSettings) -> dict[str, str]:
    """Report and MLflow links of a step result (those it has)."""
    if not isinstance(result, Mapping):
        return {}
    links = {
        "report": report_url(result, settings),
        "mlflow": model_version_url(result, settings) or mlflow_run_url(result, settings),
    }
    return {name: url for name, url in links.items() if url}


def build_message(
    event: str,
    context: Mapping[str, Any],
    summary: str | None = None,
    result: Mapping[str, Any] | None = None,
    settings: ExecutionSettings | None = None,
    extra_links: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """The message of one event: ``text`` (title, summary, links), and the same parts as fields.

    ``summary`` and ``result`` default to the task's own result (its ``return_value`` XCom).
    """
    settings = settings or load_settings()
    ti = context.get("ti") or context.get("task_instance")
    dag_id = str(getattr(ti, "dag_id", "") or "")
    run_id = str(getattr(ti, "run_id", "") or "")
    task_id = str(getattr(ti, "task_id", "") or "")
    if result is None and ti is not None:
        try:
            pulled = ti.xcom_pull(task_ids=task_id, key=RETURN_KEY)
        except Exception:  # no result (a failed task) is normal
            pulled = None
        result = pulled if isinstance(pulled, Mapping) else None
    if summary is None:
        summary = str((result or {}).get("summary") or "")
        error = context.get("exception")
        if not summary and error is not None:
            summary = (
                f"{task_id} failed: {str(error).splitlines()[0] if str(error) else type(error).__name__}"
            )
    links = {"run": airflow_run_url(dag_id, run_id), **result_links(result, settings), **(extra_links or {})}
    links = {name: url for name, url in links.items() if url}
    title = TITLES.get(event, event)
    lines = [f"[{dag_id}] {title}: {summary}".rstrip(": ")]
    lines += [f"{name}: {url}" for name, url in links.items()]
    return {
        "text": "\n".join(lines),
        "event": event,
        "title": title,
        "summary": summary,
        "links": links,
        "dag_id": dag_id,
        "run_id": run_id,
        "task_id": task_id,
    }


def send(message: Mapping[str, Any], config: NotificationsConfig | None = None) -> list[str]:
    """Log the message and send it to every configured channel; return the channels that failed.

    Never raises: a channel's failure is logged (without the connection's details) and skipped.
    """
    config = config or load_config().notifications
    if message["event"] not in config.events:
        return []
    log.info("notification %s: %s", message["event"], message["text"])
    failed = []
    for channel in config.channels:
        try:
            SENDERS[channel.type](channel, message)
        except Exception as err:  # a notification must never fail the pipeline task
            # Only the error's type: its text can carry the webhook URL, whose path may be a token.
            log.warning(
                "notification %s to %s channel %s failed: %s",
                message["event"],
                channel.type,
                channel.conn_id,
                type(err).__name__,
            )
            failed.append(channel.conn_id)
    return failed


def notify_event(event: str, context: Mapping[str, Any], **message_args: Any) -> list[str]:
    """Build and send one event's message from inside a task; never raises."""
    try:
        message = build_message(event, context, **message_args)
    except Exception:
        log.exception("notification %s could not be built", event)
        return [event]
    return send(message)


def _connection(conn_id: str) -> Any:
    from airflow.sdk import BaseHook

    return BaseHook.get_connection(conn_id)


def send_webhook(channel: NotificationChannel, message: Mapping[str, Any]) -> None:
    """POST the message as JSON through the HTTP connection ``channel.conn_id``."""
    from airflow.providers.http.hooks.http import HttpHook

    endpoint = str(_connection(channel.conn_id).extra_dejson.get("endpoint", ""))
    hook = HttpHook(method="POST", http_conn_id=channel.conn_id)
    # The hook builds the session (auth, headers from the connection); the request is sent here,
    # not by ``hook.run``, which logs the URL on a connection error, and a webhook's path is
    # often its token.
    session = hook.get_conn(headers={"Content-Type": "application/json"})
    response = session.post(
        hook.url_from_endpoint(endpoint), data=json.dumps(dict(message)), timeout=SEND_TIMEOUT_S
    )
    if response.status_code >= 400:
        raise RuntimeError(f"the webhook answered HTTP {response.status_code}")


def send_smtp(channel: NotificationChannel, message: Mapping[str, Any]) -> None:
    """Mail the message through the SMTP connection ``channel.conn_id``."""
    import smtplib

    conn = _connection(channel.conn_id)
    extra = conn.extra_dejson
    mail = EmailMessage()
    mail["Subject"] = f"[{message['dag_id']}] {message['title']}"
    mail["From"] = str(extra.get("from_email") or conn.login or "airflow@localhost")
    mail["To"] = ", ".join(channel.to)
    mail.set_content(str(message["text"]) + "\n")
    smtp_class = smtplib.SMTP_SSL if _truthy(extra.get("ssl")) else smtplib.SMTP
    with smtp_class(conn.host or "localhost", int(conn.port or 25), timeout=SEND_TIMEOUT_S) as server:
        if _truthy(extra.get("starttls")):
            server.starttls()
        if conn.login:
            server.login(conn.login, conn.password or "")
        server.send_message(mail)


def send_slack(channel: NotificationChannel, message: Mapping[str, Any]) -> None:
    """Post through the Slack provider's incoming-webhook hook (the provider must be installed)."""
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook
    except ImportError as err:
        raise RuntimeError("the Slack provider (apache-airflow-providers-slack) is not installed") from err
    SlackWebhookHook(slack_webhook_conn_id=channel.conn_id).send(text=str(message["text"]))


def _truthy(value: Any) -> bool:
    return str(value).strip().lower() in ("1", "true", "yes", "on")


SENDERS: dict[str, Callable[[NotificationChannel, Mapping[str, Any]], None]] = {
    "webhook": send_webhook,
    "smtp": send_smtp,
    "slack": send_slack,
}


class PipelineNotifier(BaseNotifier):
    """Airflow's notifier for one pipeline event; use as a task callback or in HITL ``notifiers``.

    Args:
        event: One of the configured notification events.
        when: Optional predicate on the context; the message is sent only when it returns true.
        result_task: Take the summary and links from this task's result instead of the task's own.
    """

    def __init__(
        self,
        event: str,
        when: Callable[[Mapping[str, Any]], bool] | None = None,
        result_task: str | None = None,
    ) -> None:
        super().__init__()
        self.event = event
        self.when = when
        self.result_task = result_task

    def notify(self, context: Any) -> None:
        try:
            if self.when is not None and not self.when(context):
                return
        except Exception:
            log.exception("notification %s: its condition failed; not sent", self.event)
            return
        extra: dict[str, str] = {}
        task = context.get("task")
        if self.event == "approval_requested" and hasattr(task, "generate_link_to_ui_from_context"):
            try:
                extra["approve"] = task.generate_link_to_ui_from_context(context=context)
            except Exception:  # no [api] base_url: the run link still leads there
                pass
        args: dict[str, Any] = {"extra_links": extra}
        if self.event == "retrain_triggered":
            args.update(
                result={}, summary=f"retraining because: {describe_reason(context.get('params') or {})}"
            )
        elif self.result_task:
            args["result"] = task_result(context, self.result_task)
        notify_event(self.event, context, **args)


def describe_reason(params: Mapping[str, Any]) -> str:
    """Why a training run retrains, from its params (the drifted day and columns when drift asked)."""
    reason = str(params.get("reason") or "scheduled")
    if params.get("ds"):
        columns = ", ".join(params.get("drifted_columns") or []) or "no columns named"
        reason += f" (drift on {params['ds']}: {columns})"
    return reason


def task_result(context: Mapping[str, Any], task_id: str) -> dict[str, Any]:
    """Another task's step result in this run (``{}`` when it has none)."""
    ti = context.get("ti") or context.get("task_instance")
    try:
        pulled = ti.xcom_pull(task_ids=task_id, key=RETURN_KEY) if ti is not None else None
    except Exception:
        pulled = None
    return dict(pulled) if isinstance(pulled, Mapping) else {}
