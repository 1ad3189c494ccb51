"""The KubeRay backend against a real kube-apiserver with KubeRay's own RayService CRD.

No KubeRay operator runs here (nothing would reconcile the RayService into a Ray cluster), so the
test checks exactly what the backend owns: the patch of ``spec.serveConfigV2`` (only our
applications change, nothing is sent when nothing changed, concurrent writers are not
overwritten), that the rendered config passes Ray Serve's own schema, and reading back statuses in
the shape KubeRay writes them (patched into the status subresource here, as KubeRay would).
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import yaml
from helpers import eventually
from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

from lvm_operator.backends import AppStatus, BackendNotFound
from lvm_operator.backends import rayservice as rs
from lvm_operator.backends.rayservice import RayServiceBackend, dump_serve_config
from lvm_serving.contracts.serve_config import (
    AppSpec,
    RouterConfig,
    VersionSpec,
    render_applications,
)

pytestmark = pytest.mark.stack

CRD = Path(__file__).resolve().parents[1] / "fixtures" / "kuberay" / "ray.io_rayservices.yaml"
SHA = "cd" * 32

# Someone else's application and top-level options, hand-written with a comment and their own
# key order: the backend must keep their meaning (it re-dumps the YAML deterministically).
FOREIGN_CONFIG = """\
# owned by the platform team
proxy_location: EveryNode
http_options:
  port: 8000
applications:
  - name: embeddings
    route_prefix: /embed
    import_path: embed.app:build
    args: {model: small}
    deployments:
      - {name: Embedder, num_replicas: 2}
"""


def rayservice(name: str, namespace: str, serve_config: str | None) -> dict:
    spec: dict = {"rayClusterConfig": {"headGroupSpec": {"rayStartParams": {}, "template": {
        "spec": {"containers": [{"name": "ray-head", "image": "rayproject/ray:2.49.0"}]}}}}}
    if serve_config is not None:
        spec["serveConfigV2"] = serve_config
    return {"apiVersion": "ray.io/v1", "kind": "RayService",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def app_spec(weight: int, versions=("v1", "v2")) -> AppSpec:
    return AppSpec(
        application="lvm",
        concept_bank_uri="file:///data/bank.npz",
        router=RouterConfig(rollout="ml/lvm", champion="v1",
                            candidate="v2" if "v2" in versions else None,
                            candidate_weight=weight if "v2" in versions else 0),
        versions=tuple(VersionSpec(v, f"file:///ckpt/{v}.pt", SHA, "memory_gru", 100,
                                   node_pool=f"pool_{v}", replicas=2) for v in versions),
    )


@pytest.fixture(scope="module")
def kuberay_crd(kube):
    kube.kubectl("apply", "--server-side", "-f", str(CRD))
    # Poll rather than `kubectl wait`: right after a create the CRD may have no conditions yet.
    jsonpath = '{.status.conditions[?(@.type=="Established")].status}'
    eventually(lambda: kube.kubectl("get", f"crd/{rs.CRD_NAME}", "-o",
                                    f"jsonpath={jsonpath}").stdout == "True",
               timeout_s=60, what=f"CRD {rs.CRD_NAME} Established")
    return CRD


@pytest.fixture
def ns(kube, kuberay_crd):
    return kube.new_namespace("rs")


@pytest.fixture
def api(kube):
    from kubernetes import client

    return client.CustomObjectsApi(kube.api_client())


def get(api, ns, name="lvm-serve") -> dict:
    return api.get_namespaced_custom_object("ray.io", "v1", ns, "rayservices", name)


def live_config(api, ns, name="lvm-serve") -> dict:
    return yaml.safe_load(get(api, ns, name)["spec"]["serveConfigV2"])


def test_patch_only_ours_and_unchanged_sends_nothing(kube, ns, api):
    kube.apply(rayservice("lvm-serve", ns, FOREIGN_CONFIG))
    foreign = yaml.safe_load(FOREIGN_CONFIG)
    backend = RayServiceBackend("lvm-serve", ns, api_client=kube.api_client())

    first = backend.apply(app_spec(10))
    assert first.changed and first.applications == ("lvm", "lvm--v1", "lvm--v2")
    obj = get(api, ns)
    config = yaml.safe_load(obj["spec"]["serveConfigV2"])
    # Other keys and applications keep their meaning; ours are exactly the rendered ones.
    assert config["proxy_location"] == "EveryNode" and config["http_options"] == {"port": 8000}
    assert [a for a in config["applications"] if a["name"] == "embeddings"] == \
        foreign["applications"]
    assert [a for a in config["applications"] if a["name"].startswith("lvm")] == \
        render_applications(app_spec(10))
    # Deterministic text: sorted keys, the same string for the same config.
    assert obj["spec"]["serveConfigV2"] == dump_serve_config(config)

    # Ray Serve's own schema accepts the whole config and each of our applications.
    ServeDeploySchema.model_validate(config)
    for entry in render_applications(app_spec(10)):
        ServeApplicationSchema.model_validate(entry)

    # The same spec again (versions in another order): no patch, resourceVersion unchanged.
    rv = obj["metadata"]["resourceVersion"]
    again = backend.apply(app_spec(10, versions=("v2", "v1")))
    assert not again.changed
    assert get(api, ns)["metadata"]["resourceVersion"] == rv

    # A weight change touches only the router application.
    assert backend.apply(app_spec(50)).changed
    after = live_config(api, ns)
    before_by_name = {a["name"]: a for a in config["applications"]}
    changed = [a["name"] for a in after["applications"] if before_by_name.get(a["name"]) != a]
    assert changed == ["lvm"]
    assert backend.observe("lvm").router.candidate_weight == 50

    # Dropping the candidate removes its application and nothing else.
    assert backend.apply(app_spec(0, versions=("v1",))).changed
    assert sorted(a["name"] for a in live_config(api, ns)["applications"]) == \
        ["embeddings", "lvm", "lvm--v1"]

    backend.delete("lvm")
    assert live_config(api, ns)["applications"] == foreign["applications"]
    rv = get(api, ns)["metadata"]["resourceVersion"]
    backend.delete("lvm")  # nothing of ours left: nothing sent
    assert get(api, ns)["metadata"]["resourceVersion"] == rv


def test_empty_serve_config_and_schema(kube, ns, api):
    kube.apply(rayservice("lvm-serve", ns, None))
    backend = RayServiceBackend("lvm-serve", ns, api_client=kube.api_client())
    assert backend.observe("lvm").status is AppStatus.NOT_DEPLOYED
    assert backend.apply(app_spec(20)).changed
    config = live_config(api, ns)
    assert config == {"applications": render_applications(app_spec(20))}
    ServeDeploySchema.model_validate(config)


def test_observe_reads_kuberay_statuses(kube, ns, api):
    kube.apply(rayservice("lvm-serve", ns, None))
    backend = RayServiceBackend("lvm-serve", ns, api_client=kube.api_client())
    spec = app_spec(20)
    backend.apply(spec)

    seen = backend.observe("lvm")
    assert seen.status is AppStatus.UNKNOWN  # KubeRay has not reported anything yet
    assert "not reported by KubeRay yet" in seen.message
    assert seen.router == spec.router
    assert seen.version_names() == ["v1", "v2"]
    assert seen.versions["v2"].target_replicas == 2 and seen.versions["v2"].node_ids is None
    assert backend.verify_applied(spec) is None
    assert backend.verify_applied(app_spec(30)) is False  # spec holds another weight

    generation = get(api, ns)["metadata"]["generation"]

    def report(apps: dict) -> None:
        api.patch_namespaced_custom_object_status(
            "ray.io", "v1", ns, "rayservices", "lvm-serve",
            {"status": {"observedGeneration": generation,
                        "activeServiceStatus": {"applicationStatuses": apps}}},
            _content_type="application/merge-patch+json")

    healthy = {"status": "RUNNING", "serveDeploymentStatuses": {"Router": {"status": "HEALTHY"}}}
    report({"lvm": healthy, "lvm--v1": {"status": "RUNNING"},
            "lvm--v2": {"status": "DEPLOY_FAILED",
                        "message": "Traceback...\nValueError: sha256 mismatch"}})
    seen = backend.observe("lvm")
    assert seen.status is AppStatus.DEPLOY_FAILED
    assert seen.message == "lvm--v2: DEPLOY_FAILED: ValueError: sha256 mismatch"
    assert seen.versions["v2"].status == "DEPLOY_FAILED"

    report({"lvm--v2": {"status": "RUNNING", "message": ""}})
    assert backend.observe("lvm").status is AppStatus.RUNNING
    assert backend.verify_applied(spec) is True


def test_concurrent_writer_is_not_overwritten(kube, ns, api):
    kube.apply(rayservice("lvm-serve", ns, FOREIGN_CONFIG))

    class ReadsStaleOnce(RayServiceBackend):
        """Its first read is from before another writer's change (a real 409 follows)."""

        stale: dict | None = None

        def get(self):
            if self.stale is not None:
                obj, self.stale = self.stale, None
                return obj
            return super().get()

    backend = ReadsStaleOnce("lvm-serve", ns, api_client=kube.api_client())
    backend.stale = copy.deepcopy(get(api, ns))
    other = FOREIGN_CONFIG.replace("num_replicas: 2", "num_replicas: 5")
    api.patch_namespaced_custom_object("ray.io", "v1", ns, "rayservices", "lvm-serve",
                                       {"spec": {"serveConfigV2": other}},
                                       _content_type="application/merge-patch+json")
    assert backend.apply(app_spec(10)).changed
    config = live_config(api, ns)
    embed = next(a for a in config["applications"] if a["name"] == "embeddings")
    assert embed["deployments"][0]["num_replicas"] == 5  # their write survived ours


def test_missing_rayservice_and_missing_crd_say_what_to_do(kube, ns, monkeypatch):
    backend = RayServiceBackend("nope", ns, api_client=kube.api_client())
    with pytest.raises(BackendNotFound) as exc:
        backend.apply(app_spec(10))
    assert f"RayService 'nope' not found in namespace '{ns}'" in str(exc.value)
    assert exc.value.status_code == 404

    # A group/version the apiserver does not serve answers like a missing CRD does.
    monkeypatch.setattr(rs, "VERSION", "v9alpha9")
    with pytest.raises(BackendNotFound, match="CRD is not installed"):
        backend.observe("lvm")


def test_the_rayservice_example_passes_the_apiservers_validation(kube, ns):
    """examples/kuberay/rayservice.yaml, server-side dry-run against KubeRay's real CRD (its
    OpenAPI schema: worker groups, rayStartParams, envFrom, volumes, tolerations...)."""
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "kuberay"
                          / "rayservice.yaml").read_text())
    doc["metadata"]["namespace"] = ns
    out = kube.kubectl("apply", "--dry-run=server", "-o", "json", "-f", "-",
                       input=yaml.safe_dump(doc)).stdout
    applied = json.loads(out)
    assert applied["spec"]["serveConfigV2"] == doc["spec"]["serveConfigV2"]
    groups = applied["spec"]["rayClusterConfig"]["workerGroupSpecs"]
    assert [g["groupName"] for g in groups] == ["pool-a10", "pool-a100"]
