"""Latency from histogram bucket counts: quantiles, exceedances and "slower than the champion".

The guardrail reads each version's latency histogram as cumulative bucket counts over its window
(``increase()`` of every ``_bucket`` series), not as one pre-computed P95, because the judgement
needs more than a quantile:

* the **P95** itself (the seed's limits: 5 ms success, 10 ms rollback), computed like
  Prometheus' ``histogram_quantile`` (linear inside a bucket);
* whether the candidate is **slower than the champion in the same window**. On a busy machine
  both versions miss an absolute limit together (the seed's 10 ms is for a GPU node, not for two
  shared cores); rolling the candidate back then helps nobody. So the comparison asks: at the
  champion's own median and P95 (the bucket boundaries at or above them), is the share of the
  candidate's requests above that latency larger than the champion's share by more than a
  margin, with a one-sided two-proportion z statistic at least ``z``? A candidate 15 ms slower
  has nearly all of its requests above the champion's median (the champion has half); an equal
  one has about half.

The proportions use the Agresti–Caffo adjustment ``(x + 1) / (n + 2)`` so a window with no
exceedance still has a positive variance. Buckets are ``(upper_bound, cumulative_count)`` pairs
sorted by bound, the last one ``+inf`` (the histogram's total).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

Buckets = Sequence[tuple[float, float]]


def total(buckets: Buckets) -> float:
    return buckets[-1][1] if buckets else 0.0


def monotone(buckets: Buckets) -> tuple[tuple[float, float], ...]:
    """Sorted by bound with non-decreasing counts (``increase()`` extrapolates each bucket on
    its own, so neighbouring counts can cross by a fraction)."""
    out = []
    running = 0.0
    for bound, count in sorted(buckets):
        c = count if math.isfinite(count) and count > 0 else 0.0
        running = max(running, c)
        out.append((bound, running))
    return tuple(out)


def quantile(buckets: Buckets, q: float) -> float | None:
    """``histogram_quantile(q, ...)``: None without observations; the highest finite bound when
    the quantile falls in the ``+inf`` bucket (Prometheus does the same)."""
    n = total(buckets)
    if n <= 0:
        return None
    rank = q * n
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count)
        lower_bound, lower_count = bound, count
    return lower_bound


def bound_at_or_above(buckets: Buckets, q: float) -> float | None:
    """The smallest finite bucket bound at which at least a share ``q`` of requests finished."""
    n = total(buckets)
    if n <= 0:
        return None
    for bound, count in buckets:
        if math.isinf(bound):
            return None
        if count >= q * n:
            return bound
    return None


def above(buckets: Buckets, bound: float) -> tuple[float, float]:
    """(requests slower than ``bound``, all requests); ``bound`` must be one of the bounds."""
    n = total(buckets)
    for b, count in buckets:
        if b == bound:
            return n - count, n
    raise ValueError(f"bound {bound!r} is not a bucket bound of this histogram")


def _adjusted(x: float, n: float) -> float:
    return (x + 1.0) / (n + 2.0)


@dataclass(frozen=True)
class Comparison:
    """The strongest evidence that the candidate is slower than the champion."""

    slower: bool
    bound_s: float  # the champion-derived latency the shares are measured at
    quantile: float  # which champion quantile that bound stands for (0.5 or 0.95)
    candidate_share: float  # share of candidate requests slower than bound_s
    champion_share: float
    z: float  # (candidate - champion - margin) / standard error

    def text(self) -> str:
        name = "median" if self.quantile == 0.5 else f"P{round(self.quantile * 100)}"
        return (f"{self.candidate_share:.0%} of its requests were slower than the champion's "
                f"{name} (≤ {self.bound_s * 1000:.3g} ms; champion {self.champion_share:.0%})")


def compare(candidate: Buckets, champion: Buckets, *, margin: float, z: float,
            quantiles: tuple[float, ...] = (0.5, 0.95)) -> Comparison | None:
    """Whether the candidate is slower than the champion (see the module docstring).

    None when either histogram is empty or the champion's quantiles fall in the ``+inf`` bucket.
    """
    best: Comparison | None = None
    for q in quantiles:
        bound = bound_at_or_above(champion, q)
        if bound is None:
            continue
        try:
            xc, nc = above(candidate, bound)
            xb, nb = above(champion, bound)
        except ValueError:
            continue  # the two histograms do not share their bounds
        if nc <= 0 or nb <= 0:
            continue
        pc, pb = xc / nc, xb / nb
        ac, ab = _adjusted(xc, nc), _adjusted(xb, nb)
        se = math.sqrt(ac * (1 - ac) / (nc + 2) + ab * (1 - ab) / (nb + 2))
        stat = (pc - pb - margin) / se
        found = Comparison(stat >= z, bound, q, pc, pb, stat)
        if best is None or found.z > best.z:
            best = found
    return best
