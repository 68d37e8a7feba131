"""``step_task``: the one place that turns a step, its options and a profile into an Airflow task."""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from typing import Any

from airflow.sdk import BaseOperator

from mlsteps.cli import CACHEABLE_STEPS, STEPS
from step_tasks.settings import PROFILES, ExecutionSettings, Profile, SettingsError, load_settings

OptionValue = str | int | float | bool | None

#: Every step records the DAG and run that produced its outputs.
LINEAGE_OPTIONS: dict[str, str] = {"--dag-id": "{{ dag.dag_id }}", "--run-id": "{{ run_id }}"}
#: A cacheable step runs even when an earlier run can be reused, when the DAG run's ``force`` Param is
#: on (``step_tasks.params.FORCE_PARAM``); a DAG without that Param never forces. One argv element.
FORCE_OPTION: dict[str, str] = {"--force": "{{ 'true' if params.get('force', false) else 'false' }}"}


@cache
def _settings() -> ExecutionSettings:
    return load_settings()


def dag_default_args(settings: ExecutionSettings | None = None) -> dict[str, Any]:
    """``default_args`` for a DAG: its owner and the same retry policy the step tasks get.

    Step tasks set these themselves; this covers a DAG's small Python tasks (branches, gates).
    """
    settings = settings or _settings()
    return {"owner": "ml-platform", **_retry_policy(settings)}


def _retry_policy(settings: ExecutionSettings) -> dict[str, Any]:
    return {
        "retries": settings.retries,
        "retry_delay": settings.retry_delay,
        "retry_exponential_backoff": 2.0,
        "max_retry_delay": settings.max_retry_delay,
    }


def step_task(
    step: str,
    *,
    task_id: str | None = None,
    options: Mapping[str, OptionValue] | None = None,
    profile: Profile = "cpu",
    settings: ExecutionSettings | None = None,
    map_over: Any = None,
    **operator_kwargs: Any,
) -> BaseOperator | Any:
    """Build the task that runs ``python -m mlsteps <step> <options>``.

    Args:
        step: A step name from ``python -m mlsteps --help``.
        task_id: Defaults to the step name with ``-`` replaced by ``_``.
        options: ``{"--flag": value}``. Values may be Jinja templates; each renders into exactly
            one argv element, so no value can inject another option or a shell command. ``None``
            values are left out; ``True`` adds the bare flag.
        profile: ``cpu`` or ``gpu`` (GPU limit, node selector and tolerations in kubernetes mode).
        settings: Deployment settings; read once from the environment by default.
        map_over: An upstream XCom holding a list of argv lists. The task is then mapped: one
            task instance (one pod) per list, each running ``options`` followed by its list.
        **operator_kwargs: Passed to the operator (e.g. ``trigger_rule``). ``doc_md``, if given,
            replaces the step's own one-line description at the top of the task's docs.

    Returns:
        A ``KubernetesPodOperator`` in kubernetes mode, else a ``LocalStepOperator``; mapped when
        ``map_over`` is given.
    """
    settings = settings or _settings()
    if profile not in PROFILES:
        raise SettingsError(f"profile {profile!r} is not one of {', '.join(PROFILES)}")
    if step not in STEPS:
        raise ValueError(f"step {step!r} is not one of: {', '.join(STEPS)}")
    cache_options = FORCE_OPTION if step in CACHEABLE_STEPS else {}
    arguments = to_argv({**(options or {}), **cache_options, **LINEAGE_OPTIONS})
    common: dict[str, Any] = {
        "task_id": task_id or step.replace("-", "_"),
        **_retry_policy(settings),
        "execution_timeout": settings.resources[profile].execution_timeout,
        **operator_kwargs,
        "doc_md": task_doc(step, profile, settings, operator_kwargs.get("doc_md")),
    }
    if settings.mode == "kubernetes":
        from step_tasks.pod import build_pod_task

        return build_pod_task(
            step=step, arguments=arguments, profile=profile, settings=settings, map_over=map_over, **common
        )
    from step_tasks.local import LocalStepOperator

    local: dict[str, Any] = {
        "step": step,
        "arguments": arguments,
        "python": settings.python,
        "workdir": settings.workdir,
    }
    if map_over is not None:
        return LocalStepOperator.partial(**local, env=settings.step_env, **common).expand(
            extra_arguments=map_over
        )
    return LocalStepOperator(**local, env=settings.step_env, **common)


def task_doc(step: str, profile: Profile, settings: ExecutionSettings, lead: str | None = None) -> str:
    """The task's docs in the UI: what the step does, how it runs, and where its results show."""
    where = (
        f"a pod (`{settings.image}`, profile `{profile}`)"
        if settings.mode == "kubernetes"
        else f"a local subprocess (profile `{profile}`)"
    )
    return (
        f"{lead or STEPS[step][1]}\n\n"
        f"Runs `python -m mlsteps {step}` in {where}; its `--help` lists the options.\n\n"
        "**Result**: the step's JSON result is the `return_value` XCom, and its one-line summary the "
        "`summary` XCom (tab Storage, XCom). **Links** (the Details tab): *MLflow run*, *Model version* "
        "and *Report*, when the step logged a run, produced or judged a version, or wrote a report."
    )


def to_argv(options: Mapping[str, OptionValue]) -> list[str]:
    """``{"--a": 1, "--flag": True, "--skip": None}`` -> ``["--a", "1", "--flag"]``."""
    argv: list[str] = []
    for flag, value in options.items():
        if not flag.startswith("--") or " " in flag:
            raise ValueError(f"option {flag!r} must look like --name")
        if value is None or value is False:
            continue
        argv.append(flag)
        if value is not True:
            argv.append(str(value))
    return argv
