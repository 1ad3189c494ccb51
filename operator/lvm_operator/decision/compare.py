"""Quality by the sequential judge: the candidate against the champion, overall and per lane.

The window is the step so far (:func:`~.core.quality_window_s`), so the counts are the step's
stratum: Δ = Hit@5(candidate) − Hit@5(champion) from hits and feedback events since the step
started, judged by :func:`~.sequential.judge_difference` (rollback → breach, pass → pass, hold →
inconclusive). Each lane is the same test against the champion's same lane with the lane budget
(α/16, a 2-point margin); a lane can only veto (roll back), never hold a step: at 6.5% of the
traffic a lane needs days to *prove* it is fine, but a lane 10 points worse shows in hours.
"""

from __future__ import annotations

import math

from . import fmt
from .model import (
    Check,
    LaneMetrics,
    MetricResult,
    Plan,
    Verdict,
    VersionMetrics,
    lane_order,
)
from .sequential import (
    Arm,
    DifferenceEvidence,
    DifferenceTest,
    SeqVerdict,
    Stratum,
    judge_difference,
)

_VERDICT = {SeqVerdict.ROLLBACK: Verdict.BREACH, SeqVerdict.PASS: Verdict.PASS,
            SeqVerdict.HOLD: Verdict.INCONCLUSIVE, SeqVerdict.NO_DATA: Verdict.NO_DATA}


def _points(x: float) -> str:
    """0.0123 -> '+1.2 pts' (percentage points of Hit@5)."""
    return f"{x * 100:+.1f} pts"


def _e(log_e: float) -> float:
    """The e-value itself (1 is no evidence either way), capped where a float would end."""
    return math.exp(min(log_e, 690.0))


def _evidence(log_e: float) -> str:
    return f"{_e(log_e):.3g}"


def criteria(test: DifferenceTest) -> tuple[str, str]:
    """The pass and rollback rules as text, e.g. 'Δ > −1 pts at α 5%'."""
    return (f"Δ > {-test.pass_margin * 100:g} pts (α {fmt.pct(test.pass_alpha)})",
            f"Δ < {-test.rollback_margin * 100:g} pts (α {fmt.pct(test.rollback_alpha)})")


def describe(who: str, e: DifferenceEvidence, test: DifferenceTest) -> str:
    """One line with what the judge knows: Δ̂, its anytime-valid interval, the evidence against
    each boundary (of the 1/α it needs) and roughly how many more events a decision needs."""
    if e.verdict is SeqVerdict.NO_DATA:
        return (f"{who}: not judged yet, {fmt.count(e.events_to_decide or 0)} more feedback "
                f"events on each version needed (>= {fmt.count(test.min_events)} each)")
    text = (f"{who} Hit@5 Δ {_points(e.delta)} vs champion, anytime "
            f"{1 - test.rollback_alpha:.0%} interval [{_points(e.ci_low)}, {_points(e.ci_high)}];"
            f" evidence for rollback {_evidence(e.log_e_rollback)} of "
            f"{1 / test.rollback_alpha:g}, for pass {_evidence(e.log_e_pass)} of "
            f"{1 / test.pass_alpha:g}")
    if e.verdict is SeqVerdict.HOLD:
        text += ("; no decision in sight at this Δ" if e.events_to_decide is None else
                 f"; about {fmt.count(e.events_to_decide)} more candidate events to decide")
    return text


def _arm(feedback: float, hit5: float | None) -> Arm:
    rate = 0.0 if hit5 is None or not math.isfinite(hit5) else hit5
    return Arm(rate * feedback, feedback)


def _result(plan: Plan, lane: str | None, e: DifferenceEvidence, test: DifferenceTest,
            who: str, samples: float, counts: bool) -> MetricResult:
    s_txt, r_txt = criteria(test)
    judged = e.verdict is not SeqVerdict.NO_DATA
    return MetricResult(Check.QUALITY, "hit5_delta" if lane is None else "lane_hit5_delta",
                        plan.candidate, lane, e.delta if judged else None, samples,
                        _VERDICT[e.verdict], s_txt, r_txt, describe(who, e, test), counts,
                        -test.pass_margin, -test.rollback_margin,
                        interval=(e.ci_low, e.ci_high) if judged else None,
                        evidence=(_e(e.log_e_rollback), _e(e.log_e_pass)) if judged else None,
                        events_to_decide=e.events_to_decide)


def _judge(cand: Arm, champ: Arm, test: DifferenceTest) -> DifferenceEvidence:
    strata = [Stratum.of(cand, champ)] if cand.n > 0 and champ.n > 0 else []
    return judge_difference(strata, cand.n, champ.n, test)


def _lane(plan: Plan, lane: str, cand: LaneMetrics, champ: LaneMetrics | None
          ) -> MetricResult:
    q = plan.quality
    err = cand.error_rate
    if (plan.rollback.lane_failure and cand.requests >= q.lane_test.min_events
            and err is not None and math.isfinite(err) and err >= 1.0):
        return MetricResult(Check.QUALITY, "lane_failure", plan.candidate, lane, err,
                            cand.requests, Verdict.BREACH, "", "every request failed",
                            f"candidate lane {lane} fails completely: every one of "
                            f"{fmt.count(cand.requests)} requests failed")
    base = champ or LaneMetrics()
    e = _judge(_arm(cand.feedback, cand.hit5_proxy), _arm(base.feedback, base.hit5_proxy),
               q.lane_test)
    veto = e.verdict is SeqVerdict.ROLLBACK
    return _result(plan, lane, e, q.lane_test, f"lane {lane}", cand.feedback, counts=veto)


def sequential_quality(plan: Plan, cand: VersionMetrics, champ: VersionMetrics | None,
                       candidate_weight: int = 0) -> list[MetricResult]:
    """The overall test, then one result per lane the candidate served (lanes in order).

    At 100% the champion serves nobody, so there is nothing to compare: the steps before it
    made the comparison (each had to pass), and the guardrails keep judging the candidate."""
    q = plan.quality
    if candidate_weight >= 100:
        return [MetricResult(Check.QUALITY, "hit5_delta", plan.candidate, None, None,
                             cand.feedback, Verdict.PASS, *criteria(q.test),
                             "candidate serves 100%: no champion traffic to compare with; the "
                             "earlier steps' comparisons stand")]
    base = champ or VersionMetrics()
    e = _judge(_arm(cand.feedback, cand.hit5_proxy), _arm(base.feedback, base.hit5_proxy),
               q.test)
    results = [_result(plan, None, e, q.test, "candidate", cand.feedback, counts=True)]
    results += [_lane(plan, lane, cand.lanes[lane], base.lanes.get(lane))
                for lane in sorted(cand.lanes, key=lane_order)]
    return results
