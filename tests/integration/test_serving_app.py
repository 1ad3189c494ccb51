"""The Serve application end to end on the real two-node Ray cluster, scraped by Prometheus.

One deployment (router + four tiny versions) is shared by the whole module; each test sets the
router's ``user_config`` it needs through the same dashboard REST call the operator makes (a
``PUT`` of the full config, where only the router's ``user_config`` changed).
"""

from __future__ import annotations

import base64
import copy
import json
import math
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
from helpers import eventually, wait_for_series

from lvm_operator.devstack.ray_cluster import node_pool_of
from lvm_serving.contracts import metrics as mc
from lvm_serving.contracts.serve_config import (
    AppSpec,
    RouterConfig,
    VersionSpec,
    render_applications,
    version_app_name,
)
from lvm_serving.feedback import TokenSigner

APP = "lvmtest"
ROLLOUT = "ns-test/rollout"
D = 128
FEEDBACK_KEY = "integration-test-feedback-key-of-at-least-32-bytes"

# version -> (family, context length, node pool, extra train args)
VERSIONS = {
    "champ": ("memory_gru", 100, "pool_a10", ["--steps", "60"]),
    "cand": ("memory_gru", 500, "pool_a100", ["--steps", "30", "--seed", "1"]),
    # FAULT INJECTION: lane 5 answers NaN, lane 6 points away from every concept.
    "hgru": ("hierarchical_gru", 1000, None, ["--steps", "10", "--nan-lanes", "5",
                                              "--empty-lanes", "6"]),
    "moe": ("tmd_moe", 100, None, ["--steps", "5", "--size", "expert.hidden=16"]),
}

pytestmark = pytest.mark.timeout(600)


def _train(out: Path, version: str) -> dict:
    family, ctx, _, extra = VERSIONS[version]
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", family, "--context-length",
            str(ctx), "--out", str(out / version), "--d-model", str(D), "--eval-size", "32",
            "--threads", "1", "--version", version, *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict[str, dict]:
    out = tmp_path_factory.mktemp("checkpoints")
    return {v: _train(out, v) for v in VERSIONS}


def _spec(trained: dict, router_replicas: int = 1, **router) -> AppSpec:
    champ = trained["champ"]
    versions = tuple(
        VersionSpec(version=v, checkpoint=trained[v]["checkpoint"]["uri"],
                    sha256=trained[v]["checkpoint"]["sha256"], family=family,
                    context_length=ctx, node_pool=pool, num_cpus=0.1)
        for v, (family, ctx, pool, _) in VERSIONS.items()
    )
    config = RouterConfig(rollout=ROLLOUT, **{"champion": "champ", "candidate": "cand", **router})
    return AppSpec(application=APP, concept_bank_uri=champ["concept_bank"]["uri"],
                   concept_bank_sha256=champ["concept_bank"]["sha256"], router=config,
                   versions=versions, extra_router_args={"request_timeout_s": 8},
                   router_replicas=router_replicas)


class Served:
    def __init__(self, dashboard: str, port: int, trained: dict) -> None:
        self.dashboard = dashboard
        self.base = f"http://127.0.0.1:{port}/{APP}"
        self.port = port
        self.trained = trained
        self.client = httpx.Client(timeout=60)
        self.lock = threading.Lock()

    def serve_config(self, spec: AppSpec, feedback_key: str = FEEDBACK_KEY) -> dict:
        apps = render_applications(spec)
        for app in apps:  # the signing key reaches the router through its runtime env
            app["runtime_env"] = {"env_vars": {"LVM_FEEDBACK_KEY": feedback_key,
                                               "OMP_NUM_THREADS": "1"}}
        return {"proxy_location": "HeadOnly",
                "http_options": {"host": "127.0.0.1", "port": self.port},
                "applications": apps}

    def put(self, config: dict) -> None:
        with self.lock:
            resp = httpx.put(f"{self.dashboard}/api/serve/applications/", json=config,
                             timeout=60)
        assert resp.status_code == 200, resp.text

    def apply(self, *, router_replicas: int = 1, feedback_key: str = FEEDBACK_KEY,
              **router) -> dict:
        """PUT the full config with this router config; wait until the router runs it."""
        spec = _spec(self.trained, router_replicas=router_replicas, **router)
        self.put(self.serve_config(spec, feedback_key))
        want = spec.router.to_dict()
        eventually(lambda: self.healthz().get("config") == want, timeout_s=90,
                   what=f"router config {want}")
        return want

    def healthz(self) -> dict:
        resp = self.client.get(f"{self.base}/healthz", timeout=10)
        return resp.json() if resp.status_code == 200 else {}

    def predict(self, ctx_len: int = 20, lane: int = 0, user: str | None = None,
                seed: int = 0, headers: dict | None = None, **extra) -> httpx.Response:
        rng = np.random.default_rng(seed)
        ctx = rng.standard_normal((ctx_len, D)).astype(np.float32)
        ctx /= np.linalg.norm(ctx, axis=1, keepdims=True)
        body = {"context": ctx.round(5).tolist(), "lane": lane, "k": 10, **extra}
        if user is not None:
            body["user_id"] = user
        return self.client.post(f"{self.base}/predict", json=body, headers=headers)

    def applications(self) -> dict:
        return httpx.get(f"{self.dashboard}/api/serve/applications/", timeout=30).json()[
            "applications"]


@pytest.fixture(scope="module")
def served(ray_cluster, trained, serve_http_port) -> Served:
    s = Served(ray_cluster.dashboard_url, serve_http_port, trained)
    s.apply()

    def all_running():
        apps = s.applications()
        names = [APP, *(version_app_name(APP, v) for v in VERSIONS)]
        statuses = {n: apps.get(n, {}).get("status") for n in names}
        failed = {n: apps[n].get("message") for n in names
                  if statuses[n] == "DEPLOY_FAILED"}
        assert not failed, failed
        return all(st == "RUNNING" for st in statuses.values())

    eventually(all_running, timeout_s=240, what="router and versions RUNNING", interval_s=1)
    yield s
    s.client.close()
    httpx.delete(f"{ray_cluster.dashboard_url}/api/serve/applications/", timeout=60)


def _versions_of(responses) -> Counter:
    out: Counter = Counter()
    for r in responses:
        assert r.status_code == 200, r.text
        out[r.json()["version"]] += 1
    return out


def _parallel(fn, items, workers: int = 6) -> list:
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(fn, items))


# --------------------------------------------------------------------------------------------


def test_versions_run_on_their_pools(served, ray_cluster):
    apps = served.applications()
    pool_nodes = {node_pool_of(n): n["node_id"] for n in ray_cluster.alive_nodes()}
    for version, (_, _, pool, _) in VERSIONS.items():
        if pool is None:
            continue
        deployment = apps[version_app_name(APP, version)]["deployments"][version]
        nodes = {r["node_id"] for r in deployment["replicas"]}
        assert nodes == {pool_nodes[pool]}, (version, pool, nodes)
    assert apps[APP]["deployments"]["Router"]["status"] == "HEALTHY"


@pytest.mark.parametrize("version", list(VERSIONS))
def test_each_family_loads_and_serves(served, version):
    served.apply(champion=version, candidate=None)
    _, ctx, _, _ = VERSIONS[version]
    for length in sorted({1, min(ctx, 150), ctx}):
        r = served.predict(ctx_len=length, lane=2)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["version"] == version and body["lane"] == 2 and body["rollout"] == ROLLOUT
        vec = np.asarray(body["vector"])
        assert vec.shape == (D,) and np.isfinite(vec).all()
        assert abs(np.linalg.norm(vec) - 1) < 1e-3
        assert len(body["concepts"]) == 10
        sims = [c["similarity"] for c in body["concepts"]]
        assert sims == sorted(sims, reverse=True)
        assert all(0 <= c["lane"] < 16 for c in body["concepts"])
    too_long = served.predict(ctx_len=ctx + 1)
    assert too_long.status_code == 400 and "context too long" in too_long.json()["error"]


def test_nan_output_is_a_5xx_and_empty_hit_is_counted(served):
    served.apply(champion="hgru", candidate=None)
    r = served.predict(ctx_len=30, lane=5)
    assert r.status_code == 500, r.text
    assert r.json()["reason"] == "nan_output" and "NaN" in r.json()["error"]
    r = served.predict(ctx_len=30, lane=6)  # answered, but every concept is far away
    assert r.status_code == 200
    assert r.json()["concepts"][0]["similarity"] < mc.EMPTY_HIT_SIMILARITY


def test_bad_input_is_a_4xx_naming_the_problem(served):
    served.apply()
    url = f"{served.base}/predict"
    post = served.client.post
    ok_ctx = [[0.1] * D] * 3
    cases = [
        (dict(content=b"{not json"), "malformed JSON"),
        (dict(json={"context": [[0.1] * (D + 1)], "lane": 0}), f"dimension {D}"),
        (dict(content=json.dumps({"context": [[math.nan] * D], "lane": 0}).encode()), "NaN"),
        (dict(json={"context": ok_ctx, "lane": 16}), "unknown lane"),
        (dict(json={"context": ok_ctx}), "'lane'"),
        (dict(json={"context": ok_ctx, "lane": 0, "k": 0}), "k must be"),
        (dict(json={"lane": 0}), "missing field 'context'"),
        (dict(json={"context": ok_ctx, "tmd": [1.0] * 3}), "tmd must be"),
    ]
    for kwargs, needle in cases:
        r = post(url, **kwargs)
        assert r.status_code == 400, (needle, r.status_code, r.text)
        assert needle in r.json()["error"], (needle, r.text)
    r = served.predict(ctx_len=101)  # > champion's context length (100)
    assert r.status_code == 400 and "context too long" in r.json()["error"]
    assert served.client.get(f"{served.base}/nope").status_code == 404
    assert served.client.get(f"{served.base}/predict").status_code == 405


def test_weighted_split_follows_the_weight(served):
    served.apply(mode="weighted", candidate_weight=30)
    n = 300
    counts = _versions_of(_parallel(lambda i: served.predict(seed=i), range(n)))
    share = counts["cand"] / n
    sigma = math.sqrt(0.3 * 0.7 / n)
    assert abs(share - 0.3) < 4 * sigma, counts
    assert set(counts) <= {"champ", "cand"}


def test_sticky_users_stay_on_the_candidate_as_weight_grows(served):
    users = [f"user-{i}" for i in range(150)]
    on_candidate: dict[int, set[str]] = {}
    for weight in (10, 20, 50):
        served.apply(mode="userHash", candidate_weight=weight)
        responses = _parallel(lambda u: served.predict(user=u), users)
        again = _parallel(lambda u: served.predict(user=u, seed=7), users)
        chosen = {u for u, r in zip(users, responses, strict=True) if r.json()["version"] == "cand"}
        repeat = {u for u, r in zip(users, again, strict=True) if r.json()["version"] == "cand"}
        assert chosen == repeat, f"a user changed version at weight {weight}"
        on_candidate[weight] = chosen
        share = len(chosen) / len(users)
        assert abs(share - weight / 100) < 4 * math.sqrt(0.25 / len(users)), (weight, share)
    assert on_candidate[10] <= on_candidate[20] <= on_candidate[50]
    assert on_candidate[10] and on_candidate[50] - on_candidate[20]


def test_context_length_routing(served):
    served.apply(mode="contextLength", context_threshold=100, candidate_weight=100)
    short = _versions_of(_parallel(lambda i: served.predict(ctx_len=50, seed=i), range(20)))
    long = _versions_of(_parallel(lambda i: served.predict(ctx_len=300, seed=i), range(20)))
    assert short == {"champ": 20} and long == {"cand": 20}
    served.apply(mode="contextLength", context_threshold=100, candidate_weight=50)
    # long contexts left on the champion (window 100) are cut to its window, not refused
    long = _versions_of(_parallel(lambda i: served.predict(ctx_len=150, seed=i), range(80)))
    assert long["champ"] > 10 and long["cand"] > 10, long
    served.apply(mode="weighted", candidate_weight=0)
    assert served.predict(ctx_len=150).status_code == 400  # outside contextLength: refused


def test_shadow_answers_with_the_champion_and_records_pairs(served, prometheus):
    served.apply(candidate_weight=0, shadow=True)
    counts = _versions_of(_parallel(lambda i: served.predict(seed=i, lane=3), range(40)))
    assert counts == {"champ": 40}
    sel = f'rollout="{ROLLOUT}",version="cand",lane="3"'
    result = wait_for_series(
        prometheus,
        f'sum({{__name__=~"{mc.exported_series(mc.SHADOW_COMPARISONS)}",{sel}}}) >= 40',
        timeout_s=60)
    assert float(result[0]["value"][1]) >= 40
    overlap = prometheus.query(
        f'sum({{__name__=~"{mc.exported_series(mc.SHADOW_TOP5_OVERLAP)}",{sel}}})')
    cosine = prometheus.query(
        f'sum({{__name__=~"{mc.exported_series(mc.SHADOW_COSINE)}",{sel}}})')
    n = float(result[0]["value"][1])
    assert 0 <= float(overlap[0]["value"][1]) <= n
    assert 0 < float(cosine[0]["value"][1]) <= n + 1e-6
    wait_for_series(prometheus, f'{{__name__=~"{mc.exported_series(mc.REQUESTS)}",'
                    f'version="cand",shadow="true",rollout="{ROLLOUT}"}}', timeout_s=60)


def _count(prometheus, metric: mc.MetricDef, sel: str) -> float:
    result = prometheus.query(f'sum({{__name__=~"{mc.exported_series(metric)}",{sel}}})')
    return float(result[0]["value"][1]) if result else 0.0


def test_qa_pins_a_live_version_and_its_traffic_is_labelled_pinned(served, prometheus):
    served.apply(candidate_weight=10)
    pin = {"x-lvm-version": "cand"}
    responses = _parallel(lambda i: served.predict(seed=i, lane=7, headers=pin), range(30))
    assert _versions_of(responses) == {"cand": 30}  # whatever the weight
    url = f"{served.base}/feedback"
    for r in responses[:5]:
        body = r.json()
        fb = served.client.post(url, json={"token": body["feedback_token"],
                                           "clicked_concept_id": body["concepts"][0]["id"]})
        assert fb.status_code == 200, fb.text
    # not live: a typo, and the candidate once it has no traffic
    r = served.predict(seed=1, headers={"x-lvm-version": "cnad"})
    assert r.status_code == 400, r.text
    assert "x-lvm-version names version 'cnad', which is not live" in r.json()["error"]
    assert "pin one of 'champ', 'cand'" in r.json()["error"]
    sel = f'rollout="{ROLLOUT}",version="cand",lane="7"'
    wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.REQUESTS)}",{sel},'
                                f'pinned="true"}}) >= 30', timeout_s=60)
    wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.FEEDBACK)}",{sel},'
                                f'pinned="true"}}) >= 5', timeout_s=60)
    wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.LATENCY, "_count")}"'
                                f',{sel},pinned="true"}}) >= 30', timeout_s=60)
    # none of it under pinned="false", which is what the judge reads (lane 7: this test's)
    assert _count(prometheus, mc.REQUESTS, f'{sel},pinned!="true"') == 0
    assert _count(prometheus, mc.FEEDBACK, f'{sel},pinned!="true"') == 0
    served.apply(candidate_weight=0)
    r = served.predict(seed=2, headers=pin)
    assert r.status_code == 400 and "pin one of 'champ' or drop" in r.json()["error"], r.text
    served.apply()


def test_a_partial_shadow_mirrors_about_that_share(served, prometheus):
    served.apply(candidate_weight=0, shadow=True, shadow_percent=25)
    counts = _versions_of(_parallel(lambda i: served.predict(seed=i, lane=9), range(200)))
    assert counts == {"champ": 200}
    sel = f'rollout="{ROLLOUT}",version="cand",lane="9"'
    wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.SHADOW_COMPARISONS)}"'
                                f',{sel}}}) >= 20', timeout_s=60)
    mirrored = _count(prometheus, mc.REQUESTS, f'{sel},shadow="true"')
    # Binomial(200, 0.25): mean 50, sd 6.1; [20, 85] is about 5 sd either side
    assert 20 <= mirrored <= 85, mirrored
    served.apply()


def test_feedback_counts_once_across_replicas_restarts_and_keys(served, prometheus):
    """Issue 19 #1-#2 on real Ray: one token replayed 1,000 times from 8 connections through
    two router replicas counts once; the record survives two router restarts; a router without
    a key fails closed; a token from before the replay guard began is refused."""
    served.apply(router_replicas=2)
    eventually(lambda: served.applications()[APP]["deployments"]["Router"]["status"] ==
               "HEALTHY" and len([r for r in served.applications()[APP]["deployments"][
                   "Router"].get("replicas", []) if r.get("state") == "RUNNING"]) == 2,
               timeout_s=120, what="two router replicas RUNNING")
    body = served.predict(lane=11, seed=11).json()
    click = {"token": body["feedback_token"], "clicked_concept_id": body["concepts"][0]["id"]}
    url = f"{served.base}/feedback"

    def replay(_: int) -> list[int]:
        with httpx.Client(timeout=60) as client:  # its own connection
            return [client.post(url, json=click).status_code for _ in range(125)]

    codes = Counter(code for chunk in _parallel(replay, range(8), workers=8) for code in chunk)
    assert codes == {200: 1, 409: 999}, codes
    sel = f'rollout="{ROLLOUT}",lane="11"'
    wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.FEEDBACK_REJECTED)}",'
                                f'rollout="{ROLLOUT}",reason="replay"}}) >= 999', timeout_s=60)
    wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.FEEDBACK)}",'
                                f'{sel}}}) >= 1', timeout_s=60)
    assert _count(prometheus, mc.FEEDBACK, sel) == 1  # exactly once, not 1,000 times

    # restart 1: new router replicas without a key: no tokens, /feedback 503 (fails closed)
    served.apply(feedback_key="")
    eventually(lambda: all(served.predict(seed=i).json().get("feedback_token") is None
                           for i in range(4)), timeout_s=120, what="routers without a key")
    # (eventually: a replica of the old deployment may still be draining)
    r = eventually(lambda: (x := served.client.post(url, json=click)).status_code == 503 and x,
                   timeout_s=60, what="/feedback answering 503 without a key")
    assert "no feedback signing key" in r.json()["error"], r.text
    # restart 2: the key is back; the token used before both restarts is still used up
    served.apply()
    eventually(lambda: all(served.predict(seed=i).json().get("feedback_token")
                           for i in range(4)), timeout_s=120, what="routers with the key")
    r = eventually(lambda: (x := served.client.post(url, json=click)).status_code != 503 and x,
                   timeout_s=60, what="/feedback with the key again")
    assert r.status_code == 409 and "already used" in r.json()["error"], r.text
    # signed with the real key but issued 2 h ago, before this cluster's replay guard began
    # (what every old token looks like after a Ray restart): refused, never counted twice
    old = TokenSigner([FEEDBACK_KEY.encode()]).sign(
        rollout=ROLLOUT, version="champ", lane=11, ids=[click["clicked_concept_id"]],
        vector=np.ones(D), now=time.time() - 7200)
    r = served.client.post(url, json={**click, "token": old})
    assert r.status_code == 409 and "before this serving cluster's replay guard" in \
        r.json()["error"], r.text
    # minted without the Secret's key
    forged = TokenSigner([b"x" * 32]).sign(rollout=ROLLOUT, version="champ", lane=11,
                                            ids=[1], vector=np.ones(D))
    r = served.client.post(url, json={**click, "token": forged})
    assert r.status_code == 403 and "signature" in r.json()["error"], r.text
    assert _count(prometheus, mc.FEEDBACK, sel) == 1


def _read_reply(sock: socket.socket) -> str:
    """One HTTP response: the head, then as many body bytes as its content-length says (the
    two may arrive in separate packets)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return (head + b"\r\n\r\n" + body).decode("utf-8", "replace")


def test_a_body_too_big_for_any_routed_version_is_refused_before_it_is_read(served):
    """Issue 19 #3 on real Ray: the router's cap follows the longest context a routed version
    takes (here 50 vectors of 128: 50 x 128 x 24 + 65,536 = 219,136 bytes of JSON)."""
    served.apply(max_context=50)
    cap = 50 * D * 24 + 64 * 1024
    # the headers announce a gigabyte and no body follows: the answer comes without reading it
    with socket.create_connection(("127.0.0.1", served.port), timeout=30) as sock:
        sock.sendall(f"POST /{APP}/predict HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "Content-Type: application/json\r\nContent-Length: 1000000000\r\n"
                     "\r\n".encode())
        reply = _read_reply(sock)
    assert reply.startswith("HTTP/1.1 413"), reply[:300]
    assert f"request body of 1000000000 bytes is over the limit of {cap}" in reply
    # a body that streams in past the cap (no content-length: chunked) is cut off too
    r = served.client.post(f"{served.base}/predict", content=iter([b"[" * 65536] * 5),
                           headers={"content-type": "application/json"})
    assert r.status_code == 413 and f"over the limit of {cap} bytes" in r.json()["error"]
    # one vector more than any routed version takes: a 400 naming the limit, before a version
    r = served.predict(ctx_len=51)
    assert r.status_code == 400 and "context too long: 51 vectors, at most 50" in \
        r.json()["error"], r.text
    assert served.predict(ctx_len=50).status_code == 200
    served.apply()


def test_feedback_proxies_and_forged_tokens(served):
    served.apply(candidate=None)
    body = served.predict(lane=4).json()
    token, top = body["feedback_token"], body["concepts"]
    url = f"{served.base}/feedback"
    r = served.client.post(url, json={"token": token, "clicked_concept_id": top[0]["id"]})
    assert r.status_code == 200, r.text
    fb = r.json()
    assert fb["version"] == "champ" and fb["lane"] == 4 and fb["rollout"] == ROLLOUT
    assert fb["hit@1_exact"] and fb["hit@5_exact"] and fb["hit@10_exact"]
    assert abs(fb["cosine"] - top[0]["similarity"]) < 0.02
    for k, threshold in mc.HIT_PROXY_COSINE.items():
        assert fb[f"hit@{k}_proxy"] == (fb["cosine"] > threshold)
    # the same prediction again (a new token: each counts once), clicked at rank 8
    again = served.predict(lane=4).json()
    assert [c["id"] for c in again["concepts"]] == [c["id"] for c in top]
    r = served.client.post(url, json={"token": again["feedback_token"],
                                      "clicked_concept_id": top[7]["id"]})
    fb = r.json()
    assert not fb["hit@1_exact"] and not fb["hit@5_exact"] and fb["hit@10_exact"]
    r = served.client.post(url, json={"token": token, "clicked_concept_id": top[7]["id"]})
    assert r.status_code == 409 and "already used" in r.json()["error"], r.text

    payload, sig = token.split(".")
    tampered = payload[:-2] + ("A" if payload[-2] != "A" else "B") + payload[-1] + "." + sig
    forged = payload + "." + sig[::-1]
    for bad in (tampered, forged):
        r = served.client.post(url, json={"token": bad, "clicked_concept_id": top[0]["id"]})
        assert r.status_code == 403 and "signature" in r.json()["error"], r.text
    for body_, needle in (({"token": "garbage", "clicked_concept_id": 1}, "malformed"),
                          ({"token": token, "clicked_concept_id": 10**9}, "unknown concept"),
                          ({"clicked_concept_id": 1}, "token")):
        r = served.client.post(url, json=body_)
        assert r.status_code == 400 and needle in r.json()["error"], r.text


def test_binary_request_answers_like_json(served):
    served.apply(candidate=None)
    ctx = np.random.default_rng(7).standard_normal((40, D)).astype("<f4")
    ctx /= np.linalg.norm(ctx, axis=1, keepdims=True)
    url = f"{served.base}/predict"
    as_json = served.client.post(url, json={"context": ctx.tolist(), "lane": 4, "k": 7})
    headers = {"content-type": "application/octet-stream", "x-lvm-lane": "4", "x-lvm-k": "7"}
    as_binary = served.client.post(url, content=ctx.tobytes(), headers=headers)
    assert as_json.status_code == 200 and as_binary.status_code == 200, as_binary.text
    j, b = as_json.json(), as_binary.json()
    assert b["concepts"] == j["concepts"] and len(b["concepts"]) == 7
    assert (b["version"], b["lane"], b["rollout"]) == (j["version"], j["lane"], j["rollout"])
    vec = np.frombuffer(base64.b64decode(b["vector_b64"]), dtype="<f4")
    np.testing.assert_array_equal(vec, np.asarray(j["vector"], dtype=np.float32))
    # the feedback token is issued on the binary path too, and scores the click
    fb = served.client.post(f"{served.base}/feedback", json={
        "token": b["feedback_token"], "clicked_concept_id": b["concepts"][0]["id"]})
    assert fb.status_code == 200 and fb.json()["hit@1_exact"], fb.text
    # the answer without the vector; the stage breakdown in server-timing
    lean = served.client.post(url + "?vector=0", content=ctx.tobytes(), headers=headers)
    assert lean.status_code == 200 and "vector_b64" not in lean.json()
    assert lean.json()["concepts"] == j["concepts"]
    stages = {part.split(";")[0].strip() for part in lean.headers["server-timing"].split(",")}
    assert {str(s) for s in mc.Stage} <= stages, stages
    # strict validation with a 400 naming the problem
    for body, extra, needle in ((ctx.tobytes()[:-4], {}, "not a whole number"),
                                (np.full((1, D), np.nan, "<f4").tobytes(), {}, "NaN"),
                                (ctx.tobytes(), {"x-lvm-lane": "x"}, "x-lvm-lane"),
                                (ctx.tobytes(), {"x-lvm-k": "0"}, "x-lvm-k")):
        r = served.client.post(url, content=body, headers={**headers, **extra})
        assert r.status_code == 400 and needle in r.json()["error"], (needle, r.text)


def test_weight_changes_under_load_lose_no_request(served):
    served.apply(candidate_weight=10)
    stop = threading.Event()
    results: list[int] = []

    def load(worker: int) -> None:
        i = 0
        while not stop.is_set() or i < 100:
            r = served.predict(seed=worker * 10_000 + i)
            results.append(r.status_code)
            i += 1

    threads = [threading.Thread(target=load, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    seen = []
    try:
        for weight in (20, 50, 30, 100, 0, 40):
            seen.append(served.apply(candidate_weight=weight)["candidate_weight"])
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=120)
    assert seen == [20, 50, 30, 100, 0, 40]
    assert len(results) >= 500, len(results)
    failures = Counter(code for code in results if code != 200)
    assert not failures, f"{sum(failures.values())} of {len(results)} failed: {failures}"


def test_a_version_app_added_later_is_found_by_name(served):
    config = served.serve_config(_spec(served.trained, candidate_weight=100))
    router_user_config = config["applications"][0]["deployments"][0]["user_config"]
    router_user_config["candidate"] = "late"  # not deployed yet
    served.put(config)
    eventually(lambda: served.healthz().get("config", {}).get("candidate") == "late",
               timeout_s=90, what="router routes to 'late'")
    r = served.predict()
    assert r.status_code == 503 and "'lvmtest--late' deployed?" in r.json()["error"], r.text
    late = copy.deepcopy(next(a for a in config["applications"]
                              if a["name"] == version_app_name(APP, "champ")))
    late["name"] = version_app_name(APP, "late")
    late["args"]["version"] = late["deployments"][0]["name"] = "late"
    config["applications"].append(late)
    served.put(config)  # the router is untouched: it finds 'late' on the next request
    eventually(lambda: served.predict().json().get("version") == "late", timeout_s=120,
               what="'late' answers through the router", interval_s=1)


def test_a_version_that_never_answers_has_attempts_and_errors(served, prometheus):
    """The router counts each request it routes (an attempt) and each failure to get an
    answer, so a candidate that is down has an error rate of 100%, not "no traffic"."""
    config = served.serve_config(_spec(served.trained, candidate_weight=100))
    config["applications"][0]["deployments"][0]["user_config"]["candidate"] = "ghost"
    served.put(config)
    try:
        eventually(lambda: served.healthz().get("config", {}).get("candidate") == "ghost",
                   timeout_s=90, what="router routes to 'ghost'")
        codes = [served.predict(seed=i).status_code for i in range(6)]
        assert codes == [503] * 6, codes
        ghost = f'rollout="{ROLLOUT}",version="ghost",shadow="false"'
        wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.REQUESTS)}",'
                                    f'{ghost}}}) >= 6', timeout_s=60)
        wait_for_series(prometheus, f'sum({{__name__=~"{mc.exported_series(mc.ERRORS)}",'
                                    f'{ghost},reason="exception"}}) >= 6', timeout_s=60)
    finally:
        served.apply()


def test_metrics_reach_prometheus_with_the_contract_labels(served, prometheus):
    common = f'rollout="{ROLLOUT}"'
    expect = [
        (mc.REQUESTS, "", 'version="champ",shadow="false"'),
        (mc.LATENCY, "_bucket", 'version="champ",le="0.005"'),
        (mc.LATENCY, "_count", 'version="cand"'),
        (mc.ERRORS, "", 'version="hgru",reason="nan_output",lane="5"'),
        (mc.ERRORS, "", 'reason="bad_input"'),
        (mc.ERRORS, "", 'version="late",reason="exception"'),
        (mc.EMPTY_HITS, "", 'version="hgru",lane="6"'),
        (mc.FEEDBACK, "", 'version="champ",lane="4"'),
        (mc.FEEDBACK_HITS, "", 'version="champ",k="10",kind="exact"'),
        (mc.FEEDBACK_REJECTED, "", 'reason="invalid"'),
        (mc.SHADOW_COMPARISONS, "", 'version="cand"'),
        (mc.STAGE_LATENCY, "_bucket", 'version="champ",stage="model"'),
        (mc.STAGE_LATENCY, "_count", 'version="champ",stage="hop"'),
        (mc.STAGE_LATENCY, "_count", 'version="champ",stage="router"'),
    ]
    for metric, suffix, sel in expect:
        result = wait_for_series(
            prometheus, f'{{__name__=~"{mc.exported_series(metric, suffix)}",{common},{sel}}}',
            timeout_s=60)
        labels = result[0]["metric"]
        assert set(metric.labels) <= set(labels), (metric.name, labels)
        assert labels["__name__"].startswith(mc.RAY_PREFIX + metric.name)



def test_one_user_counts_at_most_the_cap_per_version_and_hour(served):
    """Deliberate clicks: one user's tokens count at most FEEDBACK_PER_USER_PER_HOUR times per
    version and hour (across router replicas: the slots are in Ray's GCS store); more are 429
    and counted as rejected; other users and anonymous requests are not affected."""
    import time
    import uuid

    from lvm_serving.contracts.serve_config import FEEDBACK_PER_USER_PER_HOUR as CAP

    served.apply(candidate=None, router_replicas=2)
    url = f"{served.base}/feedback"

    def click(user: str | None, seed: int) -> httpx.Response:
        body = served.predict(lane=2, user=user, seed=seed).json()
        return served.client.post(url, json={"token": body["feedback_token"],
                                             "clicked_concept_id": body["concepts"][0]["id"]})

    for _ in range(2):  # a run that crossed an hour boundary starts a new hour's count: redo
        started = int(time.time()) // 3600
        clicker = f"clicker-{uuid.uuid4().hex[:8]}"
        codes = [click(clicker, i).status_code for i in range(CAP + 5)]
        if int(time.time()) // 3600 == started:
            break
    assert codes.count(200) == CAP and codes[CAP:] == [429] * 5, codes
    last = click(clicker, 999)
    assert last.status_code == 429 and f"cap of {CAP} per hour" in last.json()["error"]
    assert click(f"someone-else-{uuid.uuid4().hex[:8]}", 1).status_code == 200
    assert click(None, 2).status_code == 200  # no user key: nothing to cap by
