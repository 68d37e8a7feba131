"""Step start-up: ``python -m mlsteps <step> --help`` in fresh interpreters, and what ``score`` imports.

Each step's ``--help`` runs once to warm the bytecode cache (recorded as the cold figure), then
``repeats`` more times; the median is reported. The ``score`` step's imports come from a real
run of it in the scoring section (every top-level module in ``sys.modules`` at its end) and,
for a cheap cross-check, from ``score --help``.
"""

from __future__ import annotations

import sys
from typing import Any

from bench.common import log, median, run_process
from bench.workspace import Workspace

FORBIDDEN_IN_SCORE = ("feast", "evidently")

MODULES_AFTER = """
import json, runpy, sys
sys.argv = ["mlsteps", *sys.argv[1:]]
try:
    runpy.run_module("mlsteps", run_name="__main__")
except SystemExit:
    pass
print("@@BENCH " + json.dumps({"modules": sorted({m.split(".")[0] for m in sys.modules})}))
"""


def run(workspace: Workspace, repeats: int) -> dict[str, Any]:
    """Median ``--help`` time of every step (and of the top level), after one cold run each."""
    from mlsteps.cli import STEPS

    env = workspace.env()
    steps: dict[str, Any] = {}
    for step in ["", *STEPS]:
        argv = [sys.executable, "-m", "mlsteps", *([step] if step else []), "--help"]
        runs = [run_process(argv, env, workspace.root, timeout=120) for _ in range(repeats + 1)]
        failed = [r for r in runs if r.returncode != 0]
        if failed:
            raise RuntimeError(f"{' '.join(argv[1:])} failed:\n{failed[0].output_tail}")
        walls = [r.wall_s for r in runs[1:]]
        steps[step or "(top level)"] = {
            "median_s": median(walls),
            "all_s": walls,
            "cold_s": runs[0].wall_s,
            "peak_rss_mb": median([r.peak_rss_mb for r in runs[1:]]),
        }
    slowest = max(steps, key=lambda name: steps[name]["median_s"])
    log(f"start-up: slowest --help is {slowest} at {steps[slowest]['median_s']} s")
    help_modules = run_process([sys.executable, "-c", MODULES_AFTER, "score", "--help"], env, workspace.root)
    return {
        "repeats": repeats,
        "steps": steps,
        "slowest": {"step": slowest, "median_s": steps[slowest]["median_s"]},
        "goal_met": steps[slowest]["median_s"] <= 1.0,
        "score_help_modules": help_modules.result.get("modules", []),
    }


def score_imports(modules: list[str]) -> dict[str, Any]:
    """What a real ``score`` run imported, judged against the goal (neither feast nor evidently)."""
    from bench.scoring import HEAVY

    present = [name for name in FORBIDDEN_IN_SCORE if name in modules]
    return {
        "top_level_modules": len(modules),
        "heavy_present": [name for name in HEAVY if name in modules],
        "forbidden_present": present,
        "goal_met": not present,
        "modules": modules,
    }
