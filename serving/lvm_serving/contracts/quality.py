"""Offline quality judgements on eval-set results: the pre-rollout gate, drift and lane health.

Pure functions over the dictionaries :func:`lvm_serving.synthetic.evaluate` returns (overall
metrics plus ``per_lane``), so the operator, the regression suite and the tests share one
definition of each rule. Numbers are fractions (0.66 = 66%).
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: The seed's daily lane check: a lane more than 15% (relative) below the overall is flagged.
LANE_HEALTH_MAX_BELOW = 0.15
#: The seed's weekly drift check: relative drift beyond 5% raises an alert.
DRIFT_MAX_RELATIVE = 0.05
HIT_METRICS = ("hit@1", "hit@5", "hit@10")
#: Values within this of a limit count as at it, so float noise cannot flip a verdict.
EPSILON = 1e-9


@dataclass(frozen=True)
class LaneFlag:
    lane: str
    value: float
    overall: float
    below_relative: float  # (overall - value) / overall


def lane_health(result: dict, metric: str = "hit@5",
                max_below: float = LANE_HEALTH_MAX_BELOW) -> list[LaneFlag]:
    """Lanes whose ``metric`` is more than ``max_below`` (relative) under the overall value."""
    overall = float(result[metric])
    flags = []
    for lane, lane_result in sorted(result.get("per_lane", {}).items(), key=lambda kv: int(kv[0])):
        value = float(lane_result[metric])
        below = (overall - value) / overall if overall > 0 else 0.0
        if below > max_below + EPSILON:
            flags.append(LaneFlag(lane=str(lane), value=value, overall=overall,
                                  below_relative=below))
    return flags


@dataclass(frozen=True)
class Drift:
    metric: str
    baseline: float
    current: float

    @property
    def relative(self) -> float:
        """Signed relative change: -0.1 means 10% below the baseline."""
        return (self.current - self.baseline) / self.baseline if self.baseline else 0.0


def drift(current: dict, baseline: dict, metrics: tuple[str, ...] = HIT_METRICS) -> list[Drift]:
    return [Drift(m, float(baseline[m]), float(current[m])) for m in metrics
            if m in baseline and m in current]


def drifted(drifts: list[Drift], max_relative: float = DRIFT_MAX_RELATIVE) -> list[Drift]:
    """The drifts beyond ``max_relative`` in either direction (the seed alerts on |drift|)."""
    return [d for d in drifts if abs(d.relative) > max_relative + EPSILON]


@dataclass(frozen=True)
class GateResult:
    passed: bool
    reason: str
    candidate_hit5: float
    champion_hit5: float | None = None
    details: dict = field(default_factory=dict)


def pre_rollout_gate(candidate: dict, champion: dict | None, min_hit5: float,
                     max_degradation: float) -> GateResult:
    """Whether a candidate may get traffic, judged on the held-out eval set.

    Blocks when its Hit@5 is below ``min_hit5``, or (with a champion result) more than
    ``max_degradation`` (relative) below the champion's.
    """
    cand = float(candidate["hit@5"])
    champ = float(champion["hit@5"]) if champion is not None else None
    if cand < min_hit5 - EPSILON:
        return GateResult(False, f"candidate Hit@5 {cand:.3f} < minimum {min_hit5:.3f} on the "
                                 f"eval set ({candidate.get('n', '?')} sequences)", cand, champ)
    if champ is not None and champ > 0:
        worse = (champ - cand) / champ
        if worse > max_degradation + EPSILON:
            return GateResult(False, f"candidate Hit@5 {cand:.3f} is {worse:.1%} below the "
                                     f"champion's {champ:.3f} (allowed {max_degradation:.1%})",
                              cand, champ)
    versus = f" (champion {champ:.3f})" if champ is not None else ""
    return GateResult(True, f"candidate Hit@5 {cand:.3f} ≥ {min_hit5:.3f}{versus}", cand, champ)
