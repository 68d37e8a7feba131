"""The step exit-code contract, the same for a local subprocess and a pod.

``python -m mlsteps`` exits 0 on success, ``EXIT_USER_ERROR`` (2) for bad input or a refused
action, which retrying cannot fix, and anything else for a crash, which a retry may fix. A failed
step's last ``ERROR: <reason>`` line is its one-sentence reason.
"""

from __future__ import annotations

from collections.abc import Iterable

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from mlsteps.errors import EXIT_USER_ERROR

__all__ = ["EXIT_USER_ERROR", "last_error", "step_failure"]


def last_error(lines: Iterable[str]) -> str:
    """The step's one-line reason: its last ``ERROR:`` line, without the prefix ('' if none)."""
    errors = [line for line in lines if line.startswith("ERROR: ")]
    return errors[-1].removeprefix("ERROR: ").strip() if errors else ""


def step_failure(step: str, exit_code: int | None, lines: Iterable[str] = ()) -> AirflowException:
    """The exception that fails a task whose step exited ``exit_code``: no retry for ``EXIT_USER_ERROR``."""
    reason = last_error(lines) or f"step {step} exited with code {exit_code}"
    error = AirflowFailException if exit_code == EXIT_USER_ERROR else AirflowException
    return error(reason)
