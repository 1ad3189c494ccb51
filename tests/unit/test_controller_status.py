"""Status computation: the diff, condition transition times, bounded history, Events."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from decision_fixtures import CANDIDATE, CHAMP, CHAMPION, GOOD, plan

from lvm_operator.api import HistoryEntry, LVMRolloutStatus, Outcome, Phase, Serving, Verdict
from lvm_operator.api.status import MAX_HISTORY
from lvm_operator.controller.status import TickResult, compute, merge_patch
from lvm_operator.decision import (
    Observations,
    RolloutState,
    VersionMetrics,
    WindowObservation,
    decide,
)

T0 = 1_700_000_000.0
GEN = 3


def started(now=T0):
    p = plan()
    d = decide(p, RolloutState(), Observations(), now)
    return p, d


def tick(p, d, now, **kw):
    return TickResult(now=now, generation=GEN, state=d.state, plan=p, decision=d,
                      serving=Serving(champion=CHAMPION, candidate=CANDIDATE), **kw)


def conditions(status):
    return {c.type: c for c in status.conditions}


def test_first_tick_writes_the_whole_status_and_a_started_event():
    p, d = started()
    up = compute(LVMRolloutStatus(), tick(p, d, T0))
    s = up.status
    assert s.phase is Phase.PROGRESSING and s.current_step == 0 and s.candidate_weight == 10
    assert s.observed_generation == GEN
    assert s.step_started_at == datetime.fromtimestamp(T0, UTC)
    assert s.next_step_at == datetime.fromtimestamp(T0 + 1000.0, UTC)  # step 1 dwell 1000 s
    assert s.decision_state.current_step == 0 and s.decision_state.fingerprint == "fp-1"
    assert up.patch is not None and up.patch["phase"] == "Progressing"
    assert [(e.type, e.reason) for e in up.events] == [("Normal", "Started")]
    assert "10%" in up.events[0].message
    c = conditions(s)
    assert (c["Applied"].status, c["Progressing"].status, c["Degraded"].status,
            c["NoData"].status) == ("True", "True", "False", "False")
    # kstatus: at step 1 the desired state is not reached yet, the rollout moves by itself
    assert (c["Ready"].status, c["Reconciling"].status, c["Stalled"].status,
            c["Promoted"].status, c["RolledBack"].status) == ("False", "True", "False", "False",
                                                              "False")
    assert all(x.observed_generation == GEN for x in s.conditions)


def test_unchanged_tick_gives_no_patch_and_no_events():
    p, d = started()
    first = compute(LVMRolloutStatus(), tick(p, d, T0)).status
    hold = decide(p, d.state, Observations(), T0 + 1)  # nothing due: a plain hold
    again = compute(first, TickResult(now=T0 + 1, generation=GEN, state=hold.state, plan=p,
                                      decision=None, serving=first.serving))
    assert again.patch is None and again.events == []


def test_condition_transition_time_changes_only_with_its_status():
    p, d = started()
    s1 = compute(LVMRolloutStatus(), tick(p, d, T0)).status
    d = decide(p, d.state, Observations(), T0 + 1)  # later ticks: plain holds
    s2 = compute(s1, tick(p, d, T0 + 5, message="other words")).status
    assert conditions(s2)["Applied"].last_transition_time == datetime.fromtimestamp(T0, UTC)
    up3 = compute(s2, tick(p, d, T0 + 7, apply_error="BackendUnavailable: refused"))
    ready = conditions(up3.status)["Applied"]
    assert (ready.status, ready.reason) == ("False", "ServeApplyFailed")
    assert ready.last_transition_time == datetime.fromtimestamp(T0 + 7, UTC)
    assert conditions(up3.status)["Degraded"].status == "True"
    assert [(e.type, e.reason) for e in up3.events] == [("Warning", "ServeApplyFailed")]
    up4 = compute(up3.status, tick(p, d, T0 + 9, apply_error="BackendUnavailable: refused"))
    assert up4.events == []  # still failing: no new Event
    assert conditions(up4.status)["Applied"].last_transition_time == ready.last_transition_time
    up5 = compute(up4.status, tick(p, d, T0 + 11))
    assert [(e.type, e.reason) for e in up5.events] == [("Normal", "ServeApplyRecovered")]


def test_history_is_bounded_newest_last():
    def entry(i):
        return HistoryEntry(version=f"v{i}", checkpoint=f"file:///tmp/v{i}", sha256="a" * 64,
                            outcome=Outcome.ROLLED_BACK, time=datetime.fromtimestamp(T0, UTC))

    old = LVMRolloutStatus(history=[entry(i) for i in range(MAX_HISTORY)])
    p, d = started()
    s = compute(old, tick(p, d, T0, history_add=[entry(100), entry(101)])).status
    assert len(s.history) == MAX_HISTORY
    assert [h.version for h in s.history[-2:]] == ["v100", "v101"]
    assert s.history[0].version == "v2"  # the two oldest dropped


def _breaching(p, state, now):
    bad = VersionMetrics(**{**GOOD, "p95_latency_seconds": 0.0124})
    obs = WindowObservation(30.0, {CANDIDATE: bad, CHAMPION: VersionMetrics(**CHAMP)})
    return decide(p, state, Observations(guardrail=obs, quality=obs), now)


def test_breach_then_rollback_events_carry_the_numbers():
    p, d = started()
    s = compute(LVMRolloutStatus(), tick(p, d, T0)).status
    d1 = _breaching(p, d.state, T0 + 10)  # first breach of 2
    up1 = compute(s, tick(p, d1, T0 + 10))
    assert [(e.type, e.reason) for e in up1.events] == [("Warning", "GuardrailBreach")]
    assert "1/2" in up1.events[0].message and "12.4 ms" in up1.events[0].message
    la = up1.status.last_analysis
    assert la.verdict is Verdict.BREACH and "12.4 ms" in la.reason
    p95 = next(m for m in la.measurements
               if m.metric == "p95LatencyMs" and m.version == CANDIDATE and m.lane is None)
    assert p95.value == pytest.approx(12.4) and p95.threshold == pytest.approx(10.0)
    assert p95.verdict is Verdict.BREACH and p95.samples == 10_000
    d2 = _breaching(p, d1.state, T0 + 20)
    up2 = compute(up1.status, tick(p, d2, T0 + 20))
    assert up2.status.phase is Phase.ROLLED_BACK and up2.status.candidate_weight == 0
    assert [(e.type, e.reason) for e in up2.events] == [("Warning", "RolledBack")]
    assert "12.4 ms" in up2.events[0].message
    c = conditions(up2.status)
    assert (c["Progressing"].status, c["Progressing"].reason) == ("False", "RolledBack")
    assert (c["Degraded"].status, c["Degraded"].reason) == ("True", "RolledBack")


def test_invalid_spec_is_failed_with_one_event():
    msg = "invalid LVMRollout ml/x:\n  spec.steps[0].weight: must be > 0"
    up = compute(LVMRolloutStatus(), TickResult(now=T0, generation=GEN, invalid=msg))
    assert up.status.phase is Phase.FAILED
    assert "spec.steps[0].weight" in up.status.message
    assert [(e.type, e.reason) for e in up.events] == [("Warning", "InvalidSpec")]
    again = compute(up.status, TickResult(now=T0 + 5, generation=GEN, invalid=msg))
    assert again.patch is None and again.events == []


@pytest.mark.parametrize(("old", "new", "patch"), [
    ({"a": 1}, {"a": 1}, None),
    ({"a": 1}, {"a": 2}, {"a": 2}),
    ({"a": 1, "b": 2}, {"a": 1}, {"b": None}),  # removed fields are nulled
    ({"x": {"y": 1, "z": 2}}, {"x": {"y": 1, "z": 3}}, {"x": {"z": 3}}),
    ({"l": [1, 2]}, {"l": [1]}, {"l": [1]}),  # lists replaced whole
])
def test_merge_patch(old, new, patch):
    assert merge_patch(old, new) == patch


# --- evaluation and lane health: conditions and Events from the diff ---------------------------


def _drift(verdict: str, t: float, reason: str):
    from lvm_operator.api import DriftStatus, EvaluationStatus

    return EvaluationStatus(drift=DriftStatus(version=CHAMPION, verdict=verdict, reason=reason,
                                              time=datetime.fromtimestamp(t, UTC)))


def _lanes(*lanes: int):
    from lvm_operator.api import LaneFlag, LaneHealthStatus

    flags = [LaneFlag(version=CHAMPION, lane=k, source="production", value=0.3, overall=0.7,
                      below_relative=4 / 7) for k in lanes]
    return LaneHealthStatus(verdict="degraded" if lanes else "healthy",
                            reason=f"lanes {list(lanes)}", flagged=flags or None)


@pytest.mark.parametrize(("before", "after", "events", "drifted"), [
    # (drift verdict, time) before -> after: Events, Drifted condition status
    (None, ("ok", 1), [], "False"),
    (("ok", 1), ("drifted", 2), [("Warning", "ModelDrift")], "True"),
    (("drifted", 2), ("drifted", 2), [], "True"),  # same check: said once
    (("drifted", 2), ("drifted", 3), [("Warning", "ModelDrift")], "True"),  # next week's check
    (("drifted", 3), ("ok", 4), [("Normal", "DriftResolved")], "False"),
    (("ok", 1), ("error", 2), [], "False"),
])
def test_drift_events_and_condition(before, after, events, drifted):
    p, d = started()
    old = compute(LVMRolloutStatus(), tick(p, d, T0)).status
    if before is not None:
        old = compute(old, tick(p, d, T0, evaluation=_drift(*before, "r0"))).status
    new = compute(old, tick(p, d, T0 + 1, evaluation=_drift(*after, f"r{after[1]}")))
    got = [(e.type, e.reason) for e in new.events if e.reason in ("ModelDrift",
                                                                  "DriftResolved")]
    assert got == events
    assert conditions(new.status)["Drifted"].status.value == drifted


def _lane_events(update):
    return [(e.type, e.reason) for e in update.events
            if e.reason in ("LaneUnhealthy", "LanesHealthy")]


def test_lane_events_and_condition():
    p, d = started()
    s0 = compute(LVMRolloutStatus(), tick(p, d, T0, lane_health=_lanes())).status
    assert conditions(s0)["LanesDegraded"].status.value == "False"
    u1 = compute(s0, tick(p, d, T0 + 1, lane_health=_lanes(3)))
    assert _lane_events(u1) == [("Warning", "LaneUnhealthy")]
    assert conditions(u1.status)["LanesDegraded"].reason == "LaneBelowOverall"
    u2 = compute(u1.status, tick(p, d, T0 + 2, lane_health=_lanes(3)))
    assert _lane_events(u2) == []  # nothing new: said once
    u3 = compute(u2.status, tick(p, d, T0 + 3, lane_health=_lanes(3, 7)))
    assert _lane_events(u3) == [("Warning", "LaneUnhealthy")]  # a newly flagged lane
    u4 = compute(u3.status, tick(p, d, T0 + 4, lane_health=_lanes()))
    assert _lane_events(u4) == [("Normal", "LanesHealthy")]
    assert conditions(u4.status)["LanesDegraded"].status.value == "False"


def test_a_failed_tick_is_a_condition_and_an_event_without_the_error_text():
    from lvm_operator.api import LVMRolloutStatus
    from lvm_operator.controller.status import tick_failed

    old = LVMRolloutStatus(phase="Progressing")
    update = tick_failed(old, "OverflowError", 1_700_000_000.0, 3)
    (degraded,) = [c for c in update.status.conditions if c.type == "Degraded"]
    assert (degraded.status.value, degraded.reason, degraded.observed_generation) == (
        "True", "TickFailed", 3)
    assert "OverflowError" in degraded.message and "see its log" in degraded.message
    (event,) = update.events
    assert (event.type, event.reason) == ("Warning", "TickFailed")
    assert update.patch == {"conditions": [c.to_k8s() for c in update.status.conditions]}
