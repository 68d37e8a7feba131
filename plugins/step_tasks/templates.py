"""Jinja snippets shared by DAGs. Each renders into exactly one argv element, never a shell.

A run triggered without a logical date (Airflow 3's default for ``airflow dags trigger`` and for
``POST /api/v2/dags/{dag_id}/dagRuns`` with ``"logical_date": null``) has no ``data_interval_*``,
``logical_date``, ``ds`` or ``ts`` keys in its template context at all, and the DAGs render under
StrictUndefined: every snippet here reads those keys only through ``default(..., true)``. Such a
run is about the day before its ``run_after``: its interval is ``[run_after - 1 day, run_after)``.
"""

from __future__ import annotations

from mlsteps.contract.results import RESULTS, result_keys

#: Jinja expressions (no braces) for the run's data interval bounds, for any kind of run.
START_EXPR = "(data_interval_start | default(dag_run.run_after - macros.timedelta(days=1), true))"
END_EXPR = "(data_interval_end | default(dag_run.run_after, true))"

#: Data interval bounds as ISO timestamps.
INTERVAL_START = "{{ " + START_EXPR + " | ts }}"
INTERVAL_END = "{{ " + END_EXPR + " | ts }}"
#: The day a daily run is about (the data interval start), as YYYY-MM-DD.
DS = "{{ " + START_EXPR + " | ds }}"


def xcom(task_ids: str | list[str], key: str, step: str | None = None, default: str | None = None) -> str:
    """A template for one field of an upstream step's JSON result.

    With several task ids (e.g. branches of which one ran), the first that returned a result wins.
    ``step`` is the step those tasks run; by default, the one task id with ``-`` for ``_``.
    ``default`` is rendered when the field is empty (e.g. ``none`` for no champion).

    Raises:
        ValueError: The step's result (``mlsteps.contract.results``) has no such key, or is not declared
            there: the DAG fails to parse, naming the key, instead of rendering ``None``.
    """
    ids = [task_ids] if isinstance(task_ids, str) else task_ids
    if step is None:
        if len(ids) != 1:
            raise ValueError(f"xcom({ids}, {key!r}): name the step these tasks run (step=...)")
        step = ids[0].replace("_", "-")
    if step not in RESULTS:
        raise ValueError(f"xcom: the result of step {step!r} is not declared in mlsteps/contract/results.py")
    if key not in result_keys(step):
        raise ValueError(
            f"xcom: step {step!r} has no result key {key!r} (it has: {', '.join(sorted(result_keys(step)))})"
        )
    pulls = " or ".join(f"ti.xcom_pull(task_ids={task_id!r})" for task_id in ids)
    fallback = "" if default is None else f" or {default!r}"
    return "{{ ((" + pulls + ") or {}).get(" + repr(key) + ")" + fallback + " }}"
