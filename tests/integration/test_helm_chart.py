"""charts/lvm-rollout against the real kube-apiserver (RBAC on).

* every rendered object passes server-side validation (``kubectl apply --dry-run=server``),
  with default values, all options on, and one watched namespace;
* ``helm install`` creates every object, ``helm uninstall`` removes them and keeps the CRDs;
* a bad value fails ``helm install`` with the schema's message and creates nothing;
* the operator's ServiceAccount can do exactly what it needs (``kubectl auth can-i --as``);
* people bound to the built-in view / edit / admin roles get the chart's aggregated rules
  (kube-controller-manager's clusterrole-aggregation controller runs for that test).

There is no kubelet (and no other controller): the Deployment is stored but no pod runs, so
nothing here waits for readiness. Deleted namespaces never finalize: every test uses fresh ones.
The Prometheus Operator CRDs are minimal stand-ins (tests/fixtures/monitoring-crds.yaml).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from helpers import eventually

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = REPO_ROOT / "charts" / "lvm-rollout"
ALL_VALUES = REPO_ROOT / "tests" / "fixtures" / "chart-values-all.yaml"
MONITORING_CRDS = REPO_ROOT / "tests" / "fixtures" / "monitoring-crds.yaml"
# KubeRay's real RayService CRD: `kubectl auth can-i` resolves rayservices.ray.io through it.
RAYSERVICE_CRD = REPO_ROOT / "tests" / "fixtures" / "kuberay" / "ray.io_rayservices.yaml"
RELEASE = "lvm-rollout"  # fullname == release name, so the ServiceAccount is "lvm-rollout"

CHART_CRDS = ("lvmrollouts.lvm.rollout.io", "kopfpeerings.kopf.dev",
              "clusterkopfpeerings.kopf.dev")


@pytest.fixture(scope="module")
def crds(kube):
    """The chart's CRDs, the monitoring stand-ins and RayService's, established."""
    # The repository's crds/ wins over the chart's copy (a unit test keeps them identical): a
    # stale copy must never replace the CRD other tests in this session run against.
    chart_only = [p for p in sorted((CHART / "crds").glob("*.yaml"))
                  if not (REPO_ROOT / "crds" / p.name).exists()]
    repo_crds = sorted((REPO_ROOT / "crds").glob("*.yaml"))
    for path in [*repo_crds, *chart_only, MONITORING_CRDS, RAYSERVICE_CRD]:
        kube.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(path))
    names = [*CHART_CRDS, "servicemonitors.monitoring.coreos.com",
             "podmonitors.monitoring.coreos.com", "prometheusrules.monitoring.coreos.com",
             "rayservices.ray.io"]
    kube.kubectl("wait", "--for=condition=Established", "--timeout=60s",
                 *[f"crd/{n}" for n in names])
    return names


def _template(kube, ns: str, *values: str) -> str:
    return kube.helm("template", RELEASE, str(CHART), "-n", ns, *values).stdout


def _docs(text: str) -> list[dict]:
    return [d for d in yaml.safe_load_all(text) if d]


def _ref(doc: dict) -> tuple[str, str, str | None]:
    meta = doc["metadata"]
    return doc["kind"], meta["name"], meta.get("namespace")


def _exists(kube, kind: str, name: str, ns: str | None) -> bool:
    args = ["get", kind, name, "-o", "name", *(["-n", ns] if ns else [])]
    return kube.kubectl(*args, check=False).returncode == 0


def _can(kube, ns: str, verb: str, resource: str, namespace: str | None = None,
         subresource: str | None = None, all_namespaces: bool = False) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as=system:serviceaccount:{ns}:{RELEASE}"]
    if all_namespaces:
        args += ["--all-namespaces"]
    elif namespace:
        args += ["-n", namespace]
    if subresource:
        args += [f"--subresource={subresource}"]
    proc = kube.kubectl(*args, check=False)
    answer = proc.stdout.strip()
    assert answer in ("yes", "no"), proc.stderr + proc.stdout
    return answer == "yes"


# --- server-side validation ------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["default", "all", "namespaced"])
def test_rendered_objects_pass_server_side_dry_run(kube, crds, mode):
    ns = kube.new_namespace("chart")
    values: list[str] = []
    if mode == "all":
        values = ["-f", str(ALL_VALUES)]
    elif mode == "namespaced":
        values = ["-f", str(ALL_VALUES), "--set", f"watchNamespace={kube.new_namespace('watch')}"]
    rendered = _template(kube, ns, *values)
    docs = _docs(rendered)
    assert docs
    # Every namespaced object names its namespace (the Role may sit in the watched one).
    out = kube.kubectl("apply", "--dry-run=server", "-f", "-", input=rendered).stdout
    # One "... (server dry run)" line per object: the apiserver accepted each of them.
    assert out.count("(server dry run)") == len(docs), out


# --- install / uninstall ---------------------------------------------------------------------


def test_install_creates_every_object_and_uninstall_removes_them(kube, crds):
    ns = kube.new_namespace("chart")
    install = kube.helm("install", RELEASE, str(CHART), "-n", ns, "-f", str(ALL_VALUES))
    assert "kubectl get lvmrollouts" in install.stdout and "-w" in install.stdout
    assert "kubectl lvm status" in install.stdout
    docs = _docs(kube.helm("get", "manifest", RELEASE, "-n", ns).stdout)
    kinds = {d["kind"] for d in docs}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding", "Service",
                     "Deployment", "ClusterKopfPeering", "ServiceMonitor", "PodMonitor",
                     "PrometheusRule", "ConfigMap", "PodDisruptionBudget", "NetworkPolicy"}
    refs = [_ref(d) for d in docs]
    for kind, name, namespace in refs:
        assert _exists(kube, kind, name, namespace), f"{kind}/{name} was not created"
    # The CRDs came with the chart (crds/), established.
    for crd in CHART_CRDS:
        assert _exists(kube, "crd", crd, None)
    rule = yaml.safe_load(kube.kubectl("get", "prometheusrule", RELEASE, "-n", ns,
                                       "-o", "yaml").stdout)
    assert [r["alert"] for r in rule["spec"]["groups"][0]["rules"]] == [
        "LVMHit5ProxyLow", "LVMLatencyP95High", "LVMErrorRateHigh", "LVMLaneBelowOverall",
        "LVMEmptyHitRateHigh"]

    kube.helm("uninstall", RELEASE, "-n", ns)
    for kind, name, namespace in refs:
        assert not _exists(kube, kind, name, namespace), f"{kind}/{name} survived uninstall"
    # Helm never deletes CRDs from crds/ (that would delete every LVMRollout): still there.
    for crd in CHART_CRDS:
        assert _exists(kube, "crd", crd, None), f"{crd} was removed by uninstall"


def test_namespaced_install_puts_rbac_and_peering_in_the_watched_namespace(kube, crds):
    ns, watched = kube.new_namespace("chart"), kube.new_namespace("watch")
    kube.helm("install", RELEASE, str(CHART), "-n", ns, "--set", f"watchNamespace={watched}")
    assert _exists(kube, "role", RELEASE, watched)
    assert _exists(kube, "rolebinding", RELEASE, watched)
    assert _exists(kube, "kopfpeering", f"{RELEASE}-{ns}", watched)
    kube.helm("uninstall", RELEASE, "-n", ns)
    assert not _exists(kube, "role", RELEASE, watched)
    assert not _exists(kube, "kopfpeering", f"{RELEASE}-{ns}", watched)


@pytest.mark.parametrize(("value", "message"), [
    ("replicaCount=zero", "at '/replicaCount': got string, want integer"),
    ("image.pullPolicy=Sometimes",
     "at '/image/pullPolicy': value must be one of 'Always', 'IfNotPresent', 'Never'"),
])
def test_bad_value_fails_install_and_creates_nothing(kube, crds, value, message):
    ns = kube.new_namespace("chart")
    proc = kube.helm("install", RELEASE, str(CHART), "-n", ns, "--set", value, check=False)
    assert proc.returncode != 0
    assert "values don't meet the specifications of the schema" in proc.stderr, proc.stderr
    assert message in proc.stderr, proc.stderr
    assert kube.helm("list", "-n", ns, "-q").stdout.strip() == ""
    assert kube.kubectl("get", "deploy,sa,svc,cm", "-n", ns, "-o", "name").stdout.strip() == ""


# --- what the ServiceAccount may do ----------------------------------------------------------

# (verb, resource, subresource) the operator needs in a watched namespace.
NEEDED_IN_NAMESPACE = [
    *[(v, "lvmrollouts.lvm.rollout.io", None)
      for v in ("get", "list", "watch", "patch", "update")],
    ("patch", "lvmrollouts.lvm.rollout.io", "status"),
    ("update", "lvmrollouts.lvm.rollout.io", "status"),
    ("create", "events", None),
    ("patch", "events", None),
]
# Never, in any namespace.
DENIED_IN_NAMESPACE = [
    ("delete", "lvmrollouts.lvm.rollout.io", None),
    ("create", "lvmrollouts.lvm.rollout.io", None),
    ("get", "secrets", None),
    ("list", "secrets", None),
    ("create", "pods", None),
    ("get", "pods", None),
    ("create", "deployments.apps", None),
    ("patch", "deployments.apps", None),
    ("get", "configmaps", None),
    ("delete", "events", None),
    ("create", "rayclusters.ray.io", None),
    ("create", "rayservices.ray.io", None),
    ("delete", "rayservices.ray.io", None),
]
RAYSERVICE_VERBS = ("get", "list", "watch", "patch")
CLUSTER_DENIED = [
    ("create", "customresourcedefinitions.apiextensions.k8s.io"),
    ("delete", "customresourcedefinitions.apiextensions.k8s.io"),
    ("patch", "customresourcedefinitions.apiextensions.k8s.io"),
    ("list", "namespaces"),
    ("create", "clusterroles.rbac.authorization.k8s.io"),
    ("list", "nodes"),
    ("create", "clusterkopfpeerings.kopf.dev"),
    ("delete", "clusterkopfpeerings.kopf.dev"),
]


def _check(kube, sa_ns, checks, namespace, expected: bool):
    wrong = [(verb, res, sub) for verb, res, sub in checks
             if _can(kube, sa_ns, verb, res, namespace, sub) is not expected]
    assert not wrong, f"expected can-i={'yes' if expected else 'no'} in {namespace}: {wrong}"


@pytest.mark.parametrize("kuberay", [False, True], ids=["kuberay-off", "kuberay-on"])
def test_cluster_wide_service_account_least_privilege(kube, crds, kuberay):
    ns, other = kube.new_namespace("chart"), kube.new_namespace("apps")
    kube.helm("install", RELEASE, str(CHART), "-n", ns,
              "--set", f"kuberay.enabled={str(kuberay).lower()}")
    peering = f"{RELEASE}-{ns}"
    for where in (ns, other):
        _check(kube, ns, NEEDED_IN_NAMESPACE, where, True)
        _check(kube, ns, DENIED_IN_NAMESPACE, where, False)
        ray = [(v, "rayservices.ray.io", None) for v in RAYSERVICE_VERBS]
        _check(kube, ns, ray, where, kuberay)
        # Cluster-wide operators peer through ClusterKopfPeering, not the namespaced kind.
        _check(kube, ns, [("patch", "kopfpeerings.kopf.dev", None)], where, False)
    assert _can(kube, ns, "watch", "lvmrollouts.lvm.rollout.io", all_namespaces=True)
    for verb in ("get", "list", "watch"):
        assert _can(kube, ns, verb, "customresourcedefinitions.apiextensions.k8s.io")
    for verb in ("list", "watch"):
        assert _can(kube, ns, verb, "clusterkopfpeerings.kopf.dev")
    for verb in ("get", "patch"):
        assert _can(kube, ns, verb, f"clusterkopfpeerings.kopf.dev/{peering}")
        assert not _can(kube, ns, verb, "clusterkopfpeerings.kopf.dev/someone-elses")
    for verb, res in CLUSTER_DENIED:
        assert not _can(kube, ns, verb, res), f"{verb} {res} must be denied"
    kube.helm("uninstall", RELEASE, "-n", ns)
    assert not _can(kube, ns, "patch", "lvmrollouts.lvm.rollout.io", other, "status")


def test_namespaced_service_account_is_confined_to_the_watched_namespace(kube, crds):
    ns, watched = kube.new_namespace("chart"), kube.new_namespace("watch")
    elsewhere = kube.new_namespace("apps")
    kube.helm("install", RELEASE, str(CHART), "-n", ns, "--set", f"watchNamespace={watched}",
              "--set", "kuberay.enabled=true")
    peering = f"{RELEASE}-{ns}"
    _check(kube, ns, NEEDED_IN_NAMESPACE, watched, True)
    _check(kube, ns, [(v, "rayservices.ray.io", None) for v in RAYSERVICE_VERBS], watched, True)
    _check(kube, ns, DENIED_IN_NAMESPACE, watched, False)
    for where in (ns, elsewhere):
        _check(kube, ns, NEEDED_IN_NAMESPACE, where, False)
        _check(kube, ns, [("patch", "rayservices.ray.io", None)], where, False)
    assert _can(kube, ns, "list", "kopfpeerings.kopf.dev", watched)
    assert _can(kube, ns, "patch", f"kopfpeerings.kopf.dev/{peering}", watched)
    assert not _can(kube, ns, "patch", "kopfpeerings.kopf.dev/someone-elses", watched)
    assert not _can(kube, ns, "list", "clusterkopfpeerings.kopf.dev")
    assert not _can(kube, ns, "list", "lvmrollouts.lvm.rollout.io", all_namespaces=True)
    for verb in ("get", "list", "watch"):
        assert _can(kube, ns, verb, "customresourcedefinitions.apiextensions.k8s.io")
    for verb, res in CLUSTER_DENIED:
        assert not _can(kube, ns, verb, res), f"{verb} {res} must be denied"


@pytest.fixture(scope="module")
def role_aggregation(kube, tools, run_dir):
    """The real clusterrole-aggregation controller (kube-controller-manager, nothing else)."""
    from lvm_operator.devstack.control_plane import start_role_aggregation

    kcm = start_role_aggregation(tools, kube.control_plane, run_dir)
    yield kcm
    kcm.stop()


def _user_can(kube, user: str, verb: str, resource: str, ns: str,
              subresource: str | None = None) -> bool:
    args = ["auth", "can-i", verb, resource, f"--as={user}", "-n", ns]
    if subresource:
        args.append(f"--subresource={subresource}")
    answer = kube.kubectl(*args, check=False).stdout.strip()
    assert answer in ("yes", "no"), answer
    return answer == "yes"


def test_people_bound_to_the_built_in_roles_can_use_lvmrollouts(kube, crds, role_aggregation):
    """Issue 20 #4: the chart's ClusterRoles aggregate into view / edit / admin, so a person
    bound to view reads LVMRollouts, to edit also changes and commands them (kubectl lvm writes
    annotations), to admin the same; nobody but the operator writes their status."""
    ns, apps = kube.new_namespace("chart"), kube.new_namespace("team")
    for user, role in (("alice", "view"), ("bob", "edit"), ("carol", "admin")):
        kube.kubectl("create", "rolebinding", f"{user}-{role}", f"--clusterrole={role}",
                     f"--user={user}", "-n", apps)
    lvm = "lvmrollouts.lvm.rollout.io"
    kube.helm("install", RELEASE, str(CHART), "-n", ns)
    try:
        eventually(lambda: _user_can(kube, "alice", "get", lvm, apps), 30,
                   "view aggregated the chart's rules")
        expected = {  # (user, verb, subresource) -> allowed
            ("alice", "list", None): True, ("alice", "watch", None): True,
            ("alice", "patch", None): False, ("alice", "delete", None): False,
            ("bob", "get", None): True, ("bob", "patch", None): True,
            ("bob", "create", None): True, ("bob", "delete", None): True,
            ("bob", "patch", "status"): False,
            ("carol", "get", None): True, ("carol", "patch", None): True,
            ("carol", "patch", "status"): False,
        }
        eventually(lambda: all(_user_can(kube, u, v, lvm, apps, sub) is want
                               for (u, v, sub), want in expected.items()), 30,
                   "edit and admin aggregated the chart's rules")
        # the grants follow the bindings: nothing outside the namespace
        assert not _user_can(kube, "bob", "patch", lvm, ns)
    finally:
        kube.helm("uninstall", RELEASE, "-n", ns)
    # (other tests' releases may still grant the same rules: check this release's roles went)
    for role in ("view", "edit"):
        gone = kube.kubectl("get", "clusterrole", f"{RELEASE}-{ns}-{role}", check=False)
        assert gone.returncode != 0 and "NotFound" in gone.stderr
