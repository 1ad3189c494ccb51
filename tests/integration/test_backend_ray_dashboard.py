"""The Ray-dashboard backend against the real two-node Ray cluster.

Two parts:

* HTTP behaviour with applications of our own built from the placement probe (no model needed):
  a whole-config PUT that keeps a foreign application, pool placement read back as node ids, no
  PUT when nothing changed (counted on the wire with an httpx event hook), a failed deploy read
  back as DEPLOY_FAILED with Ray's message, a config Ray rejects raised as BackendRejected.
* End to end with a real AppSpec (router + two tiny trained versions): RUNNING, the router's
  user_config in effect, and a weight change that reconfigures the router without restarting a
  version replica.

The module leaves Serve shut down (DELETE of the whole config), as it found it.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from helpers import eventually

from lvm_operator.backends import AppStatus, BackendRejected
from lvm_operator.backends.ray_dashboard import RayDashboardBackend
from lvm_operator.controller.readiness import serve_failure_kind
from lvm_operator.devstack.ray_cluster import node_pool_of
from lvm_serving.contracts.serve_config import AppSpec, RouterConfig, VersionSpec

pytestmark = [pytest.mark.stack, pytest.mark.timeout(600)]

PROBE = "lvm_serving.placement_probe:app"


def probe_app(name: str, pool: str | None = None, replicas: int = 1,
              import_path: str = PROBE) -> dict:
    options: dict = {"num_cpus": 0}
    if pool:
        options["resources"] = {pool: 1}
    return {"name": name, "route_prefix": None, "import_path": import_path,
            "deployments": [{"name": "PlacementProbe", "num_replicas": replicas,
                             "ray_actor_options": options}]}


class CountingBackend:
    """A real backend whose httpx client counts the requests it sends, by method."""

    def __init__(self, url: str, http_port: int):
        self.requests: list[str] = []
        client = httpx.Client(timeout=60, event_hooks={
            "request": [lambda request: self.requests.append(request.method)]})
        self.backend = RayDashboardBackend(url, http_host="127.0.0.1", http_port=http_port,
                                           client=client)

    def puts(self) -> int:
        return self.requests.count("PUT")


@pytest.fixture(scope="module")
def dashboard(ray_cluster, serve_http_port):
    url = ray_cluster.dashboard_url
    yield CountingBackend(url, serve_http_port)
    httpx.delete(f"{url}/api/serve/applications/", timeout=60)


def running(backend: RayDashboardBackend, application: str):
    seen = backend.observe(application)
    assert seen.status is not AppStatus.DEPLOY_FAILED, seen.message
    return seen if seen.status is AppStatus.RUNNING else None


def test_probe_apps_keep_foreign_and_skip_unchanged(dashboard, ray_cluster):
    backend = dashboard.backend
    # Someone else's application, deployed first through the same REST API.
    assert backend.apply_config("other", [probe_app("other")]).changed
    eventually(lambda: running(backend, "other"), timeout_s=180, what="foreign app RUNNING")
    foreign_replicas = _replica_ids(backend, "other")

    def foreign_untouched() -> bool:
        # A whole-config PUT makes Ray re-check every application (briefly DEPLOYING), but an
        # unchanged one keeps its replicas.
        return bool(running(backend, "other")) and \
            _replica_ids(backend, "other") == foreign_replicas

    ours = [{**probe_app("probe"), "route_prefix": "/probe"},
            probe_app("probe--a100", pool="pool_a100", replicas=2)]
    puts = dashboard.puts()
    result = backend.apply_config("probe", ours)
    assert result.changed and result.applications == ("probe", "probe--a100")
    assert dashboard.puts() == puts + 1
    seen = eventually(lambda: running(backend, "probe"), timeout_s=180, what="probe RUNNING")

    # Placement: the pool_a100 version's replicas run on the worker node only.
    a100 = {n["node_id"] for n in ray_cluster.alive_nodes() if node_pool_of(n) == "pool_a100"}
    version = seen.versions["a100"]
    assert version.target_replicas == 2 and version.running_replicas == 2
    assert set(version.node_ids) == a100
    assert seen.router is None  # the probe has no Router deployment
    # The foreign application survived our whole-config PUT.
    eventually(foreign_untouched, timeout_s=60, what="foreign app untouched")

    # The same config again (other order): GET only, no PUT.
    puts = dashboard.puts()
    again = backend.apply_config("probe", list(reversed(ours)))
    assert not again.changed and dashboard.puts() == puts

    # Our version removed: only it goes; the foreign app and our router stay.
    assert backend.apply_config("probe", ours[:1]).changed
    eventually(lambda: not backend.observe("probe").versions, timeout_s=60,
               what="probe--a100 removed")
    eventually(foreign_untouched, timeout_s=60, what="foreign app untouched")

    backend.delete("probe")
    gone = backend.observe("probe")  # Ray deletes asynchronously: DELETING counts as gone
    assert gone.status is AppStatus.NOT_DEPLOYED and not gone.versions
    eventually(foreign_untouched, timeout_s=60, what="foreign app untouched")
    backend.delete("other")


def test_failed_and_rejected_configs(dashboard, caplog):
    backend = dashboard.backend
    # A module that does not exist: Ray accepts the config, then the deploy fails.
    bad = [probe_app("broken", import_path="lvm_serving.no_such_module:app")]
    assert backend.apply_config("broken", bad).changed
    seen = eventually(
        lambda: (s := backend.observe("broken")).status is AppStatus.DEPLOY_FAILED and s,
        timeout_s=120, what="DEPLOY_FAILED")
    assert seen.message.startswith("broken: DEPLOY_FAILED")
    assert "no_such_module" in seen.message
    # what status and Events say about Ray's real message: our words, not its text
    assert serve_failure_kind(seen.message) == "an import failed"
    backend.delete("broken")

    # An import path Ray's schema refuses: a 400 with the URL; Ray's answer goes to the log,
    # never into the error (which reaches status and Events).
    with caplog.at_level(logging.WARNING, logger="lvm_operator.backends.ray_dashboard"), \
            pytest.raises(BackendRejected) as exc:
        backend.apply_config("bad", [probe_app("bad", import_path="nodots")])
    assert exc.value.status_code == 400
    assert f"{backend.endpoint} answered 400" in str(exc.value)
    assert "PUT rejected: Ray refused the Serve config" in str(exc.value)
    assert "import path" not in str(exc.value)
    assert "import path" in caplog.text


# -- end to end with the real serving app ----------------------------------------------------


def _train(out: Path, version: str, ctx: int, seed: int) -> dict:
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", "memory_gru",
            "--context-length", str(ctx), "--out", str(out / version), "--d-model", "64",
            "--steps", "5", "--eval-size", "16", "--threads", "1", "--version", version,
            "--seed", str(seed)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def real_app(tmp_path_factory):
    pytest.importorskip("lvm_serving.app")
    out = tmp_path_factory.mktemp("ckpt")
    trained = {"v1": _train(out, "v1", 100, 0), "v2": _train(out, "v2", 500, 1)}

    def spec(weight: int) -> AppSpec:
        pools = {"v1": "pool_a10", "v2": "pool_a100"}
        return AppSpec(
            application="lvmbk",
            concept_bank_uri=trained["v1"]["concept_bank"]["uri"],
            concept_bank_sha256=trained["v1"]["concept_bank"]["sha256"],
            router=RouterConfig(rollout="backend-test/lvmbk", champion="v1", candidate="v2",
                                candidate_weight=weight),
            versions=tuple(VersionSpec(v, t["checkpoint"]["uri"], t["checkpoint"]["sha256"],
                                       "memory_gru", 100 if v == "v1" else 500,
                                       node_pool=pools[v], num_cpus=0.1)
                           for v, t in trained.items()),
        )

    return spec


def test_real_app_spec_end_to_end(dashboard, ray_cluster, real_app):
    backend = dashboard.backend
    assert backend.apply(real_app(10)).changed
    seen = eventually(lambda: running(backend, "lvmbk"), timeout_s=300,
                      what="router and both versions RUNNING")
    assert seen.router == real_app(10).router
    assert seen.version_names() == ["v1", "v2"]
    pools = {node_pool_of(n): n["node_id"] for n in ray_cluster.alive_nodes()}
    assert seen.versions["v1"].node_ids == (pools["pool_a10"],)
    assert seen.versions["v2"].node_ids == (pools["pool_a100"],)
    eventually(lambda: backend.verify_applied(real_app(10)) is True, timeout_s=60,
               what="router user_config in effect")
    assert backend.verify_applied(real_app(20)) is False

    replicas = _replica_ids(backend, "lvmbk")
    puts = dashboard.puts()
    assert not backend.apply(real_app(10)).changed and dashboard.puts() == puts

    # A weight change: only the router's user_config changes; the router reconfigures in place
    # and no replica (router or version) restarts.
    assert backend.apply(real_app(50)).changed
    eventually(lambda: backend.verify_applied(real_app(50)) is True, timeout_s=60,
               what="weight 50 in effect")
    assert backend.observe("lvmbk").router.candidate_weight == 50
    assert _replica_ids(backend, "lvmbk") == replicas

    backend.delete("lvmbk")
    assert backend.observe("lvmbk").status is AppStatus.NOT_DEPLOYED



def _replica_ids(backend: RayDashboardBackend, application: str) -> dict[str, set[str]]:
    """Replica ids of ``application`` and its ``--version`` applications."""
    apps = backend.details()["applications"]
    return {name: {r["replica_id"] for d in app["deployments"].values() for r in d["replicas"]}
            for name, app in apps.items()
            if name == application or name.startswith(application + "--")}
