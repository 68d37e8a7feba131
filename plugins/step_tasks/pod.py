"""Kubernetes mode: a hardened KubernetesPodOperator running the step's exec-form argv."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlsteps.contract.settings import (
    EXECUTION_MODE_ENV_VAR,
    NAMESPACE_ENV_VAR,
    REQUIRE_GPU_ENV_VAR,
    RESULT_ENV_VAR,
    SERVICE_ACCOUNT_ENV_VAR,
    STEP_IMAGE_ENV_VAR,
    STEP_SECRETS_ENV_VAR,
)
from step_tasks.settings import ExecutionSettings, Profile

if TYPE_CHECKING:
    from step_tasks.pod_operator import StepPodOperator

RESULT_PATH = "/airflow/xcom/return.json"
SCRATCH_PATH = "/tmp"
RUN_AS = 10001
#: Steps that train with ``model.engine: dask`` (``reproduce`` retrains a dask-trained version): in a
#: pod they create a DaskCluster through the Kubernetes API, so with ``dask_service_account`` set
#: their pods, and only theirs, run as that account with its API token.
DASK_STEPS = frozenset({"train", "reproduce"})


def build_pod_task(
    *,
    task_id: str,
    step: str,
    arguments: list[str],
    profile: Profile,
    settings: ExecutionSettings,
    map_over: Any = None,
    **operator_kwargs: Any,
) -> StepPodOperator | Any:
    """A deferrable, durable pod task with restricted-PSS security and Secret-ref credentials.

    With ``map_over`` (an XCom of argv lists), one pod per element runs the step with the shared
    ``arguments`` followed by that element (dynamic task mapping).
    """
    from step_tasks.pod_operator import StepPodOperator

    resources = settings.resources[profile]
    # The pod's deadline matches the task's timeout, so a timed-out task never leaves a pod running.
    timeout = operator_kwargs.get("execution_timeout") or resources.execution_timeout
    kwargs: dict[str, Any] = dict(
        task_id=task_id,
        name=f"mlsteps-{step}",
        random_name_suffix=True,
        cmds=["python", "-m", "mlsteps"],
        labels={"app.kubernetes.io/name": "mlsteps", "app.kubernetes.io/component": step},
        **_container(settings, profile, step),
        **_scheduling(settings, profile),
        **_identity(settings, step),
        **_hardening(),
        **_lifecycle(settings),
        active_deadline_seconds=int(timeout.total_seconds()),
        **operator_kwargs,
    )
    if map_over is not None:
        kwargs["cmds"] = [*kwargs["cmds"], step, *arguments]
        return StepPodOperator.partial(**kwargs).expand(arguments=map_over)
    return StepPodOperator(arguments=[step, *arguments], **kwargs)


def _creates_dask_clusters(settings: ExecutionSettings, step: str) -> bool:
    return bool(settings.dask_service_account) and step in DASK_STEPS


def _container(settings: ExecutionSettings, profile: Profile, step: str) -> dict[str, Any]:
    """Image, environment (the result path, the GPU requirement), Secret-ref credentials, resources.

    A step that creates a DaskCluster also learns its namespace, the plain step account and the
    Secret names, so that the scheduler and workers run there, as that account (without a token),
    with the same credentials.
    """
    from airflow.providers.cncf.kubernetes.secret import Secret
    from kubernetes.client import models as k8s

    resources = settings.resources[profile]
    env = {
        **settings.step_env,
        RESULT_ENV_VAR: RESULT_PATH,
        STEP_IMAGE_ENV_VAR: settings.image,
        EXECUTION_MODE_ENV_VAR: "kubernetes",
        "HOME": SCRATCH_PATH,
        "MPLCONFIGDIR": f"{SCRATCH_PATH}/matplotlib",
    }
    if profile == "gpu":
        env[REQUIRE_GPU_ENV_VAR] = "1"
    if _creates_dask_clusters(settings, step):
        env[NAMESPACE_ENV_VAR] = settings.namespace
        env[SERVICE_ACCOUNT_ENV_VAR] = settings.service_account
        env[STEP_SECRETS_ENV_VAR] = ",".join(settings.secret_names)
    return dict(
        image=settings.image,
        image_pull_policy=settings.image_pull_policy,
        env_vars=[k8s.V1EnvVar(name=name, value=value) for name, value in sorted(env.items())],
        secrets=[Secret("env", None, name) for name in settings.secret_names],
        container_resources=k8s.V1ResourceRequirements(
            requests=dict(resources.requests), limits=dict(resources.limits)
        ),
    )


def _scheduling(settings: ExecutionSettings, profile: Profile) -> dict[str, Any]:
    """Namespace; a GPU pod's node selector and tolerations."""
    from kubernetes.client import models as k8s

    gpu = profile == "gpu"
    return dict(
        namespace=settings.namespace,
        node_selector=dict(settings.gpu_node_selector) if gpu else None,
        tolerations=[k8s.V1Toleration(**_snake(t)) for t in settings.gpu_tolerations] if gpu else None,
    )


def _identity(settings: ExecutionSettings, step: str) -> dict[str, Any]:
    """The step account without an API token; the Dask account with one where the step needs the API.

    Only a step that creates a DaskCluster talks to the Kubernetes API, and only when the deployment
    names an account for it (the chart's ``dask.enabled``); every other pod has no token to lose.
    """
    if _creates_dask_clusters(settings, step):
        return dict(service_account_name=settings.dask_service_account, automount_service_account_token=True)
    return dict(service_account_name=settings.service_account, automount_service_account_token=False)


def _hardening() -> dict[str, Any]:
    """The restricted Pod Security Standard: non-root, seccomp, no privilege, a writable /tmp only."""
    from kubernetes.client import models as k8s

    return dict(
        security_context=k8s.V1PodSecurityContext(
            run_as_non_root=True,
            run_as_user=RUN_AS,
            run_as_group=RUN_AS,
            fs_group=RUN_AS,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
        ),
        container_security_context=_container_security_context(),
        xcom_sidecar_container_security_context=_container_security_context(),
        volumes=[k8s.V1Volume(name="scratch", empty_dir=k8s.V1EmptyDirVolumeSource(size_limit="10Gi"))],
        volume_mounts=[k8s.V1VolumeMount(name="scratch", mount_path=SCRATCH_PATH)],
    )


def _lifecycle(settings: ExecutionSettings) -> dict[str, Any]:
    """Deferrable and durable; the result through the XCom sidecar; pod cleanup and timeouts."""
    return dict(
        deferrable=True,
        poll_interval=settings.poll_interval_seconds,
        durable=True,
        do_xcom_push=True,
        get_logs=True,
        on_finish_action="delete_succeeded_pod" if settings.keep_failed_pods else "delete_pod",
        on_kill_action="delete_pod",
        startup_timeout_seconds=settings.startup_timeout_seconds,
        schedule_timeout_seconds=settings.schedule_timeout_seconds,
        # A failed step's last log lines (its one `ERROR:` line) become the task's failure message.
        termination_message_policy="FallbackToLogsOnError",
        log_events_on_failure=True,
    )


def unschedulable_reason(pod: Any, events: Any) -> str | None:
    """Why the scheduler could not place ``pod``, or ``None`` once it was scheduled.

    The newest ``FailedScheduling`` event's message (e.g. ``0/1 nodes are available: 1 Insufficient
    nvidia.com/gpu.``), else the ``PodScheduled`` condition's; the preemption detail is left out.
    """
    conditions = (pod.status.conditions if pod.status else None) or []
    scheduled = next((c for c in conditions if c.type == "PodScheduled"), None)
    if scheduled is not None and scheduled.status == "True":
        return None
    failed = [e for e in (getattr(events, "items", None) or []) if e.reason == "FailedScheduling"]
    failed.sort(key=lambda e: str(e.last_timestamp or e.event_time or e.metadata.creation_timestamp or ""))
    message = (failed[-1].message if failed else None) or (scheduled.message if scheduled else None)
    if not message:
        return "no scheduling decision was reported" if pod.spec and not pod.spec.node_name else None
    return message.split(" preemption:")[0].strip()


def fail_if_unschedulable(operator: Any, event: dict[str, Any]) -> None:
    """After a trigger ``timeout``: a pod that was never scheduled fails the task now, without retry.

    Waiting again on a retry cannot help where no node has what the pod asks for; the message names
    what is missing, from the scheduler's own ``FailedScheduling`` event. The pod is deleted first.

    Raises:
        AirflowFailException: The pod was not scheduled.
    """
    from airflow.sdk.exceptions import AirflowFailException

    if event.get("status") != "timeout":
        return
    from kubernetes.client.exceptions import ApiException

    try:
        pod = operator.hook.get_pod(event["name"], event["namespace"])
    except ApiException as err:
        if err.status == 404:  # gone already: the provider reports that
            return
        raise
    reason = unschedulable_reason(pod, operator.pod_manager.read_pod_events(pod))
    if reason is None:
        return
    operator.process_pod_deletion(pod, reraise=False)
    # The same event also ends a task whose execution_timeout passed first; only name the wait it was.
    waited = (
        f" within {operator.schedule_timeout_seconds} s" if "scheduled" in str(event.get("message")) else ""
    )
    raise AirflowFailException(
        f"pod {event['namespace']}/{event['name']} was not scheduled{waited}: {reason} Give a node what the "
        "task's resource profile asks for, or raise ML_POD_SCHEDULE_TIMEOUT where nodes are added on demand."
    )


def _container_security_context() -> Any:
    from kubernetes.client import models as k8s

    return k8s.V1SecurityContext(
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        run_as_non_root=True,
        run_as_user=RUN_AS,
        capabilities=k8s.V1Capabilities(drop=["ALL"]),
        seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault"),
    )


def _snake(toleration: Any) -> dict[str, Any]:
    """Kubernetes' camelCase toleration keys (as users write them) to the client's snake_case."""
    renames = {"tolerationSeconds": "toleration_seconds"}
    return {renames.get(str(key), str(key)): value for key, value in dict(toleration).items()}
