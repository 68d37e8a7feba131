"""The one factory that builds every step task, in local or kubernetes mode."""

from step_tasks.factory import dag_default_args, step_task
from step_tasks.settings import ExecutionSettings, Profile, load_settings
from step_tasks.templates import DS, INTERVAL_END, INTERVAL_START, xcom

__all__ = [
    "DS",
    "INTERVAL_END",
    "INTERVAL_START",
    "dag_default_args",
    "ExecutionSettings",
    "Profile",
    "load_settings",
    "step_task",
    "xcom",
]
