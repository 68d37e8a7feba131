"""moto's S3 API with each write atomic, as S3's are: ``python tests/support/s3_api.py HOST PORT``.

moto (5.x) answers a conditional PUT (``If-None-Match: *``) by looking the key up and then
writing it: two steps, no lock, on a threaded server, so two racing writers can both pass the
check. S3 makes a conditional write atomic, and the lake's locks rely on that
(``mlsteps.platform.objects.s3_create_exclusive``); on moto's own server the concurrent-promotion
fault test saw two promotions hold the champion lock at once. This server is moto's
(``moto.server``'s app and request handler) with every request that writes (PUT, POST, DELETE)
taken one at a time; reads stay concurrent.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterable
from typing import Any

WRITES = frozenset({"PUT", "POST", "DELETE"})

WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialized_writes(app: WsgiApp) -> WsgiApp:
    """``app`` with one write at a time: each is answered in full (body read, response built and
    drained) while it holds the lock."""
    lock = threading.Lock()

    def serve(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ["REQUEST_METHOD"] not in WRITES:
            return app(environ, start_response)
        with lock:
            return list(app(environ, start_response))

    return serve


def main(host: str, port: int) -> None:
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication,
        MotoRequestHandler,
        create_backend_app,
    )
    from werkzeug.serving import run_simple

    os.environ.setdefault("MOTO_PORT", str(port))  # as moto.server sets it: presigned URLs name it
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(host, port, serialized_writes(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]))
