"""The demo's notification channel: the pipeline's own notifier, through a real HTTP connection, to
the receiver ``make demo`` runs on loopback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from repotools.demo_webhook import CONN_ID, demo_webhook, notifying_env

from mlsteps.contract.config import DEFAULT_CONFIG_PATH, load_config
from mlsteps.contract.settings import CONFIG_ENV_VAR
from step_tasks.notify import send

MESSAGE = {"event": "promoted", "title": "New champion", "text": "[ml_training] New champion: version 3"}


def test_the_demo_config_gains_one_webhook_channel(tmp_path: Path) -> None:
    env = notifying_env({}, 8765, tmp_path)

    channels = load_config(env[CONFIG_ENV_VAR]).notifications.channels

    assert [(channel.type, channel.conn_id) for channel in channels] == [("webhook", CONN_ID)]


def test_the_connection_points_at_the_receiver_on_loopback(tmp_path: Path) -> None:
    env = notifying_env({}, 8765, tmp_path)

    connection = json.loads(env[f"AIRFLOW_CONN_{CONN_ID.upper()}"])

    assert (connection["host"], connection["port"]) == ("127.0.0.1", 8765)


def test_the_demo_config_differs_from_the_source_only_in_its_channels(tmp_path: Path) -> None:
    env = notifying_env({}, 8765, tmp_path)

    demo = load_config(env[CONFIG_ENV_VAR]).model_dump(exclude={"notifications"})

    assert demo == load_config(DEFAULT_CONFIG_PATH).model_dump(exclude={"notifications"})


def test_a_config_with_its_own_channels_is_left_alone(tmp_path: Path) -> None:
    document = yaml.safe_load(DEFAULT_CONFIG_PATH.read_text())
    document["notifications"] = {"channels": [{"type": "webhook", "conn_id": "team_hook"}]}
    own = tmp_path / "own.yaml"
    own.write_text(yaml.safe_dump(document))

    assert notifying_env({CONFIG_ENV_VAR: str(own)}, 8765, tmp_path / "demo") == {CONFIG_ENV_VAR: str(own)}


def test_a_message_sent_by_the_notifier_reaches_the_receiver(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with demo_webhook() as webhook:
        for key, value in notifying_env({}, webhook.port, tmp_path).items():
            monkeypatch.setenv(key, value)

        failed = send(MESSAGE, load_config().notifications)

        assert (failed, webhook.received()) == ([], [MESSAGE])
