"""The Helm chart under helm/mlsteps, in the style of the official Airflow chart's tests.

Always: values.yaml, and values files that must be refused, against values.schema.json.
Rendering and linting use the `helm` binary where it is on PATH; otherwise Helm's own Go engine
through helm-python-sdk (the Helm v4 SDK, no binary); where neither exists they are skipped.
The official Airflow chart (the dependency) cannot be fetched without network access, so unless
helm/mlsteps/charts/ holds it, a copy of the chart without the dependency is rendered: only this
chart's own templates are checked, never the Airflow chart's.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import tempfile
from functools import cache
from pathlib import Path
from typing import Any

import jmespath
import jsonschema
import kubernetes_validate
import pytest
import yaml
from kubernetes.client import ApiClient

from mlsteps.cli import STEPS
from step_tasks import step_task
from step_tasks.pod import DASK_STEPS
from step_tasks.settings import load_settings

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "helm" / "mlsteps"
BAD_VALUES = sorted((Path(__file__).parent / "values").glob("bad-*.yaml"))
K8S_VERSION = "1.32.0"
RELEASE, NAMESPACE = "prod", "airflow"


def _values() -> dict[str, Any]:
    return dict(yaml.safe_load((CHART / "values.yaml").read_text()))


def _schema() -> dict[str, Any]:
    return dict(json.loads((CHART / "values.schema.json").read_text()))


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of a values file over values.yaml: maps merge, everything else replaces."""
    merged = copy.deepcopy(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


# --- values.schema.json (always) -------------------------------------------------------------


def test_schema_is_valid_draft_7_and_strict() -> None:
    schema = _schema()
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["additionalProperties"] is False
    # Every object of our own values refuses unknown keys (the Airflow chart has its own schema).
    for name, prop in schema["properties"].items():
        if prop.get("type") == "object" and name not in ("airflow", "global"):
            assert "additionalProperties" in prop, name


def test_values_yaml_meets_the_schema() -> None:
    jsonschema.validate(_values(), _schema(), cls=jsonschema.Draft7Validator)


@pytest.mark.parametrize("values_file", BAD_VALUES, ids=lambda path: path.stem)
def test_bad_values_are_refused_where_they_are_wrong(values_file: Path) -> None:
    expected = re.search(r"# expect: (\S+)", values_file.read_text())
    assert expected, f"{values_file.name} names no expected path"
    values = _merge(_values(), yaml.safe_load(values_file.read_text()))
    errors = list(jsonschema.Draft7Validator(_schema()).iter_errors(values))
    paths = {".".join(map(str, error.absolute_path)) or "(root)" for error in errors}
    assert expected[1] in paths, f"{values_file.name}: refused at {paths or 'nowhere'}"


# --- rendering ----------------------------------------------------------------------------------


def _helm_binary() -> str | None:
    return shutil.which("helm")


def _helm_sdk() -> Any:
    try:
        import helm_python
    except (ImportError, OSError):
        return None
    return helm_python


def _engine() -> str:
    if _helm_binary():
        return "helm"
    if _helm_sdk():
        return "sdk"
    pytest.skip("no `helm` binary on PATH and helm-python-sdk is not installed: chart not rendered or linted")


@pytest.fixture(scope="module")
def chart_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The chart as it is when charts/ holds the Airflow chart; else a copy without the dependency."""
    if list((CHART / "charts").glob("airflow-*.tgz")):
        return CHART
    target = tmp_path_factory.mktemp("chart") / "mlsteps"
    shutil.copytree(CHART, target, ignore=shutil.ignore_patterns("charts", "Chart.lock"))
    metadata = yaml.safe_load((target / "Chart.yaml").read_text())
    metadata.pop("dependencies")
    (target / "Chart.yaml").write_text(yaml.safe_dump(metadata, sort_keys=False))
    return target


@cache
def _render_text(chart: Path, values_json: str, name: str, namespace: str) -> dict[str, str]:
    """Template path -> rendered text, from `helm template` or the SDK."""
    if _engine() == "helm":
        with tempfile.NamedTemporaryFile("w", suffix=".json") as values_file:
            values_file.write(values_json)
            values_file.flush()
            result = subprocess.run(
                [str(_helm_binary()), "template", name, str(chart), "-n", namespace, "-f", values_file.name],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            )
        parts = re.split(r"^# Source: (\S+)$", result.stdout, flags=re.MULTILINE)
        rendered: dict[str, str] = {}
        for path, text in zip(parts[1::2], parts[2::2], strict=True):
            rendered[path] = rendered.get(path, "") + "\n---\n" + text
        return rendered
    helm = _helm_sdk()
    with helm.Chart.load(str(chart)) as loaded:
        return dict(loaded.render(json.loads(values_json), name=name, namespace=namespace))


def render_chart(
    chart: Path,
    values: dict[str, Any] | None = None,
    show_only: list[str] | None = None,
    name: str = RELEASE,
    namespace: str = NAMESPACE,
) -> list[dict[str, Any]]:
    """The rendered manifests, as the official chart's tests/helm_template_generator.py returns them."""
    rendered = _render_text(chart, json.dumps(values or {}, sort_keys=True), name, namespace)
    docs = []
    for path, text in sorted(rendered.items()):
        if path.endswith("NOTES.txt"):
            continue
        if show_only and not any(path.endswith(only) for only in show_only):
            continue
        docs.extend(doc for doc in yaml.safe_load_all(text) if doc)
    return docs


def by_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc["kind"] == kind]


def test_lint_reports_no_errors() -> None:
    engine = _engine()
    if engine == "helm":
        result = subprocess.run(
            [str(_helm_binary()), "lint", str(CHART), "--namespace", NAMESPACE],
            capture_output=True,
            text=True,
            check=False,
            timeout=60,
        )
        output = result.stdout + result.stderr
        # Without `helm dependency build` (network) charts/ lacks the Airflow chart; nothing else may fail.
        problems = [line for line in output.splitlines() if line.startswith(("[ERROR]", "[WARNING]"))]
        unexpected = [line for line in problems if "dependencies" not in line or "airflow" not in line]
        assert not unexpected, output
        assert result.returncode == 0 or problems, output
        return
    report = _helm_sdk().lint(str(CHART), namespace=NAMESPACE, kube_version=f"v{K8S_VERSION}")
    findings = [m for m in report["messages"] if m["severity"] >= 2]
    # The one warning expected here: charts/ lacks the Airflow chart (helm dependency build fetches it).
    unexpected = [m for m in findings if "missing these dependencies: airflow" not in m["error"]]
    assert not report["errors"]
    assert not unexpected, unexpected


def test_every_manifest_is_valid_kubernetes(chart_dir: Path) -> None:
    docs = render_chart(chart_dir)
    kinds = sorted(doc["kind"] for doc in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "ConfigMap",
            "LimitRange",
            "Namespace",
            "NetworkPolicy",
            "ResourceQuota",
            "Role",
            "RoleBinding",
            "ServiceAccount",
        ]
    )
    for doc in docs:
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_step_objects_live_in_the_step_namespace(chart_dir: Path) -> None:
    docs = render_chart(chart_dir, {"stepNamespace": {"name": "training-pods"}})
    (namespace,) = by_kind(docs, "Namespace")
    assert namespace["metadata"]["name"] == "training-pods"
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for kind in ("ServiceAccount", "Role", "RoleBinding", "NetworkPolicy", "ResourceQuota", "LimitRange"):
        assert jmespath.search("[].metadata.namespace", by_kind(docs, kind)) == ["training-pods"], kind
    # Airflow's side stays in the release namespace.
    assert set(jmespath.search("[].metadata.namespace", by_kind(docs, "ConfigMap"))) == {NAMESPACE}


def test_existing_namespace_is_not_created(chart_dir: Path) -> None:
    docs = render_chart(chart_dir, {"stepNamespace": {"create": False}})
    assert by_kind(docs, "Namespace") == []
    assert by_kind(docs, "Role")


def test_step_service_account_has_no_token(chart_dir: Path) -> None:
    (account,) = render_chart(chart_dir, show_only=["templates/serviceaccount.yaml"])
    assert account["automountServiceAccountToken"] is False
    assert account["metadata"]["name"] == "ml-steps"


def _rules(docs: list[dict[str, Any]]) -> dict[str, set[str]]:
    (role,) = by_kind(docs, "Role")
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        assert rule["apiGroups"] == [""], rule
        for resource in rule["resources"]:
            granted.setdefault(resource, set()).update(rule["verbs"])
    return granted


def test_launcher_role_is_least_privilege(chart_dir: Path) -> None:
    granted = _rules(render_chart(chart_dir, show_only=["templates/rbac.yaml"]))
    assert granted == {
        "pods": {"create", "get", "list", "watch", "delete", "patch"},
        "pods/log": {"get"},
        "pods/exec": {"create", "get"},
        "events": {"list", "watch"},
    }
    assert not any("secret" in resource for resource in granted)
    assert not any("*" in verbs or "*" in resource for resource, verbs in granted.items())


def test_pods_exec_only_while_the_xcom_sidecar_needs_it(chart_dir: Path) -> None:
    granted = _rules(render_chart(chart_dir, {"xcomSidecar": {"enabled": False}}, ["templates/rbac.yaml"]))
    assert "pods/exec" not in granted
    assert granted["pods"] == {"create", "get", "list", "watch", "delete", "patch"}


@pytest.mark.parametrize(
    ("airflow_values", "expected"),
    [
        ({}, ["prod-airflow-worker", "prod-airflow-triggerer"]),
        (
            {"executor": "LocalExecutor"},
            ["prod-airflow-worker", "prod-airflow-triggerer", "prod-airflow-scheduler"],
        ),
        ({"fullnameOverride": "af"}, ["af-worker", "af-triggerer"]),
    ],
)
def test_role_binding_names_the_airflow_chart_service_accounts(
    chart_dir: Path, airflow_values: dict[str, Any], expected: list[str]
) -> None:
    docs = render_chart(chart_dir, {"airflow": airflow_values}, ["templates/rbac.yaml"])
    (binding,) = by_kind(docs, "RoleBinding")
    assert jmespath.search("subjects[].name", binding) == expected
    assert set(jmespath.search("subjects[].namespace", binding)) == {NAMESPACE}
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": by_kind(docs, "Role")[0]["metadata"]["name"],
    }


def test_role_binding_takes_explicit_service_accounts(chart_dir: Path) -> None:
    accounts = [{"name": "launcher", "namespace": "ops"}, {"name": "triggerer"}]
    docs = render_chart(chart_dir, {"rbac": {"launcherServiceAccounts": accounts}}, ["templates/rbac.yaml"])
    (binding,) = by_kind(docs, "RoleBinding")
    assert jmespath.search("subjects[].[name, namespace]", binding) == [
        ["launcher", "ops"],
        ["triggerer", NAMESPACE],
    ]


def test_network_policy_denies_ingress_and_limits_egress(chart_dir: Path) -> None:
    (policy,) = render_chart(chart_dir, show_only=["templates/networkpolicy.yaml"])
    spec = policy["spec"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == []
    assert len(spec["egress"]) == 4
    for rule in spec["egress"]:
        assert rule["to"], "a rule without destinations allows every address"
        assert rule["ports"]
    assert jmespath.search("egress[0].ports[].port", spec) == [53, 53]
    assert {"10.0.0.0/8", "169.254.0.0/16"} <= set(jmespath.search("egress[1].to[0].ipBlock.except", spec))
    assert jmespath.search("egress[2].ports[0].port", spec) == 5000
    assert jmespath.search("egress[3].ports[0].port", spec) == 6379


def test_network_policy_rules_can_be_switched_off_and_added(chart_dir: Path) -> None:
    minio = {"to": [{"podSelector": {"matchLabels": {"app": "minio"}}}], "ports": [{"port": 9000}]}
    values = {"networkPolicy": {"egress": {"s3": {"enabled": False}}, "extraEgress": [minio]}}
    (policy,) = render_chart(chart_dir, values, ["templates/networkpolicy.yaml"])
    ports = jmespath.search("spec.egress[].ports[].port", policy)
    assert 443 not in ports
    assert 9000 in ports
    kubernetes_validate.validate(policy, K8S_VERSION, strict=True)


def test_quota_caps_gpus_and_the_limit_range_covers_the_xcom_sidecar(chart_dir: Path) -> None:
    docs = render_chart(chart_dir, show_only=["templates/resourcequota.yaml"])
    (quota,) = by_kind(docs, "ResourceQuota")
    hard = quota["spec"]["hard"]
    assert hard["requests.nvidia.com/gpu"] == "4"
    assert not any(key.startswith("limits.nvidia.com") for key in hard)
    (limits,) = by_kind(docs, "LimitRange")
    # The quota counts limits.cpu/memory, and the sidecar declares none: the LimitRange fills them in.
    assert {"limits.cpu", "limits.memory"} <= set(hard)
    assert set(jmespath.search("spec.limits[0].default", limits)) == {"cpu", "memory"}


def _execution_env(docs: list[dict[str, Any]]) -> dict[str, str]:
    (config_map,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-execution")]
    return dict(config_map["data"])


def test_execution_settings_reach_airflow_under_the_name_it_loads(chart_dir: Path) -> None:
    docs = render_chart(chart_dir)
    (config_map,) = [d for d in by_kind(docs, "ConfigMap") if d["metadata"]["name"].endswith("-execution")]
    # The Airflow chart renders extraEnvFrom through `tpl`: resolve the one expression it holds.
    env_from = yaml.safe_load(_values()["airflow"]["extraEnvFrom"].replace("{{ .Release.Name }}", RELEASE))
    assert env_from == [{"configMapRef": {"name": config_map["metadata"]["name"]}}]


def test_factory_builds_pods_that_fit_the_chart(chart_dir: Path) -> None:
    """Chart values -> ConfigMap -> the factory's settings -> a pod that the chart's objects admit."""
    docs = render_chart(chart_dir, {"stepImage": {"digest": "sha256:" + "a" * 64}})
    settings = load_settings(_execution_env(docs))
    assert settings.mode == "kubernetes"
    assert settings.image == "registry.example.com/mlsteps@sha256:" + "a" * 64
    pod_task = step_task("train", options={"--device": "cuda"}, profile="gpu", settings=settings)
    pod = ApiClient().sanitize_for_serialization(pod_task.build_pod_request_obj(context=None, dry_run=True))
    kubernetes_validate.validate(pod, K8S_VERSION, strict=True)
    (namespace,) = by_kind(docs, "Namespace")
    (account,) = by_kind(docs, "ServiceAccount")
    (policy,) = by_kind(docs, "NetworkPolicy")
    assert pod["metadata"]["namespace"] == namespace["metadata"]["name"] == policy["metadata"]["namespace"]
    assert pod["spec"]["serviceAccountName"] == account["metadata"]["name"]
    selector = policy["spec"]["podSelector"]["matchLabels"]
    assert selector.items() <= pod["metadata"]["labels"].items(), "the NetworkPolicy must select step pods"
    values = _values()
    assert pod["spec"]["nodeSelector"] == values["gpu"]["nodeSelector"]
    assert jmespath.search("spec.tolerations[].key", pod) == [t["key"] for t in values["gpu"]["tolerations"]]
    secret_refs = jmespath.search("spec.containers[0].envFrom[].secretRef.name", pod)
    assert secret_refs == [values["secrets"][key] for key in ("s3", "mlflow", "feast")]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert env["ML_LAKE_URI"] == values["execution"]["lakeUri"]
    assert pod_task.schedule_timeout_seconds == values["execution"]["podScheduleTimeoutSeconds"]
    assert pod_task.poll_interval == values["execution"]["podPollIntervalSeconds"]
    assert env["ML_PIPELINE_CONFIG"] == values["execution"]["pipelineConfigPath"]


def test_pipeline_config_is_the_one_the_images_bake_in(chart_dir: Path) -> None:
    baked = (REPO_ROOT / "include" / "config" / "pipeline.yaml").read_text()
    assert (CHART / "files" / "pipeline.yaml").read_text() == baked, "copy include/config/pipeline.yaml"
    docs = render_chart(chart_dir, show_only=["templates/configmap-pipeline.yaml"])
    (config_map,) = docs
    assert yaml.safe_load(config_map["data"]["pipeline.yaml"]) == yaml.safe_load(baked)
    values = _values()
    mount_dir, file_name = values["execution"]["pipelineConfigPath"].rsplit("/", 1)
    assert file_name in config_map["data"]
    (volume,) = [v for v in values["airflow"]["volumes"] if v["name"] == "mlsteps-pipeline-config"]
    assert volume["configMap"]["name"] == config_map["metadata"]["name"]
    (mount,) = [m for m in values["airflow"]["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["mountPath"] == mount_dir


def test_pipeline_config_content_can_be_replaced(chart_dir: Path) -> None:
    docs = render_chart(
        chart_dir, {"pipelineConfig": {"content": "name: other\n"}}, ["templates/configmap-pipeline.yaml"]
    )
    assert docs[0]["data"]["pipeline.yaml"] == "name: other"


def test_chart_pins_the_official_airflow_chart_and_our_airflow_version() -> None:
    metadata = yaml.safe_load((CHART / "Chart.yaml").read_text())
    (dependency,) = metadata["dependencies"]
    assert dependency["name"] == "airflow"
    assert dependency["repository"] == "https://airflow.apache.org"
    assert re.fullmatch(r"\d+\.\d+\.\d+", dependency["version"]), "an exact version, not a range"
    section, key = dependency["condition"].split(".")
    values = _values()
    assert values[section][key] is True
    pinned = re.search(r"apache-airflow==(\S+)", (REPO_ROOT / "requirements.txt").read_text())
    assert pinned
    assert values["airflow"]["airflowVersion"] == pinned[1]
    assert values["airflow"]["images"]["airflow"]["repository"].endswith("mlsteps-airflow")


def test_helm_refuses_bad_values_too(chart_dir: Path) -> None:
    """Helm checks values.schema.json itself on install and template, with its own validator."""
    if _engine() != "sdk":
        pytest.skip("checked through the SDK only")
    helm = _helm_sdk()
    with helm.Chart.load(str(chart_dir)) as chart:
        for values_file in BAD_VALUES:
            with pytest.raises(helm.HelmValuesError):
                chart.render(yaml.safe_load(values_file.read_text()), name=RELEASE, namespace=NAMESPACE)


# --- Dask training in kubernetes mode (dask.enabled) --------------------------------------------

DASK_ON: dict[str, Any] = {"dask": {"enabled": True}}
DASK_POD_LABELS = {"app.kubernetes.io/name": "mlsteps-dask"}
SCHEDULER_PORTS = [{"protocol": "TCP", "port": 8786}, {"protocol": "TCP", "port": 8787}]


def _named(docs: list[dict[str, Any]], kind: str, suffix: str) -> dict[str, Any]:
    (doc,) = [d for d in by_kind(docs, kind) if d["metadata"]["name"].endswith(suffix)]
    return doc


def _dask_policy(chart: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    return _named(render_chart(chart, _merge(DASK_ON, values or {})), "NetworkPolicy", "-dask")


def _steps_policy(chart: Path, values: dict[str, Any]) -> dict[str, Any]:
    return _named(render_chart(chart, values, ["templates/networkpolicy.yaml"]), "NetworkPolicy", "-steps")


def _launcher_policy(chart: Path, values: dict[str, Any] | None = None) -> dict[str, Any]:
    docs = render_chart(chart, _merge(DASK_ON, values or {}), ["templates/networkpolicy-dask-launcher.yaml"])
    return _named(docs, "NetworkPolicy", "-dask-launcher")


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a LabelSelector matches these labels, as Kubernetes evaluates it."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expression in selector.get("matchExpressions", []):
        key, operator, values = expression["key"], expression["operator"], expression.get("values", [])
        matched = {
            "In": key in labels and labels[key] in values,
            "NotIn": key not in labels or labels[key] not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[operator]
        if not matched:
            return False
    return True


def _factory_pod(chart: Path, step: str) -> dict[str, Any]:
    """The pod the factory builds for a step from the chart's ConfigMap, with dask.enabled."""
    settings = load_settings(_execution_env(render_chart(chart, DASK_ON)))
    pod = step_task(step, settings=settings).build_pod_request_obj(context=None, dry_run=True)
    return dict(ApiClient().sanitize_for_serialization(pod))


def test_dask_off_by_default_renders_no_dask_object(chart_dir: Path) -> None:
    names = [doc["metadata"]["name"] for doc in render_chart(chart_dir)]
    assert not [name for name in names if "dask" in name]


def test_dask_off_by_default_names_no_dask_account(chart_dir: Path) -> None:
    assert "ML_DASK_SERVICE_ACCOUNT" not in _execution_env(render_chart(chart_dir))


def test_dask_on_renders_valid_kubernetes_objects(chart_dir: Path) -> None:
    for doc in render_chart(chart_dir, DASK_ON):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_dask_objects_live_in_the_step_namespace(chart_dir: Path) -> None:
    docs = render_chart(chart_dir, {**DASK_ON, "stepNamespace": {"name": "training-pods"}})
    dask_docs = [doc for doc in docs if "dask" in doc["metadata"]["name"]]
    assert sorted(doc["kind"] for doc in dask_docs) == [
        "NetworkPolicy",
        "NetworkPolicy",
        "Role",
        "RoleBinding",
        "ServiceAccount",
    ]
    assert {doc["metadata"]["namespace"] for doc in dask_docs} == {"training-pods"}


def test_dask_account_reaches_the_factory_through_the_config_map(chart_dir: Path) -> None:
    values = _merge(DASK_ON, {"dask": {"serviceAccount": {"name": "trainer"}}})
    assert _execution_env(render_chart(chart_dir, values))["ML_DASK_SERVICE_ACCOUNT"] == "trainer"


def test_dask_worker_resources_reach_the_train_step_as_json(chart_dir: Path) -> None:
    resources = {"requests": {"cpu": "500m"}, "limits": {"memory": "6Gi"}}
    values = _merge(DASK_ON, {"dask": {"workerResources": resources}})
    env = _execution_env(render_chart(chart_dir, values))
    assert json.loads(env["ML_DASK_WORKER_RESOURCES"]) == resources


def test_dask_worker_resources_are_unset_by_default(chart_dir: Path) -> None:
    assert "ML_DASK_WORKER_RESOURCES" not in _execution_env(render_chart(chart_dir, DASK_ON))


def test_dask_account_mounts_no_token_by_itself(chart_dir: Path) -> None:
    (account,) = render_chart(chart_dir, DASK_ON, ["templates/serviceaccount-dask.yaml"])
    assert (account["metadata"]["name"], account["automountServiceAccountToken"]) == ("ml-steps-dask", False)


def test_dask_role_grants_exactly_what_a_daskcluster_needs(chart_dir: Path) -> None:
    role = _named(render_chart(chart_dir, DASK_ON, ["templates/rbac-dask.yaml"]), "Role", "-dask-cluster")
    assert role["rules"] == [
        {
            "apiGroups": ["kubernetes.dask.org"],
            "resources": ["daskclusters"],
            "verbs": ["create", "get", "list", "delete"],
        },
        {"apiGroups": ["kubernetes.dask.org"], "resources": ["daskworkergroups"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list"]},
        {"apiGroups": [""], "resources": ["pods/log"], "verbs": ["get"]},
        {"apiGroups": [""], "resources": ["services"], "verbs": ["get", "list"]},
    ]


def test_dask_role_is_bound_to_the_dask_account_in_the_step_namespace(chart_dir: Path) -> None:
    values = _merge(DASK_ON, {"stepNamespace": {"name": "training-pods"}})
    docs = render_chart(chart_dir, values, ["templates/rbac-dask.yaml"])
    binding = _named(docs, "RoleBinding", "-dask-cluster")
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "ml-steps-dask", "namespace": "training-pods"}
    ]
    assert binding["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "Role",
        "name": _named(docs, "Role", "-dask-cluster")["metadata"]["name"],
    }


def test_dask_role_follows_rbac_create(chart_dir: Path) -> None:
    assert render_chart(chart_dir, {**DASK_ON, "rbac": {"create": False}}, ["templates/rbac-dask.yaml"]) == []


def test_dask_account_must_differ_from_the_step_account(chart_dir: Path) -> None:
    values = _merge(DASK_ON, {"dask": {"serviceAccount": {"name": "ml-steps"}}})
    sdk = _helm_sdk() if _engine() == "sdk" else None
    refused = (subprocess.CalledProcessError, *([sdk.HelmError] if sdk else []))
    with pytest.raises(refused) as raised:
        render_chart(chart_dir, values)
    message = raised.value.stderr if isinstance(raised.value, subprocess.CalledProcessError) else raised.value
    assert "dask.serviceAccount.name must differ from stepServiceAccount.name" in str(message)


def test_dask_policy_selects_the_dask_pods(chart_dir: Path) -> None:
    spec = _dask_policy(chart_dir)["spec"]
    assert (spec["podSelector"], spec["policyTypes"]) == (
        {"matchLabels": DASK_POD_LABELS},
        ["Ingress", "Egress"],
    )


def test_dask_pods_accept_each_other_and_the_launcher_pods_on_the_scheduler_ports(chart_dir: Path) -> None:
    launchers = _launcher_policy(chart_dir)["spec"]["podSelector"]
    assert _dask_policy(chart_dir)["spec"]["ingress"] == [
        {"from": [{"podSelector": {"matchLabels": DASK_POD_LABELS}}]},
        {"from": [{"podSelector": launchers}], "ports": SCHEDULER_PORTS},
    ]


def test_dask_pods_reach_each_other_dns_and_s3_only(chart_dir: Path) -> None:
    egress = _values()["networkPolicy"]["egress"]
    assert _dask_policy(chart_dir)["spec"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": DASK_POD_LABELS}}]},
        {"to": egress["dns"]["to"], "ports": egress["dns"]["ports"]},
        {"to": egress["s3"]["to"], "ports": egress["s3"]["ports"]},
    ]


def test_dask_pods_follow_the_s3_rule_and_extra_egress(chart_dir: Path) -> None:
    minio = {"to": [{"podSelector": {"matchLabels": {"app": "minio"}}}], "ports": [{"port": 9000}]}
    values = {"networkPolicy": {"egress": {"s3": {"enabled": False}}, "extraEgress": [minio]}}
    egress = _dask_policy(chart_dir, values)["spec"]["egress"]
    assert (jmespath.search("[].ports[].port", egress), egress[-1]) == ([53, 53, 9000], minio)


def test_steps_policy_is_the_same_with_dask(chart_dir: Path) -> None:
    assert _steps_policy(chart_dir, DASK_ON) == _steps_policy(chart_dir, {})


def test_launcher_policy_selects_the_factorys_dask_steps(chart_dir: Path) -> None:
    """The chart's one list of Dask steps is the factory's DASK_STEPS: they cannot drift apart."""
    selector = _launcher_policy(chart_dir)["spec"]["podSelector"]
    (component,) = [e for e in selector["matchExpressions"] if e["key"] == "app.kubernetes.io/component"]
    assert (component["operator"], sorted(component["values"])) == ("In", sorted(DASK_STEPS))


def test_launcher_policy_selects_only_step_pods(chart_dir: Path) -> None:
    selector = _launcher_policy(chart_dir)["spec"]["podSelector"]
    assert selector["matchLabels"] == {"app.kubernetes.io/name": "mlsteps"}


def test_launcher_policy_selects_the_factory_pods_of_dask_steps_only(chart_dir: Path) -> None:
    selector = _launcher_policy(chart_dir)["spec"]["podSelector"]
    labels = {step: _factory_pod(chart_dir, step)["metadata"]["labels"] for step in STEPS}
    assert {step for step, pod_labels in labels.items() if _selects(selector, pod_labels)} == DASK_STEPS


def test_launcher_policy_adds_egress_only(chart_dir: Path) -> None:
    assert _launcher_policy(chart_dir)["spec"]["policyTypes"] == ["Egress"]


def test_launcher_pods_reach_the_dask_scheduler_and_the_api(chart_dir: Path) -> None:
    assert _launcher_policy(chart_dir)["spec"]["egress"] == [
        {"to": [{"podSelector": {"matchLabels": DASK_POD_LABELS}}], "ports": SCHEDULER_PORTS},
        {"ports": [{"protocol": "TCP", "port": 443}, {"protocol": "TCP", "port": 6443}]},
    ]


def test_launcher_policy_follows_network_policy_enabled(chart_dir: Path) -> None:
    values = _merge(DASK_ON, {"networkPolicy": {"enabled": False}})
    assert render_chart(chart_dir, values, ["templates/networkpolicy-dask-launcher.yaml"]) == []


def test_api_egress_takes_the_api_servers_addresses(chart_dir: Path) -> None:
    api = [{"ipBlock": {"cidr": "172.18.0.2/32"}}]
    values = {"networkPolicy": {"egress": {"kubernetesApi": {"to": api}}}}
    egress = _launcher_policy(chart_dir, values)["spec"]["egress"]
    assert egress[-1]["to"] == api


def test_api_egress_can_be_switched_off(chart_dir: Path) -> None:
    values = {"networkPolicy": {"egress": {"kubernetesApi": {"enabled": False}}}}
    egress = _launcher_policy(chart_dir, values)["spec"]["egress"]
    assert 6443 not in jmespath.search("[].ports[].port", egress)


def test_factory_pods_fit_the_dask_objects(chart_dir: Path) -> None:
    """dask.enabled -> ConfigMap -> the factory's settings -> a train pod as the Role's subject."""
    docs = render_chart(chart_dir, _merge(DASK_ON, {"stepNamespace": {"name": "training-pods"}}))
    settings = load_settings(_execution_env(docs))
    train = ApiClient().sanitize_for_serialization(
        step_task("train", settings=settings).build_pod_request_obj(context=None, dry_run=True)
    )
    subject = _named(docs, "RoleBinding", "-dask-cluster")["subjects"][0]
    assert (train["metadata"]["namespace"], train["spec"]["serviceAccountName"]) == (
        subject["namespace"],
        subject["name"],
    )
    assert train["spec"]["automountServiceAccountToken"] is True
    selector = _named(docs, "NetworkPolicy", "-dask-launcher")["spec"]["podSelector"]
    assert _selects(selector, train["metadata"]["labels"]), "the launcher policy must let it reach the API"
    env = {e["name"]: e.get("value") for e in train["spec"]["containers"][0]["env"]}
    plain = _values()["stepServiceAccount"]["name"]
    assert plain in jmespath.search("[].metadata.name", by_kind(docs, "ServiceAccount"))
    assert (env["ML_NAMESPACE"], env["ML_SERVICE_ACCOUNT"]) == ("training-pods", plain)
