"""The thin CLI: fast, light --help, every step's options, usage errors and crashes that end in one line."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from mlsteps.cli import STEPS, main

HEAVY_MODULES = ("pandas", "numpy", "pyarrow", "mlflow", "xgboost", "feast", "evidently", "boto3", "sklearn")
# A stand-in CLI entry that registers extra step modules from the test's directory first.
WITH_EXTRA_STEPS = textwrap.dedent(
    """
    import sys
    from mlsteps import cli
    cli.STEPS["explode"] = ("crashing_step", "Always crashes.")
    cli.STEPS["broken"] = ("broken_step", "Cannot be imported.")
    cli.STEPS["dawdle"] = ("dawdling_step", "Runs until stopped.")
    sys.exit(cli.main(sys.argv[1:]))
    """
)


def python(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """A fresh interpreter (as cold as a fresh pod: its libraries' bytecode compiled at install)."""
    merged = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, *argv], capture_output=True, text=True, env=merged, timeout=120)


def probe(code: str) -> tuple[str, list[str]]:
    """Run ``code`` in a fresh interpreter; return what it printed and the heavy libraries it imported."""
    body = textwrap.indent(textwrap.dedent(code).strip(), "    ")
    wrapped = "\n".join(
        [
            "import contextlib, io, json, sys",
            "captured = io.StringIO()",
            "with contextlib.redirect_stdout(captured), contextlib.suppress(SystemExit):",
            body,
            "modules = sorted({name.split('.')[0] for name in sys.modules})",
            "print(json.dumps({'stdout': captured.getvalue(), 'modules': modules}))",
        ]
    )
    process = python("-c", wrapped)
    assert process.returncode == 0, process.stderr
    outcome = json.loads(process.stdout.strip().splitlines()[-1])
    return outcome["stdout"], sorted(set(outcome["modules"]) & set(HEAVY_MODULES))


def existing_steps() -> list[Any]:
    """Every step; those whose module is not written yet are skipped until it exists."""
    params = []
    for step, (module, _) in STEPS.items():
        marks = []
        if importlib.util.find_spec(module) is None:
            marks.append(pytest.mark.skip(reason=f"{module} does not exist yet"))
        params.append(pytest.param(step, marks=marks, id=step))
    return params


def test_help_lists_every_step_quickly() -> None:
    started = time.perf_counter()
    process = python("-m", "mlsteps", "--help")
    elapsed = time.perf_counter() - started
    print(f"python -m mlsteps --help took {elapsed:.3f} s")

    assert process.returncode == 0, process.stderr
    for step, (_, help_text) in STEPS.items():
        assert step in process.stdout
        assert help_text.split()[0] in process.stdout
    assert "$ML_STEP_RESULT" in process.stdout
    assert elapsed < 1.5, f"--help took {elapsed:.2f} s; keep heavy imports out of the CLI"


def test_cli_and_parser_import_no_heavy_library() -> None:
    printed, heavy = probe(
        """
        from mlsteps import cli
        cli.build_parser()
        cli.main(["--help"])
        """
    )
    assert "generate-data" in printed
    assert heavy == []


STEP_OPTIONS = {"generate-data": ["--rows-per-day", "--drift-from"], "validate": ["--start", "--end"]}


@pytest.mark.parametrize("step", existing_steps())
def test_step_help_shows_its_options_without_heavy_imports(step: str) -> None:
    printed, heavy = probe(
        f"""
        from mlsteps import cli
        sys.exit(cli.main([{step!r}, "--help"]))
        """
    )

    assert printed.startswith(f"usage: python -m mlsteps {step}")
    assert STEPS[step][1] in " ".join(printed.split())
    for option in ("--config", "--lake", "--dag-id", "--run-id", *STEP_OPTIONS.get(step, [])):
        assert option in printed
    assert heavy == [], f"`{step} --help` imported {heavy}: import them inside the step's functions"


def test_help_exits_zero() -> None:
    assert python("-m", "mlsteps", "validate", "--help").returncode == 0


def _assert_usage_error(process: subprocess.CompletedProcess, *words: str) -> None:
    assert process.returncode == 2, process.stderr
    assert "Traceback" not in process.stderr
    assert process.stderr.startswith("usage: python -m mlsteps")
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("ERROR: ")
    for word in words:
        assert word in last


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["tran", "--start", "2026-01-01"], ["invalid choice", "'tran'"]),
        ([], ["required"]),
        (
            ["validate", "--start", "2026-01-01", "--end", "2026-01-02", "--colour", "x"],
            ["unrecognized arguments", "--colour"],
        ),
        (["validate", "--start", "2026-01-01"], ["--end"]),
    ],
    ids=["unknown_step", "missing_step", "unknown_option", "missing_required_option"],
)
def test_a_bad_command_line_is_a_usage_error(argv: list[str], words: list[str]) -> None:
    _assert_usage_error(python("-m", "mlsteps", *argv), *words)


def _write_extra_steps(directory: Path) -> None:
    (directory / "crashing_step.py").write_text(
        textwrap.dedent(
            """
            def add_arguments(parser):
                parser.add_argument("--depth", type=int, default=1)

            def run(args):
                raise RuntimeError(f"disk on fire at depth {args.depth}\\nsecond line of detail")
            """
        )
    )
    (directory / "broken_step.py").write_text('raise ImportError("no module named gpu_magic")\n')
    (directory / "dawdling_step.py").write_text(
        textwrap.dedent(
            """
            import pathlib, time

            def add_arguments(parser):
                parser.add_argument("--marks", type=pathlib.Path)

            def run(args):
                (args.marks / "started").touch()
                try:
                    time.sleep(120)
                except Exception:
                    (args.marks / "swallowed").touch()
                finally:
                    (args.marks / "cleaned-up").touch()
                return {"summary": "slept"}
            """
        )
    )


def test_crash_prints_traceback_then_one_error_line(tmp_path: Path) -> None:
    _write_extra_steps(tmp_path)
    result_path = tmp_path / "result.json"

    process = python(
        "-c", WITH_EXTRA_STEPS, "explode", "--depth", "3",
        env={"PYTHONPATH": str(tmp_path), "ML_STEP_RESULT": str(result_path)},
    )  # fmt: skip

    assert process.returncode == 1
    assert "Traceback (most recent call last)" in process.stderr
    assert "crashing_step.py" in process.stderr
    assert process.stderr.strip().splitlines()[-1] == (
        "ERROR: step explode crashed: RuntimeError: disk on fire at depth 3"
    )
    assert not result_path.exists()


def test_step_module_that_fails_to_import_is_a_crash_with_one_error_line(tmp_path: Path) -> None:
    _write_extra_steps(tmp_path)

    process = python("-c", WITH_EXTRA_STEPS, "broken", env={"PYTHONPATH": str(tmp_path)})

    assert process.returncode == 1
    assert "Traceback (most recent call last)" in process.stderr
    assert process.stderr.strip().splitlines()[-1] == (
        "ERROR: step broken crashed: ImportError: no module named gpu_magic"
    )


def test_sigterm_stops_a_running_step_at_once_as_a_retried_failure_after_its_clean_up(
    tmp_path: Path,
) -> None:
    """A pod deleted or evicted, ``docker stop``, a local task stopped: exit 1 with one ERROR line,
    the step's ``finally`` run, no result, and not the grace period's SIGKILL much later."""
    _write_extra_steps(tmp_path)
    result_path = tmp_path / "result.json"
    process = subprocess.Popen(
        [sys.executable, "-c", WITH_EXTRA_STEPS, "dawdle", "--marks", str(tmp_path)],
        env={**os.environ, "PYTHONPATH": str(tmp_path), "ML_STEP_RESULT": str(result_path)},
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 60
    while not (tmp_path / "started").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    process.terminate()
    _, stderr = process.communicate(timeout=10)

    assert (process.returncode, stderr.strip().splitlines()[-1]) == (
        1,
        "ERROR: step dawdle stopped by SIGTERM: its pod was deleted or evicted, or its task was stopped",
    )
    marks = {name: (tmp_path / name).exists() for name in ("started", "swallowed", "cleaned-up")}
    assert marks == {"started": True, "swallowed": False, "cleaned-up": True}
    assert not result_path.exists()


def test_a_step_error_is_one_line_and_exit_code_2(tmp_path: Path) -> None:
    process = python(
        "-m", "mlsteps", "validate", "--start", "2026-01-02", "--end", "2026-01-01", "--lake", str(tmp_path),
    )  # fmt: skip

    assert process.returncode == 2
    assert "Traceback" not in process.stderr
    assert process.stderr.strip().splitlines() == [
        "ERROR: data interval end 2026-01-01T00:00:00+00:00 is not after its start "
        "2026-01-02T00:00:00+00:00; pass --start before --end"
    ]


def test_a_bad_setting_is_a_crash_whose_error_line_names_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A deployment setting, not the run's input: retried like any crash (exit 1), never half-run."""
    monkeypatch.setenv("ML_PARQUET_ROW_GROUP_ROWS", "not-a-number")

    assert main(["validate", "--start", "2026-01-01", "--end", "2026-01-02"]) == 1
    last = capsys.readouterr().err.strip().splitlines()[-1]
    expected = "ERROR: step validate crashed: StepError: ML_PARQUET_ROW_GROUP_ROWS='not-a-number' is not"
    assert last.startswith(expected)
