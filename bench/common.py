"""What every benchmark section shares: child processes with their peak RSS, machine facts, medians."""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
RESULT_MARK = "@@BENCH "
PACKAGES = (
    "apache-airflow", "apache-airflow-providers-cncf-kubernetes", "apache-airflow-providers-amazon",
    "mlflow", "xgboost", "evidently", "scikit-learn", "pandas", "pyarrow", "numpy", "scipy",
)  # fmt: skip


@dataclass
class ChildRun:
    """One finished child process: its wall time, peak RSS and the JSON it reported."""

    wall_s: float
    peak_rss_mb: float
    returncode: int
    result: dict[str, Any] = field(default_factory=dict)
    output_tail: str = ""


def env_int(name: str, default: int) -> int:
    """An integer setting from the environment (``BENCH_*``), or the default."""
    return int(os.environ.get(name, "") or default)


def env_sizes(name: str, default: str) -> list[int]:
    """A comma-separated list of row counts, e.g. ``BENCH_SIZES=1000000,5000000``."""
    text = os.environ.get(name, "") or default
    return [int(float(part)) for part in text.split(",") if part.strip()]


def run_process(
    argv: list[str], env: dict[str, str] | None = None, cwd: Path | None = None, timeout: float = 1800
) -> ChildRun:
    """Run a process to completion; its peak RSS comes from ``wait4`` (this child alone, not siblings)."""
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
        try:
            status, usage = _wait(process, timeout)
        except BaseException:  # the bench was stopped: the case goes with it
            process.kill()
            process.wait()
            raise
        wall = time.perf_counter() - started
        output.seek(0)
        text = output.read().decode(errors="replace")
    code = os.waitstatus_to_exitcode(status)
    result: dict[str, Any] = {}
    for line in reversed(text.splitlines()):
        if line.startswith(RESULT_MARK):
            result = json.loads(line[len(RESULT_MARK) :])
            break
    return ChildRun(round(wall, 4), round(usage.ru_maxrss / 1024, 1), code, result, text[-4000:])


def _wait(process: subprocess.Popen[bytes], timeout: float) -> tuple[int, Any]:
    deadline = time.monotonic() + timeout
    while True:
        pid, status, usage = os.wait4(process.pid, os.WNOHANG)
        if pid:
            process.returncode = os.waitstatus_to_exitcode(status)
            return status, usage
        if time.monotonic() > deadline:
            process.kill()
        time.sleep(0.02)


def run_case(
    target: str, arguments: dict[str, Any], env: dict[str, str], cwd: Path, timeout: float = 1800
) -> ChildRun:
    """Run ``module:function(arguments)`` from ``bench.child`` in a fresh interpreter.

    Raises:
        RuntimeError: The case failed; the message holds the end of its output.
    """
    run = run_process([PYTHON, "-m", "bench.child", target, json.dumps(arguments)], env, cwd, timeout)
    if run.returncode != 0 or not run.result:
        raise RuntimeError(f"benchmark case {target} failed (exit {run.returncode}):\n{run.output_tail}")
    return run


def child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment of child processes: the repo, plugins/ and include/ importable, no step result.

    Their libraries' bytecode was compiled when ``make install`` built the environment, as a
    built image's is.
    """
    env = {key: value for key, value in os.environ.items() if key != "ML_STEP_RESULT"}
    # include/ too: the checkout's own steps and repotools (the example dataset's loader).
    env["PYTHONPATH"] = os.pathsep.join(
        [str(REPO_ROOT), str(REPO_ROOT / "plugins"), str(REPO_ROOT / "include")]
    )
    env["PYTHONHASHSEED"] = "0"
    env.update(extra or {})
    return env


def median(values: list[float]) -> float:
    return round(float(statistics.median(values)), 4) if values else float("nan")


def ratio(numerator: float, denominator: float) -> float | None:
    return round(numerator / denominator, 3) if denominator else None


def machine_info() -> dict[str, Any]:
    """Cores, CPU model, memory, load, Python and the versions of the packages measured."""
    from importlib.metadata import PackageNotFoundError, version

    versions = {}
    for package in PACKAGES:
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {
        "cpu_model": _cpu_model(),
        "cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)),
        "memory_gb": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1),
        "load_average_at_start": [round(value, 2) for value in os.getloadavg()],
        "platform": platform.platform(),
        "python": platform.python_version(),
        "gpu": "none visible (GPU training not measured)",
        "idle_memory": idle_memory_cost(),
        "packages": versions,
    }


def idle_memory_cost(idle_seconds: float = 2.0, repeats: int = 3) -> dict[str, float]:
    """Milliseconds of CPU for one pass over a 400,000-object heap, back to back and after
    ``idle_seconds`` asleep (medians of ``repeats``).

    Some VMs reclaim a guest's idle memory at the host, which no guest page fault shows: the next
    touch is slow and counted as user time. A server that waits while a case imports (the bench's
    ``mlflow server``) pays it on its next request, so it is measured beside the results.
    """
    heap = [{"key": index, "value": str(index)} for index in range(400_000)]

    def one_pass() -> float:
        started = time.thread_time()
        sum(item["key"] for item in heap[::4])
        return (time.thread_time() - started) * 1000

    one_pass()
    warm = [one_pass() for _ in range(repeats)]
    idle = []
    for _ in range(repeats):
        time.sleep(idle_seconds)
        idle.append(one_pass())
    return {
        "idle_seconds": idle_seconds,
        "warm_ms": round(statistics.median(warm), 1),
        "idle_ms": round(statistics.median(idle), 1),
        "ratio": round(statistics.median(idle) / max(statistics.median(warm), 1e-6), 1),
    }


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def current_rss_mb() -> float:
    """This process's resident set size now (Linux ``/proc``)."""
    return _status_mb("VmRSS")


def cpu_seconds() -> float:
    """CPU time this process has used so far, user and system, every thread."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def peak_rss_mb() -> float:
    """This process's peak resident set size so far (Linux ``/proc``)."""
    return _status_mb("VmHWM")


def _status_mb(key: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{key}:"):
            return round(int(line.split()[1]) / 1024, 1)
    return float("nan")


def log(message: str) -> None:
    """Progress on stderr, so a long run shows where it is."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
