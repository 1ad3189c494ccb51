"""The anytime-valid tests (issue 16 #2-#4), table-style with the arithmetic in the rows, and a
seeded simulation that the error rate holds however often the test is looked at."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lvm_operator.decision.sequential import (
    Arm,
    DifferenceTest,
    SeqVerdict,
    Stratum,
    bernoulli_llr,
    confidence_radius,
    cusum_log_evidence,
    cusum_path,
    detector_threshold,
    difference_and_precision,
    difference_log_evidence,
    judge_difference,
    log_normal_cdf,
    one_sided_log_e,
    pooled,
)

TEST = DifferenceTest()  # m_R = m_P = 1 point, α_R = 1%, α_P = 5%, τ_R = 0.02, τ_P = 0.01


@pytest.mark.parametrize("x, expected", [
    (0.0, math.log(0.5)),
    (1.0, math.log(0.8413447460685429)),
    (-5.0, math.log(2.866515718791939e-07)),
    # far below where Φ underflows: the Mills-ratio asymptote −x²/2 − log(−x) − ½·log 2π
    (-60.0, -1800.0 - math.log(60.0) - 0.5 * math.log(2 * math.pi) + math.log1p(-1 / 3600)),
])
def test_log_normal_cdf(x, expected):
    assert log_normal_cdf(x) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("s, precision, tau, expected", [
    # S = 0, V = ρ = 1/τ² = 100: ½·log(4·100/200) + 0 + log Φ(0) = ½·log 2 − log 2
    (0.0, 100.0, 0.1, 0.5 * math.log(2) - math.log(2)),
    # S = 20, V = 100, ρ = 100: ½·log 2 + 400/400 + log Φ(20/√200)
    (20.0, 100.0, 0.1, 0.5 * math.log(2) + 1.0 + math.log(0.9213503964748575)),
    # evidence against: S = −20 gives log Φ(−1.414) = log 0.0786
    (-20.0, 100.0, 0.1, 0.5 * math.log(2) + 1.0 + math.log(0.07864960352514251)),
])
def test_one_sided_mixture_e_value(s, precision, tau, expected):
    assert one_sided_log_e(s, precision, tau) == pytest.approx(expected, rel=1e-9)


def test_difference_and_precision_use_the_smoothed_rates():
    # 70/100 vs 60/100: Δ̂ = 0.1; p̃ = 71/102 and 61/102
    delta, precision = difference_and_precision(70.0, 100.0, 60.0, 100.0)
    pc, pb = 71 / 102, 61 / 102
    assert delta == pytest.approx(0.1)
    assert precision == pytest.approx(1 / (pc * (1 - pc) / 100 + pb * (1 - pb) / 100))
    # 0 of 100 has a variance all the same: p̃ = 1/102
    _, v0 = difference_and_precision(0.0, 100.0, 0.0, 100.0)
    assert v0 == pytest.approx(1 / (2 * (1 / 102) * (101 / 102) / 100))


def test_strata_pool_by_inverse_variance_never_by_counts():
    # 10% step: Δ̂ = −0.02 at V = 1,000; 20% step: Δ̂ = 0.01 at V = 3,000
    # pooled Δ̂ = (1000·−0.02 + 3000·0.01)/4000 = 0.0025; V = 4,000
    s = pooled([Stratum(-0.02, 1000.0), Stratum(0.01, 3000.0)])
    assert (s.delta, s.precision) == (pytest.approx(0.0025), 4000.0)


def _judge(delta: float, n: float, ratio: float = 9.0) -> object:
    """The candidate with n events at the champion's 0.665 + delta; the champion with ratio·n."""
    cand, champ = Arm((0.665 + delta) * n, n), Arm(0.665 * ratio * n, ratio * n)
    return judge_difference([Stratum.of(cand, champ)], cand.n, champ.n, TEST)


@pytest.mark.parametrize("delta, n, verdict", [
    (0.0, 50, SeqVerdict.NO_DATA),  # under 100 events per arm
    (0.0, 200, SeqVerdict.HOLD),  # ±22 points: cannot tell
    (0.0, 20_000, SeqVerdict.PASS),  # ±1.3 points around 0, clear of −1
    (0.02, 20_000, SeqVerdict.PASS),
    (-0.04, 20_000, SeqVerdict.ROLLBACK),  # −4 points, interval [−5.3, −2.7]: beyond −1
    (-0.01, 20_000, SeqVerdict.HOLD),  # exactly at the margin: never decides
    (-0.02, 5_000, SeqVerdict.HOLD),  # probably worse, not yet beyond doubt
])
def test_judge_difference(delta, n, verdict):
    assert _judge(delta, n).verdict is verdict


def test_the_judge_says_what_it_knows():
    e = _judge(0.0, 2_000)
    # the interval is the anytime-valid one at α_R, around Δ̂ = 0
    _, v = difference_and_precision(0.665 * 2000, 2000, 0.665 * 18000, 18000)
    radius = confidence_radius(v, TEST.rollback_tau, TEST.rollback_alpha)
    assert (e.ci_low, e.ci_high) == (pytest.approx(-radius), pytest.approx(radius))
    assert 0.03 < radius < 0.05
    rollback, passing = difference_log_evidence(0.0, v, TEST)
    assert (e.log_e_rollback, e.log_e_pass) == (pytest.approx(rollback), pytest.approx(passing))
    # "about 17,000 more events": and indeed 2,000 + 17,000 decides, 2,000 + 15,000 does not
    assert 15_000 < e.events_to_decide < 19_000
    assert _judge(0.0, 2_000 + e.events_to_decide * 1.02).verdict is SeqVerdict.PASS
    assert _judge(0.0, 2_000 + e.events_to_decide * 0.9).verdict is SeqVerdict.HOLD
    assert _judge(-0.01, 20_000).events_to_decide is None  # at the margin: never
    assert _judge(0.0, 50).events_to_decide == 100 - 50


def test_lanes_split_the_error_budget():
    lane = DifferenceTest(rollback_margin=0.02, pass_margin=0.02).split(16)
    assert (lane.rollback_alpha, lane.pass_alpha) == (0.01 / 16, 0.05 / 16)
    assert (lane.rollback_margin, lane.pass_margin, lane.min_events) == (0.02, 0.02, 100.0)


def test_the_rollback_test_keeps_its_error_rate_under_constant_peeking():
    """At the null's boundary (Δ = −m_R exactly), looked at after each of 300 checks: the share
    of 2,000 simulated rollouts that ever roll back stays under α_R = 1% (normal approximation
    at these counts; the benchmark checks the full traffic model)."""
    rng = np.random.default_rng(16)
    reps, looks, per_look = 2_000, 300, 60.0
    p_b, p_c = 0.665, 0.665 - TEST.rollback_margin
    hc = np.cumsum(rng.binomial(int(per_look), p_c, (reps, looks)), axis=1).astype(float)
    hb = np.cumsum(rng.binomial(int(9 * per_look), p_b, (reps, looks)), axis=1).astype(float)
    n = per_look * np.arange(1, looks + 1)
    delta, v = difference_and_precision(hc, n, hb, 9 * n)
    log_r, _ = difference_log_evidence(delta, v, TEST)
    judged = n >= TEST.min_events
    ever = ((log_r >= math.log(1 / TEST.rollback_alpha)) & judged).any(axis=1).mean()
    assert ever <= TEST.rollback_alpha, ever
    # and a fixed 99% z-test looked at every check is wrong far more often: why this exists
    z = (delta + TEST.rollback_margin) * np.sqrt(v)
    assert ((z < -2.326) & judged).any(axis=1).mean() > 5 * TEST.rollback_alpha


@pytest.mark.parametrize("exceed, n, p0, p1, expected", [
    # 1 of 10 requests over the limit, 5% vs 10%: log 2 + 9·log(0.9/0.95)
    (1, 10, 0.05, 0.10, math.log(2) + 9 * math.log(0.9 / 0.95)),
    (0, 100, 0.05, 0.10, 100 * math.log(0.9 / 0.95)),  # all fast: evidence against
    (10, 10, 0.01, 0.02, 10 * math.log(2)),
])
def test_bernoulli_log_likelihood_ratio(exceed, n, p0, p1, expected):
    assert bernoulli_llr(exceed, n, p0, p1) == pytest.approx(expected)


def test_the_cusum_restarts_from_its_best_start_so_a_late_regression_is_not_diluted():
    healthy, slow = (1, 100), (20, 100)  # 1% then 20% over the limit, p0 = 5%, p1 = 10%
    r = 0.0
    for _ in range(1_000):  # hours of healthy evidence cannot pile up against a regression
        r = cusum_log_evidence(r, *healthy, 0.05, 0.10)
    assert r == pytest.approx(bernoulli_llr(*healthy, 0.05, 0.10))  # max(prev, 0) = 0 each time
    steps = 0
    limit = detector_threshold(0.01, 60_480)  # log(60,480 start points / 1%) = 15.6
    while r < limit:
        r = cusum_log_evidence(r, *slow, 0.05, 0.10)
        steps += 1
    # each slow check adds 20·log 2 + 80·log(0.9/0.95) = 9.54: two checks after the start
    assert steps == math.ceil(limit / bernoulli_llr(*slow, 0.05, 0.10)) == 2
    assert limit == pytest.approx(math.log(60_480 / 0.01))


def test_the_vectorised_cusum_is_the_recursion():
    rng = np.random.default_rng(22)
    n = rng.poisson(40, (3, 500)).astype(float)
    exceed = rng.binomial(n.astype(int), 0.07).astype(float)
    llr = bernoulli_llr(exceed, n, 0.05, 0.10)
    expected = np.zeros_like(llr)
    r = np.zeros(3)
    for t in range(llr.shape[1]):
        r = cusum_log_evidence(r, exceed[:, t], n[:, t], 0.05, 0.10)
        expected[:, t] = r
    np.testing.assert_allclose(cusum_path(llr), expected, rtol=1e-9, atol=1e-9)
