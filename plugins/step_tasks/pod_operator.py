"""``StepPodOperator``: the KubernetesPodOperator with the step tasks' links, summary and exit codes.

Kept apart from ``pod.py`` so the provider (slow to import) loads only in kubernetes mode.
"""

from __future__ import annotations

from typing import Any

from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSkipException

from step_tasks.exit_codes import step_failure
from step_tasks.links import STEP_LINKS, publish_summary
from step_tasks.pod import fail_if_unschedulable

#: The pod label that names the step (set by ``pod.step_pod_task``).
STEP_LABEL = "app.kubernetes.io/component"
#: ``trigger_reentry`` did not run within ``execute`` (the usual case: it runs after a deferral).
_NOT_REENTERED = object()


class StepPodOperator(KubernetesPodOperator):
    """Runs one step in a pod; its result's summary becomes an XCom and its ids become links.

    A failed step fails the task as ``LocalStepOperator`` does (``step_tasks.exit_codes``): exit
    code 2 with ``AirflowFailException`` (no retry), any other with ``AirflowException``, each with
    the step's last ``ERROR:`` line, read from the container's termination message (the pod sets
    ``FallbackToLogsOnError``, so that is the tail of the step's log).
    """

    operator_extra_links = STEP_LINKS

    def execute(self, context: Any) -> Any:
        self._reentry_result: Any = _NOT_REENTERED
        result = super().execute(context)
        if result is None and self._reentry_result is not _NOT_REENTERED:
            # A retry that finds its pod already finished re-enters at once, and the provider
            # (cncf.kubernetes 10.25, ``invoke_defer_method``) drops what ``trigger_reentry``
            # returned: without this the task's result (its XCom) would be None.
            return self._reentry_result
        return publish_summary(context, result)

    def trigger_reentry(self, context: Any, event: dict[str, Any]) -> Any:
        fail_if_unschedulable(self, event)  # before the provider waits on a pod that never started
        self._reentry_result = publish_summary(context, super().trigger_reentry(context, event))
        return self._reentry_result

    def get_or_create_pod(self, pod_request_obj: Any, context: Any) -> Any:
        """The provider's, except that a retry never adopts the pod of an earlier try whose step has ended.

        The provider reattaches a retry to the pod an earlier try left (found by its labels, or by
        the pod identity kept in the task state store) unless the pod's phase is terminal. The XCom
        sidecar keeps a pod Running after its step has ended, so a retry could adopt the previous
        try's finished pod and report its exit code again without running the step. It happens
        when Airflow fails a resumed deferred try on the stale executor event of its deferral
        (apache/airflow#72716; seen in tests/k8s). Such a pod is marked checked and deleted (kept,
        if failed pods are kept), and the retry starts its own pod. A pod of this same try (a
        restarted worker or triggerer) is reattached as before.
        """
        try_number = context["ti"].try_number
        if self.reattach_on_restart and try_number > 1:  # a first try has no earlier pod to look up
            earlier = self.find_pod(pod_request_obj.metadata.namespace, context=context)
            if earlier is not None and ended_in_earlier_try(earlier, self.base_container_name, try_number):
                self.log.info(
                    "Pod %s of an earlier try has ended; try %s starts its own pod",
                    earlier.metadata.name,
                    try_number,
                )
                self.patch_already_checked(earlier, reraise=False)
                self.process_pod_deletion(earlier, reraise=False)
        return super().get_or_create_pod(pod_request_obj, context)

    def cleanup(
        self, pod: Any, remote_pod: Any, xcom_result: dict | None = None, context: Any = None
    ) -> None:
        """The provider's cleanup (both the deferred and the sync path end here), with the step's exit code.

        The provider raises a plain ``AirflowException`` for any failed pod; once the step
        container has terminated with an exit code, that becomes the step's own failure.
        """
        try:
            super().cleanup(pod=pod, remote_pod=remote_pod, xcom_result=xcom_result, context=context)
        except (AirflowFailException, AirflowSkipException):
            raise
        except AirflowException as err:
            terminated = base_container_terminated(remote_pod, self.base_container_name)
            if terminated is None or not terminated.exit_code:
                raise
            step = (self.labels or {}).get(STEP_LABEL) or self.task_id
            lines = str(terminated.message or "").splitlines()
            raise step_failure(step, terminated.exit_code, lines) from err


def ended_in_earlier_try(pod: Any, container: str, try_number: int) -> bool:
    """Whether ``pod`` is another try's than ``try_number``, and its ``container`` (the step) has ended."""
    labels = (pod.metadata.labels if pod.metadata is not None else None) or {}
    if labels.get("try_number") == str(try_number):
        return False
    return base_container_terminated(pod, container) is not None


def base_container_terminated(pod: Any, container: str) -> Any:
    """The ``V1ContainerStateTerminated`` of ``container`` in ``pod``, or None if it has not terminated."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    status = next((s for s in statuses if s.name == container), None)
    return status.state.terminated if status is not None and status.state is not None else None
