"""Parse time: loading ``dags/`` in a DagBag against Airflow's own cost, each in fresh interpreters.

Variants, each run ``repeats`` times round-robin (so load spikes hit them alike):

- ``airflow_imports``: bare ``import airflow.sdk`` plus the KubernetesPodOperator import;
- ``trivial_local``: a DagBag of one trivial DAG that uses only Airflow (one Asset outlet);
- ``trivial_kubernetes``: the same DAG, also importing KubernetesPodOperator;
- ``dags_local`` and ``dags_kubernetes``: a DagBag of ``dags/`` with ``ML_EXECUTION_MODE`` set.

Our added cost is each ``dags_*`` DagBag fill time minus its ``trivial_*`` twin: what Airflow
spends on any DAG (its DagBag machinery, and the amazon provider's Asset hooks, which import
boto3) is Airflow's baseline, not ours.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import REPO_ROOT, log, median, run_process
from bench.workspace import Workspace
from tests.support.airflow import BASELINE_DAG  # the same Airflow-only DAG the parse test subtracts

ML_MODULES = (
    "pandas", "numpy", "pyarrow", "sklearn", "scipy", "xgboost", "mlflow", "feast", "evidently",
    "boto3", "botocore", "optuna", "matplotlib", "kubernetes", "pandera",
)  # fmt: skip
KPO_IMPORT = (
    "from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator  # noqa: F401\n"
)
IMPORTS_ONLY = """
import json, sys, time
started = time.perf_counter()
import airflow.sdk
from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
seconds = time.perf_counter() - started
modules = sorted({m.split(".")[0] for m in sys.modules})
print("@@BENCH " + json.dumps({"import_seconds": seconds, "modules": modules}))
"""

FILL_DAGBAG = """
import json, sys, time
started = time.perf_counter()
from airflow.dag_processing.dagbag import DagBag
imported = time.perf_counter()
bag = DagBag(sys.argv[1])
filled = time.perf_counter()
print("@@BENCH " + json.dumps({
    "import_seconds": imported - started,
    "fill_seconds": filled - imported,
    "errors": {str(k): str(v)[-500:] for k, v in bag.import_errors.items()},
    "dag_ids": sorted(bag.dag_ids),
    "modules": sorted({m.split(".")[0] for m in sys.modules}),
    "mlsteps_modules": sorted(m for m in sys.modules if m.startswith("mlsteps")),
}))
"""


def _variants(workspace: Workspace) -> dict[str, tuple[str, list[str], dict[str, str]]]:
    """Name -> (script, arguments, extra environment)."""
    trivial = workspace.root / "trivial_dags"
    for name, header in (("local", ""), ("kubernetes", KPO_IMPORT)):
        folder = trivial / name
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "baseline.py").write_text(header + BASELINE_DAG)
    dags = str(REPO_ROOT / "dags")
    return {
        "airflow_imports": (IMPORTS_ONLY, [], {}),
        "trivial_local": (FILL_DAGBAG, [str(trivial / "local")], {"ML_EXECUTION_MODE": "local"}),
        "trivial_kubernetes": (
            FILL_DAGBAG,
            [str(trivial / "kubernetes")],
            {"ML_EXECUTION_MODE": "kubernetes"},
        ),
        "dags_local": (FILL_DAGBAG, [dags], {"ML_EXECUTION_MODE": "local"}),
        "dags_kubernetes": (FILL_DAGBAG, [dags], {"ML_EXECUTION_MODE": "kubernetes"}),
    }


def run(workspace: Workspace, repeats: int) -> dict[str, Any]:
    """Every variant ``repeats`` times in fresh interpreters; medians, ML modules and our added cost."""
    variants = _variants(workspace)
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    cold: dict[str, float] = {}
    for attempt in range(repeats + 1):  # round 0 warms the bytecode cache; it is reported apart
        log(f"parse time: round {attempt}/{repeats} of {len(variants)} fresh interpreters")
        for name, (script, arguments, extra) in variants.items():
            env = workspace.env(PYTHONPATH=str(REPO_ROOT / "plugins"), **extra)
            run = run_process([sys.executable, "-c", script, *arguments], env, workspace.root, timeout=300)
            if run.returncode != 0 or not run.result:
                raise RuntimeError(f"parse-time variant {name} failed:\n{run.output_tail}")
            if attempt == 0:
                cold[name] = run.wall_s
                continue
            samples[name].append({**run.result, "process_wall_s": run.wall_s, "peak_rss_mb": run.peak_rss_mb})
    summary = {name: _summary(runs) for name, runs in samples.items()}
    return {"repeats": repeats, "cold_process_wall_s": cold, "variants": summary, **_added(summary)}


def _summary(runs: list[dict[str, Any]]) -> dict[str, Any]:
    modules = runs[-1]["modules"]
    entry = {
        "process_wall_s": median([r["process_wall_s"] for r in runs]),
        "process_wall_s_all": [r["process_wall_s"] for r in runs],
        "import_seconds": median([r["import_seconds"] for r in runs]),
        "peak_rss_mb": median([r["peak_rss_mb"] for r in runs]),
        "ml_modules": [name for name in ML_MODULES if name in modules],
        "modules": modules,
    }
    if "fill_seconds" in runs[-1]:
        entry["fill_seconds"] = median([r["fill_seconds"] for r in runs])
        entry["fill_seconds_all"] = [round(r["fill_seconds"], 4) for r in runs]
        entry["errors"] = runs[-1]["errors"]
        entry["dag_ids"] = runs[-1]["dag_ids"]
        entry["mlsteps_modules"] = runs[-1]["mlsteps_modules"]
    return entry


def _added(summary: dict[str, Any]) -> dict[str, Any]:
    """Per mode: our fill time over the trivial DAG's, process time over bare imports, modules we add."""
    added: dict[str, Any] = {}
    bare = summary["airflow_imports"]
    for mode in ("local", "kubernetes"):
        ours, trivial = summary[f"dags_{mode}"], summary[f"trivial_{mode}"]
        extra_modules = sorted(
            name
            for name in set(ours["modules"]) - set(trivial["modules"])
            if not name.startswith("unusual_prefix")
        )
        added[mode] = {
            "added_fill_s_vs_trivial_dag": round(ours["fill_seconds"] - trivial["fill_seconds"], 4),
            "added_process_s_vs_trivial_dag": round(ours["process_wall_s"] - trivial["process_wall_s"], 4),
            "added_process_s_vs_bare_imports": round(ours["process_wall_s"] - bare["process_wall_s"], 4),
            "ml_modules_after_parsing": ours["ml_modules"],
            "ml_modules_of_trivial_dag": trivial["ml_modules"],
            "ml_modules_added_by_ours": [m for m in ours["ml_modules"] if m not in trivial["ml_modules"]],
            "modules_added_by_ours": extra_modules,
            "mlsteps_modules_imported": ours["mlsteps_modules"],
            "import_errors": ours["errors"],
            "dag_ids": ours["dag_ids"],
        }
        added[mode]["goal_met"] = (
            added[mode]["added_fill_s_vs_trivial_dag"] <= 0.3 and not added[mode]["ml_modules_added_by_ours"]
        )
    return {"added": added}


if __name__ == "__main__":  # a quick look: python -m bench.parse
    import tempfile

    print(json.dumps(run(Workspace(Path(tempfile.mkdtemp())), 1)["added"], indent=2))
    print(time.strftime("%H:%M:%S"))
