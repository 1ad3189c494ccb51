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

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import httpx
import pytest
from helpers import eventually
from operator_harness import REPO, Operator

from lvm_operator.backends.ray_dashboard import RayDashboardBackend
from lvm_serving.contracts.serve_config import version_app_name

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

APP = "lvm-operator"
CHAMPION, CANDIDATE = "op-champ", "op-cand"


def _train(out: Path, version: str, seed: int, context_length: int = 100) -> dict:
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", "memory_gru",
            "--context-length", str(context_length), "--out", str(out / version),
            "--d-model", "128",
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
        ready = {c["type"]: c for c in s["conditions"]}["Applied"]
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


class _Load:
    """Serving's load generator in a thread, against one router, until stopped."""

    def __init__(self, url: str, rps: float) -> None:
        from lvm_serving.loadgen import LoadConfig, LoadStats
        from lvm_serving.synthetic import WorldSpec

        self.config = LoadConfig(url=url, rps=rps, duration_s=600, concurrency=16,
                                 feedback_rate=0.0, timeout_s=10.0,
                                 world=WorldSpec(d_model=128))
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.stats = LoadStats()

    def _run(self) -> None:
        from lvm_serving.loadgen import run_load

        async def main() -> None:
            self._loop, self._stop = asyncio.get_running_loop(), asyncio.Event()
            await run_load(self.config, self._stop, self.stats)

        asyncio.run(main())

    def __enter__(self) -> _Load:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)


def _replica_pids(dashboard: str, application: str, version: str) -> list[int]:
    """The live Ray actors of ``version``'s Serve replicas (the state API over HTTP)."""
    body = httpx.get(f"{dashboard}/api/v0/actors", params={
        "filter_keys": "state", "filter_predicates": "=", "filter_values": "ALIVE",
        "limit": "10000"}, timeout=30).json()
    actors = body["data"]["result"]["result"]
    prefix = f"ServeReplica:{version_app_name(application, version)}:"
    return [a["pid"] for a in actors if str(a.get("class_name", "")).startswith(prefix)]


def test_real_backend_candidate_that_dies_at_20_percent_is_rolled_back_on_its_errors(
        kube, crd_installed, ray_cluster, prometheus, trained, tmp_path, serve_http_port):
    """Issue 15 #1 on the REAL Ray Serve backend, with real traffic through the router: at
    20%, the candidate's replica is killed and its checkpoint corrupted (Serve cannot bring it
    back). The router counts each request it routes to the candidate as an attempt and each
    one that gets no answer as an error, so the guardrail sees a 100% error rate, not "no
    traffic": the rollout rolls back within K x interval (+ the router's timeout, a scrape and
    Ray's 1 s export), naming the error rate."""
    kube.kubectl("apply", "-f", str(REPO / "crds" / "kopf-peering.yaml"))
    ns = kube.new_namespace("ray-crash")
    app = "lvm-crash"
    operator = Operator(kube, tmp_path, None, peering="lvm-rollout-ray-crash",
                        scope=("--namespace", ns),
                        extra_env={"LVM_RAY_SERVE_HTTP_HOST": "127.0.0.1",
                                   "LVM_RAY_SERVE_HTTP_PORT": str(serve_http_port)})
    ray = RayDashboardBackend(ray_cluster.dashboard_url)
    # The candidate from a copy of its checkpoint, so this test can break it alone.
    source = Path(trained[CANDIDATE]["checkpoint"]["uri"].removeprefix("file://"))
    copy = tmp_path / f"crash-{source.name}"
    shutil.copyfile(source, copy)
    m = _manifest(ns, trained, ray_cluster.dashboard_url, prometheus.url)
    m["metadata"]["name"] = app
    m["spec"]["serve"]["application"] = app
    m["spec"]["candidate"]["checkpoint"] = copy.as_uri()
    m["spec"]["steps"] = [{"weight": 20, "duration": "1h"}, {"weight": 100, "duration": "1h"}]
    interval_s, k, timeout_s = 2.0, 2, 2.0
    m["spec"]["analysis"]["guardrails"] = {"interval": "2s", "consecutiveBreaches": k,
                                           "minSamples": 10}
    m["spec"]["routing"] = {"mode": "weighted", "requestTimeout": "2s"}

    def status() -> dict:
        out = kube.kubectl("get", "lvmrollout", app, "-n", ns, "-o", "json")
        return json.loads(out.stdout).get("status") or {}

    operator.start()
    try:
        kube.apply(m)
        eventually(lambda: (a := ray.observe(app)).status.value == "RUNNING"
                   and a.router is not None and a.router.candidate_weight == 20, 300,
                   "router at 20% with both versions RUNNING", interval_s=2)
        with _Load(f"http://127.0.0.1:{serve_http_port}/{app}", rps=30) as load:
            eventually(lambda: (status().get("lastAnalysis") or {}).get("verdict") == "pass",
                       90, "a passing guardrail check on real traffic", interval_s=1)
            pids = _replica_pids(ray_cluster.dashboard_url, app, CANDIDATE)
            assert pids, "no live replica of the candidate"
            copy.write_bytes(b"corrupted: a restarted replica fails its sha256")
            t_kill = time.time()
            for pid in pids:
                os.kill(pid, signal.SIGKILL)
            try:
                s = eventually(lambda: (x := status()).get("phase") == "RolledBack" and x, 90,
                               "rolled back on the candidate's errors", interval_s=0.2)
            except AssertionError as e:
                raise AssertionError(f"{e}\nstatus: {status()}\noperator log:\n"
                                     f"{operator.log.read_text()[-3000:]}") from None
            reaction = time.time() - t_kill
            stats = load.stats.summary()
        # + a scrape, Ray's 1 s export, and slack for ticks and queries on a busy machine (CI's
        # two loaded cores took 16.3 s once); "no traffic" instead would hold until the 90 s wait
        limit = timeout_s + k * interval_s + 1.0 + 1.0 + 12.0
        print(f"\nkilled candidate at 20%: RolledBack {reaction:.1f} s after the kill (limit "
              f"{limit:.0f} s); load {stats['sent']} sent, failed {stats['failed']}")
        assert reaction <= limit
        assert "error rate" in s["message"], s["message"]
        assert s["history"][-1]["outcome"] == "rolledBack"
        eventually(lambda: (r := ray.observe(app).router) is not None
                   and r.candidate_weight == 0, 30, "all traffic back on the champion")
    finally:
        operator.stop()
        try:
            ray.delete(app)
        finally:
            ray.close()


def test_the_phase2_canary_layout_runs_from_the_object_store(
        kube, crd_installed, ray_cluster, prometheus, object_store, run_dir, tmp_path,
        serve_http_port):
    """``examples/phase2-canary.yaml``'s layout (every artifact an ``s3://`` URI, memory_gru at
    100 vs 500 context vectors) on the local stack: the artifacts are uploaded to the session's
    SeaweedFS, the pre-rollout gate evaluates both versions from it (the operator's evaluator
    reads s3://), both versions deploy on Ray from it and answer predictions."""
    from urllib.parse import urlparse

    import numpy as np
    import yaml

    kube.kubectl("apply", "-f", str(REPO / "crds" / "kopf-peering.yaml"))
    ns = kube.new_namespace("ray-s3")
    champ = _train(tmp_path, "phase1-baseline", 0, 100)
    cand = _train(tmp_path, "phase2-500ctx", 1, 500)

    def upload(artifact: dict, key: str) -> tuple[str, str]:
        uri, digest = object_store.put_file("lvm-models", key,
                                            Path(urlparse(artifact["uri"]).path))
        assert digest == artifact["sha256"]
        return uri, digest

    manifest = yaml.safe_load((REPO / "examples" / "phase2-canary.yaml").read_text())
    spec = manifest["spec"]
    manifest["metadata"]["namespace"] = ns
    for role, trained, key, pool in (("champion", champ, "phase1/best_val_hit5.pt", "pool_a10"),
                                     ("candidate", cand, "phase2/best_val_hit5.pt", "pool_a100")):
        uri, digest = upload(trained["checkpoint"], key)
        assert uri.startswith("s3://lvm-models/")
        spec[role].update(checkpoint=uri, sha256=digest, nodePool=pool,
                          replicas={"min": 1, "max": 1})
    bank_uri, bank_sha = upload(champ["concept_bank"], "concepts/bank.npz")
    eval_uri, eval_sha = upload(cand["eval_set"], "eval/eval_set_500.npz")
    spec["conceptBank"] = {"uri": bank_uri, "sha256": bank_sha}
    spec["evaluation"] = {"evalSet": {"uri": eval_uri, "sha256": eval_sha},
                          "gate": {"minHit5": 0.0, "maxDegradation": 1.0}}
    spec["steps"] = [{"weight": 10, "duration": "1h", "shadow": True},
                     {"weight": 100, "duration": "1h"}]
    spec["prometheus"] = {"url": prometheus.url}
    spec["serve"] = {"backend": "rayDashboard", "url": ray_cluster.dashboard_url,
                     "application": "lvm-s3"}
    spec["promotion"] = {"keepChampionWarmFor": "0s"}

    operator = Operator(kube, tmp_path, None, peering="lvm-rollout-ray-s3",
                        scope=("--namespace", ns),
                        extra_env={"LVM_RAY_SERVE_HTTP_HOST": "127.0.0.1",
                                   "LVM_RAY_SERVE_HTTP_PORT": str(serve_http_port),
                                   **object_store.node_env(run_dir)})
    ray = RayDashboardBackend(ray_cluster.dashboard_url)

    def status() -> dict:
        out = kube.kubectl("get", "lvmrollout", "lvm", "-n", ns, "-o", "json")
        return json.loads(out.stdout).get("status") or {}

    def serving() -> bool:
        app = ray.observe("lvm-s3")
        r = app.router
        return (app.status.value == "RUNNING" and r is not None and r.candidate_weight == 10
                and set(app.versions) == {"phase1-baseline", "phase2-500ctx"})

    operator.start()
    try:
        kube.apply(manifest)
        try:
            eventually(serving, 420, "both versions RUNNING from s3:// at 10% (shadow)",
                       interval_s=2)
        except AssertionError as e:
            raise AssertionError(f"{e}\nlive: {ray.observe('lvm-s3')}\nstatus: {status()}\n"
                                 f"operator log:\n{operator.log.read_text()[-3000:]}") from None
        gate = status()["evaluation"]["gate"]
        assert gate["verdict"] == "pass", gate  # both versions evaluated from the store
        history = status()["evaluation"]["history"]
        assert {h["version"] for h in history} == {"phase1-baseline", "phase2-500ctx"}
        for h in history:  # each checkpoint's own training record, next to the measured Hit@5
            assert h["provenance"]["source"] == "lvm-rollout-checkpoint/1", h
            assert 0 <= h["provenance"]["hit5"] <= 1
        base = f"http://127.0.0.1:{serve_http_port}/lvm-s3"
        rng = np.random.default_rng(0)
        for version, length in (("phase1-baseline", 100), ("phase2-500ctx", 500)):
            ctx = rng.standard_normal((length, 128)).astype(np.float32)
            ctx /= np.linalg.norm(ctx, axis=1, keepdims=True)
            body = {"context": ctx.round(5).tolist(), "k": 5, "lane": 3}
            r = httpx.post(f"{base}/predict", json=body, headers={"x-lvm-version": version},
                           timeout=60)
            assert r.status_code == 200, r.text[:500]
            assert r.json()["version"] == version
    finally:
        operator.stop()
        try:
            ray.delete("lvm-s3")
        finally:
            ray.close()
