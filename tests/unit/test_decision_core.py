"""Table tests for decide(): steps, dwell, streaks, no-data deadline, pause, spec change, resume.

Plan (decision_fixtures.plan): 4 steps of 1000 s at 10 % (shadow), 20 %, 50 %, 100 %;
guardrails every 10 s, 2 consecutive breaches roll back; quality every 100 s on >= 1000 feedback
events; noData holds, max hold 600 s. Time is a plain float: the core never reads a clock.
"""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from decision_fixtures import CANDIDATE, good, plan, window

from lvm_operator.decision import (
    NO_DATA_CONDITION,
    Action,
    Check,
    GuardrailPolicy,
    InconclusiveAction,
    NoDataAction,
    Observations,
    Phase,
    QualityPolicy,
    RolloutState,
    Step,
    Verdict,
    WindowObservation,
    checks_due,
    decide,
    next_decision_in_s,
)

# Guardrail observations by letter: Pass, Inconclusive (7 ms), Breach (12.4 ms), No data, Error.
GUARD = {
    "P": lambda: good(),
    "I": lambda: window({"p95_latency_seconds": 0.007}, {}),
    "B": lambda: window({"p95_latency_seconds": 0.0124}, {}),
    "N": lambda: window({"requests": 0.0}, {}),
    "E": lambda: WindowObservation(30.0, error="Prometheus at http://p:9090 is unreachable"),
}
THIN = window({"feedback": 10.0}, {}, window_s=600.0)  # quality noData: 10 < 1000 events


def started(p=None, now: float = 0.0) -> RolloutState:
    d = decide(p or plan(), RolloutState(), Observations(), now)
    assert d.action is Action.ADVANCE
    return d.state


def tick(p, state, now, guard=None, quality=None):
    """decide() with observations for whatever is due (good ones unless given)."""
    return decide(p, state, Observations(guard or good(), quality or good()), now)


def run_until(p, state, start, end, every=10.0, guard=None, quality=None):
    """Call decide() every ``every`` seconds in (start, end]; return all decisions."""
    out = []
    t = start
    while t + every <= end + 1e-9:
        t += every
        d = tick(p, state, t, guard() if guard else None, quality)
        out.append((t, d))
        state = d.state
        if d.state.phase.finished:
            break
    return out


# --- start, dwell, advance, promote ----------------------------------------------------------


def test_start_goes_to_step_zero():
    d = decide(plan(), RolloutState(), Observations(), 50.0)
    assert d.action is Action.ADVANCE
    assert d.reason == f"started step 1/4: candidate {CANDIDATE} at 10% (shadow) for 16m 40s"
    s = d.state
    assert (s.phase, s.current_step, s.candidate_weight, s.shadow) == (
        Phase.PROGRESSING, 0, 10, True
    )
    assert (s.step_started_at, s.last_guardrail_at, s.last_quality_at) == (50.0, 50.0, 50.0)
    assert s.fingerprint == "fp-1"


def test_hold_during_dwell_reports_time_left_and_checks():
    d = tick(plan(), started(), 10.0)
    assert d.action is Action.HOLD
    assert d.reason == ("holding at step 1/4 (candidate 10%, shadow): 16m 30s of dwell left; "
                        "guardrails pass; quality not checked yet")


def test_walk_through_the_whole_plan():
    # Good numbers throughout: advance at 1000, 2000, 3000 s and promote at 4000 s (each step's
    # quality check falls due exactly at its end: every 100 s from the step's start).
    p = plan()
    decisions = run_until(p, started(p), 0.0, 5000.0)
    changes = [(t, d.action, d.state.candidate_weight) for t, d in decisions
               if d.action is not Action.HOLD]
    assert changes == [
        (1000.0, Action.ADVANCE, 20),
        (2000.0, Action.ADVANCE, 50),
        (3000.0, Action.ADVANCE, 100),
        (4000.0, Action.PROMOTE, 100),
    ]
    last = decisions[-1][1]
    assert last.state.phase is Phase.PROMOTED and not last.state.shadow
    assert last.reason.startswith(
        f"promoted {CANDIDATE}: step 4/4 passed after 16m 40s: candidate error rate 0% < 0.1%"
    )


def test_last_step_below_100_promotes_to_100():
    p = plan(steps=(Step(10, 100.0), Step(50, 100.0)), quality=QualityPolicy(10.0, 60.0, 1000))
    decisions = run_until(p, started(p), 0.0, 300.0)
    assert [(t, d.action) for t, d in decisions if d.action is not Action.HOLD] == [
        (100.0, Action.ADVANCE), (200.0, Action.PROMOTE),
    ]
    assert decisions[-1][1].state.candidate_weight == 100


def test_dwell_is_independent_of_the_check_interval():
    # Checks every 300 s (at 300, 600, 900): the step still ends at exactly 1000 s, using the
    # verdicts from 900 s, without waiting for the next check at 1200 s.
    p = plan(guardrails=GuardrailPolicy(300.0, 2, 300.0, 10),
             quality=QualityPolicy(300.0, 600.0, 1000))
    s = started(p)
    for t in (300.0, 600.0, 900.0):
        s = tick(p, s, t).state
    assert checks_due(p, s, 1000.0) == frozenset()
    d = decide(p, s, Observations(), 1000.0)
    assert d.action is Action.ADVANCE and d.state.step_started_at == 1000.0


def test_interval_longer_than_step_waits_for_a_check_in_the_step():
    p = plan(guardrails=GuardrailPolicy(5000.0, 2, 300.0, 10),
             quality=QualityPolicy(5000.0, 600.0, 1000))
    s = started(p)
    d = decide(p, s, Observations(), 1000.0)
    assert d.action is Action.HOLD
    assert "dwell done; waiting for a guardrails and quality check in this step" in d.reason
    assert tick(p, d.state, 5000.0).action is Action.ADVANCE


def test_verdict_from_the_previous_step_does_not_count():
    # Step 2 started at 1000 s; the last quality pass was at 990 s (step 1). At 2000 s the dwell
    # is over, guardrails passed at 1995 s, but quality has not been judged in this step.
    p = plan(quality=QualityPolicy(5000.0, 600.0, 1000))
    s = RolloutState(
        phase=Phase.PROGRESSING, fingerprint="fp-1", current_step=1, candidate_weight=20,
        step_started_at=1000.0, last_guardrail_at=1995.0, last_guardrail_verdict=Verdict.PASS,
        last_quality_at=990.0, last_quality_verdict=Verdict.PASS,
    )
    d = decide(p, s, Observations(), 2000.0)
    assert d.action is Action.HOLD
    assert "waiting for a quality check in this step" in d.reason


# --- guardrail streaks ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("k", "letters", "streak", "action"),
    [
        (2, "B", 1, Action.HOLD),  # 1 of 2
        (2, "BB", 2, Action.ROLLBACK),  # 2 of 2 consecutive
        (2, "BPB", 1, Action.HOLD),  # a pass resets the streak
        (2, "BIB", 1, Action.HOLD),  # between thresholds is not a breach: resets too
        (2, "BNB", 2, Action.ROLLBACK),  # noData neither extends nor resets
        (2, "BEB", 2, Action.ROLLBACK),  # a Prometheus error neither extends nor resets
        (2, "PBPBB", 2, Action.ROLLBACK),
        (1, "B", 1, Action.ROLLBACK),  # K = 1: the first breach
        (3, "BBPBB", 2, Action.HOLD),
        (3, "BBB", 3, Action.ROLLBACK),
        (2, "IIIIIIII", 0, Action.HOLD),  # 7 ms forever: hold, never roll back
    ],
)
def test_consecutive_breaches(k, letters, streak, action):
    p = plan(guardrails=GuardrailPolicy(10.0, k, 4.0, 10))
    s = started(p)
    d = None
    for i, letter in enumerate(letters, start=1):
        d = decide(p, s, Observations(GUARD[letter](), good()), 10.0 * i)
        s = d.state
    assert d is not None
    assert (d.state.consecutive_breaches, d.action) == (streak, action)


def test_rollback_reason_and_traffic():
    p = plan()
    s = started(p)
    s = decide(p, s, Observations(GUARD["B"](), good()), 10.0).state
    d = decide(p, s, Observations(GUARD["B"](), good()), 20.0)
    assert d.action is Action.ROLLBACK
    assert d.reason == "rolled back: candidate P95 12.4 ms > 10 ms for 2 consecutive checks"
    assert (d.state.phase, d.state.candidate_weight, d.state.shadow) == (
        Phase.ROLLED_BACK, 0, False
    )
    assert d.guardrail is not None and d.guardrail.verdict is Verdict.BREACH
    assert d.changes_traffic


def test_single_breach_holds_with_streak_in_reason():
    p = plan()
    d = decide(p, started(p), Observations(GUARD["B"](), good()), 10.0)
    assert d.action is Action.HOLD
    assert "guardrail breach 1/2: candidate P95 12.4 ms > 10 ms" in d.reason


# --- quality --------------------------------------------------------------------------------


def test_quality_breach_rolls_back_at_once():
    p = plan()
    s = started(p)
    d = tick(p, s, 100.0, quality=window({"hit5_proxy": 0.52}, {}))
    assert d.action is Action.ROLLBACK
    assert d.reason == ("rolled back: candidate Hit@5 proxy 52% over 2000 feedback events < 55% "
                        "(quality, last 10m)")


def test_lane_failure_rolls_back_even_when_overall_passes():
    p = plan()
    q = window({"lanes": {"4": _lane(0.0)}}, {"lanes": {"4": _lane(0.6)}})
    d = tick(p, started(p), 100.0, quality=q)
    assert d.action is Action.ROLLBACK
    assert "candidate lane 4 fails completely: Hit@5 proxy 0% over 500 feedback events" in d.reason


def _lane(hit5):
    from lvm_operator.decision import LaneMetrics

    return LaneMetrics(requests=2500.0, feedback=500.0, hit5_proxy=hit5)


def test_lane_regression_while_overall_passes_blocks_advance():
    # Overall 66% passes; lane 7 is (0.6 - 0.45) / 0.6 = 25% below the champion's lane 7.
    p = plan()
    q = window({"lanes": {"7": _lane(0.45)}}, {"lanes": {"7": _lane(0.6)}})
    decisions = run_until(p, started(p), 0.0, 1500.0, quality=q)
    assert all(d.action is Action.HOLD for _, d in decisions)
    last = decisions[-1][1]
    assert last.state.current_step == 0 and last.state.last_quality_verdict is Verdict.INCONCLUSIVE
    assert ("quality inconclusive: candidate lane 7 Hit@5 proxy 45% is 25% below champion's 60% "
            "(max 20%)") in last.reason


def test_between_thresholds_holds_at_dwell_end():
    p = plan()
    decisions = run_until(p, started(p), 0.0, 1200.0, guard=GUARD["I"])
    assert all(d.action is Action.HOLD for _, d in decisions)
    assert decisions[-1][1].reason.endswith(
        "dwell done; waiting for passing checks; guardrails inconclusive: candidate P95 7 ms: "
        "not < 5 ms (rollback > 10 ms); quality pass"
    )


# --- no data and errors -----------------------------------------------------------------------


def test_no_data_holds_then_raises_condition_once_then_clears():
    p = plan()  # max hold 600 s, on_no_data = hold
    s = started(p)
    seen = {}
    for t, d in run_until(p, s, 0.0, 1000.0, quality=THIN):
        seen[t] = d
        s = d.state
    # Quality noData from its first check at 100 s; the deadline is 100 + 600 = 700 s.
    assert seen[100.0].state.no_data_since == 100.0
    assert seen[690.0].action is Action.HOLD
    d700 = seen[700.0]
    assert d700.action is Action.NO_DATA_TIMEOUT
    assert d700.reason == (
        "holding at step 1/4 (candidate 10%, shadow): no usable analysis for 10m (max hold 10m): "
        "quality: not enough evidence: candidate has 10 feedback events in the last 10m "
        "(need >= 1000)"
    )
    (cond,) = d700.conditions
    assert (cond.type, cond.status, cond.reason) == (NO_DATA_CONDITION, True, "NoDataTimeout")
    assert seen[710.0].action is Action.HOLD and seen[710.0].conditions == ()
    # Dwell over at 1000 s, but noData never counts as a pass.
    assert seen[1000.0].action is Action.HOLD and seen[1000.0].state.current_step == 0
    # Evidence arrives at the next quality check (1100 s): condition cleared.
    d = tick(p, s, 1100.0)
    assert d.state.no_data_since is None and not d.state.no_data_raised
    (cleared,) = d.conditions
    assert (cleared.type, cleared.status, cleared.reason) == (NO_DATA_CONDITION, False,
                                                              "DataResumed")
    assert d.action is Action.ADVANCE  # fresh passing checks in this step, dwell over


def test_no_data_rolls_back_when_configured():
    p = plan(on_no_data=NoDataAction.ROLLBACK)
    decisions = dict(run_until(p, started(p), 0.0, 1000.0, quality=THIN))
    assert decisions[690.0].action is Action.HOLD
    assert decisions[700.0].action is Action.ROLLBACK
    assert decisions[700.0].reason.startswith(
        "rolled back: no usable analysis for 10m (max hold 10m): quality: not enough evidence"
    )


def test_no_max_hold_never_raises():
    p = plan(max_hold_s=None)
    decisions = run_until(p, started(p), 0.0, 3000.0, quality=THIN)
    assert {d.action for _, d in decisions} == {Action.HOLD}


# --- inconclusive past its limit (issue 15 #10) -----------------------------------------------


def test_inconclusive_after_the_dwell_pauses_for_a_person_then_resumes():
    """Guardrails inconclusive (P95 7 ms: not < 5 ms, not > 10 ms) all along; dwell ends at
    1000 s, the limit is 300 s: first inconclusive hold after the dwell at 1000 s, so the
    pause comes at 1000 + 300 = 1300 s, saying which check and by how much."""
    p = plan(max_inconclusive_s=300.0)
    s = started(p)
    seen = {}
    for t, d in run_until(p, s, 0.0, 1300.0, guard=GUARD["I"]):
        seen[t] = d
        s = d.state
    assert seen[990.0].state.inconclusive_since is None  # during the dwell: a normal hold
    assert seen[1000.0].action is Action.HOLD and seen[1000.0].state.inconclusive_since == 1000.0
    assert seen[1290.0].action is Action.HOLD
    d = seen[1300.0]
    assert d.action is Action.PAUSE
    assert d.state.phase is Phase.PAUSED and d.state.paused_at == 1300.0
    assert d.reason.startswith("paused at step 1/4 (candidate 10%, shadow) for a person: "
                               "inconclusive for 5m after the step's dwell (limit 5m): "
                               "guardrails: "), d.reason
    assert "P95 7 ms" in d.reason and "kubectl lvm resume" in d.reason, d.reason
    # the operator records the pause (plan.paused); guardrails stay armed while paused
    paused = replace(p, paused=True)
    b = decide(paused, d.state, Observations(GUARD["B"](), good()), 1310.0)
    b = decide(paused, b.state, Observations(GUARD["B"](), good()), 1320.0)
    assert b.action is Action.ROLLBACK
    # resumed instead: a full limit again before the next pause
    r = decide(p, d.state, Observations(GUARD["I"](), good()), 1400.0)
    assert r.action is Action.HOLD and r.state.phase is Phase.PROGRESSING
    assert r.state.inconclusive_since == 1400.0
    assert decide(p, r.state, Observations(GUARD["I"](), good()), 1690.0).action is Action.HOLD


@pytest.mark.parametrize(
    ("guard", "limit", "action", "expected", "why"),
    [
        ("I", 300.0, InconclusiveAction.ROLLBACK, Action.ROLLBACK,
         "rollback: not proven good within the limit"),
        ("I", None, InconclusiveAction.PAUSE, Action.HOLD, "no limit: hold forever"),
        ("N", 300.0, InconclusiveAction.PAUSE, Action.NO_DATA_TIMEOUT,
         "no data is not inconclusive: its own clock (noData from 10 s + max hold 600 s)"),
        ("P", 300.0, InconclusiveAction.PAUSE, Action.ADVANCE, "passing: advances at 1000 s"),
    ],
)
def test_inconclusive_limit_table(guard, limit, action, expected, why):
    p = plan(max_inconclusive_s=limit, on_inconclusive=action)
    s = started(p)
    last = None
    for _, d in run_until(p, s, 0.0, 1300.0, guard=GUARD[guard]):
        last = d
        if d.action is not Action.HOLD:
            break
    assert last is not None and last.action is expected, why


def test_prometheus_error_holds_and_keeps_the_streak():
    p = plan()
    s = decide(p, started(p), Observations(GUARD["B"](), good()), 10.0).state
    d = decide(p, s, Observations(GUARD["E"](), good()), 20.0)
    assert d.action is Action.HOLD
    assert d.state.last_guardrail_verdict is Verdict.ERROR
    assert d.state.consecutive_breaches == 1
    assert d.state.no_data_since == 20.0
    assert "guardrails error: Prometheus error: Prometheus at http://p:9090 is unreachable" in (
        d.reason
    )


def test_error_at_dwell_end_never_advances():
    p = plan()
    decisions = run_until(p, started(p), 0.0, 1300.0, guard=GUARD["E"])
    assert Action.ADVANCE not in {d.action for _, d in decisions}


# --- pause ------------------------------------------------------------------------------------


def test_pause_freezes_dwell_and_resume_shifts_it():
    p, paused = plan(), plan(paused=True)
    s = started(p)
    s = run_until(p, s, 0.0, 500.0)[-1][1].state
    d = tick(paused, s, 510.0)
    assert d.action is Action.HOLD and d.state.phase is Phase.PAUSED
    assert d.reason.startswith("paused: dwell clock stopped at step 1/4 (candidate 10%, shadow) "
                               "with 8m 10s of dwell left")  # 1000 - 510 s
    s = d.state
    for t, d in run_until(paused, s, 510.0, 2500.0):  # long past the step's end: no advance
        assert d.action is Action.HOLD, t
        s = d.state
    d = tick(p, s, 2510.0)  # resumed after 2000 s paused: the step now ends at 3000 s
    assert d.reason.startswith("resumed after 33m 20s paused; holding at step 1/4")
    assert d.state.step_started_at == 2000.0 and d.state.phase is Phase.PROGRESSING
    actions = dict(run_until(p, d.state, 2510.0, 3000.0))
    assert actions[2990.0].action is Action.HOLD
    assert actions[3000.0].action is Action.ADVANCE


def test_rollback_stays_armed_while_paused():
    p = plan(paused=True)
    s = started(plan())
    s = decide(p, s, Observations(GUARD["B"](), good()), 10.0).state
    d = decide(p, s, Observations(GUARD["B"](), good()), 20.0)
    assert d.action is Action.ROLLBACK


def test_paused_before_start_sends_no_traffic():
    d = decide(plan(paused=True), RolloutState(), Observations(), 0.0)
    assert d.action is Action.HOLD
    assert (d.state.phase, d.state.current_step, d.state.candidate_weight) == (
        Phase.PAUSED, None, 0
    )
    assert checks_due(plan(paused=True), d.state, 100.0) == frozenset()
    d = decide(plan(), d.state, Observations(), 100.0)
    assert d.action is Action.ADVANCE and d.state.candidate_weight == 10


def test_no_data_deadline_does_not_run_while_paused():
    p, paused = plan(), plan(paused=True)
    s = run_until(p, started(p), 0.0, 400.0, quality=THIN)[-1][1].state  # noData since 100 s
    s = tick(paused, s, 400.0, quality=THIN).state  # 300 s of noData before the pause
    for _, d in run_until(paused, s, 400.0, 2000.0, quality=THIN):
        assert d.action is Action.HOLD
        s = d.state
    d = tick(p, s, 2010.0, quality=THIN)
    # Resumed: only the 300 s before the pause count, so the deadline is 2010 + 300 = 2310 s.
    assert d.state.no_data_since == 2010.0 - 300.0
    later = dict(run_until(p, d.state, 2010.0, 2310.0, quality=THIN))
    assert later[2300.0].action is Action.HOLD
    assert later[2310.0].action is Action.NO_DATA_TIMEOUT


# --- spec change --------------------------------------------------------------------------------


def test_spec_change_mid_step_restarts_at_step_zero():
    p = plan()
    s = run_until(p, started(p), 0.0, 1500.0)[-1][1].state
    s = decide(p, s, Observations(GUARD["B"](), good()), 1510.0).state
    assert (s.current_step, s.consecutive_breaches) == (1, 1)
    p2 = plan(fingerprint="fp-2")
    assert checks_due(p2, s, 1520.0) == frozenset()
    d = decide(p2, s, Observations(), 1520.0)
    assert d.action is Action.RESTART
    assert d.reason == (
        "spec changed (fp-1 -> fp-2) at step 2/4 (candidate 20%): restarted at step 1/4: "
        f"candidate {CANDIDATE} at 10% (shadow) for 16m 40s"
    )
    s2 = d.state
    assert (s2.fingerprint, s2.current_step, s2.candidate_weight, s2.step_started_at) == (
        "fp-2", 0, 10, 1520.0
    )
    assert (s2.consecutive_breaches, s2.last_guardrail_verdict, s2.last_quality_verdict) == (
        0, None, None
    )


def test_spec_change_while_paused_returns_to_no_traffic():
    s = started(plan())
    d = decide(plan(fingerprint="fp-2", paused=True), s, Observations(), 100.0)
    assert d.action is Action.RESTART
    assert (d.state.phase, d.state.current_step, d.state.candidate_weight) == (
        Phase.PAUSED, None, 0
    )


def test_new_candidate_after_rollback_starts_over():
    s = replace(started(plan()), phase=Phase.ROLLED_BACK, candidate_weight=0)
    assert decide(plan(), s, Observations(), 5.0).action is Action.HOLD
    d = decide(plan(fingerprint="fp-2"), s, Observations(), 5.0)
    assert d.action is Action.RESTART and d.state.current_step == 0


@pytest.mark.parametrize("phase", [Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED])
def test_finished_phases_hold(phase):
    s = replace(started(plan()), phase=phase)
    d = decide(plan(), s, Observations(), 99999.0)
    assert d.action is Action.HOLD and d.state == s
    assert d.reason == f"rollout finished ({phase.value}); nothing to decide"
    assert checks_due(plan(), s, 99999.0) == frozenset()
    assert next_decision_in_s(plan(), s, 99999.0) is None


# --- restart resumes exactly ------------------------------------------------------------------


def test_same_state_in_same_decision_out_after_a_round_trip():
    p = plan()
    decisions = run_until(p, started(p), 0.0, 1590.0, guard=GUARD["I"])
    state = decisions[-1][1].state
    stored = json.loads(json.dumps(state.to_dict()))  # what the status would hold
    restored = RolloutState.from_dict(stored)
    assert restored == state
    obs = Observations(GUARD["B"](), window({"hit5_proxy": 0.58}, {}))
    assert decide(p, restored, obs, 1600.0) == decide(p, state, obs, 1600.0)


def test_operator_down_across_the_step_end_resumes_from_status():
    # Last decision at 900 s (checks passing); the operator comes back at 1350 s. The step ended
    # at 1000 s by the timers in status, and the next checks run immediately.
    p = plan()
    s = run_until(p, started(p), 0.0, 900.0)[-1][1].state
    assert checks_due(p, s, 1350.0) == {Check.GUARDRAIL, Check.QUALITY}
    d = tick(p, s, 1350.0)
    assert d.action is Action.ADVANCE and d.state.step_started_at == 1350.0


def test_checks_not_due_are_ignored():
    p = plan()
    s = started(p)
    d = decide(p, s, Observations(GUARD["B"](), window({"hit5_proxy": 0.1}, {})), 5.0)
    assert d.action is Action.HOLD and d.guardrail is None and d.quality is None
    assert d.state.consecutive_breaches == 0


def test_due_check_without_observation_is_a_caller_error():
    p = plan()
    with pytest.raises(ValueError, match=r"the guardrail check is due at 10\.0"):
        decide(p, started(p), Observations(quality=good()), 10.0)


def test_checks_due_and_next_decision():
    p = plan()
    s = started(p)
    assert checks_due(p, s, 5.0) == frozenset()
    assert checks_due(p, s, 10.0) == {Check.GUARDRAIL}
    assert checks_due(p, s, 100.0) == {Check.GUARDRAIL, Check.QUALITY}
    assert next_decision_in_s(p, s, 5.0) == 5.0
    assert next_decision_in_s(p, RolloutState(), 0.0) == 0.0


@pytest.mark.parametrize("changes, expected, why", [
    # now 1,505; guardrails every 10 s, the last at 1,500: the next check at 1,510 (5 s)
    ({}, 5.0, "the step (1,000 s from 0) ended 505 s ago: the next check, not now"),
    ({"no_data_since": 0.0, "no_data_raised": True}, 5.0,
     "the no-data deadline (600 s) passed long ago and was raised: the next check"),
    ({"no_data_since": 907.0}, 2.0, "the no-data deadline at 1,507: 2 s"),
    ({"step_started_at": 508.0}, 3.0, "the step ends at 1,508: 3 s"),
])
def test_a_past_deadline_never_makes_the_next_decision_now(changes, expected, why):
    """A deadline already past was decided at ``now``; waking at once again would spin (at
    1,000 rollouts the spinning ones starved the others: issue 22)."""
    p = plan()
    s = replace(started(p), last_guardrail_at=1500.0, guardrail_since=1500.0,
                last_quality_at=1450.0, **changes)
    assert next_decision_in_s(p, s, 1505.0) == pytest.approx(expected), why


# --- plan validation and state serialisation ----------------------------------------------------


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"steps": (Step(10, 1.0), Step(10, 1.0))},
         r"steps\[1\].weight=10 is invalid: must be in \(10, 100\]"),
        ({"steps": (Step(0, 1.0),)}, r"steps\[0\].weight=0 is invalid"),
        ({"steps": (Step(101, 1.0),)}, r"steps\[0\].weight=101 is invalid"),
        ({"steps": ()}, "steps=.* must be at least one step"),
        ({"candidate": "phase1-baseline"}, "candidate='phase1-baseline' is invalid"),
        ({"rollback": replace(plan().rollback, p95_latency_seconds=0.004)},
         r"rollback.p95_latency_seconds=0.004 is invalid: must be >= "
         r"success.p95_latency_seconds=0.005"),
        ({"rollback": replace(plan().rollback, hit5_proxy_min=0.7)},
         r"rollback.hit5_proxy_min=0.7 is invalid: must be <= success.hit5_proxy_min=0.6"),
    ],
)
def test_plan_rejects_invalid_input_loudly(kw, message):
    with pytest.raises(ValueError, match=message):
        plan(**kw)


def test_state_from_dict_rejects_unknown_fields():
    with pytest.raises(ValueError, match=r"unknown rollout state fields \['weight'\]"):
        RolloutState.from_dict({"weight": 10})


def test_spec_change_clears_a_raised_no_data_condition():
    s = replace(started(plan()), no_data_since=0.0, no_data_raised=True)
    d = decide(plan(fingerprint="fp-2"), s, Observations(), 700.0)
    assert d.action is Action.RESTART and not d.state.no_data_raised
    (cond,) = d.conditions
    assert (cond.type, cond.status, cond.reason) == (NO_DATA_CONDITION, False, "SpecChanged")


# --- the pre-rollout gate ---------------------------------------------------------------------

# (gate verdict or None, expected action, phase, weight, reason fragment)
GATE_ROWS = [
    (None, Action.HOLD, Phase.PENDING, 0, "evaluating candidate phase2-500ctx on the eval set"),
    ("pending", Action.HOLD, Phase.PENDING, 0, "evaluating phase2-500ctx and phase1"),
    ("blocked", Action.HOLD, Phase.PENDING, 0,
     "pre-rollout gate blocked phase2-500ctx: candidate Hit@5 0.410 < minimum 0.660"),
    ("error", Action.HOLD, Phase.PENDING, 0, "pre-rollout evaluation failed: eval set file"),
    ("pass", Action.ADVANCE, Phase.PROGRESSING, 10, "started step 1/4"),
]
GATE_REASONS = {"pending": "evaluating phase2-500ctx and phase1-baseline on the eval set",
                "blocked": "candidate Hit@5 0.410 < minimum 0.660 on the eval set",
                "error": "eval set file not found: /x/eval_set.npz", "pass": "Hit@5 0.700"}


@pytest.mark.parametrize(("verdict", "action", "phase", "weight", "why"), GATE_ROWS)
def test_gate_decides_whether_the_rollout_starts(verdict, action, phase, weight, why):
    from lvm_operator.decision import GateObservation, GateVerdict

    gate = None if verdict is None else GateObservation(GateVerdict(verdict),
                                                        GATE_REASONS[verdict])
    d = decide(plan(gate_required=True), RolloutState(), Observations(gate=gate), 0.0)
    assert (d.action, d.state.phase, d.state.candidate_weight) == (action, phase, weight)
    assert why in d.reason
    assert (d.state.current_step is None) == (verdict != "pass")


def test_gate_is_ignored_when_not_required_and_after_the_start():
    from lvm_operator.decision import GateObservation, GateVerdict

    blocked = GateObservation(GateVerdict.BLOCKED, "candidate Hit@5 0.410 < minimum 0.660")
    d = decide(plan(), RolloutState(), Observations(gate=blocked), 0.0)
    assert d.action is Action.ADVANCE  # no gate in the plan: starts
    # Once started, a later gate verdict does not stop it (guardrails and quality judge now).
    d2 = decide(plan(gate_required=True), d.state, Observations(good(), good(), blocked), 10.0)
    assert d2.state.current_step == 0 and d2.state.candidate_weight == 10


def test_waiting_for_the_gate_does_not_spin():
    p = plan(gate_required=True)
    d = decide(p, RolloutState(), Observations(), 0.0)
    # 10 s: the guardrail interval (the operator also wakes when an evaluation finishes).
    assert next_decision_in_s(p, d.state, 0.0) == 10.0
    assert next_decision_in_s(plan(), RolloutState(), 0.0) == 0.0


def test_a_new_candidate_waits_for_its_gate_with_no_traffic():
    from lvm_operator.decision import GateObservation, GateVerdict

    state = started()
    pending = GateObservation(GateVerdict.PENDING, "evaluating v3 and phase1 on the eval set")
    d = decide(plan(gate_required=True, fingerprint="fp-2"), state, Observations(gate=pending),
               50.0)
    assert d.action is Action.RESTART and d.state.candidate_weight == 0
    assert d.reason.startswith("spec changed (fp-1 -> fp-2) at step 1/4")
    assert "not started: evaluating v3" in d.reason
