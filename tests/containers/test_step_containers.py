"""The loop, step by step, as pods run it: one fresh container of the step image per step.

Three service containers on one user-defined network stand in for what a cluster provides: an S3
API (moto's server), Redis (Feast's production online store, password-protected) and the MLflow
server image (SQLite backend inside it, artifacts proxied to the S3 API). Every step container has
exactly the pod's constraints: read-only root filesystem, uid/gid 10001, all capabilities dropped,
no-new-privileges, a tmpfs at /tmp, the result at /airflow/xcom/return.json (a mounted directory, as
the XCom sidecar's volume), the non-secret variables the worker forwards, and credentials only from
an env file standing in for the Kubernetes Secrets. Steps share nothing but the three services.

The loop runs once (a module fixture); each test asserts one fact about its record.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from repotools.local_airflow import MLFLOW_SERVER_ENV

from tests.containers.engine import docker
from tests.containers.images import mlflow_image, redis_image, s3_image, step_image

# The first run builds the images (about 15 min on a busy 2-core machine) inside the first test's setup.
pytestmark = [pytest.mark.containers, pytest.mark.timeout(3600)]

RUN_AS = "10001:10001"
RESULT_DIR = "/airflow/xcom"
RESULT_PATH = f"{RESULT_DIR}/return.json"
BUCKET = "lake"
LAKE_URI = f"s3://{BUCKET}/ml"
MODEL = "card_fraud_xgb"  # include/config/pipeline.yaml, baked into the step image
FIRST_DAY, DAYS = "2026-10-01", 14
SCORED_DAY = "2026-10-14"
DAY_AFTER = "2026-10-15"
TRAINING_RUN = "manual__train_1"
WINDOW = ["--start", FIRST_DAY, "--end", SCORED_DAY]
TRAINING = ["--dag-id", "ml_training", "--run-id", TRAINING_RUN]
SCORING = ["--dag-id", "ml_batch_scoring", "--run-id", "scheduled__score_1"]
DRIFT = ["--dag-id", "ml_drift_monitor", "--run-id", "asset_triggered__drift_1"]
STEP_TIMEOUT = 600


@dataclass
class StepRun:
    """One step container: its argv, exit code, output and the result file it left."""

    name: str
    argv: list[str]
    exit_code: int
    stdout: str
    stderr: str
    seconds: float
    result: dict[str, Any] | None
    result_mode: str | None = None

    def explain(self) -> str:
        tail = "\n".join((self.stderr or self.stdout).strip().splitlines()[-15:])
        return f"{self.name} exited {self.exit_code}:\n{tail}"

    def error_lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.startswith("ERROR:")]


@dataclass
class Stack:
    """The network, the three services and the step containers' environment."""

    network: str
    prefix: str
    work: Path
    env_file: Path
    forwarded: dict[str, str]
    s3_port: int
    mlflow_port: int
    credentials: dict[str, str]
    image: str
    containers: list[str] = field(default_factory=list)

    def run_step(self, name: str, argv: list[str], *, extra_env: dict[str, str] | None = None) -> StepRun:
        """``python -m mlsteps <argv>`` in a fresh container with exactly the pod's constraints."""
        xcom = Path(tempfile.mkdtemp(prefix=f"xcom-{name}-", dir=self.work))
        os.chown(xcom, 10001, 10001)  # the pod's fsGroup makes its emptyDir writable by the step
        env = {
            **self.forwarded,
            "ML_STEP_RESULT": RESULT_PATH,
            "ML_STEP_IMAGE": self.image,
            **(extra_env or {}),
        }
        container = f"{self.prefix}-{name}-{uuid.uuid4().hex[:6]}"
        self.containers.append(container)  # removed at teardown if a timeout leaves it running
        command = [
            "run", "--rm", "--name", container,
            "--network", self.network,
            "--read-only",
            "--user", RUN_AS,
            "--cap-drop", "ALL",
            "--security-opt", "no-new-privileges",
            "--tmpfs", "/tmp:rw,exec,nosuid,nodev,size=4g,mode=1777",
            "--volume", f"{xcom}:{RESULT_DIR}",
            "--env-file", str(self.env_file),
            *[item for key, value in env.items() for item in ("--env", f"{key}={value}")],
            self.image, "python", "-m", "mlsteps", *argv,
        ]  # fmt: skip
        started = time.monotonic()
        proc = docker(*command, check=False, timeout=STEP_TIMEOUT)
        seconds = time.monotonic() - started
        result_file = xcom / "return.json"
        result = json.loads(result_file.read_text()) if result_file.is_file() else None
        mode = oct(result_file.stat().st_mode & 0o777) if result_file.is_file() else None
        return StepRun(name, argv, proc.returncode, proc.stdout, proc.stderr, seconds, result, mode)


def _published_port(container: str, port: int) -> int:
    out = docker("port", container, f"{port}/tcp").stdout.strip().splitlines()[0]
    return int(out.rsplit(":", 1)[1])


def _wait_for(check: Any, what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as err:  # noqa: BLE001 - any failure means "not yet"
            last = err
        time.sleep(1.0)
    raise TimeoutError(f"{what} did not come up within {timeout:.0f} s (last error: {last})")


def _http_ok(url: str) -> bool:
    import urllib.request

    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 - loopback only
        return bool(response.status == 200)


def _s3_client(stack: Stack) -> Any:
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{stack.s3_port}",
        region_name="us-east-1",
        aws_access_key_id=stack.credentials["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=stack.credentials["AWS_SECRET_ACCESS_KEY"],
    )


def _start(stack: Stack, name: str, *args: str) -> str:
    container = f"{stack.prefix}-{name}"
    stack.containers.append(container)
    docker("run", "--detach", "--name", container, "--network", stack.network, "--network-alias", name, *args)
    return container


@pytest.fixture(scope="module")
def stack() -> Iterator[Stack]:
    """Images built, a network and the S3, Redis and MLflow containers started; all removed after."""
    image = step_image()
    services = {"s3": s3_image(), "redis": redis_image(), "mlflow": mlflow_image()}
    prefix = f"mlsteps-ct-{uuid.uuid4().hex[:8]}"
    work = Path(tempfile.mkdtemp(prefix="step-containers-"))
    work.chmod(0o755)
    credentials = {
        "AWS_ACCESS_KEY_ID": f"test-{secrets.token_hex(4)}",
        "AWS_SECRET_ACCESS_KEY": secrets.token_hex(16),
    }
    redis_password = secrets.token_hex(12)
    # The Kubernetes Secrets of helm/README.md (secrets.s3, secrets.feast), as one env file.
    env_file = work / "secrets.env"
    env_file.write_text(
        "".join(f"{key}={value}\n" for key, value in credentials.items())
        + f"ML_FEAST_REDIS=redis:6379,password={redis_password}\n"
        + f"ML_FEAST_REGISTRY_URI=s3://{BUCKET}/feast/registry.db\n"
    )
    env_file.chmod(0o600)
    # What the worker forwards to every pod (plugins/step_tasks/settings.py FORWARDED_ENV).
    forwarded = {
        "ML_LAKE_URI": LAKE_URI,
        "MLFLOW_TRACKING_URI": "http://mlflow:5000",
        "AWS_ENDPOINT_URL": "http://s3:9000",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    network = f"{prefix}-net"
    docker("network", "create", network)
    current = Stack(network, prefix, work, env_file, forwarded, 0, 0, credentials, image)
    try:
        s3 = _start(current, "s3", "--publish", "127.0.0.1::9000", services["s3"])
        redis_args = [
            "--bind",
            "0.0.0.0",
            "--save",
            "",
            "--appendonly",
            "no",
            "--requirepass",
            redis_password,
        ]
        _start(current, "redis", services["redis"], "redis-server", *redis_args)
        mlflow = _start(
            current, "mlflow", "--publish", "127.0.0.1::5000", "--read-only", "--tmpfs", "/tmp",
            "--env-file", str(env_file),
            "--env", "MLFLOW_S3_ENDPOINT_URL=http://s3:9000", "--env", "AWS_DEFAULT_REGION=us-east-1",
            *(f"--env={name}={value}" for name, value in MLFLOW_SERVER_ENV.items()),
            services["mlflow"], "mlflow", "server", "--host", "0.0.0.0", "--port", "5000",
            "--backend-store-uri", "sqlite:////tmp/mlflow.db",
            "--artifacts-destination", "s3://mlflow/artifacts", "--workers", "1",
            # MLflow 3 refuses Host headers it does not know (DNS-rebinding protection).
            "--allowed-hosts", "mlflow,mlflow:*,localhost,localhost:*,127.0.0.1,127.0.0.1:*",
        )  # fmt: skip
        current.s3_port = _published_port(s3, 9000)
        current.mlflow_port = _published_port(mlflow, 5000)
        _wait_for(lambda: _s3_client(current).list_buckets() is not None, "the S3 API container")
        for bucket in (BUCKET, "mlflow"):
            _s3_client(current).create_bucket(Bucket=bucket)
        _wait_for(
            lambda: _http_ok(f"http://127.0.0.1:{current.mlflow_port}/health"), "the MLflow container", 180
        )
        yield current
    finally:
        for container in current.containers:
            docker("rm", "--force", "--volumes", container, check=False)
        docker("network", "rm", network, check=False)
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Loop:
    """Every step's run, in pipeline order; ``failed`` names the first step that did not exit 0."""

    runs: dict[str, StepRun] = field(default_factory=dict)
    failed: str | None = None

    def run(self, stack: Stack, name: str, argv: list[str]) -> StepRun | None:
        return self.run_together(stack, {name: argv}).get(name)

    def run_together(self, stack: Stack, steps: dict[str, list[str]]) -> dict[str, StepRun]:
        """Run steps at the same time (as mapped pods run); stop the loop if any fails."""
        if self.failed or not steps:
            return {}
        with ThreadPoolExecutor(max_workers=len(steps)) as pool:
            futures = {name: pool.submit(stack.run_step, name, argv) for name, argv in steps.items()}
            done = {name: future.result() for name, future in futures.items()}
        self.runs.update(done)
        self.failed = next((name for name, step in done.items() if step.exit_code != 0), None)
        return done

    def get(self, name: str) -> StepRun:
        if name not in self.runs:
            pytest.fail(
                f"{name} never ran: {self.runs[self.failed].explain() if self.failed else 'no record'}"
            )
        return self.runs[name]


@pytest.fixture(scope="module")
def loop(stack: Stack) -> Loop:
    """generate-data through trace, one container each, chained through their result files."""
    record = Loop()
    day = ["--ds", SCORED_DAY]
    generate = ["--start", FIRST_DAY, "--days", str(DAYS), "--rows-per-day", "800", "--customers", "500"]
    record.run(stack, "generate-data", ["generate-data", *generate])
    record.run(stack, "validate", ["validate", *WINDOW, *TRAINING])
    record.run(
        stack, "build-features", ["build-features", "--start", FIRST_DAY, "--end", DAY_AFTER, *TRAINING]
    )
    record.run(stack, "materialize", ["materialize", *WINDOW, *TRAINING])
    snapshot = ["--end", SCORED_DAY, "--window-days", "12", "--training-run", TRAINING_RUN]
    record.run(stack, "build-training-set", ["build-training-set", *snapshot, *TRAINING])
    train = record.run(
        stack, "train", ["train", "--training-run", TRAINING_RUN, "--device", "cpu", *TRAINING]
    )
    version = str(_result(train).get("model_version"))
    gate = ["--model-version", version, "--training-run", TRAINING_RUN, *day]
    evaluate = record.run(stack, "evaluate", ["evaluate", *gate, *TRAINING])
    champion = str(_result(evaluate).get("champion_version") or "none")
    record.run(
        stack, "promote", ["promote", "--model-version", version, "--expected-champion", champion, *TRAINING]
    )
    scoring = [*day, "--alias", "champion", "--shard-count", "2"]
    plan = record.run(stack, "plan-scoring", ["plan-scoring", *scoring, *SCORING])
    # Both shards at once, as the mapped pod task runs them: the shared options, then the shard's argv.
    shared = ["score", *day, "--defer-commit", *SCORING]
    shards = enumerate(_result(plan).get("shards", []))
    record.run_together(stack, {f"score-{i}": [*shared, *shard] for i, shard in shards})
    planned = ["--model-version", str(_result(plan).get("model_version")), *scoring]
    record.run(stack, "commit-predictions", ["commit-predictions", *planned, *SCORING])
    record.run(stack, "drift", ["drift", *day, *DRIFT])
    record.run(stack, "decide-retrain", ["decide-retrain", *day, *DRIFT])
    if not record.failed:
        record.run(stack, "trace", ["trace", *day, "--row-id", _a_predicted_row(stack), "--json"])
    return record


def _result(step: StepRun | None) -> dict[str, Any]:
    return (step.result if step else None) or {}


def _a_predicted_row(stack: Stack) -> str:
    """The row id of one published prediction, read from the bucket."""
    import pyarrow.parquet as pq

    client = _s3_client(stack)
    prefix = f"ml/predictions/{MODEL}/ds={SCORED_DAY}/"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)["Contents"]]
    part = next(key for key in keys if key.endswith(".parquet"))
    table = pq.read_table(io.BytesIO(client.get_object(Bucket=BUCKET, Key=part)["Body"].read()))
    return str(table.column("transaction_id")[0].as_py())


# -- the loop -------------------------------------------------------------------------------------

LOOP_STEPS = [
    "generate-data", "validate", "build-features", "materialize", "build-training-set", "train",
    "evaluate", "promote", "plan-scoring", "score-0", "score-1", "commit-predictions", "drift",
    "decide-retrain", "trace",
]  # fmt: skip


@pytest.mark.parametrize("name", LOOP_STEPS)
def test_step_exits_zero_in_its_own_hardened_container(loop: Loop, name: str) -> None:
    step = loop.get(name)
    assert step.exit_code == 0, step.explain()


@pytest.mark.parametrize("name", LOOP_STEPS)
def test_step_result_is_where_the_xcom_sidecar_reads_it(loop: Loop, name: str) -> None:
    step = loop.get(name)
    assert step.result is not None, f"{name} left no {RESULT_PATH}: {step.explain()}"
    assert step.result.get("summary"), f"{name}'s result has no summary: {sorted(step.result)}"


@pytest.mark.parametrize(
    ("name", "keys"),
    [
        ("generate-data", {"days", "rows"}),
        ("validate", {"valid", "rows", "report_html"}),
        ("train", {"model_version", "mlflow_run_id", "model_uri"}),
        ("evaluate", {"approved", "model_version"}),
        ("promote", {"champion_version", "changed"}),
        ("plan-scoring", {"model_version", "shards"}),
        ("commit-predictions", {"uri", "rows", "model_version"}),
        ("drift", {"drift", "drifted_columns", "model_version", "report_html"}),
        ("decide-retrain", {"trigger", "reasons"}),
    ],
)
def test_step_result_carries_what_the_next_task_reads(loop: Loop, name: str, keys: set[str]) -> None:
    result = loop.get(name).result or {}
    assert keys <= set(result), f"{name}: missing {sorted(keys - set(result))} in {sorted(result)}"


def test_plan_scoring_plans_two_shards_of_argv(loop: Loop) -> None:
    shards = (loop.get("plan-scoring").result or {})["shards"]
    assert len(shards) == 2
    assert all(isinstance(shard, list) and all(isinstance(arg, str) for arg in shard) for shard in shards)


def test_evaluation_approves_the_challenger(loop: Loop) -> None:
    result = loop.get("evaluate").result or {}
    assert result["approved"] is True, result.get("reasons")


def test_promotion_makes_the_trained_version_the_champion_in_mlflow(loop: Loop, stack: Stack) -> None:
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"http://127.0.0.1:{stack.mlflow_port}")
    champion = client.get_model_version_by_alias(MODEL, "champion")
    assert champion.version == str((loop.get("train").result or {})["model_version"])


def test_published_predictions_partition_has_its_success_marker(loop: Loop, stack: Stack) -> None:
    loop.get("commit-predictions")
    key = f"ml/predictions/{MODEL}/ds={SCORED_DAY}/_SUCCESS.json"
    marker = json.loads(_s3_client(stack).get_object(Bucket=BUCKET, Key=key)["Body"].read())
    committed = loop.get("commit-predictions").result or {}
    assert (marker["rows"], str(marker["model_version"])) == (
        committed["rows"],
        str(committed["model_version"]),
    )


def test_nothing_stays_staged_after_the_commit(loop: Loop, stack: Stack) -> None:
    loop.get("commit-predictions")
    listing = _s3_client(stack).list_objects_v2(Bucket=BUCKET, Prefix="ml/_staging/")
    # pyarrow leaves empty "directory" markers (keys ending in /); only files would be leftovers.
    files = [o["Key"] for o in listing.get("Contents", []) if not o["Key"].endswith("/")]
    assert files == []


def test_feast_registry_lives_in_the_bucket(loop: Loop, stack: Stack) -> None:
    loop.get("materialize")
    head = _s3_client(stack).head_object(Bucket=BUCKET, Key="feast/registry.db")
    assert head["ContentLength"] > 0


def test_materialize_filled_the_redis_online_store(loop: Loop, stack: Stack) -> None:
    loop.get("materialize")
    password = _secret(stack, "ML_FEAST_REDIS").split("password=", 1)[1]
    redis = next(c for c in stack.containers if c.endswith("-redis"))
    keys = docker("exec", redis, "redis-cli", "--no-auth-warning", "-a", password, "DBSIZE").stdout.strip()
    assert int(keys) > 0


def test_trace_finds_every_link_of_a_published_prediction(loop: Loop) -> None:
    document = json.loads(loop.get("trace").stdout)
    assert document["intact"] is True, document["broken"]


def test_model_artifacts_went_through_the_mlflow_server_to_the_bucket(loop: Loop, stack: Stack) -> None:
    loop.get("train")
    listing = _s3_client(stack).list_objects_v2(Bucket="mlflow", Prefix="artifacts/")
    assert listing.get("KeyCount", 0) > 0


def _secret(stack: Stack, key: str) -> str:
    for line in stack.env_file.read_text().splitlines():
        name, _, value = line.partition("=")
        if name == key:
            return value
    raise KeyError(key)


# -- failures: exit codes as the operator reads them --------------------------------------------


@pytest.fixture(scope="module")
def validate_without_data(loop: Loop, stack: Stack) -> StepRun:
    """validate on days the lake holds no data for (after the loop, so the lake exists)."""
    return stack.run_step("validate-empty", ["validate", "--start", "2027-01-01", "--end", "2027-01-02"])


def test_validate_of_days_without_data_exits_2(validate_without_data: StepRun) -> None:
    assert validate_without_data.exit_code == 2, validate_without_data.explain()


def test_validate_of_days_without_data_says_why_in_one_error_line(validate_without_data: StepRun) -> None:
    assert len(validate_without_data.error_lines()) == 1, validate_without_data.stderr


def test_failed_validation_still_leaves_a_result_pointing_at_its_report(
    validate_without_data: StepRun,
) -> None:
    result = validate_without_data.result or {}
    assert (result.get("failed"), result.get("valid")) == (True, False), result
    assert result.get("report_html", "").startswith(f"{LAKE_URI}/reports/validation/"), result


def test_a_malformed_option_exits_2_with_one_error_line(stack: Stack) -> None:
    step = stack.run_step("bad-option", ["generate-data", "--start", "not-a-day"])
    assert step.exit_code == 2, step.explain()
    assert len(step.error_lines()) == 1, step.stderr


def test_a_lake_on_the_read_only_root_is_refused_with_exit_2(stack: Stack) -> None:
    # The container's own filesystem is read-only: a local lake there is bad input, said in one line.
    argv = ["generate-data", "--start", FIRST_DAY, "--days", "1", "--lake", "/opt/lake"]
    step = stack.run_step("read-only-lake", argv)
    assert (step.exit_code, len(step.error_lines())) == (2, 1), step.explain()
    assert "Read-only file system" in step.error_lines()[0]


def test_an_unreachable_mlflow_server_is_a_crash_that_exits_1(stack: Stack) -> None:
    # An infrastructure error: exit 1, so the task is retried (no retries inside the client here).
    outage = {"MLFLOW_TRACKING_URI": "http://no-mlflow-here:5000", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"}
    step = stack.run_step(
        "crash", ["promote", "--model-version", "1", "--expected-champion", "none"], extra_env=outage
    )
    assert step.exit_code == 1, step.explain()
    assert step.error_lines()[-1].startswith("ERROR: step promote crashed:"), step.stderr


def test_the_image_runs_as_10001_with_home_in_tmp(stack: Stack) -> None:
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", stack.image).stdout)
    assert config["User"] == RUN_AS
    assert "HOME=/tmp" in config["Env"]
    assert not config.get("Entrypoint")


def test_the_image_holds_no_credentials(stack: Stack) -> None:
    # Credentials come only from the Secret (here: the env file), never from the image.
    config = json.loads(docker("image", "inspect", "--format", "{{json .Config}}", stack.image).stdout)
    assert not [e for e in config["Env"] if e.startswith(("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))]


def _in_image(stack: Stack, code: str) -> str:
    """Run Python code in a container of the step image (pod constraints, no network)."""
    argv = ["run", "--rm", "--read-only", "--user", RUN_AS, "--cap-drop", "ALL", "--network", "none"]
    return docker(*argv, stack.image, "python", "-c", code, timeout=300).stdout.strip()


def test_the_cpu_image_carries_no_cuda_libraries(stack: Stack) -> None:
    code = "import importlib.metadata as m, json; print(json.dumps([d.name for d in m.distributions()]))"
    names = [name.lower() for name in json.loads(_in_image(stack, code))]
    assert [name for name in names if name.startswith("nvidia")] == []
    assert ("xgboost-cpu" in names, "xgboost" in names) == (True, False)


def test_the_cpu_images_xgboost_is_built_without_cuda(stack: Stack) -> None:
    assert _in_image(stack, "import xgboost; print(xgboost.build_info()['USE_CUDA'])") == "False"


def test_the_image_carries_no_type_checker(stack: Stack) -> None:
    assert _in_image(stack, "import importlib.util as u; print(u.find_spec('mypy') is None)") == "True"
