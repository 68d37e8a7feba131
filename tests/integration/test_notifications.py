"""Notifications from real ml_training runs (``dag.test()``) to a real SMTP server and a real webhook.

An ``aiosmtpd`` SMTP server and a JSON receiver (the demo's, ``repotools.demo_webhook``) listen on
loopback; the pipeline config names them only by Airflow connection id, and the connections
(``AIRFLOW_CONN_*``) hold host and port. A third channel points at a closed port: its failure is
logged and fails no task.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from email import message_from_bytes
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from repotools.demo_webhook import DemoWebhook, demo_webhook

from mlsteps.contract.config import DEFAULT_CONFIG_PATH
from tests.integration.conftest import Pipeline, task_states
from tests.support.services import free_port

pytestmark = pytest.mark.slow

RUN_AT = dt.datetime(2026, 11, 5, 3, tzinfo=dt.UTC)
AIRFLOW_UI = "http://airflow.example:8080"
MLFLOW_UI = "http://mlflow.example:5000"
DRIFT_CONF = {
    "training_window_days": 10,
    "reason": "drift",
    "ds": "2026-11-04",
    "drifted_columns": ["amount"],
    "min_roc_auc": 0.5,
}


@pytest.fixture(scope="module")
def webhook() -> Iterator[DemoWebhook]:
    with demo_webhook() as hook:
        yield hook


class Mailbox:
    """A real SMTP server (aiosmtpd) on loopback: every mail it accepted."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.mails: list[Any] = []
        mails = self.mails

        class Handler:
            async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
                mails.append(message_from_bytes(envelope.content))
                return "250 OK"

        self.port = free_port()
        self.controller = Controller(Handler(), hostname="127.0.0.1", port=self.port)


@pytest.fixture(scope="module")
def mailbox() -> Iterator[Mailbox]:
    box = Mailbox()
    box.controller.start()
    try:
        yield box
    finally:
        box.controller.stop()


@pytest.fixture(scope="module")
def notifying(
    webhook: DemoWebhook, mailbox: Mailbox, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """A config with three channels, and the connections they name (credentials only there)."""
    config = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    config["gates"]["min_pr_auc"] = 0.0  # tiny data: the run must promote
    config["notifications"] = {
        "channels": [
            {"type": "webhook", "conn_id": "ml_webhook"},
            {"type": "smtp", "conn_id": "ml_smtp", "to": ["ml-team@example.com"]},
            {"type": "webhook", "conn_id": "ml_webhook_down"},
        ]
    }
    path = tmp_path_factory.mktemp("notify") / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config))
    hook = {"conn_type": "http", "host": "127.0.0.1", "port": webhook.port, "extra": {"endpoint": "hook"}}
    return {
        "ML_PIPELINE_CONFIG": str(path),
        "AIRFLOW__API__BASE_URL": AIRFLOW_UI,
        "ML_MLFLOW_UI_URL": MLFLOW_UI,
        "AIRFLOW_CONN_ML_WEBHOOK": json.dumps(hook),
        "AIRFLOW_CONN_ML_SMTP": json.dumps({"conn_type": "smtp", "host": "127.0.0.1", "port": mailbox.port}),
        "AIRFLOW_CONN_ML_WEBHOOK_DOWN": json.dumps(
            {"conn_type": "http", "host": "127.0.0.1", "port": free_port()}
        ),
    }


@pytest.fixture(scope="module")
def drift_run(pipeline: Pipeline, notifying: dict[str, str]) -> Any:
    """Tiny history, then one drift-triggered training run that promotes."""
    generated = pipeline.step(
        "generate-data",
        "--start",
        "2026-09-25",
        "--days",
        "42",
        "--rows-per-day",
        "600",
        "--customers",
        "300",
    )
    assert generated.returncode == 0, generated.stderr
    return pipeline.run("ml_training", RUN_AT, DRIFT_CONF, **notifying)


def test_a_failing_channel_fails_no_task(drift_run: Any) -> None:
    states = task_states(drift_run)
    assert str(drift_run.state) == "success", states
    assert states["promote"] == "success"


def test_the_webhook_hears_the_drift_retrain_and_the_promotion(drift_run: Any, webhook: DemoWebhook) -> None:
    assert webhook.events() == ["retrain_triggered", "promoted"]
    assert set(webhook.paths) == {"/hook"}


def test_a_message_carries_the_summary_and_links(drift_run: Any, webhook: DemoWebhook) -> None:
    promoted = next(m for m in webhook.received() if m["event"] == "promoted")
    assert "champion is now version" in promoted["summary"]
    assert (
        promoted["links"]["run"] == f"{AIRFLOW_UI}/dags/ml_training/runs/{quote(drift_run.run_id, safe='')}"
    )
    assert promoted["links"]["mlflow"].startswith(f"{MLFLOW_UI}/#/models/")
    assert promoted["summary"] in promoted["text"]
    assert promoted["links"]["run"] in promoted["text"]


def test_the_mail_arrives_by_smtp(drift_run: Any, mailbox: Mailbox) -> None:
    subjects = [mail["Subject"] for mail in mailbox.mails]
    assert subjects == ["[ml_training] Retraining triggered", "[ml_training] New champion"]
    assert mailbox.mails[1]["To"] == "ml-team@example.com"
    assert "champion is now version" in mailbox.mails[1].get_payload()


def test_no_connection_detail_is_in_a_message(drift_run: Any, webhook: DemoWebhook, mailbox: Mailbox) -> None:
    everything = json.dumps(webhook.received()) + "".join(str(mail) for mail in mailbox.mails)
    assert "127.0.0.1" not in everything


def test_a_gate_rejection_is_announced_with_the_report_link(
    pipeline: Pipeline, drift_run: Any, notifying: dict[str, str], webhook: DemoWebhook
) -> None:
    conf = {"training_window_days": 10, "reason": "manual", "min_roc_auc": 0.9999}

    run = pipeline.run("ml_training", RUN_AT + dt.timedelta(days=1), conf, **notifying)

    assert str(run.state) == "success"
    rejected = [m for m in webhook.received() if m["event"] == "gate_rejected"]
    assert len(rejected) == 1
    assert "rejected (" in rejected[0]["summary"]
    assert rejected[0]["links"]["report"].endswith(".html")
    assert task_states(run)["promote"] == "skipped"


def test_a_scoring_day_without_data_is_announced_as_failed(
    pipeline: Pipeline, drift_run: Any, notifying: dict[str, str], webhook: DemoWebhook
) -> None:
    empty_day = dt.datetime(2026, 12, 20, 2, tzinfo=dt.UTC)  # ds 2026-12-19: no raw events

    run = pipeline.run("ml_batch_scoring", empty_day, {}, **notifying)

    assert str(run.state) == "failed"
    failed = [m for m in webhook.received() if m["event"] == "scoring_failed"]
    assert [m["task_id"] for m in failed] == ["validate"]
    assert "no data landed" in failed[0]["summary"]  # the step's own reason
    assert failed[0]["links"]["run"].startswith(f"{AIRFLOW_UI}/dags/ml_batch_scoring/runs/")
