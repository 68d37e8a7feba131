"""The demo's notification channel: a JSON webhook receiver on loopback, so ``make demo`` shows
what the pipeline announces without any outside service.

The pipeline config the demo uses gains one ``webhook`` channel; the Airflow connection it names
(``AIRFLOW_CONN_ML_DEMO_WEBHOOK``) points at this receiver. A config that already has channels
is left as it is: the demo then sends where the user configured.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import yaml

from mlsteps.contract.config import config_path, load_config
from mlsteps.contract.settings import CONFIG_ENV_VAR, StepSettings

CONN_ID = "ml_demo_webhook"


class DemoWebhook:
    """Every JSON message POSTed to ``http://127.0.0.1:<port>/<path>``, in arrival order."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        #: The request path of each message (a webhook connection may name an endpoint).
        self.paths: list[str] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    message = json.loads(body)
                except ValueError:
                    self.send_response(400)
                else:
                    with receiver._lock:
                        receiver.messages.append(message)
                        receiver.paths.append(self.path)
                    self.send_response(200)
                self.end_headers()

            def log_message(self, *args: Any) -> None:  # the demo prints what it received
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = int(self._server.server_address[1])

    def received(self) -> list[dict[str, Any]]:
        with self._lock:
            return list(self.messages)

    def events(self) -> list[str]:
        """The ``event`` of each message, in arrival order."""
        return [str(message.get("event")) for message in self.received()]

    def start(self) -> None:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@contextmanager
def demo_webhook() -> Iterator[DemoWebhook]:
    """A running receiver, shut down on exit."""
    webhook = DemoWebhook()
    webhook.start()
    try:
        yield webhook
    finally:
        webhook.stop()


def notifying_env(env: dict[str, str], port: int, directory: Path) -> dict[str, str]:
    """``env`` plus a config with the receiver as its channel and the connection that names it.

    Returns ``env`` unchanged when the config in use already has notification channels.
    """
    source = config_path(StepSettings.from_env(env))
    if load_config(source).notifications.channels:
        return env
    document = yaml.safe_load(source.read_text())
    document.setdefault("notifications", {})["channels"] = [{"type": "webhook", "conn_id": CONN_ID}]
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pipeline-demo.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    connection = {"conn_type": "http", "host": "127.0.0.1", "port": port}
    return {**env, CONFIG_ENV_VAR: str(path), f"AIRFLOW_CONN_{CONN_ID.upper()}": json.dumps(connection)}
