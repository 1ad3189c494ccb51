"""Which status changes may wait (issue 22: at 1,000 rollouts, a PATCH per rollout per check is
most of the apiserver's work). Statuses come from the decision core and ``compute``, the code
that writes ``.status``; a numbers-only change waits, anything else does not."""

from __future__ import annotations

from decision_fixtures import CANDIDATE, CHAMP, CHAMPION, GOOD, good, plan, window

from lvm_operator.api import LVMRolloutStatus, Serving
from lvm_operator.controller.heartbeat import heartbeat_only, heartbeat_s, shape
from lvm_operator.controller.status import TickResult, compute
from lvm_operator.decision import Observations, RolloutState, VersionMetrics, decide
from lvm_operator.decision.model import WindowObservation

T0 = 1_700_000_000.0


class Story:
    def __init__(self) -> None:
        self.plan, self.status, self.state = plan(), LVMRolloutStatus(), RolloutState()

    def tick(self, now: float, obs: Observations) -> dict:
        d = decide(self.plan, self.state, obs, now)
        self.state = d.state
        result = TickResult(now=now, generation=3, state=d.state, plan=self.plan, decision=d,
                            serving=Serving(champion=CHAMPION, candidate=CANDIDATE))
        self.status = compute(self.status, result).status
        return self.status.to_k8s()


def no_traffic() -> Observations:
    quiet = WindowObservation(30.0, {CANDIDATE: VersionMetrics(requests=0.0),
                                     CHAMPION: VersionMetrics(**CHAMP)})
    return Observations(guardrail=quiet)


def test_a_holding_rollout_changes_only_numbers_from_check_to_check():
    s = Story()
    s.tick(T0, Observations())
    first = s.tick(T0 + 10, no_traffic())  # the first noData check: a verdict, written
    second = s.tick(T0 + 20, no_traffic())
    third = s.tick(T0 + 30, no_traffic())
    assert first != second != third  # times, windows and counts move...
    assert heartbeat_only(first, second) and heartbeat_only(second, third)  # ...nothing else
    assert (first["decisionState"]["lastGuardrailAt"], third["decisionState"][
        "lastGuardrailAt"]) == (T0 + 10, T0 + 30)


def test_a_verdict_a_breach_or_a_step_is_written_at_once():
    s = Story()
    s.tick(T0, Observations())
    held = s.tick(T0 + 10, no_traffic())
    passing = s.tick(T0 + 20, Observations(guardrail=good(), quality=window({}, {})))
    assert not heartbeat_only(held, passing)  # noData -> pass
    bad = VersionMetrics(**{**GOOD, "p95_latency_seconds": 0.0124})
    breach = s.tick(T0 + 30, Observations(guardrail=WindowObservation(
        30.0, {CANDIDATE: bad, CHAMPION: VersionMetrics(**CHAMP)})))
    assert not heartbeat_only(passing, breach)  # a breach count and a verdict


def test_words_are_news_numbers_are_not():
    base = {"message": "holding at step 1/4: 4m 10s of dwell left", "decisionState": {
        "lastGuardrailReason": "candidate P95 2.1 ms < 5 ms", "currentStep": 0},
        "lastAnalysis": {"verdict": "pass", "time": "2026-12-02T10:00:00Z",
                         "measurements": [{"version": "v2", "metric": "p95LatencyMs",
                                           "value": 2.1, "verdict": "pass"}]}}
    later = {**base, "message": "holding at step 1/4: 3m 40s of dwell left",
             "decisionState": {**base["decisionState"],
                               "lastGuardrailReason": "candidate P95 2.3 ms < 5 ms"},
             "lastAnalysis": {**base["lastAnalysis"], "time": "2026-12-02T10:00:30Z",
                              "measurements": [{**base["lastAnalysis"]["measurements"][0],
                                                "value": 2.3}]}}
    assert heartbeat_only(base, later)
    assert not heartbeat_only(base, {**later, "message": "paused at step 1/4 for a person"})
    assert not heartbeat_only(base, {**later, "decisionState": {
        **later["decisionState"], "currentStep": 1}})
    # lastAnalysis is the latest check's view (guardrails, then quality, ...): a check's
    # verdict is news through decisionState, which keeps each check's own
    other = {**later["lastAnalysis"], "check": "quality", "reason": "quality: noData"}
    assert heartbeat_only(base, {**later, "lastAnalysis": other})
    assert not heartbeat_only(base, {**later, "decisionState": {
        **later["decisionState"], "lastGuardrailVerdict": "breach"}})
    # a version name keeps its digits: phase2-500ctx -> phase2-600ctx is news
    assert shape({"serving": {"candidate": "phase2-500ctx"}}) != shape(
        {"serving": {"candidate": "phase2-600ctx"}})


def test_how_long_numbers_may_wait():
    # five guardrail intervals, at most five minutes
    assert (heartbeat_s(30.0), heartbeat_s(1.0), heartbeat_s(600.0)) == (150.0, 5.0, 300.0)
