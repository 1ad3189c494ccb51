"""Shared builders for the decision-core tests: the seed plan's thresholds and tiny observations."""

from __future__ import annotations

from lvm_operator.decision import (
    GuardrailPolicy,
    LaneMetrics,
    NoDataAction,
    Plan,
    QualityPolicy,
    Step,
    Thresholds,
    VersionMetrics,
    WindowObservation,
)

CHAMPION, CANDIDATE = "phase1-baseline", "phase2-500ctx"

# The seed's "Success Criteria for 100% Rollout" and "Rollback Triggers".
SUCCESS = Thresholds(
    hit5_proxy_min=0.60, p95_latency_seconds=0.005, empty_hit_rate_max=0.10,
    error_rate_max=0.001, lane_degradation_max=0.20,
)
ROLLBACK = Thresholds(
    hit5_proxy_min=0.55, p95_latency_seconds=0.010, empty_hit_rate_max=0.20,
    error_rate_max=0.01, lane_failure=True,
)

DAY = 86400.0
WEEK = 7 * DAY

# Time-compressed version of the seed's 4-week plan: steps of 1000 s, checks every 10 s (guard)
# and 100 s (quality).
STEPS = (Step(10, 1000.0, shadow=True), Step(20, 1000.0), Step(50, 1000.0), Step(100, 1000.0))


def plan(**kw) -> Plan:
    base = dict(
        champion=CHAMPION, candidate=CANDIDATE, steps=STEPS,
        guardrails=GuardrailPolicy(interval_s=10.0, consecutive_breaches=2, window_s=4.0,
                                   min_requests=10),
        quality=QualityPolicy(interval_s=100.0, window_s=600.0, min_requests=1000,
                              lane_min_requests=100),
        success=SUCCESS, rollback=ROLLBACK, on_no_data=NoDataAction.HOLD, max_hold_s=600.0,
        paused=False, fingerprint="fp-1",
    )
    base.update(kw)
    return Plan(**base)


GOOD = dict(requests=10_000.0, error_rate=0.0, p95_latency_seconds=0.0025, empty_hit_rate=0.05,
            feedback=2000.0, hit5_proxy=0.66)
CHAMP = dict(requests=90_000.0, error_rate=0.0, p95_latency_seconds=0.0005, empty_hit_rate=0.06,
             feedback=18_000.0, hit5_proxy=0.59)


def lanes(**hit5_by_lane: float) -> dict[str, LaneMetrics]:
    """lanes(l0=0.6, l3=0.45) -> lanes "0" and "3" with 500 feedback events each."""
    return {k.removeprefix("l"): LaneMetrics(requests=2500.0, feedback=500.0, hit5_proxy=v)
            for k, v in hit5_by_lane.items()}


def window(cand: dict | None = None, champ: dict | None = None, *, window_s: float = 30.0,
           error: str | None = None) -> WindowObservation:
    """An observation with the candidate's (and champion's) numbers overriding GOOD/CHAMP."""
    versions = {}
    if cand is not None:
        versions[CANDIDATE] = VersionMetrics(**{**GOOD, **cand})
    if champ is not None:
        versions[CHAMPION] = VersionMetrics(**{**CHAMP, **champ})
    return WindowObservation(window_s, versions, error)


def good() -> WindowObservation:
    return window({}, {})
