"""Which evidence a check reads: disjoint guardrail windows, windows that grow until they hold
enough requests, evidence from this step and this attempt only, and a clock that steps back.

Plan (decision_fixtures): guardrails every 10 s, shortest window 4 s, at least 10 candidate
requests; quality every 100 s over 600 s.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
from decision_fixtures import good, plan, window

from lvm_operator.decision import (
    Action,
    Check,
    Observations,
    Phase,
    RolloutState,
    checks_due,
    decide,
    guardrail_window_s,
    next_decision_in_s,
    quality_window_s,
)

BREACH = {"p95_latency_seconds": 0.0124}


def started(t: float = 0.0) -> RolloutState:
    return decide(plan(), RolloutState(fingerprint="fp-1"), Observations(), t).state


def guard(state: RolloutState, t: float, cand: dict) -> RolloutState:
    return decide(plan(), state, Observations(window(cand, {}), good()), t).state


@pytest.mark.parametrize(
    ("verdicts", "t", "expected_window", "why"),
    [
        ((), 10.0, 10.0, "first check of the step: since the step started at 0"),
        (("pass",), 20.0, 10.0, "after a judged check at 10: since 10, never back to 0"),
        (("breach",), 20.0, 10.0, "a breach is judged too: the next breach is new evidence"),
        (("noData",), 20.0, 20.0, "too few requests at 10: the window keeps its start (0)"),
        (("noData", "noData"), 30.0, 30.0, "still accumulating from 0"),
        (("noData", "pass"), 30.0, 10.0, "judged at 20 on 20 s of evidence; now since 20"),
    ],
)
def test_guardrail_windows_never_overlap(verdicts, t, expected_window, why):
    cands = {"pass": {}, "breach": BREACH, "noData": {"requests": 3.0}}
    s = started()
    for i, v in enumerate(verdicts, start=1):
        s = guard(s, 10.0 * i, cands[v])
        assert s.last_guardrail_verdict.value == v
    assert guardrail_window_s(plan(), s, t) == expected_window, why


def test_one_blip_is_one_breach():
    # Issue #15: with windows twice the interval, a 10 s blip breached two consecutive checks and
    # rolled back with K=2. Now the blip is in one window only; the next window is clean.
    s = guard(started(), 10.0, BREACH)
    assert s.consecutive_breaches == 1
    d = decide(plan(), s, Observations(window({}, {}), good()), 20.0)
    assert d.action is Action.HOLD and d.state.consecutive_breaches == 0


def test_a_step_change_starts_a_new_window():
    s = guard(started(), 10.0, {"requests": 3.0})  # accumulating since 0
    # the next step began at 15 (entering a step sets both clocks, as _enter_step does)
    s = replace(s, current_step=1, step_started_at=15.0, guardrail_since=15.0)
    assert guardrail_window_s(plan(), s, 25.0) == 10.0  # since 15, never pooled with step 1


def test_a_dwell_that_waits_for_its_traffic_does_not_stop_the_guardrails():
    # The step's config could not be applied yet: its dwell restarts (at 22) while the
    # guardrails keep judging what is live from the step's entry (15): 25 - 15 = 10 s.
    s = guard(started(), 10.0, {"requests": 3.0})
    s = replace(s, current_step=1, step_started_at=22.0, guardrail_since=15.0)
    assert guardrail_window_s(plan(), s, 25.0) == 10.0


def test_shortest_window_holds_the_check_back():
    s = started()
    assert Check.GUARDRAIL not in checks_due(plan(), s, 3.9)  # interval not reached either
    s = guard(s, 10.0, {})
    # interval reached at 20; the window since 10 is 10 s >= 4 s
    assert Check.GUARDRAIL in checks_due(plan(), s, 20.0)


def test_clock_stepping_back_keeps_the_checks_due():
    # Issue #15: after the wall clock stepped back an hour no check was due for an hour.
    s = guard(started(10_000.0), 10_010.0, {})
    back = 10_010.0 - 3600.0
    assert Check.GUARDRAIL in checks_due(plan(), s, back)
    assert guardrail_window_s(plan(), s, back) == 4.0  # the shortest window, not negative
    d = decide(plan(), s, Observations(window(BREACH, {}), good()), back)
    assert d.state.consecutive_breaches == 1 and d.state.last_guardrail_at == back


@pytest.mark.parametrize(
    ("attempt_start", "now", "expected", "why"),
    [
        (None, 1000.0, 600.0, "no attempt recorded (older status): the configured window"),
        (0.0, 1000.0, 600.0, "attempt older than the window: the configured window"),
        (800.0, 1000.0, 200.0, "retried at 800: only this attempt's 200 s"),
        (999.5, 1000.0, 1.0, "at least one second"),
    ],
)
def test_quality_reads_only_this_attempt(attempt_start, now, expected, why):
    s = RolloutState(phase=Phase.PROGRESSING, fingerprint="fp-1", current_step=0,
                     step_started_at=attempt_start, attempt_started_at=attempt_start)
    assert quality_window_s(plan(), s, now) == expected, why


def test_a_new_attempt_records_its_start():
    s = started(500.0)
    assert s.attempt_started_at == 500.0 and s.guardrail_since == 500.0
    assert s.last_guardrail_verdict is None


def test_next_decision_waits_for_the_shortest_window():
    # Interval 2 s but windows of at least 4 s: woken at 2 s the check is not due, so the next
    # decision is at 4 s (not "now", which would spin the operator until then).
    p = plan(guardrails=replace(plan().guardrails, interval_s=2.0))
    s = decide(p, RolloutState(fingerprint="fp-1"), Observations(), 0.0).state
    assert Check.GUARDRAIL not in checks_due(p, s, 2.0)
    assert next_decision_in_s(p, s, 2.0) == 2.0


def test_quality_evidence_starts_after_a_failed_check():
    # Prometheus was down at 500 (quality error); at 520 the quality window is the 20 s since,
    # not the 600 s configured: a window across the outage read 54% for a 70% candidate.
    s = RolloutState(phase=Phase.PROGRESSING, fingerprint="fp-1", current_step=0,
                     step_started_at=0.0, attempt_started_at=0.0, last_quality_at=400.0,
                     last_guardrail_at=490.0)
    d = decide(plan(), s, Observations(window({}, {}), window(error="unreachable")), 500.0)
    assert d.state.last_quality_verdict.value == "error" and d.state.quality_since == 500.0
    assert quality_window_s(plan(), d.state, 520.0) == 20.0
    # a judged check afterwards keeps the start: evidence only grows from there
    d = decide(plan(), d.state, Observations(window({}, {}), good()), 600.0)
    assert d.state.quality_since == 500.0 and quality_window_s(plan(), d.state, 700.0) == 200.0
