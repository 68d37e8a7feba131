"""Airflow plugin ``ml_ui``: serves the lake's HTML reports in the Airflow UI and links MLflow.

- ``/ml-reports/`` on the API server lists the reports in the lake (``$ML_LAKE_URI``) by kind,
  newest day first; ``/ml-reports/reports/...`` serves one. Signed-in Airflow users only. Only
  ``.html`` and ``.json`` files under ``reports/`` are served, and each page is sandboxed (a
  report's scripts cannot act as the Airflow user).
- The navigation bar gets "ML reports" and, when an MLflow UI URL is known (``ML_MLFLOW_UI_URL``,
  or an HTTP ``MLFLOW_TRACKING_URI``), "MLflow".

The task links that point here are built by ``step_tasks.links``. Every Airflow process loads
plugins, so this module imports little: FastAPI and boto3 load on the first request. The pages
read the lake through :class:`ReportStore` (the local filesystem, or S3 through boto3, which the
amazon provider brings), not through ``mlsteps.platform.lake``, so the lean Airflow image, where mlsteps
is installed without its dependencies, needs no pyarrow.
"""

from __future__ import annotations

import html
import logging
import os
import posixpath
from functools import cache, lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from airflow.plugins_manager import AirflowPlugin

from step_tasks.settings import REPORTS_ROUTE, SettingsError, load_settings

log = logging.getLogger(__name__)

REPORTS_DIR = "reports"
SERVED_TYPES = {".html": "text/html; charset=utf-8", ".json": "application/json"}
#: A report is a document to read: its scripts run in an opaque origin, with no Airflow cookies.
SANDBOX = "sandbox allow-scripts allow-popups allow-popups-to-escape-sandbox"


def report_path(requested: str) -> str | None:
    """The lake-relative path to serve for a request path, or ``None`` when it is not a report."""
    if "\\" in requested or "\x00" in requested:
        return None
    normalized = posixpath.normpath("/" + requested).lstrip("/")
    if normalized != requested.strip("/") or not normalized.startswith(f"{REPORTS_DIR}/"):
        return None
    if posixpath.splitext(normalized)[1] not in SERVED_TYPES:
        return None
    return normalized


class ReportStore:
    """Read-only access to the lake's files for the report pages: a local directory or S3.

    The lake URI is resolved as ``mlsteps.platform.lake`` resolves it (``$ML_LAKE_URI``, a path or
    ``s3://bucket/prefix``; S3 honours the standard AWS variables, ``AWS_ENDPOINT_URL`` included).
    """

    def __init__(self, uri: str) -> None:
        self.uri = uri.rstrip("/")
        parsed = urlparse(self.uri)
        self._s3: Any = None
        if parsed.scheme == "s3":
            import boto3

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL") or None
            region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
            self._s3 = boto3.client("s3", endpoint_url=endpoint, region_name=region)
            self._bucket = parsed.netloc
            self._prefix = parsed.path.strip("/")
        elif parsed.scheme in ("", "file"):
            self._root = Path(parsed.path if parsed.scheme == "file" else self.uri).expanduser().resolve()
        else:
            raise ValueError(
                f"lake URI {uri!r} has unsupported scheme {parsed.scheme!r}; use a path or s3://"
            )

    def _key(self, relative: str) -> str:
        return "/".join(part for part in (self._prefix, relative.strip("/")) if part)

    def _local(self, relative: str) -> Path | None:
        """The local file or directory of ``relative``; None if it would leave the lake (a symlink)."""
        path = (self._root / relative.strip("/")).resolve()
        return path if path == self._root or self._root in path.parents else None

    def list_dir(self, relative: str) -> list[str]:
        """Names directly under a lake-relative directory, sorted; empty if it does not exist."""
        if self._s3 is None:
            directory = self._local(relative)
            return sorted(p.name for p in directory.iterdir()) if directory and directory.is_dir() else []
        prefix = self._key(relative) + "/"
        names: set[str] = set()
        pages = self._s3.get_paginator("list_objects_v2").paginate(
            Bucket=self._bucket, Prefix=prefix, Delimiter="/"
        )
        for page in pages:
            names.update(
                entry["Prefix"][len(prefix) :].rstrip("/") for entry in page.get("CommonPrefixes", [])
            )
            names.update(entry["Key"][len(prefix) :] for entry in page.get("Contents", []))
        return sorted(name for name in names if name)

    def exists(self, relative: str) -> bool:
        """Whether a lake-relative file exists."""
        if self._s3 is None:
            path = self._local(relative)
            return bool(path and path.is_file())
        from botocore.exceptions import ClientError

        try:
            self._s3.head_object(Bucket=self._bucket, Key=self._key(relative))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        return True

    def read_bytes(self, relative: str) -> bytes:
        if self._s3 is None:
            path = self._local(relative)
            if path is None:
                raise FileNotFoundError(relative)
            return path.read_bytes()
        return bytes(self._s3.get_object(Bucket=self._bucket, Key=self._key(relative))["Body"].read())


@lru_cache(maxsize=4)
def report_store(uri: str) -> ReportStore:
    return ReportStore(uri)


def _lake_store() -> ReportStore:
    """The store of the lake the steps write to (``$ML_LAKE_URI``, read per request)."""
    from mlsteps.contract.settings import StepSettings

    return report_store(StepSettings.from_env().lake())


def list_reports(lake: Any, limit: int = 500) -> list[str]:
    """Report files under ``reports/<kind>/ds=<day>/...``, by kind, newest day first, at most ``limit``."""
    found: list[str] = []

    def walk(prefix: str, depth: int) -> None:
        for name in sorted(lake.list_dir(prefix), reverse=True):
            path = f"{prefix}/{name}"
            extension = posixpath.splitext(name)[1]
            if extension == ".html":
                found.append(path)
            elif not extension and depth < 4:
                walk(path, depth + 1)
            if len(found) >= limit:
                return

    walk(REPORTS_DIR, 0)
    return found


def _index(paths: list[str]) -> str:
    links = (f'<a href="{html.escape(f"{REPORTS_ROUTE}/{path}")}">{html.escape(path)}</a>' for path in paths)
    rows = "".join(f"<li>{link}</li>" for link in links)
    body = f"<ul>{rows}</ul>" if rows else "<p>No reports yet: run a DAG first.</p>"
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'><title>ML reports</title></head>"
        "<body style='font-family:system-ui,sans-serif;margin:2rem'><h1>ML reports</h1>"
        f"<p>Validation, evaluation and drift reports in the lake, newest day first.</p>{body}</body></html>"
    )


@cache
def _app() -> Any:
    from airflow.api_fastapi.core_api.security import requires_authenticated
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response

    app = FastAPI(title="ML reports", dependencies=[Depends(requires_authenticated())])
    headers = {"Content-Security-Policy": SANDBOX, "X-Content-Type-Options": "nosniff"}

    @app.get("/", response_class=HTMLResponse)
    def index() -> HTMLResponse:
        return HTMLResponse(_index(list_reports(_lake_store())), headers=headers)

    @app.get("/{requested:path}")
    def report(requested: str) -> Response:
        path = report_path(requested)
        lake = _lake_store()
        if path is None or not lake.exists(path):
            raise HTTPException(status_code=404, detail=f"no report at {requested}")
        media_type = SERVED_TYPES[posixpath.splitext(path)[1]]
        return Response(lake.read_bytes(path), media_type=media_type, headers=headers)

    return app


class _LazyApp:
    """An ASGI app that builds the FastAPI app on its first request."""

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await _app()(scope, receive, send)


def _external_views() -> list[dict[str, Any]]:
    views: list[dict[str, Any]] = [{"name": "ML reports", "href": f"{REPORTS_ROUTE}/", "category": "browse"}]
    try:
        mlflow_ui = load_settings().mlflow_ui_url
    except SettingsError as err:  # the API server need not hold the workers' settings
        log.warning("ml_ui: no MLflow link in the navigation bar: %s", err)
        mlflow_ui = ""
    if mlflow_ui:
        views.append({"name": "MLflow", "href": mlflow_ui, "category": "browse"})
    return [{**view, "destination": "nav"} for view in views]


class MlUiPlugin(AirflowPlugin):
    """Report pages on the API server and MLflow in the navigation bar."""

    name = "ml_ui"
    fastapi_apps = [{"app": _LazyApp(), "url_prefix": REPORTS_ROUTE, "name": "ML reports"}]
    external_views = _external_views()
