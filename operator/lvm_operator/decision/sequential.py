"""Anytime-valid evidence for the judge: tests that may be looked at after every check.

A threshold re-checked every 30 s "peeks": each look is another chance of a false verdict, so a
healthy candidate is rolled back sooner or later. The tests here keep their error rate however
often they are read, because each is an e-process: a statistic whose expectation under the null
hypothesis is at most 1 at every moment, so by Ville's inequality the chance it *ever* reaches
1/α is at most α.

* **Quality, candidate vs champion** (:func:`judge_difference`): a one-sided normal-mixture
  sequential probability ratio test (Johari et al., "Always valid inference"; Howard et al. 2021)
  on Δ = p(candidate) − p(champion), from counts since the step started. Rollback when the
  evidence that Δ < −m_R reaches 1/α_R; pass when the evidence that Δ > −m_P reaches 1/α_P;
  otherwise hold. The normal approximation makes the guarantee asymptotic; ``bench_judge.py``
  shows it holds at these sample sizes.
* **Guardrails on a proportion** (:func:`cusum_log_evidence`): a CUSUM e-detector with a fixed
  alternative (p₁ = ``ratio`` × p₀) against the limit p₀ (error rate ≤ 1%; P95 ≤ 10 ms ⇔ P(latency
  > 10 ms) ≤ 5%). Its likelihood ratios are exact (Bernoulli), it catches a regression that starts
  late in a long step (the CUSUM restarts from the best start point), and a union bound over the
  start points sets its threshold: :func:`detector_threshold`.

The functions take floats or numpy arrays alike (the benchmark runs thousands of simulated
rollouts through these same functions at once); they are table-tested in
``tests/unit/test_decision_sequential.py`` with the arithmetic in the rows.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
from scipy.special import log_ndtr

Real = Any  # a float or a numpy array of them


class SeqVerdict(StrEnum):
    ROLLBACK = "rollback"  # evidence that the candidate is worse than the margin allows
    PASS = "pass"  # evidence that it is no worse than the margin
    HOLD = "hold"  # neither yet (the events so far cannot tell)
    NO_DATA = "noData"  # fewer events than the test starts with


def log_normal_cdf(x: Real) -> Real:
    """log Φ(x), accurate far into the lower tail (where Φ itself underflows)."""
    return log_ndtr(x)


def one_sided_log_e(s: Real, precision: Real, tau: float) -> Real:
    """log E of the half-normal mixture test, with S = V·(distance past the null boundary in
    the alternative's direction) and V the estimate's precision (1/variance); τ the mixture's
    scale (the size of effect the test is tuned to find fastest)::

        log E = ½·log(4ρ/(V+ρ)) + S²/(2(V+ρ)) + log Φ(S/√(V+ρ)),   ρ = 1/τ²
    """
    rho = 1.0 / (tau * tau)
    total = precision + rho
    return (0.5 * np.log(4.0 * rho / total) + s * s / (2.0 * total)
            + log_normal_cdf(s / np.sqrt(total)))


def confidence_radius(precision: Real, tau: float, alpha: float) -> Real:
    """Half-width of the anytime-valid (1 − α) confidence sequence around the estimate (the
    two-sided normal mixture: the θ whose mixture evidence stays below 1/α)."""
    rho = 1.0 / (tau * tau)
    total = precision + rho
    return np.sqrt(total / (precision * precision)
                   * (2.0 * math.log(1.0 / alpha) + np.log(total / rho)))


@dataclass(frozen=True)
class Arm:
    """One version's counts since the step started: ``hits`` successes in ``n`` events."""

    hits: float
    n: float

    @property
    def rate(self) -> float:
        return self.hits / self.n if self.n > 0 else float("nan")

    @property
    def smoothed(self) -> float:
        """p̃ = (h + 1)/(n + 2): never 0 or 1, so a variance is never 0."""
        return (self.hits + 1.0) / (self.n + 2.0)


@dataclass(frozen=True)
class Stratum:
    """A difference measured within one step (one weight): never pooled with another step's
    counts, whose traffic split differs; strata combine by inverse variance."""

    delta: float  # Δ̂ = candidate rate − champion rate
    precision: float  # V = 1 / (p̃_c(1−p̃_c)/n_c + p̃_b(1−p̃_b)/n_b)

    @classmethod
    def of(cls, candidate: Arm, champion: Arm) -> Stratum:
        return cls(*difference_and_precision(candidate.hits, candidate.n, champion.hits,
                                             champion.n))


def difference_and_precision(hits_c: Real, n_c: Real, hits_b: Real, n_b: Real
                             ) -> tuple[Real, Real]:
    """Δ̂ = h_c/n_c − h_b/n_b and V = 1/(p̃_c(1−p̃_c)/n_c + p̃_b(1−p̃_b)/n_b), p̃ = (h+1)/(n+2)
    (counts > 0; arrays welcome)."""
    pc, pb = (hits_c + 1.0) / (n_c + 2.0), (hits_b + 1.0) / (n_b + 2.0)
    variance = pc * (1.0 - pc) / n_c + pb * (1.0 - pb) / n_b
    return hits_c / n_c - hits_b / n_b, 1.0 / variance


def pooled(strata: Sequence[Stratum]) -> Stratum:
    """Inverse-variance combination: Δ̂ = Σ V_s·Δ̂_s / Σ V_s, V = Σ V_s."""
    total = sum(s.precision for s in strata)
    return Stratum(sum(s.precision * s.delta for s in strata) / total, total)


@dataclass(frozen=True)
class DifferenceTest:
    """The parameters of :func:`judge_difference` (spec: ``analysis.quality``)."""

    rollback_margin: float = 0.01  # m_R: roll back on evidence that Δ < −m_R
    rollback_alpha: float = 0.01  # α_R: chance of a false rollback, per rollout
    pass_margin: float = 0.01  # m_P: pass on evidence that Δ > −m_P
    pass_alpha: float = 0.05  # α_P: chance of passing a candidate worse than −m_P
    rollback_tau: float = 0.02  # tuned to regressions of about 2 points beyond the margin
    pass_tau: float = 0.01  # tuned to differences near the margin (passing needs less)
    min_events: float = 100.0  # per arm, before anything is judged

    def split(self, parts: int) -> DifferenceTest:
        """The same test with its error budget split ``parts`` ways (lanes: α/16 each)."""
        return DifferenceTest(self.rollback_margin, self.rollback_alpha / parts,
                              self.pass_margin, self.pass_alpha / parts, self.rollback_tau,
                              self.pass_tau, self.min_events)


@dataclass(frozen=True)
class DifferenceEvidence:
    """What the judge knows about Δ, for status, Events and ``kubectl lvm status``."""

    verdict: SeqVerdict
    delta: float  # Δ̂
    ci_low: float  # the anytime-valid 1 − α_R confidence sequence for Δ
    ci_high: float
    log_e_rollback: float  # log E against "Δ ≥ −m_R"; rollback at log(1/α_R)
    log_e_pass: float  # log E against "Δ ≤ −m_P"; pass at log(1/α_P)
    events_to_decide: float | None  # roughly how many more candidate events, if Δ̂ holds


def difference_log_evidence(delta: Real, precision: Real, test: DifferenceTest
                            ) -> tuple[Real, Real]:
    """(log E that Δ < −m_R, log E that Δ > −m_P): S = V·(−m_R − Δ̂) and S = V·(Δ̂ + m_P)."""
    rollback = one_sided_log_e(precision * (-test.rollback_margin - delta), precision,
                               test.rollback_tau)
    passing = one_sided_log_e(precision * (delta + test.pass_margin), precision, test.pass_tau)
    return rollback, passing


def _evidence_pair(s: Stratum, test: DifferenceTest) -> tuple[float, float]:
    rollback, passing = difference_log_evidence(s.delta, s.precision, test)
    return float(rollback), float(passing)


def _decided(s: Stratum, test: DifferenceTest) -> bool:
    rollback, passing = _evidence_pair(s, test)
    return rollback >= math.log(1.0 / test.rollback_alpha) or passing >= math.log(
        1.0 / test.pass_alpha)


def events_to_decide(s: Stratum, candidate_events: float, test: DifferenceTest,
                     *, max_factor: float = 1e4) -> float | None:
    """How many more candidate events until a boundary is reached if Δ̂ stays where it is and
    both arms grow in proportion (precision ∝ events); None when even ``max_factor`` times the
    events would not decide (Δ̂ sits between the boundaries)."""
    if _decided(s, test):
        return 0.0

    def at(k: float) -> Stratum:
        return Stratum(s.delta, s.precision * k)

    if not _decided(at(max_factor), test):
        return None
    low, high = 1.0, max_factor
    while high / low > 1.01:
        mid = math.sqrt(low * high)
        low, high = (low, mid) if _decided(at(mid), test) else (mid, high)
    return math.ceil((high - 1.0) * candidate_events)


def judge_difference(strata: Sequence[Stratum], candidate_events: float,
                     champion_events: float, test: DifferenceTest) -> DifferenceEvidence:
    """Roll back, pass or hold on Δ = candidate − champion, from the step's strata."""
    if candidate_events < test.min_events or champion_events < test.min_events or not strata:
        nan = float("nan")
        return DifferenceEvidence(SeqVerdict.NO_DATA, nan, nan, nan, nan, nan,
                                  max(0.0, test.min_events - min(candidate_events,
                                                                 champion_events)))
    s = pooled(strata)
    rollback, passing = _evidence_pair(s, test)
    radius = confidence_radius(s.precision, test.rollback_tau, test.rollback_alpha)
    if rollback >= math.log(1.0 / test.rollback_alpha):
        verdict = SeqVerdict.ROLLBACK
    elif passing >= math.log(1.0 / test.pass_alpha):
        verdict = SeqVerdict.PASS
    else:
        verdict = SeqVerdict.HOLD
    return DifferenceEvidence(verdict, s.delta, s.delta - float(radius),
                              s.delta + float(radius), rollback, passing,
                              events_to_decide(s, candidate_events, test))


# --- guardrails: a proportion against its limit ---------------------------------------------


def bernoulli_llr(exceed: Real, n: Real, p0: float, p1: float) -> Real:
    """log of the likelihood ratio p₁ vs p₀ for ``exceed`` events out of ``n``."""
    return exceed * math.log(p1 / p0) + (n - exceed) * math.log((1.0 - p1) / (1.0 - p0))


def detector_threshold(alpha: float, start_points: float) -> float:
    """log threshold of a CUSUM e-detector: each start point's likelihood ratio is a test
    martingale, so by Ville and a union bound over ``start_points`` (the checks in the
    horizon) P(false alarm) ≤ start_points / c; c = start_points/α."""
    return math.log(max(1.0, start_points) / alpha)


def cusum_log_evidence(previous: Real, exceed: Real, n: Real, p0: float, p1: float) -> Real:
    """One CUSUM update in log space: R_t = max(R_{t−1}, 0) + llr_t (the best start point's
    evidence so far; a late regression is caught from where it started, not diluted by the
    healthy hours before it)."""
    return np.maximum(previous, 0.0) + bernoulli_llr(exceed, n, p0, p1)


def cusum_path(llr: Real) -> Real:
    """The CUSUM of a whole sequence at once (axis −1 is time): R_t = S_t − min(0, S_1 … S_t−1)
    with S the running sum of the log likelihood ratios, which is what
    :func:`cusum_log_evidence` computes one step at a time."""
    total = np.cumsum(llr, axis=-1)
    before = np.concatenate([np.zeros_like(total[..., :1]), total[..., :-1]], axis=-1)
    return total - np.minimum(np.minimum.accumulate(before, axis=-1), 0.0)
