"""Latency judged against the champion: table rows with the arithmetic in them.

A busy machine makes both versions miss the seed's absolute limits (5 ms success, 10 ms
rollback); the candidate is rolled back for latency only when it is also slower than the
champion in the same window. Histograms are built from explicit latencies on the contract's
buckets, so each row says how many requests were how slow.
"""

from __future__ import annotations

import math

import pytest
from decision_fixtures import CANDIDATE, CHAMPION, plan

from lvm_operator.decision import (
    GuardrailPolicy,
    Verdict,
    VersionMetrics,
    WindowObservation,
    assess_guardrails,
    latency,
)
from lvm_serving.contracts.metrics import LATENCY_BUCKETS_SECONDS

P, B, N, I = Verdict.PASS, Verdict.BREACH, Verdict.NO_DATA, Verdict.INCONCLUSIVE  # noqa: E741


def hist(*groups: tuple[int, float]) -> tuple[tuple[float, float], ...]:
    """hist((90, 0.002), (10, 0.02)) -> 90 requests at 2 ms and 10 at 20 ms, as cumulative
    bucket counts on the contract's bounds (+inf last)."""
    bounds = [*LATENCY_BUCKETS_SECONDS, math.inf]
    return tuple((b, float(sum(n for n, s in groups if s <= b))) for b in bounds)


def version(buckets) -> VersionMetrics:
    n = latency.total(buckets)
    return VersionMetrics(requests=n, error_rate=0.0, empty_hit_rate=0.0,
                          p95_latency_seconds=latency.quantile(buckets, 0.95),
                          latency_buckets=buckets)


def p95_result(cand, champ, *, reference=None, policy: GuardrailPolicy | None = None):
    versions = {CANDIDATE: version(cand)}
    if champ is not None:
        versions[CHAMPION] = version(champ)
    p = plan(guardrails=policy or GuardrailPolicy(10.0, 2, 4.0, 30))
    ref = None if reference is None else WindowObservation(30.0, {CHAMPION: version(reference)})
    out = assess_guardrails(p, WindowObservation(10.0, versions), ref)
    (r,) = [r for r in out.results if r.metric == "p95_latency_seconds" and r.counts]
    return r


# Busy machine: the champion's requests take 20-45 ms (median in the 20 ms bucket, P95 in 50 ms)
BUSY = ((40, 0.018), (40, 0.028), (15, 0.045), (5, 0.070))
# ... and a candidate 15 ms slower (the demo's v3-slow sleeps 15 ms per request)
BUSY_PLUS_15 = tuple((n, s + 0.015) for n, s in BUSY)


@pytest.mark.parametrize(
    ("cand", "champ", "expected", "why"),
    [
        (((100, 0.002),), ((100, 0.002),), P, "2 ms < 5 ms: the seed's success, no comparison"),
        (((100, 0.017),), ((100, 0.002),), B,
         "idle machine: candidate 17 ms > 10 ms, every request above the champion's 2 ms median"),
        (BUSY, BUSY, P, "busy machine, same speed: both P95 > 10 ms, candidate no slower: pass"),
        (BUSY_PLUS_15, BUSY, B,
         "busy machine, candidate +15 ms: P95 > 10 ms and 100% vs 40% of requests above the "
         "champion's 20 ms median bucket (margin 10 points)"),
        (((94, 0.004), (6, 0.012)), ((96, 0.004), (4, 0.012)), I,
         "candidate P95 10 + 2.5 * (95 - 94) / 6 = 10.4 ms > 10 ms, champion's 4 ms; at the "
         "champion's median/P95 bound (4 ms) 6% vs 4% of requests are slower: 2 points < the "
         "10-point margin, not shown slower, and the champion meets the limit: hold"),
        (((100, 0.0075),), ((100, 0.0075),), P,
         "both 7.5 ms: between 5 and 10 ms together, candidate no slower: the environment's"),
        (((100, 0.0075),), ((100, 0.002),), I,
         "candidate 7.5 ms, champion 2 ms: slower, but below the 10 ms rollback: hold"),
    ],
)
def test_p95_is_judged_against_the_champion(cand, champ, expected, why):
    r = p95_result(hist(*cand), hist(*champ))
    assert r.verdict is expected, f"{why}: {r.detail}"


def test_systemic_miss_says_it_is_the_machine():
    r = p95_result(hist(*BUSY), hist(*BUSY))
    assert "both exceed 10 ms: the machine, not the candidate" in r.detail
    assert "slower than the champion's median" in r.detail


def test_slower_candidate_breach_names_the_evidence():
    r = p95_result(hist(*BUSY_PLUS_15), hist(*BUSY))
    assert r.verdict is B
    assert r.detail.startswith("candidate P95 ")
    assert "slower than the champion (P95 " in r.detail and "in the same window" in r.detail
    assert "100% of its requests were slower than the champion's median" in r.detail


def test_a_handful_of_slow_requests_is_not_a_breach():
    # The demo's first failure: a rollback decided on 4 candidate samples.
    versions = {CANDIDATE: version(hist((4, 0.020))), CHAMPION: version(hist((100, 0.002)))}
    out = assess_guardrails(plan(guardrails=GuardrailPolicy(10.0, 2, 4.0, 30)),
                            WindowObservation(10.0, versions))
    assert out.verdict is N
    assert out.summary == ("too few candidate requests to judge: 4 in the last 10s "
                           "(need >= 30; the window grows until it has them)")


def test_enough_requests_but_too_few_timed_ones_is_not_judged():
    # 40 requests, 36 of them failed before the model timed them: the P95 of 4 is not judged
    # (the error rate, over all 40, is).
    cand = VersionMetrics(requests=40.0, error_rate=0.0, empty_hit_rate=0.0,
                          p95_latency_seconds=0.02, latency_buckets=hist((4, 0.020)))
    out = assess_guardrails(plan(guardrails=GuardrailPolicy(10.0, 2, 4.0, 30)),
                            WindowObservation(10.0, {CANDIDATE: cand,
                                                     CHAMPION: version(hist((100, 0.002)))}))
    (r,) = [r for r in out.results if r.metric == "p95_latency_seconds" and r.counts]
    assert r.verdict is N
    assert r.detail == "candidate P95 20 ms over only 4 timed requests (need >= 30): not judged"


def test_without_champion_traffic_the_reference_window_is_used():
    # At 100% the champion has no requests in the window: its longer look-back is compared.
    busy = hist(*BUSY)
    r = p95_result(busy, None, reference=busy)
    assert r.verdict is P and "over the last 30s" in r.detail
    r = p95_result(hist(*BUSY_PLUS_15), None, reference=busy)
    assert r.verdict is B


def test_no_champion_at_all_falls_back_to_the_seed_limits():
    assert p95_result(hist(*BUSY), None).verdict is B  # 45 ms > 10 ms, nothing to compare


def test_absolute_mode_ignores_the_champion():
    policy = GuardrailPolicy(10.0, 2, 4.0, 30, latency_vs_champion=False)
    assert p95_result(hist(*BUSY), hist(*BUSY), policy=policy).verdict is B


@pytest.mark.parametrize(
    ("groups", "q", "expected_s", "why"),
    [
        (((100, 0.002),), 0.95, 0.001975, "all in (1.5, 2] ms: 1.5 + 0.5 * 95/100 = 1.975 ms"),
        (((50, 0.001), (50, 0.004)), 0.5, 0.001, "rank 50 at the top of the 1 ms bucket"),
        (((10, 5.0),), 0.95, 2.5, "beyond the last finite bound: that bound, like Prometheus"),
    ],
)
def test_quantile_matches_histogram_quantile(groups, q, expected_s, why):
    assert latency.quantile(hist(*groups), q) == pytest.approx(expected_s), why


def test_quantile_without_observations_is_none():
    assert latency.quantile(hist(), 0.95) is None


def test_monotone_repairs_extrapolation_noise():
    assert latency.monotone([(math.inf, 10.0), (0.001, 4.2), (0.002, 4.1), (0.005, float("nan"))]
                            ) == ((0.001, 4.2), (0.002, 4.2), (0.005, 4.2), (math.inf, 10.0))
