"""Issue 19: a restarted Ray cluster never counts a feedback token twice.

The replay guard's seen-set lives in Ray's GCS key-value store, which a Ray cluster restart
(without GCS fault tolerance) loses. So the guard records when its seen-set began and refuses
tokens issued before it. This test restarts Ray for real: a token is used on cluster A, A is
stopped (its GCS and every Serve application gone), cluster B is started and the same
application (same signing key, as a Kubernetes Secret would give it) deployed there; the used
token is refused on B, and B's own tokens count once.

Two fresh one-node clusters of their own (not the session's, which other modules share): a
restart of the session cluster would take every other module's applications with it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import eventually

from lvm_operator.devstack.procs import free_port
from lvm_operator.devstack.ray_cluster import RayCluster, start_ray_cluster
from lvm_serving.contracts.serve_config import (
    AppSpec,
    RouterConfig,
    VersionSpec,
    render_applications,
)

pytestmark = [pytest.mark.stack, pytest.mark.timeout(900)]

APP = "lvmrestart"
ROLLOUT = "ns-restart/rollout"
D = 128
KEY = "ray-restart-test-feedback-key-of-at-least-32-bytes"


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("restart-checkpoint")
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", "memory_gru",
            "--context-length", "100", "--out", str(out / "champ"), "--d-model", str(D),
            "--eval-size", "32", "--threads", "1", "--version", "champ", "--steps", "10"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


class OneCluster:
    """A one-node Ray cluster serving the router and one version (the champion)."""

    def __init__(self, run_dir: Path, champion: dict) -> None:
        self.cluster: RayCluster = start_ray_cluster(run_dir, with_worker=False)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}/{APP}"
        self.client = httpx.Client(timeout=60)
        spec = AppSpec(
            application=APP, concept_bank_uri=champion["concept_bank"]["uri"],
            concept_bank_sha256=champion["concept_bank"]["sha256"],
            router=RouterConfig(rollout=ROLLOUT, champion="champ", candidate=None),
            versions=(VersionSpec(version="champ", checkpoint=champion["checkpoint"]["uri"],
                                  sha256=champion["checkpoint"]["sha256"], family="memory_gru",
                                  context_length=100, node_pool=None, num_cpus=0.1),),
            extra_router_args={"request_timeout_s": 8})
        apps = render_applications(spec)
        for app in apps:  # the key as a Secret gives it: the same before and after the restart
            app["runtime_env"] = {"env_vars": {"LVM_FEEDBACK_KEY": KEY, "OMP_NUM_THREADS": "1"}}
        config = {"proxy_location": "HeadOnly",
                  "http_options": {"host": "127.0.0.1", "port": self.port},
                  "applications": apps}
        resp = httpx.put(f"{self.cluster.dashboard_url}/api/serve/applications/", json=config,
                         timeout=60)
        assert resp.status_code == 200, resp.text
        eventually(self._answers, timeout_s=300, what="the router answering", interval_s=1)

    def _answers(self) -> bool:
        try:
            return self.predict().status_code == 200
        except httpx.HTTPError:
            return False

    def predict(self, seed: int = 0) -> httpx.Response:
        ctx = np.random.default_rng(seed).standard_normal((20, D)).astype(np.float32)
        ctx /= np.linalg.norm(ctx, axis=1, keepdims=True)
        return self.client.post(f"{self.base}/predict",
                                json={"context": ctx.round(5).tolist(), "lane": 3, "k": 10})

    def click(self, body: dict) -> httpx.Response:
        return self.client.post(f"{self.base}/feedback", json={
            "token": body["feedback_token"], "clicked_concept_id": body["concepts"][0]["id"]})

    def stop(self) -> None:
        self.client.close()
        self.cluster.stop()


def test_a_ray_restart_never_counts_a_token_twice(champion, tmp_path):
    a = OneCluster(tmp_path / "a", champion)
    try:
        used = a.predict(seed=1).json()
        assert a.click(used).status_code == 200
        again = a.click(used)
        assert again.status_code == 409 and "already used" in again.json()["error"], again.text
    finally:
        a.stop()  # Ray restarted: the GCS, its seen-set and every Serve application are gone

    b = OneCluster(tmp_path / "b", champion)
    try:
        # B's seen-set has never heard of the token; the guard's epoch refuses it anyway
        r = b.click(used)
        assert r.status_code == 409, r.text
        assert "before this serving cluster's replay guard began" in r.json()["error"], r.text
        # B's own tokens count, once each
        fresh = b.predict(seed=2).json()
        assert [b.click(fresh).status_code for _ in range(3)] == [200, 409, 409]
    finally:
        b.stop()
