"""The router's pure logic: routing modes, shadow, feedback tokens, request validation."""

from __future__ import annotations

import base64
import json
import math
import os
import random
import subprocess
import sys

import numpy as np
import pytest

from lvm_serving.contracts.serve_config import RouterConfig, RoutingMode
from lvm_serving.feedback import (
    TokenError,
    TokenSigner,
    dequantize,
    keys_from_env,
    quantize,
    token_id,
)
from lvm_serving.predictor import hits
from lvm_serving.router import (
    BadRequest,
    choose_route,
    live_versions,
    parse_predict_request,
    pinned_version,
    shadow_comparison,
    user_bucket,
)

D = 8


def cfg(**kw) -> RouterConfig:
    return RouterConfig(rollout="ns/r", **{"champion": "A", "candidate": "B", **kw})


def share(config: RouterConfig, n: int = 20_000, seed: int = 1, **kw) -> float:
    rng = random.Random(seed)
    return sum(choose_route(config, rng=rng, **kw).version == "B" for _ in range(n)) / n


# ---- routing ---------------------------------------------------------------------------------


@pytest.mark.parametrize("weight", [1, 10, 20, 50, 90])
def test_weighted_split_within_statistical_bounds(weight):
    n = 20_000
    p = weight / 100
    assert abs(share(cfg(candidate_weight=weight), n) - p) < 4 * math.sqrt(p * (1 - p) / n)


@pytest.mark.parametrize("config", [cfg(candidate=None, candidate_weight=50),
                                    cfg(candidate_weight=0),
                                    cfg(candidate="A", candidate_weight=100)])
def test_no_candidate_or_zero_weight_is_champion_only(config):
    assert share(config, 500) == 0


def test_weight_100_sends_everything_to_the_candidate():
    assert share(cfg(candidate_weight=100), 500) == 1


def test_user_bucket_is_stable_across_processes():
    # Python's hash() is salted per process; the bucket must not be.
    code = "from lvm_serving.router import user_bucket; print(user_bucket('alice'))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env={**os.environ, "PYTHONHASHSEED": "123"}).stdout
    assert int(out) == user_bucket("alice")
    buckets = [user_bucket(f"u{i}") for i in range(10_000)]
    assert min(buckets) == 0 and max(buckets) == 99
    counts = np.bincount(buckets, minlength=100)
    assert counts.min() > 50 and counts.max() < 150  # roughly uniform


def test_sticky_users_nest_10_in_20_in_50():
    users = [f"user-{i}" for i in range(5000)]
    on_b = {}
    for weight in (10, 20, 50, 100):
        config = cfg(mode=RoutingMode.USER_HASH, candidate_weight=weight)
        on_b[weight] = {u for u in users if choose_route(config, user_key=u).version == "B"}
        # sticky: the same user gets the same answer every time
        assert all(choose_route(config, user_key=u).version == "B" for u in list(on_b[weight])[:50])
        assert abs(len(on_b[weight]) / len(users) - weight / 100) < 0.03
    assert on_b[10] <= on_b[20] <= on_b[50] <= on_b[100] == set(users)


def test_user_hash_without_a_user_key_goes_to_the_champion():
    config = cfg(mode=RoutingMode.USER_HASH, candidate_weight=99)
    assert choose_route(config, user_key=None).version == "A"
    assert choose_route(config, user_key="").version == "A"
    assert choose_route(config, user_key=12345).version in {"A", "B"}  # any JSON scalar works


def test_context_length_routing():
    config = cfg(mode=RoutingMode.CONTEXT_LENGTH, context_threshold=100, candidate_weight=100)
    assert choose_route(config, context_length=100).version == "A"
    assert choose_route(config, context_length=50).version == "A"
    assert choose_route(config, context_length=101).version == "B"
    half = cfg(mode=RoutingMode.CONTEXT_LENGTH, context_threshold=100, candidate_weight=50)
    assert share(half, 4000, context_length=500) == pytest.approx(0.5, abs=0.04)
    assert share(half, 500, context_length=10) == 0
    no_threshold = cfg(mode=RoutingMode.CONTEXT_LENGTH, candidate_weight=100)
    assert choose_route(no_threshold, context_length=1).version == "B"


def test_shadow_decision():
    on = cfg(candidate_weight=0, shadow=True)
    route = choose_route(on)
    assert (route.version, route.shadow) == ("A", "B")  # weight-0 shadow phase
    half = cfg(candidate_weight=50, shadow=True)
    rng = random.Random(3)
    routes = [choose_route(half, rng=rng) for _ in range(2000)]
    assert all(r.shadow == "B" for r in routes if r.version == "A")
    assert all(r.shadow is None for r in routes if r.version == "B")  # never shadows itself
    assert choose_route(cfg(candidate=None, shadow=True)).shadow is None
    assert choose_route(cfg(candidate_weight=50)).shadow is None  # shadow off
    short = cfg(mode=RoutingMode.CONTEXT_LENGTH, context_threshold=10, candidate_weight=100,
                shadow=True)
    assert choose_route(short, context_length=5).shadow == "B"


@pytest.mark.parametrize(("percent", "expected_mirrored"), [
    (100, 1.0),   # every champion request: the default
    (25, 0.25),   # a quarter of them
    (1, 0.01),
])
def test_shadow_percent_mirrors_that_share_of_the_champions_requests(percent,
                                                                   expected_mirrored):
    config = cfg(candidate_weight=20, shadow=True, shadow_percent=percent)
    rng = random.Random(11)
    routes = [choose_route(config, rng=rng) for _ in range(20_000)]
    on_champion = [r for r in routes if r.version == "A"]
    mirrored = sum(r.shadow == "B" for r in on_champion) / len(on_champion)
    # binomial sd at n~16,000: <= 0.4 points; 1.5 points is > 3.5 sd
    assert mirrored == pytest.approx(expected_mirrored, abs=0.015)
    # the weight's draw is independent of the mirror's: still 20% live on the candidate
    assert sum(r.version == "B" for r in routes) / len(routes) == pytest.approx(0.2, abs=0.015)


@pytest.mark.parametrize("bad", [0, 101, -5])
def test_shadow_percent_out_of_range_is_refused(bad):
    with pytest.raises(ValueError, match=f"shadow_percent={bad} is invalid: must be 1..100"):
        cfg(shadow=True, shadow_percent=bad)


@pytest.mark.parametrize(("config", "live"), [
    (cfg(candidate_weight=10), ("A", "B")),
    (cfg(candidate_weight=0, shadow=True), ("A", "B")),  # a weight-0 shadow step: live
    (cfg(candidate_weight=0), ("A",)),  # no traffic, no shadow (held back, rolled back)
    (cfg(candidate=None), ("A",)),
    (cfg(candidate="A", candidate_weight=50), ("A",)),
])
def test_live_versions(config, live):
    assert live_versions(config) == live


def test_a_pinned_request_goes_to_its_version_whatever_the_weight_and_is_not_shadowed():
    rng = random.Random(5)
    for weight, shadow in [(1, False), (99, False), (10, True), (0, True)]:
        config = cfg(candidate_weight=weight, shadow=shadow)
        for pin in ("A", "B"):
            routes = {choose_route(config, rng=rng, pinned=pinned_version(config, pin))
                      for _ in range(200)}
            assert {(r.version, r.shadow, r.reason, r.pinned) for r in routes} == {
                (pin, None, "pinned", True)}
    assert not choose_route(cfg(candidate_weight=50), rng=rng).pinned
    assert pinned_version(cfg(candidate_weight=50), None) is None  # no header: no pin


@pytest.mark.parametrize(("config", "header", "message"), [
    (cfg(candidate_weight=10), "C", "names version 'C', which is not live in this rollout: "
                                    "pin one of 'A', 'B' or drop the header"),
    (cfg(candidate_weight=0), "B", "pin one of 'A' or drop"),  # a rolled-back candidate
    (cfg(candidate_weight=10), "", "names version ''"),
    (cfg(candidate_weight=10), "x" * 500, "names version '" + "x" * 63 + "', which"),
])
def test_pinning_a_version_that_is_not_live_is_a_400_naming_the_live_ones(config, header,
                                                                         message):
    with pytest.raises(BadRequest, match="x-lvm-version") as err:
        pinned_version(config, header)
    assert message in str(err.value) and err.value.status == 400
    assert len(str(err.value)) < 200  # the client's value is cut, never echoed whole


def test_a_pinned_answers_token_says_so_and_the_claim_is_signed():
    signer = TokenSigner([b"k"])
    plain = signer.verify(signer.sign(rollout="ns/r", version="B", lane=1, ids=[1],
                                      vector=np.ones(D)))
    pinned = signer.verify(signer.sign(rollout="ns/r", version="B", lane=1, ids=[1],
                                       vector=np.ones(D), pinned=True))
    assert (plain.pinned, pinned.pinned) == (False, True)
    # dropping the claim from a pinned token (to get QA's click judged) breaks the signature
    token = signer.sign(rollout="ns/r", version="B", lane=1, ids=[1], vector=np.ones(D),
                        pinned=True)
    body, sig = token.split(".")
    payload = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    del payload["p"]
    forged = base64.urlsafe_b64encode(json.dumps(payload).encode()).rstrip(b"=").decode()
    with pytest.raises(TokenError, match="invalid feedback token signature"):
        signer.verify(f"{forged}.{sig}")


def test_shadow_comparison():
    v = np.ones(4)
    assert shadow_comparison(v, [1, 2, 3, 4, 5, 9], v, [5, 4, 3, 2, 1]) == (1.0, pytest.approx(1))
    overlap, cosine = shadow_comparison(v, [1, 2, 3, 4, 5], -v, [1, 2, 6, 7, 8])
    assert overlap == pytest.approx(0.4) and cosine == pytest.approx(-1)
    assert shadow_comparison(np.zeros(4), [1], v, [1])[1] == 0.0


# ---- feedback tokens -------------------------------------------------------------------------


@pytest.fixture
def signer() -> TokenSigner:
    return TokenSigner([b"k1"], ttl_s=60)


def _unit(seed: int, d: int = 64) -> np.ndarray:
    v = np.random.default_rng(seed).standard_normal(d)
    return v / np.linalg.norm(v)


def test_token_roundtrip_carries_what_feedback_needs(signer):
    vec = _unit(0)
    token = signer.sign(rollout="ns/r", version="B", lane=7, ids=list(range(100, 115)),
                        vector=vec, now=1000)
    claims = signer.verify(token, now=1030)
    assert (claims.rollout, claims.version, claims.lane) == ("ns/r", "B", 7)
    assert claims.ids == list(range(100, 110))  # top-10 only
    cos = float(claims.vector @ vec / np.linalg.norm(claims.vector))
    assert cos > 0.9995  # int8 quantisation keeps the direction


def test_token_proxies_match_the_unquantised_vector():
    for seed in range(50):
        vec, clicked = _unit(seed), _unit(seed + 1000)
        clicked = 0.7 * vec + 0.3 * clicked  # cosines spread around the thresholds
        exact = hits(vec, [[1] * 10], [1], clicked)
        approx = hits(dequantize(quantize(vec)), [[1] * 10], [1], clicked)
        true_cos = float(vec @ clicked / np.linalg.norm(clicked))
        if all(abs(true_cos - t) > 2e-3 for t in (0.4, 0.6, 0.8)):
            assert {k: bool(v[0]) for k, v in exact.items()} == \
                {k: bool(v[0]) for k, v in approx.items()}


def test_tampered_forged_and_expired_tokens_are_refused(signer):
    token = signer.sign(rollout="ns/r", version="B", lane=1, ids=[1, 2], vector=_unit(1), now=0)
    payload, sig = token.split(".")
    tampered = payload[:10] + ("x" if payload[10] != "x" else "y") + payload[11:] + "." + sig
    with pytest.raises(TokenError, match="signature") as exc:
        signer.verify(tampered, now=1)
    assert exc.value.status == 403
    other = TokenSigner([b"another key"]).sign(rollout="ns/r", version="B", lane=1, ids=[1],
                                               vector=_unit(1), now=0)
    with pytest.raises(TokenError, match="signature"):
        signer.verify(other, now=1)
    with pytest.raises(TokenError, match="expired") as exc:
        signer.verify(token, now=61)
    assert exc.value.status == 403
    for garbage in ("", "abc", "a.b.c", None, 42, "payload.!!!"):
        with pytest.raises(TokenError) as exc:
            signer.verify(garbage, now=1)
        assert exc.value.status in (400, 403)


K_OLD, K_NEW = "o" * 32, "n" * 40  # keys of at least MIN_KEY_BYTES


def test_key_rotation_and_env_keys(monkeypatch):
    old = TokenSigner([K_OLD.encode()]).sign(rollout="r", version="v", lane=0, ids=[1],
                                             vector=_unit(2))
    monkeypatch.setenv("LVM_TEST_KEY", f"{K_NEW}, {K_OLD}")
    keys, problem = keys_from_env("LVM_TEST_KEY")
    assert keys == [K_NEW.encode(), K_OLD.encode()] and problem is None
    rotated = TokenSigner(keys)
    assert rotated.verify(old).version == "v"  # still accepted while the old key is listed
    assert TokenSigner([K_NEW.encode()]).verify(rotated.sign(
        rollout="r", version="w", lane=0, ids=[1], vector=_unit(2))).version == "w"


@pytest.mark.parametrize(("value", "says"), [
    (None, "no feedback signing key: set LVM_TEST_KEY on every Ray node from a Kubernetes "
           "Secret"),
    ("", "no feedback signing key"),
    (" , ", "no feedback signing key"),
    ("x", "LVM_TEST_KEY holds a key of 1 bytes: keys must have at least 32"),
    (f"{K_NEW},short", "holds a key of 5 bytes"),  # one weak key disables rotation too
])
def test_keys_fail_closed_with_no_derived_fallback(monkeypatch, value, says):
    if value is None:
        monkeypatch.delenv("LVM_TEST_KEY", raising=False)
    else:
        monkeypatch.setenv("LVM_TEST_KEY", value)
    keys, problem = keys_from_env("LVM_TEST_KEY")
    assert keys == [] and says in problem
    assert "openssl rand -hex 32" in problem


def test_every_token_is_unique_so_the_replay_guard_can_name_it():
    signer = TokenSigner([K_NEW.encode()])
    same = {"rollout": "r", "version": "v", "lane": 0, "ids": [1], "vector": _unit(3), "now": 5}
    a, b = signer.sign(**same), signer.sign(**same)  # the same prediction twice, same second
    assert a != b and token_id(a) != token_id(b)
    assert token_id(a) == token_id(a) and len(token_id(a)) == 64


# ---- input validation ------------------------------------------------------------------------


def body(**kw):
    return {"context": [[0.5] * D] * 3, "lane": 2, **kw}


def test_valid_request_with_lane_or_tmd():
    req = parse_predict_request(body(user_id="u1", k=5), dim=D)
    assert req.context.shape == (3, D) and req.lane == 2 and req.k == 5 and req.user_key == "u1"
    assert req.tmd.argmax() == 2 and req.tmd.sum() == 1
    tmd = [0.0] * 16
    tmd[9] = 0.8
    req = parse_predict_request({"context": [[0.1] * D], "tmd": tmd, "uid": 7}, dim=D,
                                user_key_field="uid")
    assert req.lane == 9 and req.k == 10 and req.user_key == 7


def test_compact_base64_context():
    ctx = np.arange(3 * D, dtype="<f4").reshape(3, D) / 100
    b64 = base64.b64encode(ctx.tobytes()).decode()
    req = parse_predict_request({"context_b64": b64, "lane": 1}, dim=D)
    np.testing.assert_array_equal(req.context, ctx)
    with pytest.raises(BadRequest, match="whole number"):
        parse_predict_request({"context_b64": b64[:-8], "lane": 1}, dim=D)
    with pytest.raises(BadRequest, match="not valid base64"):
        parse_predict_request({"context_b64": "%%%", "lane": 1}, dim=D)
    nan = base64.b64encode(np.full((1, D), np.nan, dtype="<f4").tobytes()).decode()
    with pytest.raises(BadRequest, match="NaN"):
        parse_predict_request({"context_b64": nan, "lane": 1}, dim=D)


@pytest.mark.parametrize(("data", "needle"), [
    ([1, 2], "JSON object"),
    ({"lane": 1}, "missing field 'context'"),
    (body(context="abc"), "array of numbers"),
    (body(context=[[0.1] * D, [0.1] * 3]), "rectangular"),
    (body(context=[0.1] * D), "list of vectors"),
    (body(context=[[0.1] * (D + 1)]), f"dimension {D}"),
    (body(context=[]), "list of vectors"),
    (body(context=[[math.nan] * D]), "NaN"),
    (body(context=[[math.inf] * D]), "NaN or Inf"),
    (body(lane=16), "unknown lane"),
    (body(lane=-1), "unknown lane"),
    (body(lane="3"), "unknown lane"),
    ({"context": [[0.1] * D]}, "'tmd'"),
    (body(lane=None, tmd=[1.0] * 15), "tmd must be"),
    (body(lane=None, tmd=[math.nan] * 16), "tmd holds NaN"),
    (body(tmd=[0.0] * 15 + [1.0]), "disagrees"),
    (body(k=0), "k must be"),
    (body(k=1000), "k must be"),
    (body(k=True), "k must be"),
    (body(context=[[0.1] * D] * 11), "context too long"),
])
def test_bad_requests_name_the_problem(data, needle):
    with pytest.raises(BadRequest, match=needle.replace("(", r"\(")) as exc:
        parse_predict_request(data, dim=D, max_context=10)
    assert exc.value.status == 400


def test_a_token_carries_a_keyed_pseudonym_of_its_user_never_the_key():
    a, b = TokenSigner([b"k" * 32]), TokenSigner([b"z" * 32])
    t = a.sign(rollout="ml/x", version="v2", lane=1, ids=[1, 2], vector=np.ones(8),
               user="alice@example.com")
    claims = a.verify(t)
    assert claims.user == a.user_pseudonym("alice@example.com")
    assert claims.user != b.user_pseudonym("alice@example.com")  # keyed: not guessable
    assert "alice" not in t and claims.user != a.user_pseudonym("bob")
    anon = a.verify(a.sign(rollout="ml/x", version="v2", lane=1, ids=[1], vector=np.ones(8)))
    assert anon.user is None and a.user_pseudonym("") is None
