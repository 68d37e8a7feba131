"""Secrets: canary credentials in the environment and in Airflow connections never land anywhere visible.

Not in rendered templates or pod specs, task logs, XCom, the Airflow metadata DB, step output,
lake reports or MLflow params, tags and artifacts. Real runs produce the artifacts; then every
one of them is searched for the canary. A non-secret marker that the same runs do record proves
that the search looks where the data lands.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes.client import ApiClient
from repotools.demo_webhook import DemoWebhook, demo_webhook

from step_tasks.settings import SettingsError, load_settings
from tests.faults.test_hostile_params import defaults, render_argv, step_tasks, template_context
from tests.support.airflow import load_dagbag
from tests.support.services import free_port

CANARY = "canary-5e1f0c9a-do-not-leak"
#: Recorded on purpose (the DAG run id / reason): where it shows up, a leaked canary would too.
MARKER = "marker-7b3d2e"


def secret_env(tracking_uri: str | None = None) -> dict[str, str]:
    """Credentials as a worker holds them: env variables, an Airflow connection, a URL's userinfo."""
    env = {
        "AWS_SECRET_ACCESS_KEY": CANARY,
        "MLFLOW_TRACKING_USERNAME": "ml-user",
        "MLFLOW_TRACKING_PASSWORD": CANARY,
        "AIRFLOW_CONN_ML_S3": json.dumps(
            {"conn_type": "aws", "login": "AKIAEXAMPLE", "password": CANARY, "extra": {"token": CANARY}}
        ),
        "AIRFLOW_CONN_ML_POSTGRES": f"postgresql://mlflow:{CANARY}@db.example.com:5432/mlflow",
        "AIRFLOW_VAR_ML_API_TOKEN": CANARY,
    }
    if tracking_uri:  # a password in the tracking URL's userinfo, as MLflow allows
        scheme, rest = tracking_uri.split("://", 1)
        env["MLFLOW_TRACKING_URI"] = f"{scheme}://ml-user:{CANARY}@{rest}"
    return env


def files_containing(root: Path, needle: str) -> list[Path]:
    data = needle.encode()
    return [path for path in root.rglob("*") if path.is_file() and data in path.read_bytes()]


# --- rendered templates and pod specs -------------------------------------------------------------


@pytest.mark.parametrize("mode", ["local", "kubernetes"])
def test_rendered_tasks_of_every_dag_hold_no_secret(monkeypatch: pytest.MonkeyPatch, mode: str) -> None:
    bag = load_dagbag(monkeypatch, mode, **secret_env())
    assert bag.import_errors == {}
    rendered = 0
    for dag in bag.dags.values():
        context = template_context(dag, defaults(dag))
        for task in step_tasks(dag):
            argv = render_argv(task, context, mode)
            assert CANARY not in json.dumps(argv), (dag.dag_id, task.task_id)
            if mode == "kubernetes":
                pod = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
                assert CANARY not in json.dumps(pod), (dag.dag_id, task.task_id)
            else:
                assert CANARY not in json.dumps(task.env), (dag.dag_id, task.task_id)
            rendered += 1
    assert rendered >= 14


def test_a_password_in_a_forwarded_url_is_refused_in_both_modes() -> None:
    """Forwarded values are stored with every task (serialized DAG, pod env): no URL password there."""
    for mode in ("local", "kubernetes"):
        for name in ("MLFLOW_TRACKING_URI", "AWS_ENDPOINT_URL", "ML_LAKE_URI", "ML_FEAST_REGISTRY_URI"):
            env = {"ML_EXECUTION_MODE": mode, name: f"https://ml-user:{CANARY}@host.example.com/x"}
            with pytest.raises(SettingsError, match=f"{name} holds a password") as refused:
                load_settings(env)
            assert CANARY not in str(refused.value)
    ok = load_settings(
        {"ML_EXECUTION_MODE": "kubernetes", "MLFLOW_TRACKING_URI": "https://u@host.example.com"}
    )
    assert ok.step_env["MLFLOW_TRACKING_URI"] == "https://u@host.example.com"


def test_dag_parsing_names_the_variable_and_not_its_password(monkeypatch: pytest.MonkeyPatch) -> None:
    bag = load_dagbag(monkeypatch, "local", MLFLOW_TRACKING_URI=f"http://ml-user:{CANARY}@127.0.0.1:5000")
    message = " ".join(str(error) for error in bag.import_errors.values())
    assert "MLFLOW_TRACKING_URI holds a password in its URL" in message
    assert CANARY not in message


# --- real step runs: reports, results, MLflow -----------------------------------------------------


def run_step(argv: list[str], env: dict[str, str], result: Path) -> subprocess.CompletedProcess:
    import os

    process = subprocess.run(
        [sys.executable, "-m", "mlsteps", *argv, "--run-id", f"manual__{MARKER}"],
        capture_output=True,
        text=True,
        env={**os.environ, **env, "ML_STEP_RESULT": str(result)},
        timeout=600,
        check=False,
    )
    assert process.returncode == 0, process.stderr[-3000:]
    return process


def mlflow_texts(tracking_uri: str, model: str, directory: Path) -> tuple[str, Path]:
    """Every param, tag and metric name of the model's runs, its version and model tags; and its artifacts."""
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    client = MlflowClient(tracking_uri)
    versions = client.search_model_versions(f"name='{model}'")
    texts: list[Any] = [client.get_registered_model(model).tags]
    artifacts = directory / "artifacts"
    for version in versions:
        texts.append(version.tags)
        run = client.get_run(version.run_id)
        texts += [run.data.params, run.data.tags, sorted(run.data.metrics)]
        download_artifacts(
            run_id=version.run_id, dst_path=str(artifacts / version.run_id), tracking_uri=tracking_uri
        )
    return json.dumps(texts, default=str), artifacts


@pytest.mark.faults
def test_step_runs_leave_no_secret_in_outputs_reports_or_mlflow(
    mlflow_tracking: Any, s3_lake: str, tmp_path: Path
) -> None:
    """validate, train, evaluate, promote and score, with credentials in their environment."""
    from mlsteps.platform.lake import Lake
    from tests.steps.training_fixtures import build_features, build_snapshot, unique_model_name, write_config

    model = unique_model_name("secrets")
    env = {
        **secret_env(mlflow_tracking.tracking_uri),
        "ML_PIPELINE_CONFIG": write_config(tmp_path, model),
        "ML_LAKE_URI": s3_lake,
    }
    frame = build_features(days=6, rows_per_day=800)
    build_snapshot(s3_lake, "r1", frame=frame)
    day = frame["event_time"].max().date()
    outputs = tmp_path / "outputs"
    outputs.mkdir()

    processes = [
        run_step(
            ["generate-data", "--start", "2026-11-01", "--days", "1", "--rows-per-day", "600"],
            env,
            outputs / "g.json",
        ),
        run_step(["validate", "--start", "2026-11-01", "--end", "2026-11-02"], env, outputs / "v.json"),
        run_step(["train", "--training-run", "r1"], env, outputs / "t.json"),
    ]
    version = json.loads((outputs / "t.json").read_text())["model_version"]
    ds = day.isoformat()
    evaluate = ["evaluate", "--model-version", version, "--training-run", "r1", "--ds", ds]
    promote = ["promote", "--model-version", version, "--expected-champion", "none", "--reason", MARKER]
    processes += [run_step(evaluate, env, outputs / "e.json"), run_step(promote, env, outputs / "p.json")]
    _commit_features(Lake(s3_lake), day, frame)
    processes.append(run_step(["score", "--ds", day.isoformat()], env, outputs / "s.json"))

    for index, process in enumerate(processes):
        (outputs / f"{index}.stdout").write_text(process.stdout)
        (outputs / f"{index}.stderr").write_text(process.stderr)
    lake = Lake(s3_lake)
    lake_copy = tmp_path / "lake-copy"
    for relative in _every_object(lake):
        target = lake_copy / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(lake.read_bytes(relative))
    texts, artifacts = mlflow_texts(mlflow_tracking.tracking_uri, model, tmp_path)

    assert any(p.suffix == ".html" for p in lake_copy.rglob("*")), "reports were written"
    assert any("predictions" in p.parts for p in lake_copy.rglob("*")), "predictions were written"
    assert list(artifacts.rglob("*")), "the runs logged artifacts"
    assert files_containing(lake_copy, MARKER), "the lineage marker is in the reports and ledger"
    assert MARKER in texts, "the lineage marker is in MLflow tags"
    assert files_containing(outputs, CANARY) == []
    assert files_containing(lake_copy, CANARY) == []
    assert files_containing(artifacts, CANARY) == []
    assert CANARY not in texts


def _commit_features(lake: Any, day: dt.date, frame: Any) -> None:
    import pyarrow as pa

    from mlsteps.contract.layout import partition
    from tests.steps.training_fixtures import FEATURES

    rows = frame[frame["event_time"].dt.date == day]
    staging = lake.stage(partition("features/transactions", day))
    columns = ["transaction_id", "customer_id", "event_time", *FEATURES]
    staging.write_parquet("00000.parquet", pa.Table.from_pandas(rows[columns], preserve_index=False))
    lake.commit(staging, {"feature_columns": FEATURES})


def _every_object(lake: Any) -> list[str]:
    import pyarrow.fs as pafs

    root = lake.path("")
    infos = lake.fs.get_file_info(pafs.FileSelector(root, recursive=True))
    return [info.path.removeprefix(root).lstrip("/") for info in infos if info.type == pafs.FileType.File]


# --- a whole DAG run: logs, XCom, rendered fields, the metadata DB --------------------------------


def notify_through_canary_connections(monkeypatch: pytest.MonkeyPatch, directory: Path, port: int) -> None:
    """Notification channels whose connections hold the canary: a webhook that answers, and a webhook
    and an SMTP server that do not (their failures are logged), each with the canary in its password
    and the dead webhook with it in its path, where chat tools put their token."""
    config = yaml.safe_load(Path(os.environ["ML_PIPELINE_CONFIG"]).read_text())
    config["notifications"] = {
        "channels": [
            {"type": "webhook", "conn_id": "ml_webhook_canary"},
            {"type": "webhook", "conn_id": "ml_webhook_down_canary"},
            {"type": "smtp", "conn_id": "ml_smtp_canary", "to": ["ml-team@example.com"]},
        ]
    }
    path = directory / "notifying.yaml"
    path.write_text(yaml.safe_dump(config))
    monkeypatch.setenv("ML_PIPELINE_CONFIG", str(path))
    down = free_port()
    connections = {
        "ML_WEBHOOK_CANARY": {"conn_type": "http", "host": "127.0.0.1", "port": port, "password": CANARY},
        "ML_WEBHOOK_DOWN_CANARY": {
            "conn_type": "http",
            "host": "127.0.0.1",
            "port": down,
            "login": "bot",
            "password": CANARY,
            "extra": {"endpoint": f"services/{CANARY}"},
        },
        "ML_SMTP_CANARY": {"conn_type": "smtp", "host": "127.0.0.1", "port": down, "password": CANARY},
    }
    for conn_id, connection in connections.items():
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id}", json.dumps(connection))


@pytest.fixture
def webhook() -> Iterator[DemoWebhook]:
    with demo_webhook() as hook:
        yield hook


@pytest.mark.faults
def test_dag_run_leaves_no_secret_in_logs_xcom_or_metadata(
    promoted: dict[str, Any],
    webhook: DemoWebhook,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capfd: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """ml_rollback run by dag.test with credentials in the worker's environment and connections."""
    from mlflow import MlflowClient

    from mlsteps.platform.lake import Lake
    from mlsteps.platform.ledger import read_ledger

    for key, value in secret_env().items():
        monkeypatch.setenv(key, value)
    notify_through_canary_connections(monkeypatch, tmp_path, webhook.port)
    dag = load_dagbag(monkeypatch, "local").dags["ml_rollback"]

    run = dag.test(
        logical_date=dt.datetime(2026, 11, 3, tzinfo=dt.UTC),
        run_conf={"version": "previous", "reason": MARKER},
    )

    sys.stdout.flush()  # what the task log still buffers belongs to the run
    sys.stderr.flush()
    captured = capfd.readouterr()
    assert {ti.task_id: str(ti.state) for ti in run.get_task_instances()} == {"rollback": "success"}
    xcom = json.dumps(run.get_task_instances()[0].xcom_pull(task_ids="rollback"), default=str)
    ledger = json.dumps(read_ledger(Lake(promoted["lake"]), promoted["name"]))
    tags = json.dumps(
        [
            v.tags
            for v in MlflowClient(promoted["tracking_uri"]).search_model_versions(
                f"name='{promoted['name']}'"
            )
        ]
    )
    home = Path(os.environ["AIRFLOW_HOME"])
    assert MARKER in ledger
    assert MARKER in tags
    assert files_containing(home, MARKER), "the run is in the metadata DB (conf, rendered fields)"
    assert "rollback" in captured.out + captured.err, "the task log was captured"
    # The task log as printed, and the records of the callbacks' loggers (pytest captures those).
    logged = captured.out + captured.err + caplog.text
    assert webhook.events() == ["rolled_back"], "the notifier ran: its failing channels were tried too"
    assert "notification rolled_back to smtp channel ml_smtp_canary failed" in logged
    assert CANARY not in logged
    assert CANARY not in json.dumps(webhook.received())
    assert CANARY not in xcom
    assert CANARY not in ledger
    assert CANARY not in tags
    assert files_containing(home, CANARY) == []
    assert files_containing(Path(promoted["lake"]), CANARY) == []
