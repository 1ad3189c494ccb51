"""charts/lvm-rollout rendered by the real helm (no cluster): lint, objects, security, RBAC
rules, optional parts, and the values schema's messages for bad values.

The apiserver-side checks (dry-run, install/uninstall, ``kubectl auth can-i``) are in
tests/integration/test_helm_chart.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest
import yaml

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "lvm-rollout"
ALL_VALUES = REPO_ROOT / "tests" / "fixtures" / "chart-values-all.yaml"
RELEASE = "lvm-rollout"  # fullname == release name: the chart name is in it
NAMESPACE = "ml"


def _helm(tools, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(tools.helm), *args], capture_output=True, text=True, timeout=60)


def render(tools, *args: str) -> list[dict]:
    proc = _helm(tools, "template", RELEASE, str(CHART), "-n", NAMESPACE, *args)
    assert proc.returncode == 0, proc.stderr
    return [d for d in yaml.safe_load_all(proc.stdout) if d]


def of_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict], kind: str) -> dict:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, got {[d['metadata']['name'] for d in found]}"
    return found[0]


AGGREGATE = "rbac.authorization.k8s.io/aggregate-to-"


def for_people(doc: dict) -> bool:
    """A ClusterRole aggregated into the built-in view/edit/admin roles (not the operator's)."""
    return any(k.startswith(AGGREGATE) for k in doc["metadata"].get("labels", {}))


def operators(docs: list[dict]) -> list[dict]:
    return [d for d in docs if not for_people(d)]


def rule_set(role: dict) -> set[tuple[str, str, str, str]]:
    """(apiGroup, resource, verb, resourceName or '*') for every grant of a Role/ClusterRole."""
    out = set()
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                for verb in rule["verbs"]:
                    for name in rule.get("resourceNames") or ["*"]:
                        out.add((group, resource, verb, name))
    return out


def _own(verbs, group, resource, name="*"):
    return {(group, resource, v, name) for v in verbs}


def expected_watch_rules(kuberay: bool) -> set[tuple[str, str, str, str]]:
    rules = (
        _own(["get", "list", "watch", "patch", "update"], "lvm.rollout.io", "lvmrollouts")
        | _own(["get", "list", "watch", "patch", "update"], "lvm.rollout.io",
               "lvmrollouts/status")
        | _own(["create", "patch"], "", "events")
    )
    if kuberay:
        rules |= _own(["get", "list", "watch", "patch"], "ray.io", "rayservices")
    return rules


CRDS_READ = _own(["get", "list", "watch"], "apiextensions.k8s.io", "customresourcedefinitions")


# --- lint ------------------------------------------------------------------------------------


@pytest.mark.parametrize("values", [
    [], ["-f", str(ALL_VALUES)], ["--set", "watchNamespace=ml-models"],
    ["-f", str(ALL_VALUES), "--set", "watchNamespace=ml-models"],
], ids=["default", "all", "namespaced", "all-namespaced"])
def test_helm_lint_strict(tools, values):
    proc = _helm(tools, "lint", "--strict", str(CHART), *values)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in proc.stdout


# --- default values --------------------------------------------------------------------------


def test_default_objects(tools):
    docs = render(tools)
    assert sorted(d["kind"] for d in docs) == sorted([
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment",
        "ClusterKopfPeering", "ClusterRole", "ClusterRole",  # + view and edit for people
        "PodDisruptionBudget",
    ])
    for doc in docs:
        labels = doc["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "lvm-rollout"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert labels["app.kubernetes.io/version"] == labels["helm.sh/chart"].split("-")[-1]


def test_deployment_two_replicas_hardened_with_probes_and_resources(tools):
    dep = one(render(tools), "Deployment")
    assert dep["spec"]["replicas"] == 2
    pod = dep["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == RELEASE
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    (c,) = pod["containers"]
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert set(c["resources"]) == {"requests", "limits"}
    assert set(c["resources"]["requests"]) == set(c["resources"]["limits"]) == {"cpu", "memory"}
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": 8080, "metrics": 9090}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    # A writable /tmp is the only writable path.
    assert c["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert {e["name"] for e in c["env"]} >= {"POD_ID"}


def test_operator_command_line(tools):
    docs = render(tools)
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    peering = one(docs, "ClusterKopfPeering")["metadata"]["name"]
    assert args == ["--all-namespaces", "--liveness-port", "8080", "--metrics-port", "9090",
                    "--peering", peering]
    assert peering == f"{RELEASE}-{NAMESPACE}"


def test_namespaced_operator_command_line_and_peering(tools):
    docs = render(tools, "--set", "watchNamespace=ml-models")
    args = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"]
    peering = one(docs, "KopfPeering")
    assert peering["metadata"]["namespace"] == "ml-models"
    assert args[:2] == ["--namespace", "ml-models"]
    assert args[-2:] == ["--peering", peering["metadata"]["name"]]
    assert not of_kind(docs, "ClusterKopfPeering")


def test_metrics_service_targets_the_metrics_port(tools):
    docs = render(tools)
    svc = one(docs, "Service")
    assert svc["spec"]["ports"] == [{"name": "http-metrics", "port": 9090,
                                     "targetPort": "metrics", "protocol": "TCP"}]
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    assert svc["spec"]["selector"].items() <= pod_labels.items()


# --- RBAC ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kuberay", [False, True])
def test_cluster_wide_rbac_is_exactly_what_kopf_and_the_operator_need(tools, kuberay):
    docs = operators(render(tools, "--set", f"kuberay.enabled={str(kuberay).lower()}"))
    role = one(docs, "ClusterRole")
    peering = one(docs, "ClusterKopfPeering")["metadata"]["name"]
    assert rule_set(role) == (
        expected_watch_rules(kuberay)
        | _own(["list", "watch"], "kopf.dev", "clusterkopfpeerings")
        | _own(["get", "patch"], "kopf.dev", "clusterkopfpeerings", peering)
        | CRDS_READ
    )
    binding = one(docs, "ClusterRoleBinding")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": RELEASE,
                                    "namespace": NAMESPACE}]
    assert not of_kind(docs, "Role")


@pytest.mark.parametrize("kuberay", [False, True])
def test_namespaced_rbac_is_a_role_in_the_watched_namespace(tools, kuberay):
    docs = operators(render(tools, "--set", "watchNamespace=ml-models",
                            "--set", f"kuberay.enabled={str(kuberay).lower()}"))
    role = one(docs, "Role")
    assert role["metadata"]["namespace"] == "ml-models"
    peering = one(docs, "KopfPeering")["metadata"]["name"]
    assert rule_set(role) == (
        expected_watch_rules(kuberay)
        | _own(["list", "watch"], "kopf.dev", "kopfpeerings")
        | _own(["get", "patch"], "kopf.dev", "kopfpeerings", peering)
    )
    binding = one(docs, "RoleBinding")
    assert binding["metadata"]["namespace"] == "ml-models"
    assert binding["subjects"][0]["namespace"] == NAMESPACE
    # CRDs are cluster-scoped: the only cluster-wide grant is reading them.
    assert rule_set(one(docs, "ClusterRole")) == CRDS_READ


def test_no_wildcards_or_sensitive_grants_anywhere(tools):
    for values in ([], ["-f", str(ALL_VALUES)], ["--set", "watchNamespace=x"]):
        for doc in render(tools, *values):
            if doc["kind"] not in ("Role", "ClusterRole") or for_people(doc):
                continue  # (people's roles: test_user_roles_aggregate_into_the_built_in_roles)
            for group, resource, verb, _ in rule_set(doc):
                assert "*" not in (group, resource, verb)
                assert verb not in ("delete", "deletecollection", "escalate", "bind",
                                    "impersonate")
                assert resource not in ("secrets", "pods", "configmaps", "deployments",
                                        "namespaces", "serviceaccounts")


def test_user_roles_aggregate_into_the_built_in_roles(tools):
    people = {d["metadata"]["name"]: d for d in render(tools) if for_people(d)}
    view, edit = people[f"{RELEASE}-{NAMESPACE}-view"], people[f"{RELEASE}-{NAMESPACE}-edit"]
    assert {k.removeprefix(AGGREGATE) for k, v in view["metadata"]["labels"].items()
            if k.startswith(AGGREGATE) and v == "true"} == {"view", "edit", "admin"}
    assert {k.removeprefix(AGGREGATE) for k, v in edit["metadata"]["labels"].items()
            if k.startswith(AGGREGATE) and v == "true"} == {"edit", "admin"}
    assert rule_set(view) == (_own(["get", "list", "watch"], "lvm.rollout.io", "lvmrollouts")
                              | _own(["get", "list", "watch"], "lvm.rollout.io",
                                     "lvmrollouts/status"))
    # edit changes and commands them (annotations); the status is the operator's alone
    assert rule_set(edit) == _own(["create", "update", "patch", "delete", "deletecollection"],
                                  "lvm.rollout.io", "lvmrollouts")
    assert not [d for d in render(tools, "--set", "userRoles.enabled=false") if for_people(d)]


# --- optional parts --------------------------------------------------------------------------


def test_all_options_objects(tools):
    docs = render(tools, "-f", str(ALL_VALUES))
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted([
        "ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service", "Deployment",
        "ClusterKopfPeering", "ServiceMonitor", "PodMonitor", "PrometheusRule",
        *["ConfigMap"] * 5, "ClusterRole", "ClusterRole", "PodDisruptionBudget",
        "NetworkPolicy",
    ])
    dep = one(docs, "Deployment")
    assert dep["spec"]["replicas"] == 3
    c = dep["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "registry.example.com/ml/lvm-rollout:0.1.0-test"
    assert c["imagePullPolicy"] == "Always"
    assert c["args"][-2:] == ["--priority", "10"]
    assert "--allow-link-local-endpoints" in c["args"]  # operator.allowLinkLocalEndpoints
    # The volume with the checkpoints and eval sets that offline evaluation reads.
    assert {"name": "models", "mountPath": "/models", "readOnly": True} in c["volumeMounts"]
    pod = dep["spec"]["template"]["spec"]
    assert {"name": "models", "persistentVolumeClaim": {"claimName": "lvm-models",
                                                        "readOnly": True}} in pod["volumes"]
    assert {"name": "tmp", "mountPath": "/tmp"} in c["volumeMounts"]
    for kind in ("ServiceMonitor", "PodMonitor", "PrometheusRule"):
        assert one(docs, kind)["apiVersion"] == "monitoring.coreos.com/v1"
        assert one(docs, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_service_monitor_scrapes_the_metrics_service(tools):
    docs = render(tools, "-f", str(ALL_VALUES))
    sm, svc = one(docs, "ServiceMonitor"), one(docs, "Service")
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc["metadata"]["labels"].items()
    assert sm["spec"]["namespaceSelector"] == {"matchNames": [NAMESPACE]}
    assert [e["port"] for e in sm["spec"]["endpoints"]] == [svc["spec"]["ports"][0]["name"]]


def test_ray_pod_monitor_follows_the_watched_namespace(tools):
    wide = one(render(tools, "-f", str(ALL_VALUES)), "PodMonitor")
    assert wide["spec"]["namespaceSelector"] == {"matchNames": ["ml-models", "ml-staging"]}
    # cluster-wide with no namespaces named: refused, never "every namespace" by default
    proc = _helm(tools, "template", RELEASE, str(CHART), "--set",
                 "monitoring.rayPodMonitor.enabled=true")
    assert proc.returncode != 0
    assert "monitoring.rayPodMonitor.namespaces: list the namespaces" in proc.stderr
    chosen = one(render(tools, "--set", "monitoring.rayPodMonitor.enabled=true", "--set",
                        "monitoring.rayPodMonitor.namespaceSelector.any=true"), "PodMonitor")
    assert chosen["spec"]["namespaceSelector"] == {"any": True}  # said explicitly
    assert wide["spec"]["selector"] == {"matchLabels": {"ray.io/is-ray-node": "yes"}}
    assert wide["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    narrow = one(render(tools, "-f", str(ALL_VALUES), "--set", "watchNamespace=ml-models"),
                 "PodMonitor")
    assert narrow["spec"]["namespaceSelector"] == {"matchNames": ["ml-models"]}


def test_dashboards_are_labelled_configmaps_with_the_json_files(tools):
    maps = of_kind(render(tools, "-f", str(ALL_VALUES)), "ConfigMap")
    files = {p.name: p.read_text() for p in (CHART / "dashboards").glob("*.json")}
    shipped = {}
    for cm in maps:
        assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
        assert cm["metadata"]["annotations"] == {"grafana_folder": "LVM"}
        ((key, text),) = cm["data"].items()
        shipped[key] = text
    assert set(shipped) == set(files)
    for key, text in shipped.items():
        assert json.loads(text) == json.loads(files[key])


def test_optional_parts_are_off_by_default(tools):
    kinds = {d["kind"] for d in render(tools)}
    assert not kinds & {"ServiceMonitor", "PodMonitor", "PrometheusRule", "ConfigMap"}


# --- values schema ---------------------------------------------------------------------------


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "replicaCount=zero"], "at '/replicaCount': got string, want integer"),
    (["--set", "replicaCount=0"], "at '/replicaCount': minimum: got 0, want 1"),
    (["--set", "image.pullPolicy=Sometimes"],
     "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
    (["--set", "resources.requests=5"], "at '/resources/requests': got number, want object"),
    (["--set", "resources.requests.cpu=lots"], "at '/resources/requests/cpu'"),
    (["--set", "resources.request.cpu=1"], "additional properties 'request' not allowed"),
    (["--set-json", "watchNamespace=123"], "at '/watchNamespace': got number, want string"),
    (["--set", "watchNamespace=Not_A_Namespace"], "at '/watchNamespace'"),
    (["--set", "monitoring.servicemonitor.enabled=true"],
     "additional properties 'servicemonitor' not allowed"),
    (["--set", "operator.metricsPort=99999"], "at '/operator/metricsPort'"),
    (["--set", "kuberay.enabled=yes-please"], "at '/kuberay/enabled': got string, want boolean"),
    # a misspelt key inside a security context would be dropped by Kubernetes: refused here
    (["--set", "securityContext.readOnlyRootFileSystem=true"],
     "at '/securityContext': additional properties 'readOnlyRootFileSystem' not allowed"),
    (["--set", "podSecurityContext.runAsNonroot=true"],
     "at '/podSecurityContext': additional properties 'runAsNonroot' not allowed"),
    (["--set", "securityContext.capabilities.remove[0]=ALL"],
     "at '/securityContext/capabilities': additional properties 'remove' not allowed"),
    (["--set", "podDisruptionBudget.maxUnavailable=0"], "at '/podDisruptionBudget/maxUnavailable'"),
])
def test_bad_values_fail_with_the_schema_message(tools, args, message):
    proc = _helm(tools, "template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "operator.metricsPort=8080"],
     "operator.metricsPort and operator.livenessPort are both 8080: the metrics server and "
     "Kopf's health endpoint need ports of their own; change one of them"),
    (["--set-json", 'extraVolumeMounts=[{"name": "models", "mountPath": "/models"}]'],
     'extraVolumeMounts[0].name "models" names no volume: add a volume of that name to '
     "extraVolumes or fix the name (volumes: tmp)"),
    (["--set-json", 'extraVolumes=[{"name": "tmp", "emptyDir": {}}]'],
     'extraVolumes: volume name "tmp" is used twice'),
    (["--set", "monitoring.serviceMonitor.enabled=true",
      "--set", "monitoring.serviceMonitor.interval=30s",
      "--set", "monitoring.serviceMonitor.scrapeTimeout=1m"],
     "monitoring.serviceMonitor.scrapeTimeout (1m) is longer than its interval (30s)"),
    # 1m30s = 90,000 ms > 1m = 60,000 ms: units are added up, not compared as text
    (["--set", "monitoring.serviceMonitor.enabled=true",
      "--set", "monitoring.serviceMonitor.interval=1m",
      "--set", "monitoring.serviceMonitor.scrapeTimeout=1m30s"],
     "scrapeTimeout (1m30s) is longer than its interval (1m)"),
])
def test_values_that_contradict_each_other_fail_with_what_to_change(tools, args, message):
    proc = _helm(tools, "template", RELEASE, str(CHART), *args)
    assert proc.returncode != 0
    assert message in proc.stderr, proc.stderr


@pytest.mark.parametrize("args", [
    ["--set", "monitoring.serviceMonitor.enabled=true",
     "--set", "monitoring.serviceMonitor.interval=90s",
     "--set", "monitoring.serviceMonitor.scrapeTimeout=1m30s"],  # equal is fine
    ["--set", "monitoring.serviceMonitor.enabled=true",
     "--set", "monitoring.serviceMonitor.interval=1m",
     "--set", "monitoring.serviceMonitor.scrapeTimeout=500ms"],
    ["--set-json", 'extraVolumes=[{"name": "models", "emptyDir": {}}]',
     "--set-json", 'extraVolumeMounts=[{"name": "models", "mountPath": "/models"}]'],
])
def test_values_that_agree_render(tools, args):
    assert render(tools, *args)


def test_a_pod_disruption_budget_keeps_a_standby_through_a_drain(tools):
    docs = render(tools)
    pdb, dep = one(docs, "PodDisruptionBudget"), one(docs, "Deployment")
    assert pdb["spec"]["maxUnavailable"] == 1  # with 2 replicas one always stays
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert not of_kind(render(tools, "--set", "podDisruptionBudget.enabled=false"),
                       "PodDisruptionBudget")


@pytest.mark.parametrize(("value", "definition"), [
    ("securityContext", "io.k8s.api.core.v1.SecurityContext"),
    ("podSecurityContext", "io.k8s.api.core.v1.PodSecurityContext"),
])
def test_security_context_schemas_know_exactly_kubernetes_fields(value, definition):
    # The chart's schema refuses unknown keys, so it must know every real one of the Kubernetes
    # version we test against (kubernetes-validate ships its OpenAPI definitions).
    import kubernetes_validate

    from lvm_operator.devstack.manifest_lint import schema_minor_version

    defs_file = (Path(kubernetes_validate.__file__).parent / "kubernetes-json-schema"
                 / f"v{schema_minor_version()}-local-strict" / "_definitions.json")
    k8s = json.loads(defs_file.read_text())["$defs"][definition]["properties"]
    ours = json.loads((CHART / "values.schema.json").read_text())["properties"][value]
    assert ours["additionalProperties"] is False
    assert set(ours["properties"]) == set(k8s)


# --- kubeconform -strict and promtool --lint=all (also a step of the README's test command) --


def test_the_rendered_chart_passes_kubeconform_strict(tools, tmp_path):
    from lvm_operator.devstack.manifest_lint import kubeconform, render_chart

    paths = render_chart(tools.helm, tmp_path)
    problems, summary = kubeconform(paths, tmp_path)
    assert problems == []
    assert "Invalid: 0, Errors: 0, Skipped: 0" in summary, summary


def test_kubeconform_strict_catches_what_the_apiserver_would_drop(tmp_path):
    from lvm_operator.devstack.manifest_lint import kubeconform

    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "apiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata: {name: x}\n"
        "spec: {maxUnavailable: 1, selector: {matchLabels: {a: b}}, minAvaliable: 1}\n"
        "---\napiVersion: monitoring.coreos.com/v1\nkind: ServiceMonitor\n"
        "metadata: {name: y}\nspec: {endpoints: []}\nspex: {}\n"
        "---\napiVersion: lvm.rollout.io/v1alpha1\nkind: LVMRollout\nmetadata: {name: w}\n"
        "spec: {champion: {version: a}, stepz: []}\n"
        "---\napiVersion: example.com/v1\nkind: Unknown\nmetadata: {name: z}\n")
    problems, summary = kubeconform([bad], tmp_path)
    text = "\n".join(problems)
    assert "additional properties 'minAvaliable' not allowed" in text
    assert "additional properties 'spex' not allowed" in text
    assert "additional properties 'stepz' not allowed" in text  # our own CRD's schema
    assert "could not find schema for Unknown" in text  # never skipped
    assert "Invalid: 3, Errors: 1" in summary, summary


def test_the_examples_pass_kubeconform_strict_against_our_crd(tmp_path):
    from lvm_operator.devstack.manifest_lint import kubeconform

    examples = sorted((REPO_ROOT / "examples").glob("*.yaml"))
    problems, summary = kubeconform(examples, tmp_path)
    assert problems == [] and f"Valid: {len(examples)}," in summary, summary


def test_the_network_policy_lets_the_operator_reach_only_its_three_peers(tools):
    assert not of_kind(render(tools), "NetworkPolicy")  # off by default
    assert "--allow-link-local-endpoints" not in one(render(tools), "Deployment")[
        "spec"]["template"]["spec"]["containers"][0]["args"]
    docs = render(tools, "-f", str(ALL_VALUES))
    np_, dep = one(docs, "NetworkPolicy"), one(docs, "Deployment")
    spec = np_["spec"]
    assert spec["podSelector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert spec["policyTypes"] == ["Ingress", "Egress"]
    assert spec["ingress"] == [{"ports": [{"port": "metrics", "protocol": "TCP"},
                                          {"port": "health", "protocol": "TCP"}]}]
    by_port = {tuple(p["port"] for p in rule["ports"]): rule.get("to") for rule in spec["egress"]}
    assert by_port == {
        (53, 53): None,  # DNS
        (443, 6443): [{"ipBlock": {"cidr": "10.96.0.1/32"}}, {"ipBlock": {"cidr": "fd00::1/128"}}],
        (9090,): [{"namespaceSelector": {"matchLabels": {
                       "kubernetes.io/metadata.name": "monitoring"}},
                   "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}],
        (8265,): [{"namespaceSelector": {},
                   "podSelector": {"matchLabels": {"ray.io/node-type": "head"}}}],
        (8080,): [{"ipBlock": {"cidr": "10.20.0.0/16"}}],  # extraEgress, as given
    }
