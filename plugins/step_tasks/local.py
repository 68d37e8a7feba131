"""Local mode: run a step's argv as a child process of the worker (no shell, no container)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
from collections import deque
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from mlsteps.contract.settings import GIT_SHA_ENV_VAR, RESULT_ENV_VAR
from step_tasks.exit_codes import step_failure
from step_tasks.links import RETURN_KEY, STEP_LINKS, publish_summary


class LocalStepOperator(BaseOperator):
    """Runs ``python -m mlsteps <step> ...`` as a subprocess and returns its JSON result as XCom.

    The child's output streams into the task log. A non-zero exit fails the task with the step's
    one-line reason; exit code 2 (bad input or a refused action) fails without retrying.
    """

    template_fields = ("arguments", "extra_arguments")
    ui_color = "#e8f4fd"
    operator_extra_links = STEP_LINKS

    def __init__(
        self,
        *,
        step: str,
        arguments: Sequence[str],
        python: str,
        workdir: str,
        env: Mapping[str, str] | None = None,
        extra_arguments: Sequence[str] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.step = step
        self.arguments = list(arguments)
        self.extra_arguments = list(extra_arguments)
        self.python = python
        self.workdir = workdir
        self.env = dict(env or {})
        self._process: subprocess.Popen[str] | None = None

    @property
    def argv(self) -> list[str]:
        arguments = [*self.arguments, *self.extra_arguments]
        return [self.python, "-m", "mlsteps", self.step, *(str(arg) for arg in arguments)]

    def execute(self, context: Any) -> Any:
        with tempfile.TemporaryDirectory(prefix="mlsteps-") as scratch:
            result_path = Path(scratch) / "result.json"
            env = {**os.environ, **self.env, RESULT_ENV_VAR: str(result_path), "PYTHONUNBUFFERED": "1"}
            env.setdefault(GIT_SHA_ENV_VAR, _git_sha(self.workdir))
            self.log.info("Running step: %s", " ".join(self.argv))
            returncode, last_lines = self._run(env)
            if returncode != 0:
                if result_path.exists():  # a failed step's own account (e.g. its report): links read it
                    publish_summary(context, _push_result(context, json.loads(result_path.read_text())))
                raise step_failure(self.step, returncode, last_lines)
            if not result_path.exists():
                raise AirflowException(f"step {self.step} exited 0 but wrote no result to $ML_STEP_RESULT")
            result = json.loads(result_path.read_text())
        return publish_summary(context, result)

    def _run(self, env: dict[str, str]) -> tuple[int, deque[str]]:
        last_lines: deque[str] = deque(maxlen=20)
        self._process = subprocess.Popen(
            self.argv,
            cwd=self.workdir,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
            start_new_session=True,
        )
        assert self._process.stdout is not None
        for line in self._process.stdout:
            line = line.rstrip("\n")
            last_lines.append(line)
            self.log.info("%s", line)
        return self._process.wait(), last_lines

    def on_kill(self) -> None:
        if self._process is not None and self._process.poll() is None:
            os.killpg(self._process.pid, signal.SIGTERM)


def _push_result(context: Any, result: Any) -> Any:
    """Push a failed step's result as the ``return_value`` XCom (a failed task sets none itself)."""
    ti = context.get("ti") if isinstance(context, Mapping) else None
    if ti is not None:
        ti.xcom_push(key=RETURN_KEY, value=result)
    return result


def _git_sha(workdir: str) -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=workdir, capture_output=True, text=True, timeout=5, check=True
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
