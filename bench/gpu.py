"""GPU against CPU training: the pipeline's own ``train_model`` on one snapshot, on each device.

Run on a machine with an NVIDIA GPU (``python -m bench.gpu``). It needs only the step package's
training dependencies (xgboost, pandas, pyarrow, scikit-learn, pydantic, PyYAML): no MLflow,
Feast or Airflow. For each snapshot size it writes the snapshot with the benchmark's own
``write_training_set`` (generated events through the real features code), then trains with
``training.train_model`` on ``cpu`` (the pipeline's fixed thread count, and every core) and on
``cuda`` (after :func:`mlsteps.platform.device.resolve_device` has checked the GPU is really used), and
scores each model on the same holdout. The first CUDA fit (context start, kernel loading) is
reported apart from the median of the later ones.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import median, ratio

#: Rows per generated day for each snapshot; 32 days of window, the last ones held out.
DEFAULT_SIZES = "5000,50000"
CUSTOMERS_PER_1000_ROWS = 400


def device_case(snapshot: Any, settings: Any, device: str, nthread: int, repeats: int) -> dict[str, Any]:
    """``repeats`` fits on one device; AUC on the holdout of the last one."""
    import sklearn.metrics

    from mlsteps.logic import training

    # The config's model params override the step's defaults, nthread included (as in production).
    model = settings.model.model_copy(update={"params": {**settings.model.params, "nthread": nthread}})
    threaded = settings.model_copy(update={"model": model})
    splits = training.training_splits(snapshot, settings)
    fits = [training.train_model(splits, snapshot, threaded, device, 0) for _ in range(repeats)]
    last = fits[-1]
    generic = json.loads(last.booster.save_config())["learner"]["generic_param"]
    scores = training.predict(last.booster, snapshot.holdout, settings, last.calibrator)
    auc = float(sklearn.metrics.roc_auc_score(snapshot.holdout[snapshot.label].astype(int), scores))
    seconds = [fit.seconds for fit in fits]
    return {
        "device_requested": device,
        "device_used": generic["device"],
        "nthread": int(generic["nthread"]),  # as the booster ran, not as asked
        "first_fit_seconds": seconds[0],
        "fit_seconds": median(seconds[1:] or seconds),
        "fit_seconds_all": seconds,
        "best_iteration": last.best_iteration,
        "validation_auc": last.validation_auc,
        "holdout_roc_auc": round(auc, 5),
    }


def run(sizes: list[int], repeats: int, root: Path, gpu: bool = True) -> dict[str, Any]:
    os.environ["ML_LAKE_URI"] = str(root / "lake")
    from bench.workspace import TRAINING_RUN, config, write_training_set
    from mlsteps.logic import training
    from mlsteps.platform.datasets import load_training_set
    from mlsteps.platform.device import resolve_device
    from mlsteps.platform.lake import Lake

    # resolve_device raises StepError when XGBoost cannot use a GPU (never a silent CPU run).
    device = resolve_device("cuda") if gpu else "cpu"
    settings = config()
    cores = os.cpu_count() or 1
    results: list[dict[str, Any]] = []
    for rows_per_day in sizes:
        started = time.perf_counter()
        customers = max(200, rows_per_day * CUSTOMERS_PER_1000_ROWS // 1000)
        shape = write_training_set(root, rows_per_day, customers, 7)
        snapshot = load_training_set(Lake(), TRAINING_RUN)
        cases = {
            "cpu_pipeline_threads": device_case(snapshot, settings, "cpu", training.DEFAULT_NTHREAD, repeats),
            "cpu_all_cores": device_case(snapshot, settings, "cpu", cores, repeats),
            "cuda": device_case(snapshot, settings, device, training.DEFAULT_NTHREAD, repeats),
        }
        gpu = cases["cuda"]["fit_seconds"]
        results.append(
            {
                "rows_per_day": rows_per_day,
                **shape,
                "build_seconds": round(time.perf_counter() - started, 1),
                "cases": cases,
                "speedup_vs_cpu_pipeline_threads": ratio(cases["cpu_pipeline_threads"]["fit_seconds"], gpu),
                "speedup_vs_cpu_all_cores": ratio(cases["cpu_all_cores"]["fit_seconds"], gpu),
            }
        )
        print(json.dumps(results[-1], indent=1), flush=True)
    return {"machine": machine(), "repeats": repeats, "sizes": results}


def machine() -> dict[str, Any]:
    import shutil
    import subprocess

    import xgboost

    query = ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"]
    smi = shutil.which(query[0])
    gpu = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip() if smi else "none"
    return {
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "gpu": gpu,
        "xgboost": xgboost.__version__,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help="rows per generated day, comma-separated")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-gpu", action="store_true", help="a dry run on CPU only (checks the script)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu.json"))
    args = parser.parse_args()
    sizes = [int(part) for part in args.sizes.split(",") if part.strip()]
    with tempfile.TemporaryDirectory() as root:
        report = run(sizes, args.repeats, Path(root), gpu=not args.no_gpu)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(f"saved {args.out}")


if __name__ == "__main__":
    main()
