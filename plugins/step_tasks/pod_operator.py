"""``StepPodOperator``: the KubernetesPodOperator with the step tasks' links and summary.

Kept apart from ``pod.py`` so the provider (slow to import) loads only in kubernetes mode.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

from step_tasks.links import STEP_LINKS, publish_summary


class StepPodOperator(KubernetesPodOperator):
    """Runs one step in a pod; its result's summary becomes an XCom and its ids become links."""

    operator_extra_links = STEP_LINKS

    def execute(self, context: Any) -> Any:
        return publish_summary(context, super().execute(context))

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        return publish_summary(context, super().trigger_reentry(context, event))
