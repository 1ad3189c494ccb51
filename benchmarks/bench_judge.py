"""The judge on simulated traffic with a known truth: the threshold rule vs the sequential tests.

The seed's traffic: champion Hit@5 0.665, 20 requests/s, the candidate at 10% → 20% → 50% for
``--step-hours`` each (a week), feedback on 30% of requests, a check every 30 s. Both judges see
the same simulated counts (one draw per scenario), and each is the rule the operator runs:

* ``threshold`` — the first version's rule (``analysis.judge: threshold``): quality passes at a
  Hit@5 proxy ≥ 0.60 and rolls back below 0.55 over a sliding 1 h window (≥ 1,000 events), the
  P95 guardrail rolls back after 2 disjoint 60 s windows above 10 ms (≥ 100 requests);
* ``sequential`` — :mod:`lvm_operator.decision.sequential` (the default): the mixture SPRT on
  Δ = Hit@5(candidate) − Hit@5(champion) from counts since the step started (rollback margin 1
  point at α 1%, pass margin 1 point at α 5%), each lane against the champion's lane at α/16
  with a 2-point margin, and the CUSUM e-detector on P(latency > 10 ms) ≤ 5%.

A step ends at its dwell when its quality verdict is pass; it holds otherwise (for up to
``--hold-hours`` more) and may be rolled back at any check. Promotion = the end of the 50% step
(the last one with a champion to compare against).

    python benchmarks/bench_judge.py [--reps 200] [--json] [--step-hours 168]

``--json`` prints one object: per judge, ``false_rollback_rate`` (healthy candidate),
``detect_rate_minus3`` (a −3-point candidate rolled back within the 10% step),
``median_hours_to_detect_minus3``, ``promote_rate_plus2``, ``median_hours_to_promote_plus2``,
``false_rollback_rate_latency_1pct`` (1% of both versions' requests over 10 ms),
``detect_rate_lane_minus10`` (one lane with 6.5% of the traffic 10 points worse, within the 10%
step), ``detect_rate_latency_20pct`` and ``reps``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass

import numpy as np

from lvm_operator.decision.sequential import (
    DifferenceTest,
    bernoulli_llr,
    cusum_path,
    detector_threshold,
    difference_and_precision,
    difference_log_evidence,
)

CHECK_S = 30.0
RPS = 20.0
FEEDBACK = 0.30
CHAMPION_HIT5 = 0.665
WEIGHTS = (0.10, 0.20, 0.50)
LANES = 16
LANE_SHARE = 0.065  # the lane of the lane scenario
# the threshold judge (the seed's numbers, as in examples/)
HIT5_PASS, HIT5_ROLLBACK = 0.60, 0.55
QUALITY_WINDOW_CHECKS = 120  # 1 h
QUALITY_MIN_EVENTS = 1000
P95_LIMIT_SHARE = 0.05  # P95 > 10 ms ⇔ more than 5% of requests over 10 ms
GUARDRAIL_WINDOW_CHECKS = 2  # 60 s
GUARDRAIL_MIN_REQUESTS = 100
# the sequential judge
QUALITY = DifferenceTest()
LANE = DifferenceTest(rollback_margin=0.02, pass_margin=0.02).split(LANES)
LATENCY_ALPHA = 0.01
LATENCY_RATIO = 2.0  # the detector is tuned to P(latency > limit) doubling (5% → 10%)

NEVER = np.iinfo(np.int64).max


@dataclass(frozen=True)
class Scenario:
    name: str
    delta: float = 0.0  # candidate Hit@5 − champion's
    lane_delta: float = 0.0  # one lane (LANE_SHARE of traffic) this much worse, on top
    slow_candidate: float = 0.01  # share of the candidate's requests over 10 ms


def first(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along axis 1, NEVER where none."""
    hit = mask.any(axis=1)
    return np.where(hit, mask.argmax(axis=1), NEVER)


def draw(rng: np.random.Generator, rate_per_check: float, p: float, shape: tuple[int, int]
         ) -> tuple[np.ndarray, np.ndarray]:
    """(hits, events) per check: Poisson thinning, so hits and misses are independent."""
    hits = rng.poisson(rate_per_check * p, shape).astype(np.float64)
    misses = rng.poisson(rate_per_check * (1.0 - p), shape).astype(np.float64)
    return hits, hits + misses


def simulate_step(rng: np.random.Generator, s: Scenario, weight: float, reps: int, checks: int
                  ) -> dict[str, dict[str, np.ndarray]]:
    """One step for ``reps`` rollouts: per judge, the first check at which it would roll back
    and the first at which quality passes (NEVER: not within ``checks``)."""
    shape = (reps, checks)
    per_check = RPS * CHECK_S * FEEDBACK
    rest = 1.0 - LANE_SHARE
    # the lane and the rest of the traffic, per version (the lane's champion hit rate = theirs)
    lane_c = draw(rng, per_check * weight * LANE_SHARE, CHAMPION_HIT5 + s.delta + s.lane_delta,
                  shape)
    rest_c = draw(rng, per_check * weight * rest, CHAMPION_HIT5 + s.delta, shape)
    lane_b = draw(rng, per_check * (1 - weight) * LANE_SHARE, CHAMPION_HIT5, shape)
    rest_b = draw(rng, per_check * (1 - weight) * rest, CHAMPION_HIT5, shape)
    hc, nc = lane_c[0] + rest_c[0], lane_c[1] + rest_c[1]
    hb, nb = lane_b[0] + rest_b[0], lane_b[1] + rest_b[1]
    req_c = rng.poisson(RPS * CHECK_S * weight, shape).astype(np.float64)
    slow_c = rng.binomial(req_c.astype(np.int64), s.slow_candidate).astype(np.float64)

    # --- threshold: sliding 1 h window of candidate feedback; 60 s P95 windows
    def window(x: np.ndarray, k: int) -> np.ndarray:
        c = np.cumsum(x, axis=1)
        out = c.copy()
        out[:, k:] = c[:, k:] - c[:, :-k]
        return out

    wh, wn = window(hc, QUALITY_WINDOW_CHECKS), window(nc, QUALITY_WINDOW_CHECKS)
    judged = wn >= QUALITY_MIN_EVENTS
    hit5 = wh / np.maximum(wn, 1.0)
    t_quality_rollback = first(judged & (hit5 < HIT5_ROLLBACK))
    t_quality_pass = first(judged & (hit5 >= HIT5_PASS))
    g_req, g_slow = window(req_c, GUARDRAIL_WINDOW_CHECKS), window(slow_c, GUARDRAIL_WINDOW_CHECKS)
    breach = (g_req >= GUARDRAIL_MIN_REQUESTS) & (g_slow > P95_LIMIT_SHARE * g_req)
    two = np.zeros_like(breach)
    two[:, GUARDRAIL_WINDOW_CHECKS:] = breach[:, GUARDRAIL_WINDOW_CHECKS:] & breach[
        :, :-GUARDRAIL_WINDOW_CHECKS]  # two disjoint windows in a row
    threshold = {"rollback": np.minimum(t_quality_rollback, first(two)),
                 "pass": t_quality_pass}

    # --- sequential: counts since the step started
    def cum(x: np.ndarray) -> np.ndarray:
        return np.cumsum(x, axis=1)

    Hc, Nc, Hb, Nb = cum(hc), cum(nc), cum(hb), cum(nb)
    ok = (Nc >= QUALITY.min_events) & (Nb >= QUALITY.min_events)
    delta, precision = difference_and_precision(Hc, np.maximum(Nc, 1), Hb, np.maximum(Nb, 1))
    log_r, log_p = difference_log_evidence(delta, precision, QUALITY)
    q_rollback = first(ok & (log_r >= np.log(1 / QUALITY.rollback_alpha)))
    q_pass = first(ok & (log_p >= np.log(1 / QUALITY.pass_alpha)))
    LHc, LNc, LHb, LNb = cum(lane_c[0]), cum(lane_c[1]), cum(lane_b[0]), cum(lane_b[1])
    lane_ok = (LNc >= LANE.min_events) & (LNb >= LANE.min_events)
    ld, lp = difference_and_precision(LHc, np.maximum(LNc, 1), LHb, np.maximum(LNb, 1))
    lane_r, _ = difference_log_evidence(ld, lp, LANE)  # a lane can veto, not hold a step
    l_rollback = first(lane_ok & (lane_r >= np.log(1 / LANE.rollback_alpha)))
    llr = cusum_path(bernoulli_llr(slow_c, req_c, P95_LIMIT_SHARE,
                                   LATENCY_RATIO * P95_LIMIT_SHARE))
    return {"threshold": threshold, "sequential": {
        "rollback": np.minimum(np.minimum(q_rollback, l_rollback), first(llr >= LATENCY_LIMIT)),
        "quality_rollback": q_rollback, "lane_rollback": l_rollback,
        "pass": q_pass}}


LATENCY_LIMIT = 0.0  # set in main from the horizon


def run_scenario(rng: np.random.Generator, s: Scenario, reps: int, dwell: int, hold: int
                 ) -> dict[str, dict[str, np.ndarray]]:
    """Per judge: outcome per rollout ('rollback', 'promote', 'stuck'), hours to it, and
    whether the rollback came within the first step."""
    out = {}
    results = [simulate_step(rng, s, w, reps, dwell + hold) for w in WEIGHTS]
    for judge in ("threshold", "sequential"):
        elapsed = np.zeros(reps)
        outcome = np.full(reps, "", dtype=object)
        rolled_in_first = np.zeros(reps, dtype=bool)
        for i, r in enumerate(results):
            rollback, passed = r[judge]["rollback"], r[judge]["pass"]
            ends = np.maximum(dwell, np.where(passed == NEVER, NEVER, passed + 1))
            live = outcome == ""
            rb = live & (rollback < np.minimum(ends, dwell + hold))
            outcome[rb] = "rollback"
            elapsed[rb] += (rollback[rb] + 1) * CHECK_S / 3600
            rolled_in_first |= rb & (i == 0)
            stuck = live & ~rb & (ends >= dwell + hold)
            outcome[stuck] = "stuck"
            go = live & ~rb & ~stuck
            elapsed[go] += ends[go] * CHECK_S / 3600
        outcome[outcome == ""] = "promote"
        out[judge] = {"outcome": outcome, "hours": elapsed, "first": rolled_in_first}
    return out


def median(x: np.ndarray) -> float | None:
    return round(float(np.median(x)), 2) if len(x) else None


def main() -> int:
    global LATENCY_LIMIT
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reps", type=int, default=200, help="simulated rollouts per scenario")
    parser.add_argument("--step-hours", type=float, default=168.0)
    parser.add_argument("--hold-hours", type=float, default=24.0)
    parser.add_argument("--seed", type=int, default=20261202)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    dwell = int(args.step_hours * 3600 / CHECK_S)
    hold = int(args.hold_hours * 3600 / CHECK_S)
    # one detector start point per check of the whole rollout
    LATENCY_LIMIT = detector_threshold(LATENCY_ALPHA, len(WEIGHTS) * (dwell + hold))
    rng = np.random.default_rng(args.seed)
    started = time.monotonic()
    scenarios = {
        "healthy": Scenario("healthy"),
        "minus3": Scenario("minus3", delta=-0.03),
        "plus2": Scenario("plus2", delta=0.02),
        "latency_1pct": Scenario("latency_1pct", slow_candidate=0.01),
        "lane_minus10": Scenario("lane_minus10", lane_delta=-0.10),
        "latency_20pct": Scenario("latency_20pct", slow_candidate=0.20),
    }
    chunk = 100
    runs: dict[str, dict[str, dict[str, np.ndarray]]] = {}
    for key, s in scenarios.items():
        parts = [run_scenario(rng, s, min(chunk, args.reps - i), dwell, hold)
                 for i in range(0, args.reps, chunk)]
        runs[key] = {j: {f: np.concatenate([p[j][f] for p in parts]) for f in parts[0][j]}
                     for j in parts[0]}
    figures: dict[str, dict[str, float | int | None]] = {}
    for judge in ("threshold", "sequential"):
        def rate(scenario: str, what: str, first_step: bool = False, judge: str = judge
                 ) -> float:
            r = runs[scenario][judge]
            hit = r["outcome"] == what
            if first_step:
                hit &= r["first"]
            return round(float(hit.mean()), 4)

        m3, p2 = runs["minus3"][judge], runs["plus2"][judge]
        figures[judge] = {
            "false_rollback_rate": rate("healthy", "rollback"),
            "detect_rate_minus3": rate("minus3", "rollback", first_step=True),
            "median_hours_to_detect_minus3": median(m3["hours"][m3["outcome"] == "rollback"]),
            "promote_rate_plus2": rate("plus2", "promote"),
            "median_hours_to_promote_plus2": median(p2["hours"][p2["outcome"] == "promote"]),
            "false_rollback_rate_latency_1pct": rate("latency_1pct", "rollback"),
            "detect_rate_lane_minus10": rate("lane_minus10", "rollback", first_step=True),
            "detect_rate_latency_20pct": rate("latency_20pct", "rollback", first_step=True),
            "promote_rate_healthy": rate("healthy", "promote"),
            "reps": args.reps,
        }
    wall = time.monotonic() - started
    if args.json:
        print(json.dumps(figures))
        return 0
    keys = [k for k in figures["threshold"] if k != "reps"]
    print(f"{args.reps} simulated rollouts per scenario, steps {WEIGHTS} × {args.step_hours:g} h, "
          f"checks every {CHECK_S:g} s ({wall:.0f} s)")
    print(f"{'':36} {'threshold':>10} {'sequential':>11}")
    for k in keys:
        a, b = figures["threshold"][k], figures["sequential"][k]
        print(f"{k:36} {a!s:>10} {b!s:>11}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
