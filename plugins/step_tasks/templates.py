"""Jinja snippets shared by DAGs. Each renders into exactly one argv element, never a shell."""

from __future__ import annotations

#: The run's reference instant: the data interval end, or run_after for a manual run without one.
_INSTANT = "(data_interval_end or dag_run.run_after)"

#: Data interval bounds as ISO timestamps.
INTERVAL_START = "{{ (data_interval_start or dag_run.run_after) | ts }}"
INTERVAL_END = "{{ " + _INSTANT + " | ts }}"
#: The day a daily run is about (the data interval start), as YYYY-MM-DD.
DS = "{{ (data_interval_start or dag_run.run_after) | ds }}"


def xcom(task_ids: str | list[str], key: str) -> str:
    """A template for one field of an upstream step's JSON result.

    With several task ids (e.g. branches of which one ran), the first that returned a result wins.
    """
    ids = [task_ids] if isinstance(task_ids, str) else task_ids
    pulls = " or ".join(f"ti.xcom_pull(task_ids={task_id!r})" for task_id in ids)
    return "{{ ((" + pulls + ") or {}).get(" + repr(key) + ") }}"
