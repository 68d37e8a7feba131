"""The thin CLI every task runs: ``python -m mlsteps <step> --option value ...``.

Step modules are imported only once their step is chosen, and each imports its heavy libraries
inside its functions, so ``--help`` stays fast and a step pays only for what it uses.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NoReturn, Protocol, cast

from mlsteps.contract.settings import StepSettings
from mlsteps.errors import EXIT_CRASH, EXIT_USER_ERROR, StepError

#: step name -> (module, one-line help). The order is the pipeline's order.
STEPS: dict[str, tuple[str, str]] = {
    "generate-data": (
        "mlsteps.steps.generate",
        "Generate synthetic raw card-transaction events into the lake.",
    ),
    "validate": ("mlsteps.steps.validate", "Validate raw events of a data interval against the config."),
    "build-features": (
        "mlsteps.steps.features",
        "Compute the feature table for a data interval (Feast's offline source).",
    ),
    "materialize": (
        "mlsteps.steps.materialize",
        "Materialize exactly a data interval into the Feast online store.",
    ),
    "build-training-set": (
        "mlsteps.steps.training_set",
        "Point-in-time join and time split into a training snapshot.",
    ),
    "train": (
        "mlsteps.steps.train",
        "Train XGBoost on a snapshot, log to MLflow and register a challenger version.",
    ),
    "evaluate": (
        "mlsteps.steps.evaluate",
        "Gate a challenger: thresholds, and champion vs challenger on one holdout.",
    ),
    "promote": (
        "mlsteps.steps.promote",
        "Move the champion alias to an approved version (check-and-set, ledgered).",
    ),
    "record-decision": (
        "mlsteps.steps.decision",
        "Record a rejected promotion (who, when, why) beside the ledger; nothing is promoted.",
    ),
    "rollback": ("mlsteps.steps.rollback", "Move the champion alias back to a previously promoted version."),
    "plan-scoring": (
        "mlsteps.steps.score_plan",
        "Pin the model version and split a day's scoring into shards.",
    ),
    "score": (
        "mlsteps.steps.score",
        "Score a day's features with the pinned model, streaming, into predictions/.",
    ),
    "commit-predictions": (
        "mlsteps.steps.score_commit",
        "Publish a predictions partition once every shard finished.",
    ),
    "drift": (
        "mlsteps.steps.drift",
        "Compare a day's features and scores with the model's reference sample.",
    ),
    "compare-shadow": (
        "mlsteps.steps.shadow",
        "Compare a day's shadow (challenger) scores and decisions with the champion's; HTML report.",
    ),
    "monitor-performance": (
        "mlsteps.steps.performance",
        "Judge a scored day's realized performance on its labels against the evaluation level.",
    ),
    "decide-retrain": (
        "mlsteps.steps.retrain_policy",
        "Decide from a drift report, cooldown and weekly budget whether to retrain (once per day).",
    ),
    "trace": (
        "mlsteps.steps.trace",
        "Trace a prediction back through every stored record to its raw data (exit 2: broken link).",
    ),
    "reproduce": (
        "mlsteps.steps.reproduce",
        "Rebuild a model version from its records in a scratch prefix and compare it with the original.",
    ),
}


#: Steps whose inputs key a reusable result (``mlsteps.platform.step_cache``): the expensive ones whose
#: only effect is their own outputs. Each module's docstring says why it is safe to cache. A step whose
#: effect is a change of state elsewhere (``promote``, ``rollback``, ``record-decision``,
#: ``decide-retrain``, ``materialize``'s online store, scoring's published predictions) is never here.
CACHEABLE_STEPS: frozenset[str] = frozenset(
    {"validate", "build-features", "build-training-set", "train", "evaluate"}
)
_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no", "")


class StepModule(Protocol):
    """What a step module provides."""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, args: argparse.Namespace) -> dict[str, Any]: ...


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error ends with the same one-line ``ERROR:`` reason as any failure."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EXIT_USER_ERROR, f"ERROR: {self.prog}: {message}\n")


def build_parser(step: str | None = None) -> argparse.ArgumentParser:
    """The top-level parser; only the chosen step's module is imported to add its options."""
    parser = _Parser(
        prog="python -m mlsteps",
        description="Steps of the scheduled ML workflow. Each writes a small JSON result to $ML_STEP_RESULT.",
    )
    subparsers = parser.add_subparsers(dest="step", metavar="<step>", required=True, parser_class=_Parser)
    for name, (module_name, help_text) in STEPS.items():
        sub = subparsers.add_parser(name, help=help_text, description=help_text)
        _add_common_arguments(sub)
        if name in CACHEABLE_STEPS:
            _add_cache_arguments(sub)
        if name == step:
            _load(module_name).add_arguments(sub)
    return parser


def _add_common_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("common options")
    group.add_argument(
        "--config", help="Pipeline config YAML (default: $ML_PIPELINE_CONFIG or the bundled one)."
    )
    group.add_argument("--lake", help="Lake root: a directory or s3://bucket/prefix (default: $ML_LAKE_URI).")
    group.add_argument("--dag-id", default="", help="Airflow DAG id, recorded for lineage.")
    group.add_argument("--run-id", default="", help="Airflow DAG run id, recorded for lineage.")


def _add_cache_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument_group("step caching").add_argument(
        "--force",
        nargs="?",
        const=True,
        default=False,
        type=_flag,
        metavar="true|false",
        help="Run the step even if an earlier run with the same inputs can be reused (bare --force: true).",
    )


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")
    return value in _TRUE


def _load(module_name: str) -> StepModule:
    return cast(StepModule, importlib.import_module(module_name))


def write_result(result: dict[str, Any], target: str | None) -> None:
    """Write the step's small JSON result to ``target`` (``$ML_STEP_RESULT``, XCom's source), if any."""
    if not target:
        return
    os.makedirs(os.path.dirname(os.path.abspath(target)), exist_ok=True)
    temporary = f"{target}.tmp"
    with open(temporary, "w") as handle:
        json.dump(result, handle, default=str)
    os.replace(temporary, target)


def main(argv: list[str] | None = None) -> int:
    """Run one step and return the process exit code."""
    argv = sys.argv[1:] if argv is None else argv
    # MLflow prints run links built from the tracking URI, userinfo included; results carry a redacted one.
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")
    step = next((arg for arg in argv if not arg.startswith("-")), None)
    step = step if step in STEPS else None
    try:  # building the parser imports the step's module, which can fail like the step itself
        args = build_parser(step).parse_args(argv)
        # Read once; a bad value is the deployment's fault, not the run's input: a crash, retried.
        settings = args.settings = StepSettings.from_env()
    except Exception as err:
        return _crashed(step, err)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    module = _load(STEPS[args.step][0])
    try:
        with _sigterm_stops_the_step():
            result = _run(args.step, module, args)
    except Stopped:
        print(f"ERROR: step {args.step} {Stopped.WHY}", file=sys.stderr, flush=True)
        return EXIT_CRASH
    except StepError as err:
        print(f"ERROR: {err}", file=sys.stderr, flush=True)
        if err.result:  # what a failed step still has to show (a report); the task's links read it
            failed = {**err.result, "failed": True, "error": str(err), "summary": f"FAILED: {err}"}
            write_result(failed, settings.result_path)
        return EXIT_USER_ERROR
    except Exception as err:
        return _crashed(args.step, err)
    write_result(result, settings.result_path)
    if not getattr(module, "PRINTS_OWN_OUTPUT", False):  # a report (e.g. JSON on stdout) stays clean
        print(f"{args.step}: {result.get('summary', 'done')}", flush=True)
    return 0


def _run(step: str, module: StepModule, args: argparse.Namespace) -> dict[str, Any]:
    """Run the step; a cacheable one through its cache (imported only then)."""
    if step not in CACHEABLE_STEPS:
        return module.run(args)
    from mlsteps.platform.step_cache import run_cached

    return dict(run_cached(step, module, args))


class Stopped(BaseException):
    """SIGTERM arrived while the step ran. A ``BaseException``, as ``KeyboardInterrupt`` is, so that no
    step's ``except Exception`` takes it for an error of its own; its ``finally`` blocks and context
    managers still run (a Dask cluster is closed, a lock released, temporary files removed)."""

    WHY = "stopped by SIGTERM: its pod was deleted or evicted, or its task was stopped"


@contextmanager
def _sigterm_stops_the_step() -> Iterator[None]:
    """SIGTERM raises :class:`Stopped` in the step while the block runs.

    Without a handler, a step that is a container's first process (a pod's, ``docker stop``'s)
    ignores SIGTERM, as the kernel ignores it for any PID 1 without one, and runs on until the
    grace period ends in SIGKILL, with no clean-up. Off the main thread (where Python allows no
    handler) the default stays.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def stop(signum: int, frame: object) -> NoReturn:
        raise Stopped

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _crashed(step: str | None, err: Exception) -> int:
    """A crash: keep the traceback for debugging, and end with one line for people."""
    traceback.print_exc()
    reason = str(err).splitlines()[0] if str(err) else ""
    print(f"ERROR: step {step} crashed: {type(err).__name__}: {reason}", file=sys.stderr, flush=True)
    return EXIT_CRASH
