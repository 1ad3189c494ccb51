"""The operator driving the REAL Ray Serve application through the Ray dashboard backend.

The scenario suite (``test_operator_e2e.py``) judges deterministic metrics and records serving
through a fake; this module closes the loop on the real serving side, once, leanly: two tiny
trained checkpoints, the session's two-node Ray cluster, and the operator as a subprocess with
the real ``rayDashboard`` backend, watching one namespace. Commands make the steps happen (no
metric traffic is needed, so analysis holds on "no data" throughout, as it should):

1. created: the router routes 25% to the candidate; each version runs on its node pool;
2. ``promote``: the candidate becomes the champion, the old champion's application is removed
   (``keepChampionWarmFor: 0s``);
3. ``rollback:<old champion>``: the old version from history serves everything again.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from helpers import eventually
from operator_harness import REPO, Operator

from lvm_operator.backends.ray_dashboard import RayDashboardBackend

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

APP = "lvm-operator"
CHAMPION, CANDIDATE = "op-champ", "op-cand"


def _train(out: Path, version: str, seed: int) -> dict:
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", "memory_gru",
            "--context-length", "100", "--out", str(out / version), "--d-model", "128",
            "--eval-size", "16", "--threads", "1", "--version", version, "--steps", "5",
            "--seed", str(seed)]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("operator-checkpoints")
    return {CHAMPION: _train(out, CHAMPION, 0), CANDIDATE: _train(out, CANDIDATE, 1)}


def _manifest(ns: str, trained: dict, dashboard: str, prometheus: str) -> dict:
    def version(v: str, pool: str) -> dict:
        ckpt = trained[v]["checkpoint"]
        return {"version": v, "checkpoint": ckpt["uri"], "sha256": ckpt["sha256"],
                "family": "memory_gru", "contextLength": 100, "nodePool": pool,
                "replicas": {"min": 1, "max": 1}}

    bank = trained[CHAMPION]["concept_bank"]
    return {
        "apiVersion": "lvm.rollout.io/v1alpha1", "kind": "LVMRollout",
        "metadata": {"name": "lvm", "namespace": ns},
        "spec": {
            "champion": version(CHAMPION, "pool_a10"),
            "candidate": version(CANDIDATE, "pool_a100"),
            "conceptBank": {"uri": bank["uri"], "sha256": bank["sha256"]},
            "steps": [{"weight": 25, "duration": "1h"}, {"weight": 100, "duration": "1h"}],
            "analysis": {"guardrails": {"interval": "2s"},
                         "quality": {"interval": "5s", "window": "1m", "minRequests": 10}},
            "prometheus": {"url": prometheus},
            "serve": {"backend": "rayDashboard", "url": dashboard, "application": APP},
            "promotion": {"keepChampionWarmFor": "0s"},
        },
    }


def test_operator_drives_the_real_serve_app(kube, crd_installed, ray_cluster, prometheus,
                                            trained, tmp_path, serve_http_port):
    kube.kubectl("apply", "-f", str(REPO / "crds" / "kopf-peering.yaml"))
    kube.kubectl("wait", "--for=condition=Established", "crd/kopfpeerings.kopf.dev",
                 "--timeout=60s")
    ns = kube.new_namespace("ray-op")
    operator = Operator(kube, tmp_path, None, peering="lvm-rollout-ray", scope=("--namespace", ns),
                        extra_env={"LVM_RAY_SERVE_HTTP_HOST": "127.0.0.1",
                                   "LVM_RAY_SERVE_HTTP_PORT": str(serve_http_port)})
    ray = RayDashboardBackend(ray_cluster.dashboard_url)

    def live():
        return ray.observe(APP)

    def status() -> dict:
        out = kube.kubectl("get", "lvmrollout", "lvm", "-n", ns, "-o", "json")
        return json.loads(out.stdout).get("status") or {}

    def command(value: str) -> None:
        kube.kubectl("annotate", "--overwrite", "lvmrollout/lvm", "-n", ns,
                     f"lvm.rollout.io/command={value}",
                     f"lvm.rollout.io/command-id={uuid.uuid4().hex[:8]}")

    def running(champion: str, candidate: str | None, weight: int) -> bool:
        app = live()
        r = app.router
        return (app.status.value == "RUNNING" and r is not None and r.champion == champion
                and r.candidate == candidate and r.candidate_weight == weight)

    operator.start()
    try:
        kube.apply(_manifest(ns, trained, ray_cluster.dashboard_url, prometheus.url))
        try:
            eventually(lambda: running(CHAMPION, CANDIDATE, 25), 300,
                       "router at 25% with both versions RUNNING", interval_s=2)
        except AssertionError as e:
            raise AssertionError(f"{e}\nlive: {live()}\nstatus: {status()}\n"
                                 f"operator log:\n{operator.log.read_text()[-3000:]}") from None
        app = live()
        assert set(app.versions) == {CHAMPION, CANDIDATE}
        s = status()
        assert s["phase"] == "Progressing" and s["candidateWeight"] == 25
        ready = {c["type"]: c for c in s["conditions"]}["Ready"]
        assert ready["status"] == "True", ready

        command("promote")
        eventually(lambda: running(CANDIDATE, None, 0) and set(live().versions) == {CANDIDATE},
                   180, "the candidate promoted and the old champion removed", interval_s=2)
        assert status()["phase"] == "Promoted"

        command(f"rollback:{CHAMPION}")
        eventually(lambda: running(CHAMPION, None, 0), 300,
                   "the old champion from history serving everything", interval_s=2)
        s = status()
        assert s["phase"] == "RolledBack" and s["serving"]["champion"] == CHAMPION
    finally:
        operator.stop()
        try:
            ray.delete(APP)
        finally:
            ray.close()


def test_real_backend_candidate_that_cannot_start_and_deletion_mid_rollout(
        kube, crd_installed, ray_cluster, prometheus, trained, tmp_path, serve_http_port):
    """Two faults on the REAL Ray Serve backend (issue 17 #1 and #3):

    1. a candidate whose checkpoint fails its sha256 never gets traffic (the router stays at
       0% while Serve retries it) and is rolled back after ``progressDeadline`` with the reason;
    2. a rollout deleted at 25% sends all traffic to the champion and removes the candidate's
       application before the object is gone (Flagger's revertOnDeletion).
    """
    kube.kubectl("apply", "-f", str(REPO / "crds" / "kopf-peering.yaml"))
    ns = kube.new_namespace("ray-faults")
    operator = Operator(kube, tmp_path, None, peering="lvm-rollout-ray-faults",
                        scope=("--namespace", ns),
                        extra_env={"LVM_RAY_SERVE_HTTP_HOST": "127.0.0.1",
                                   "LVM_RAY_SERVE_HTTP_PORT": str(serve_http_port)})
    ray = RayDashboardBackend(ray_cluster.dashboard_url)
    apps = ("lvm-bad", "lvm-del")

    def get(name: str) -> dict | None:
        out = kube.kubectl("get", "lvmrollout", "-n", ns, "-o", "json")
        items = {i["metadata"]["name"]: i for i in json.loads(out.stdout)["items"]}
        return items.get(name)

    def manifest(name: str, **spec) -> dict:
        m = _manifest(ns, trained, ray_cluster.dashboard_url, prometheus.url)
        m["metadata"]["name"] = name
        m["spec"]["serve"]["application"] = name
        m["spec"].update(spec)
        return m

    operator.start()
    try:
        # 1. the candidate's checkpoint does not match its sha256: Serve cannot start it
        bad = manifest("lvm-bad", progressDeadline="60s")
        bad["spec"]["candidate"]["sha256"] = "0" * 64
        kube.apply(bad)
        weights: set[int] = set()

        def rolled_back() -> dict | None:
            r = ray.observe("lvm-bad").router
            if r is not None:
                weights.add(r.candidate_weight)
            s = (get("lvm-bad") or {}).get("status") or {}
            return s if s.get("phase") == "RolledBack" else None

        try:
            s = eventually(rolled_back, 240, "the unstartable candidate rolled back",
                           interval_s=1)
        except AssertionError as e:
            raise AssertionError(f"{e}\nstatus: {(get('lvm-bad') or {}).get('status')}\n"
                                 f"operator log:\n{operator.log.read_text()[-3000:]}") from None
        assert weights == {0}, weights  # it never got traffic
        assert "not running within progressDeadline 1m" in s["message"], s["message"]
        assert s["history"][-1]["outcome"] == "rolledBack"
        ray.delete("lvm-bad")

        # 2. deleted at 25%: the champion takes everything before the object goes
        kube.apply(manifest("lvm-del"))

        def at_25() -> bool:
            app = ray.observe("lvm-del")
            return (app.status.value == "RUNNING" and app.router is not None
                    and app.router.candidate == CANDIDATE and app.router.candidate_weight == 25)

        eventually(at_25, 300, "lvm-del at 25% with both versions RUNNING", interval_s=2)
        kube.kubectl("delete", "lvmrollout", "lvm-del", "-n", ns, "--wait=true",
                     "--timeout=120s", timeout=150)
        assert get("lvm-del") is None
        live = ray.observe("lvm-del")
        assert live.router is not None and live.router.candidate is None
        assert live.router.champion == CHAMPION and live.router.candidate_weight == 0
        eventually(lambda: set(ray.observe("lvm-del").versions) == {CHAMPION}, 60,
                   "the candidate's application removed", interval_s=1)
    finally:
        operator.stop()
        try:
            for app in apps:
                ray.delete(app)
        finally:
            ray.close()
