"""The quality check under ``analysis.judge: sequential`` (issue 16 #1-#3, #5): candidate vs
champion from the step's counts, lanes that can only veto, and the text that says what the judge
knows. One row per rule; the arithmetic in the row."""

from __future__ import annotations

import pytest
from decision_fixtures import CANDIDATE, plan, window

from lvm_operator.decision import LaneMetrics, QualityPolicy, RolloutState, Verdict
from lvm_operator.decision.core import quality_window_s
from lvm_operator.decision.model import Judge, Phase
from lvm_operator.decision.sequential import DifferenceTest

P, B, N = Verdict.PASS, Verdict.BREACH, Verdict.NO_DATA
I = Verdict.INCONCLUSIVE  # noqa: E741


def seq_plan(**quality):
    return plan(quality=QualityPolicy(interval_s=100.0, window_s=600.0,
                                      judge=Judge.SEQUENTIAL, **quality))


def lane(feedback: float, hit5: float, requests: float | None = None) -> LaneMetrics:
    return LaneMetrics(requests=requests or 5 * feedback, feedback=feedback, hit5_proxy=hit5)


@pytest.mark.parametrize("cand_hit5, cand_n, champ_hit5, champ_n, verdict, why", [
    # the seed's case the threshold rule promotes: 63.5% is above 60%, but 3 points below 66.5%
    (0.635, 20_000, 0.665, 180_000, B, "Δ −3 pts, interval about ±1.3: beyond −1 pt"),
    (0.665, 20_000, 0.665, 180_000, P, "Δ 0, interval about ±1.3: clear of −1 pt"),
    (0.685, 20_000, 0.665, 180_000, P, "Δ +2 pts"),
    # both low in absolute terms: the threshold rule would roll back; no worse than the champion
    (0.52, 30_000, 0.52, 270_000, P, "Δ 0 at 52%: judged against the champion, not 55%"),
    (0.655, 20_000, 0.665, 180_000, I, "Δ −1 pt: exactly the margin, never decided"),
    (0.665, 200, 0.665, 1_800, I, "200 events: ±22 pts, cannot tell"),
    (0.665, 99, 0.665, 1_800, N, "99 < 100 candidate events"),
    (0.665, 500, 0.665, 0, N, "no champion feedback: nothing to compare with"),
])
def test_sequential_quality(cand_hit5, cand_n, champ_hit5, champ_n, verdict, why):
    from lvm_operator.decision import assess_quality
    out = assess_quality(seq_plan(), window({"feedback": cand_n, "hit5_proxy": cand_hit5},
                                            {"feedback": champ_n, "hit5_proxy": champ_hit5}))
    assert out.verdict is verdict, (why, out.summary)
    (r,) = [r for r in out.results if r.metric == "hit5_delta"]
    assert r.version == CANDIDATE and r.verdict is verdict


def test_the_summary_says_what_the_judge_knows():
    from lvm_operator.decision import assess_quality
    out = assess_quality(seq_plan(), window({"feedback": 2_000, "hit5_proxy": 0.665},
                                            {"feedback": 18_000, "hit5_proxy": 0.665}))
    (r,) = [r for r in out.results if r.metric == "hit5_delta"]
    assert r.detail.startswith("candidate Hit@5 Δ +0.0 pts vs champion, anytime 99% interval "
                               "[-4."), r.detail
    assert "evidence for rollback" in r.detail and "of 100, for pass" in r.detail
    assert "of 20; about 1" in r.detail and "more candidate events to decide" in r.detail
    assert (r.success, r.rollback) == ("Δ > -1 pts (α 5%)", "Δ < -1 pts (α 1%)")
    assert (r.success_limit, r.rollback_limit) == (-0.01, -0.01)
    assert len(r.detail) < 300  # bounded: it goes into status and Events


@pytest.mark.parametrize("lane_hit5, lane_n, verdict, why", [
    # lane budget α 1%/16, margin 2 pts: 10 pts worse on 3,000 events vs 27,000 is caught
    (0.565, 3_000, B, "lane −10 pts, interval about ±4: beyond −2"),
    # a lane that is fine but cannot prove it (600 events) does not hold the step
    (0.665, 600, P, "lane not proven good: reported, the overall pass stands"),
    (0.60, 600, P, "lane −6.5 pts on 600 events: suspicious, not yet beyond doubt"),
])
def test_lanes_only_veto(lane_hit5, lane_n, verdict, why):
    from lvm_operator.decision import assess_quality
    cand = {"feedback": 20_000, "hit5_proxy": 0.665,
            "lanes": {"3": lane(lane_n, lane_hit5), "4": lane(5_000, 0.665)}}
    champ = {"feedback": 180_000, "hit5_proxy": 0.665,
             "lanes": {"3": lane(9 * lane_n, 0.665), "4": lane(45_000, 0.665)}}
    out = assess_quality(seq_plan(), window(cand, champ))
    assert out.verdict is verdict, (why, out.summary)
    (r3,) = [r for r in out.results if r.lane == "3"]
    assert r3.metric == "lane_hit5_delta" and r3.counts == (verdict is B)
    assert r3.detail.startswith("lane 3 ")


def test_a_lane_that_fails_completely_still_rolls_back():
    from lvm_operator.decision import assess_quality
    cand = {"feedback": 20_000, "hit5_proxy": 0.665,
            "lanes": {"7": LaneMetrics(requests=400, feedback=0, error_rate=1.0)}}
    out = assess_quality(seq_plan(), window(cand, {"feedback": 180_000, "hit5_proxy": 0.665}))
    assert out.verdict is B and "lane 7 fails completely" in out.summary


def test_the_test_parameters_come_from_the_plan():
    from lvm_operator.decision import assess_quality
    # a 3-point margin: the −3 pt candidate is at the margin now, so it is not rolled back
    loose = seq_plan(test=DifferenceTest(rollback_margin=0.03, pass_margin=0.03))
    out = assess_quality(loose, window({"feedback": 20_000, "hit5_proxy": 0.635},
                                       {"feedback": 180_000, "hit5_proxy": 0.665}))
    assert out.verdict is I, out.summary


@pytest.mark.parametrize("judge, step_started, attempt, expected", [
    # threshold: the sliding window_s (600 s), cut at the attempt's start
    (Judge.THRESHOLD, 1_000.0, 0.0, 600.0),
    # sequential: the whole step so far (now 5,000 − step start 1,000), past window_s
    (Judge.SEQUENTIAL, 1_000.0, 0.0, 4_000.0),
    (Judge.SEQUENTIAL, 4_900.0, 0.0, 100.0),  # a new step: only its own counts
    (Judge.SEQUENTIAL, None, None, 600.0),  # no step yet: window_s
])
def test_the_sequential_window_is_the_step_so_far(judge, step_started, attempt, expected):
    p = plan(quality=QualityPolicy(interval_s=100.0, window_s=600.0, judge=judge))
    state = RolloutState(phase=Phase.PROGRESSING, current_step=1, step_started_at=step_started,
                         attempt_started_at=attempt)
    assert quality_window_s(p, state, 5_000.0) == expected


def test_status_carries_the_interval_the_evidence_and_the_events_to_decide():
    import math

    from lvm_operator.controller.status import measurement
    from lvm_operator.decision import assess_quality
    out = assess_quality(seq_plan(), window({"feedback": 2_000, "hit5_proxy": 0.665},
                                            {"feedback": 18_000, "hit5_proxy": 0.665}))
    (r,) = [r for r in out.results if r.metric == "hit5_delta"]
    m = measurement(r).to_k8s()
    low, high = r.interval
    assert m["metric"] == "hit5Delta" and m["value"] == pytest.approx(0.0, abs=1e-12)
    assert (m["ciLow"], m["ciHigh"]) == (pytest.approx(low), pytest.approx(high))
    assert -0.05 < low < -0.03 and high == pytest.approx(-low)
    # e-values: below 1/α for both (a hold), above 1 for pass (evidence leaning that way)
    assert 0 < m["evidenceRollback"] < 1 < m["evidencePass"] < 20
    assert math.isclose(m["evidencePass"], r.evidence[1])
    assert m["eventsToDecide"] == round(r.events_to_decide) > 10_000
    assert m["threshold"] == -0.01


def test_at_100_percent_there_is_no_champion_to_compare_with():
    from lvm_operator.decision import assess_quality
    obs = window({"feedback": 5_000, "hit5_proxy": 0.60}, None)
    assert assess_quality(seq_plan(), obs).verdict is N  # at 50%: no champion data is noData
    out = assess_quality(seq_plan(), obs, candidate_weight=100)
    assert out.verdict is P and "no champion traffic to compare with" in out.summary
