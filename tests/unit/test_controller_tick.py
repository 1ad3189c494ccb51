"""The pure tick over plain data: a CR dict in, the status, Serve config and Events out.

Only what cannot be caused cheaply against the real stack lives here: an invalid object that
admission would reject, a failing backend, a spec change mid-rollout, a clock pushed past a
dwell. No apiserver, Prometheus or backend: :class:`Rollout` carries the CR dict from tick to
tick (the status merge patch applied to it, consumed annotations removed), hands each tick the
observations and evaluation answers of the row, and records what the tick asked to apply. The
shell's I/O is in ``tests/integration/test_operator_e2e.py``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from decision_fixtures import CHAMP, GOOD
from merge_patch import merge

from lvm_operator.commands import ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID
from lvm_operator.controller.status import Event
from lvm_operator.controller.tick import (
    ApplyReport,
    Seen,
    TickOutcome,
    plan_tick,
    settle,
    tick,
)
from lvm_operator.decision import Check, Observations, VersionMetrics, WindowObservation
from lvm_operator.evaluation.protocol import Finished, Running
from lvm_serving.contracts.serve_config import AppSpec

RAW = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "local-fast.yaml")
                     .read_text())
CHAMPION, CANDIDATE = "phase1-baseline", "phase2-500ctx"
T0 = 1_700_000_000.0


class Rollout:
    """One LVMRollout as plain data across ticks, and what its ticks asked for.

    ``candidate``: the candidate's metrics in every due check's window (the champion's are
    ``CHAMP``). ``outputs``/``done``: the evaluation answers (a wanted evaluation is running
    from the tick it was first wanted until its version is in ``done``; ``started`` lists each
    start). ``apply_error``: the backend fails every apply with this message.
    """

    def __init__(self, **spec_changes) -> None:
        self.obj = copy.deepcopy(RAW)
        self.obj["metadata"].update(namespace="ml", uid="u-1", generation=1)
        self.obj["spec"].update(spec_changes)
        self.t = T0
        self.candidate = VersionMetrics(**GOOD)
        self.apply_error: str | None = None
        self.applied: list[AppSpec] = []
        self.events: list[Event] = []
        self.status_writes = 0
        self.outputs: dict[str, dict] = {}
        self.done: set[str] = set()
        self.started: list[str] = []
        self._running: dict[str, float] = {}
        self.observed = None  # what the backend reports live (None: cannot tell)

    @property
    def status(self) -> dict:
        return self.obj["status"]

    def reasons(self) -> list[str]:
        return [e.reason for e in self.events]

    def command(self, value: str, cid: str) -> None:
        self.obj["metadata"]["annotations"] = {ANNOTATION_COMMAND: value,
                                               ANNOTATION_COMMAND_ID: cid}

    def window(self) -> WindowObservation:
        return WindowObservation(30.0, {CANDIDATE: self.candidate,
                                        CHAMPION: VersionMetrics(**CHAMP)})

    def answer(self, version: str, key: str) -> Running | Finished:
        if key not in self._running:
            self.started.append(version)
            self._running[key] = self.t
        if version in self.done:
            return Finished(self.outputs[version], self._running.pop(key) + 1.0)
        return Running(self._running[key])

    def tick(self) -> TickOutcome:
        p = plan_tick(copy.deepcopy(self.obj), self.t)
        window = self.window()
        seen = Seen(
            observations=Observations(
                guardrail=window if Check.GUARDRAIL in p.checks else None,
                quality=window if Check.QUALITY in p.checks else None),
            lane=window if p.lane_check is not None else None,
            evaluations=tuple(self.answer(r.version, r.key) for r in p.evaluation_requests),
            serving=self.observed,
        )
        out = tick(p, seen)
        if out.apply is not None:
            out = settle(p, out, ApplyReport(error=self.apply_error))
            if self.apply_error is None:
                self.applied.append(out.apply)
        if out.update.patch is not None:
            self.status_writes += 1
            merge(self.obj.setdefault("status", {}), out.update.patch)
        for annotation in out.remove_annotations:
            self.obj["metadata"].get("annotations", {}).pop(annotation, None)
        self.events += out.events
        return out


def conditions(r: Rollout) -> dict[str, dict]:
    return {c["type"]: c for c in r.status["conditions"]}


def test_invalid_object_is_failed_without_touching_serving():
    r = Rollout(steps=[{"weight": 50, "duration": "1s"}])  # the last step is not 100
    out = r.tick()
    assert r.status["phase"] == "Failed"
    assert "steps" in r.status["message"]
    assert out.apply is None and r.applied == []
    assert r.reasons() == ["InvalidSpec"]
    assert [e.type for e in r.events] == ["Warning"]
    r.tick()
    assert r.reasons() == ["InvalidSpec"]  # once, not every tick


def test_walks_the_steps_applying_only_changed_configs():
    r = Rollout()
    r.tick()
    assert r.status["candidateWeight"] == 25 and len(r.applied) == 1
    for _ in range(5):  # checks every 2 s within the 10 s dwell: same config, not re-sent
        r.t += 2.0
        r.tick()
    assert r.status["candidateWeight"] == 50
    assert [a.router.candidate_weight for a in r.applied] == [25, 50]
    writes = r.status_writes
    r.tick()  # nothing due at the same instant: no write at all
    assert r.status_writes == writes


def test_backend_failure_is_a_condition_and_retried():
    r = Rollout()
    r.apply_error = "ConnectionError: dashboard refused"
    out = r.tick()
    assert out.wait_s <= 2.0
    ready = conditions(r)["Applied"]
    assert (ready["status"], ready["reason"]) == ("False", "ServeApplyFailed")
    assert "dashboard refused" in ready["message"]
    assert sorted(r.reasons()) == ["ServeApplyFailed", "Started"]
    r.apply_error = None
    r.t += 1.0
    r.tick()
    ready = conditions(r)["Applied"]
    assert ready["status"] == "True" and len(r.applied) == 1
    assert "ServeApplyRecovered" in r.reasons()


@pytest.mark.parametrize(("report", "hash_recorded", "ready", "wait_at_most"), [
    # applied and in effect: the hash is recorded, Applied
    (ApplyReport(), True, ("True", "ServeConfigApplied"), 2.0),
    # applied, router config not live yet: the hash stays unrecorded (applied again next tick)
    (ApplyReport(in_effect=False), False, ("True", "ServeConfigApplied"), 2.0),
    # the backend failed: unrecorded, Applied False, retried within min(interval 2 s, 2 s)
    (ApplyReport(error="BackendUnavailable: refused"), False, ("False", "ServeApplyFailed"), 2.0),
])
def test_what_the_apply_did_is_folded_into_the_status(report, hash_recorded, ready,
                                                      wait_at_most):
    r = Rollout()
    p = plan_tick(copy.deepcopy(r.obj), r.t)
    w = r.window()
    out = settle(p, tick(p, Seen(Observations(guardrail=w, quality=w))), report)
    assert out.apply is not None
    assert (out.status.serving.config_hash is not None) == hash_recorded
    ready_condition = {c.type: c for c in out.status.conditions}["Applied"]
    assert (ready_condition.status.value, ready_condition.reason) == ready
    assert out.wait_s <= wait_at_most


def test_the_candidate_gets_traffic_once_it_is_observed_running():
    from lvm_operator.backends import AppStatus, ObservedApp, ObservedVersion

    r = Rollout()
    p = plan_tick(copy.deepcopy(r.obj), r.t)
    assert p.application == p.spec.serve.application
    failed = ObservedApp(p.application, AppStatus.DEPLOY_FAILED, "replica crashed")
    running = ObservedApp(p.application, AppStatus.RUNNING, versions={
        v: ObservedVersion(v, 1, 1, status="RUNNING") for v in (CHAMPION, CANDIDATE)})
    held, live, unknown = (tick(p, Seen(serving=s)) for s in (failed, running, None))
    assert held.observed is failed and unknown.observed is None
    # Running (or unknown: a backend that cannot tell): the step's weight applies at once.
    assert live.apply == unknown.apply and live.apply.router.candidate_weight == 25
    assert live.status.serving.config_hash is not None
    # Not running: both versions deployed, the candidate at 0%, the hash left unrecorded so
    # the next tick looks again, and that tick comes soon.
    assert held.held_back and held.apply.router.candidate is None
    assert held.apply.router.candidate_weight == 0
    assert held.apply.versions == live.apply.versions
    assert held.status.serving.config_hash is None and held.wait_s <= 2.0


def test_spec_change_mid_rollout_restarts_at_step_one():
    r = Rollout()
    r.tick()
    for _ in range(6):
        r.t += 2.0
        r.tick()
    assert r.status["currentStep"] == 1
    r.obj["spec"]["candidate"]["version"] = "phase3"
    r.obj["metadata"]["generation"] = 2
    r.t += 2.0
    r.tick()
    s = r.status
    assert s["currentStep"] == 0 and s["candidateWeight"] == 25
    assert s["observedGeneration"] == 2
    assert "Superseded" in r.reasons()
    assert "spec changed" in s["message"]
    assert s["history"][-1]["version"] == CANDIDATE
    assert s["history"][-1]["outcome"] == "superseded"
    assert r.applied[-1].router.candidate == "phase3"


def test_breaching_candidate_rolls_back_and_records_it():
    r = Rollout()
    r.tick()
    r.candidate = VersionMetrics(**{**GOOD, "error_rate": 0.05})
    for _ in range(2):
        r.t += 2.0
        r.tick()
    s = r.status
    assert s["phase"] == "RolledBack" and s["candidateWeight"] == 0
    assert s["history"][-1]["outcome"] == "rolledBack"
    assert r.applied[-1].router.candidate is None
    assert {v.version: v.replicas for v in r.applied[-1].versions}[CANDIDATE] == 1
    assert r.reasons().count("GuardrailBreach") == 1 and "RolledBack" in r.reasons()


def test_command_is_consumed_once_and_its_annotations_removed():
    r = Rollout()
    r.tick()
    r.command("pause", "c1")
    r.t += 0.5
    r.tick()
    s = r.status
    assert s["lastCommand"]["id"] == "c1" and s["lastCommand"]["result"] == "accepted"
    assert s["phase"] == "Paused"
    assert ANNOTATION_COMMAND not in r.obj["metadata"].get("annotations", {})
    # the same id again (an annotation that came back) is not run twice
    r.command("pause", "c1")
    r.tick()
    assert r.reasons().count("CommandPause") == 1
    assert ANNOTATION_COMMAND not in r.obj["metadata"].get("annotations", {})


def test_malformed_commands_are_rejected_not_fatal():
    r = Rollout()
    r.tick()
    for i, value in enumerate(("rollback:Not_A_Version!", "explode", "resume")):
        r.command(value, f"x{i}" * 200)
        r.t += 0.1
        r.tick()
        last = r.status["lastCommand"]
        assert last["result"] == "rejected"
        assert last["id"].startswith("invalid-") and len(last["id"]) == 24  # bounded, safe
    assert r.reasons().count("CommandRejected") == 3


# --- the pre-rollout gate: evaluation answers as data -----------------------------------------


def output(hit5: float) -> dict:
    lanes = {str(k): {"n": 32, "hit@1": hit5, "hit@5": hit5, "hit@10": hit5} for k in range(16)}
    return {"format": "lvm-eval-result", "format_version": 1, "n": 512, "hit@1": hit5 - 0.05,
            "hit@5": hit5, "hit@10": hit5 + 0.05, "hit@5_proxy": hit5, "empty_hit_rate": 0.0,
            "nan_rate": 0.0, "eval_set_sha256": "e" * 64, "seconds": 1.0, "per_lane": lanes}


def gated(candidate_hit5: float) -> Rollout:
    r = Rollout(evaluation={"evalSet": {"uri": "file:///e/eval_set.npz"}})
    r.outputs = {CANDIDATE: output(candidate_hit5), CHAMPION: output(0.70)}
    return r


def test_gate_holds_the_rollout_until_the_candidate_is_evaluated():
    r = gated(0.72)
    out = r.tick()
    s = r.status
    assert sorted(r.started) == sorted([CANDIDATE, CHAMPION])
    assert s["phase"] == "Pending" and s.get("candidateWeight", 0) == 0
    assert s["evaluation"]["gate"]["verdict"] == "pending" and out.wait_s <= 1.0  # polls soon
    assert conditions(r)["GatePassed"]["reason"] == "Evaluating"
    assert all(a.router.candidate_weight == 0 for a in r.applied)
    r.done |= {CANDIDATE, CHAMPION}
    r.t += 1.0
    r.tick()
    s = r.status
    assert s["evaluation"]["gate"]["verdict"] == "pass" and s["candidateWeight"] == 25
    assert r.reasons()[:4] == ["Evaluated", "Evaluated", "GatePassed", "BaselineRecorded"]
    assert "Started" in r.reasons()
    assert r.applied[-1].router.candidate_weight == 25


def test_a_blocked_gate_is_retried_by_command_and_the_numbers_are_exported():
    from lvm_operator.metrics import METRICS

    r = gated(0.41)
    r.done |= {CANDIDATE, CHAMPION}
    r.tick()
    r.t += 1.0
    out = r.tick()
    s = r.status
    assert s["evaluation"]["gate"]["verdict"] == "blocked" and s["phase"] == "Pending"
    assert "candidate Hit@5 0.410 < minimum 0.660" in s["message"]
    assert r.reasons().count("GateBlocked") == 1
    METRICS.set_quality("ml/lvm-local", out.status)  # what the shell exports on each write
    exposition = METRICS.registry.get_sample_value(
        "lvm_eval_gate_passed", {"rollout": "ml/lvm-local", "version": CANDIDATE})
    assert exposition == 0.0
    assert METRICS.registry.get_sample_value(
        "lvm_eval_hit_ratio", {"rollout": "ml/lvm-local", "version": CANDIDATE, "k": "5"}) == 0.41
    # A few more ticks: nothing re-runs, no new Events (the verdict did not change).
    for _ in range(3):
        r.t += 1.0
        r.tick()
    assert len(r.started) == 2 and r.reasons().count("GateBlocked") == 1
    # retry: the candidate is better now (e.g. the eval set was refreshed in place).
    r.outputs[CANDIDATE] = output(0.72)
    r.done.clear()
    r.command("retry", "r1")
    r.t += 1.0
    r.tick()
    s = r.status
    assert s["lastCommand"]["result"] == "accepted" and "re-evaluating" in s["message"]
    assert s["evaluation"]["gate"]["verdict"] == "pending"
    r.done |= {CANDIDATE, CHAMPION}
    r.t += 1.0
    r.tick()
    s = r.status
    assert s["evaluation"]["gate"]["verdict"] == "pass" and s["candidateWeight"] == 25
    assert len(r.started) == 4
    # retry is refused once the rollout runs.
    r.command("retry", "r2")
    r.t += 0.5
    r.tick()
    assert r.status["lastCommand"]["result"] == "rejected"


# --- what a tick asks the shell to measure --------------------------------------------------


def with_state(state, *, lane_next_check_in_s: float | None = None) -> dict:
    from lvm_operator.api import LaneHealthStatus, LVMRolloutStatus, Serving
    from lvm_operator.controller import adapter

    obj = Rollout().obj
    lane = None if lane_next_check_in_s is None else LaneHealthStatus(
        verdict="healthy", reason="", next_check_at=adapter.to_rfc3339(T0 + lane_next_check_in_s))
    obj["status"] = LVMRolloutStatus(
        decision_state=adapter.state_to_status(state), lane_health=lane,
        serving=Serving(champion=CHAMPION, candidate=CANDIDATE)).to_k8s()
    return obj


def at_step_1(**changes):
    """At step 1 (25 %) since T0, both checks passed at T0."""
    from dataclasses import replace

    from lvm_operator.controller import adapter
    from lvm_operator.decision import Phase, RolloutState, Verdict

    fp = adapter.fingerprint(plan_tick(Rollout().obj, T0).spec)
    return replace(RolloutState(phase=Phase.PROGRESSING, fingerprint=fp, current_step=0,
                                candidate_weight=25, step_started_at=T0, last_guardrail_at=T0,
                                last_guardrail_verdict=Verdict.PASS, last_quality_at=T0,
                                last_quality_verdict=Verdict.PASS), **changes)


G, Q = Check.GUARDRAIL, Check.QUALITY


# local-fast.yaml: guardrails every 2 s, quality every 5 s; lane health checked when due.
@pytest.mark.parametrize(("state", "dt", "lane_in", "checks", "lane_due"), [
    (at_step_1(), 1.0, 60.0, set(), False),  # 1 s after both checks: nothing due
    (at_step_1(), 2.0, 60.0, {G}, False),  # 0 + 2 s: guardrails
    (at_step_1(), 5.0, 60.0, {G, Q}, False),  # 0 + 5 s: quality too
    (at_step_1(), 1.0, None, set(), True),  # never checked lanes: due now
    (at_step_1(), 61.0, 60.0, {G, Q}, True),  # past the lane check's next time
])
def test_plan_says_what_to_measure(state, dt, lane_in, checks, lane_due):
    p = plan_tick(with_state(state, lane_next_check_in_s=lane_in), T0 + dt)
    assert p.decides and p.invalid is None
    assert set(p.checks) == checks
    assert (p.lane_check is not None) == lane_due
    assert p.evaluation_requests == []  # no spec.evaluation


def test_a_finished_rollout_measures_nothing():
    from lvm_operator.decision import Phase

    state = at_step_1(phase=Phase.PROMOTED)
    p = plan_tick(with_state(state, lane_next_check_in_s=60.0), T0 + 30.0)
    assert not p.decides and p.checks == frozenset()


@pytest.mark.parametrize(("next_decision", "retiring_in", "busy", "next_at", "failed",
                          "expected"), [
    (None, None, False, (), False, 2.0),  # idle 10 s, bounded by the 2 s guardrail interval
    (0.5, None, False, (), False, 0.5),  # the next decision in 0.5 s
    # a step whose dwell ends now, or ended 30 s ago, was decided now: the next useful tick
    # is its next check (2 s), not "now" again (that spun at 20 ticks/s: issue 22)
    (0.0, None, False, (), False, 2.0),
    (-30.0, None, False, (), False, 2.0),
    (0.01, None, False, (), False, 0.05),  # 10 ms from now: never below 50 ms
    (1.5, None, True, (), False, 1.0),  # an evaluation runs: poll every 1 s
    (1.5, None, False, (T0 + 0.3,), False, 0.3),  # a drift/lane check due in 0.3 s
    (None, 0.7, False, (), False, 0.7),  # finished: the warm champion retires in 0.7 s
    (0.5, None, False, (), True, 2.0),  # a failed apply: min(interval 2 s, 2 s)
])
def test_wait_until_the_next_useful_tick(next_decision, retiring_in, busy, next_at, failed,
                                         expected):
    from lvm_operator.api import Serving
    from lvm_operator.controller import adapter
    from lvm_operator.controller.tick import wait_s
    from lvm_operator.decision import Phase

    p = plan_tick(Rollout().obj, T0)
    if next_decision is None:
        state = at_step_1(phase=Phase.PROMOTED)
    else:  # step 1 of 10 s started so that it ends in ``next_decision`` seconds
        state = at_step_1(step_started_at=T0 - 10.0 + next_decision, last_guardrail_at=T0,
                          last_quality_at=T0)
    serving = Serving(champion=CANDIDATE, retiring=CHAMPION if retiring_in else None,
                      retiring_until=adapter.to_rfc3339(T0 + retiring_in) if retiring_in
                      else None)
    got = wait_s(p.plan, state, serving, T0, apply_failed=failed, busy=busy, next_at=next_at)
    assert got == pytest.approx(expected)


def test_an_out_of_band_change_of_the_live_config_is_put_back():
    from dataclasses import replace as dc_replace

    from lvm_operator.backends import AppStatus, ObservedApp, ObservedVersion

    r = Rollout()
    first = r.tick()  # step 1 at 25%, the config applied and its hash recorded
    assert first.apply is not None and r.status["serving"]["configHash"]
    p = plan_tick(copy.deepcopy(r.obj), r.t)
    versions = {v: ObservedVersion(v, 1, 1, status="RUNNING") for v in (CHAMPION, CANDIDATE)}
    same = ObservedApp(p.application, AppStatus.RUNNING, router=first.apply.router,
                       versions=versions)
    assert tick(p, Seen(serving=same)).apply is None  # live = desired: nothing sent
    # Someone set the candidate's weight to 0 by hand (or a GitOps tool reverted it).
    edited = dc_replace(same, router=dc_replace(first.apply.router, candidate_weight=0))
    out = tick(p, Seen(serving=edited))
    assert out.apply is not None and out.apply.router.candidate_weight == 25
    (event,) = [e for e in out.events if e.reason == "ServeConfigDrift"]
    assert event.type == "Warning"
    assert "candidate_weight 0 instead of 25" in event.message
    # The whole Ray cluster restarted: nothing of ours is live any more.
    gone = ObservedApp(p.application, AppStatus.NOT_DEPLOYED)
    out = tick(p, Seen(serving=gone))
    assert out.apply is not None
    assert any("none of its applications is deployed" in e.message for e in out.events)
    # A backend that cannot tell changes nothing.
    assert tick(p, Seen(serving=ObservedApp(p.application, AppStatus.UNKNOWN))).apply is None


def test_inconclusive_past_its_limit_pauses_for_a_person_until_resumed():
    """P95 7 ms sits between success (< 5 ms) and rollback (> 10 ms) for ever: after the
    first step's 10 s dwell plus onInconclusive.maxHold 20 s the operator pauses the rollout
    (recorded like kubectl lvm pause), says why in the Progressing condition and a Warning
    Event, and kubectl lvm resume continues it."""
    r = Rollout()
    r.obj["spec"]["analysis"]["onInconclusive"] = {"action": "pause", "maxHold": "20s"}
    r.candidate = VersionMetrics(**{**GOOD, "p95_latency_seconds": 0.007})
    r.tick()
    start = r.t
    while r.status.get("phase") != "Paused" and r.t - start < 60:
        r.t += 2.0
        r.tick()
    assert r.status["phase"] == "Paused", r.status.get("message")
    assert 30.0 <= r.t - start <= 34.0  # 10 s dwell + 20 s, checked every 2 s
    progressing = conditions(r)["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "InconclusiveTimeout")
    assert "inconclusive for 20s" in progressing["message"] and "P95" in progressing["message"]
    assert r.reasons().count("InconclusiveTimeout") == 1
    assert r.status["serving"]["manualPause"] is True
    r.t += 60.0
    r.tick()  # still paused, still saying why; nothing new to tell
    assert r.status["phase"] == "Paused" and r.reasons().count("InconclusiveTimeout") == 1
    assert conditions(r)["Progressing"]["reason"] == "InconclusiveTimeout"
    r.command("resume", "c-resume")
    r.t += 1.0
    r.tick()
    assert r.status["lastCommand"]["result"] == "accepted", r.status["lastCommand"]
    assert r.status["phase"] == "Progressing"
    assert "pauseReason" not in r.status["serving"] and "manualPause" not in r.status["serving"]


def test_deletion_mid_rollout_sends_all_traffic_to_the_champion_finished_leaves_it():
    """Flagger's revertOnDeletion: deleted at step 2 (50%), the champion alone is served
    (candidate application gone, weight 0); a promoted or rolled-back rollout is left alone."""
    from lvm_operator.controller.deletion import plan_deletion

    r = Rollout()
    r.tick()
    r.t += 11.0
    r.tick()  # dwell 10 s passed with passing checks: step 2
    assert r.status["candidateWeight"] == 50
    d = plan_deletion(r.obj, r.t)
    assert d.app is not None and d.app.router.candidate is None
    assert d.app.router.candidate_weight == 0
    assert [v.version for v in d.app.versions] == [CHAMPION]
    assert "all traffic to champion" in d.reason
    for phase_after in ("RolledBack", "Promoted"):
        done = Rollout()
        done.tick()
        if phase_after == "RolledBack":
            done.candidate = VersionMetrics(**{**GOOD, "error_rate": 0.05})
        while done.status.get("phase") not in ("RolledBack", "Promoted"):
            done.t += 11.0
            done.tick()
        assert done.status["phase"] == phase_after
        assert plan_deletion(done.obj, done.t).app is None
    assert plan_deletion({"metadata": {"namespace": "ml", "name": "x"}, "spec": {}}, 0.0).app \
        is None  # invalid: nothing was served from it


def test_a_candidate_that_fails_to_start_gets_no_traffic_then_is_rolled_back():
    """Issue 17 #1: Serve reports the candidate DEPLOY_FAILED (a checkpoint that fails its
    sha256): it gets no traffic, the step's dwell waits for it, CandidateReady=False and one
    Warning Event quote Serve's last line; past progressDeadline (30 s) the rollout is rolled
    back with that reason."""
    from lvm_operator.backends import AppStatus, ObservedApp, ObservedVersion

    r = Rollout(progressDeadline="30s")
    failed = ObservedApp("lvm", AppStatus.DEPLOY_FAILED, versions={
        CHAMPION: ObservedVersion(CHAMPION, 1, 1, status="RUNNING"),
        CANDIDATE: ObservedVersion(CANDIDATE, 1, 0, status="DEPLOY_FAILED", message=(
            "Traceback (most recent call last):\n  File x\nValueError: checkpoint sha256 "
            "mismatch: expected ab..., got cd...\n"))})
    r.observed = failed
    r.tick()
    start = r.t
    while r.status.get("phase") != "RolledBack" and r.t - start < 60:
        assert not r.applied or r.applied[-1].router.candidate_weight == 0
        r.t += 2.0
        r.tick()
        if r.t - start < 30:
            assert r.status["decisionState"]["stepStartedAt"] == r.t  # the dwell waits
    assert 30.0 <= r.t - start <= 32.0, r.t - start
    ready = conditions(r)["CandidateReady"]
    assert (ready["status"], ready["reason"]) == ("False", "CandidateNotReady")
    # our words for Serve's message, never its text (it is not ours; status is widely read)
    assert ready["message"] == (f"Serve reports {CANDIDATE}'s application DEPLOY_FAILED: its "
                                "checkpoint's sha256 does not match the spec (Serve's own "
                                "message: `serve status` or the Ray dashboard)")
    assert r.reasons().count("CandidateNotReady") == 1
    assert r.reasons()[-1] == "RolledBack"
    assert "not running within progressDeadline 30s" in r.status["message"]
    assert r.status["history"][-1]["outcome"] == "rolledBack"
    last = r.applied[-1]
    assert last.router.candidate is None and last.router.champion == CHAMPION
    # Serve recovers later: the condition says so; the rollback stands
    r.observed = None
    r.t += 2.0
    r.tick()
    assert conditions(r)["CandidateReady"]["status"] == "True"
    assert r.status["phase"] == "RolledBack"


def test_an_application_served_by_another_rollout_is_left_alone():
    """Issue 17 #5, one owner per application: the live router says it serves ml/other, and
    that LVMRollout exists (the shell looked it up): nothing is applied, decided or commanded;
    Ready=False and one Warning Event name the owner. Once the owner is gone, it takes over."""
    from lvm_operator.backends import AppStatus, ObservedApp
    from lvm_operator.controller.live import other_owner
    from lvm_serving.contracts.serve_config import RouterConfig

    r = Rollout()
    theirs = ObservedApp("lvm", AppStatus.RUNNING, router=RouterConfig(
        rollout="ml/other", champion="someone-elses", candidate=None))
    assert other_owner("ml/lvm-local", theirs) == "ml/other"
    assert other_owner("ml/other", theirs) is None
    p = plan_tick(copy.deepcopy(r.obj), r.t)
    refused = tick(p, Seen(serving=theirs, owner="ml/other"))
    assert refused.apply is None
    ready = {c.type: c for c in refused.status.conditions}["Ready"]
    assert (ready.status.value, ready.reason) == ("False", "ApplicationOwnedElsewhere")
    assert "LVMRollout ml/other" in ready.message
    assert [e.reason for e in refused.events] == ["ApplicationOwnedElsewhere"]
    merge(r.obj.setdefault("status", {}), refused.update.patch)
    again = tick(plan_tick(copy.deepcopy(r.obj), r.t + 2), Seen(serving=theirs, owner="ml/other"))
    assert again.apply is None and again.events == []  # said once
    adopted = tick(plan_tick(copy.deepcopy(r.obj), r.t + 4), Seen(serving=theirs))
    assert adopted.apply is not None and adopted.apply.router.rollout == "ml/lvm-local"


@pytest.mark.parametrize("start", [
    T0,
    # a time whose RFC3339 round trip (appliedAt) lands below the float (stepStartedAt):
    # datetime.fromtimestamp(1700000000.0010002).timestamp() is 1700000000.001 (38% of times)
    T0 + 0.0010002,
])
def test_a_candidate_that_comes_back_mid_step_keeps_the_steps_clock(start):
    """Traffic already moved in this step; then Ray restarts (nothing deployed): the config is
    re-applied with the candidate held at 0% until it runs again, and the step's dwell clock
    is not reset (only a step whose weight never moved waits for its candidate)."""
    from lvm_operator.backends import AppStatus, ObservedApp

    r = Rollout()
    r.t = start
    r.tick()
    started = r.status["decisionState"]["stepStartedAt"]
    assert r.applied[-1].router.candidate_weight == 25
    r.observed = ObservedApp("lvm", AppStatus.NOT_DEPLOYED, "Ray restarted")
    r.t += 2.0
    r.tick()
    assert r.applied[-1].router.candidate_weight == 0  # held back while it redeploys
    assert "ServeConfigDrift" in r.reasons()
    assert r.status["decisionState"]["stepStartedAt"] == started


def test_a_late_tick_cannot_pass_a_step_whose_weight_was_never_applied():
    """The step starts while its candidate is deployed with no traffic (held back: Serve has
    nothing running yet). The next tick comes 6 s later (a busy operator), when the candidate
    runs: that tick applies the step's 10%, and it must not also judge the step on a 2 s dwell
    spent with no traffic and go straight to 20%. Before the fix the clock ran from the
    held-back tick: applied weights 0, 20 (the 10% step never served). Now 0, 10, then 20
    once 10% has dwelt 2 s and been checked (quality every 1 s here)."""
    from lvm_operator.backends import AppStatus, ObservedApp

    r = Rollout(steps=[{"weight": 10, "duration": "2s"}, {"weight": 20, "duration": "2s"},
                       {"weight": 100, "duration": "2s"}],
                analysis={**RAW["spec"]["analysis"],
                          "quality": {**RAW["spec"]["analysis"]["quality"], "interval": "1s"}})
    r.observed = ObservedApp("lvm", AppStatus.NOT_DEPLOYED, "nothing deployed yet")
    r.tick()
    assert [a.router.candidate_weight for a in r.applied] == [0]  # held back
    r.observed = None  # the candidate runs (the backend cannot tell: nothing is held back)
    r.t += 6.0
    r.tick()
    assert [a.router.candidate_weight for a in r.applied] == [0, 10]
    assert r.status["decisionState"]["stepStartedAt"] == r.t  # the dwell starts now
    assert r.status["currentStep"] == 0
    while r.status["currentStep"] == 0:
        r.t += 1.0
        r.tick()
    assert [a.router.candidate_weight for a in r.applied] == [0, 10, 20]
    assert r.t - T0 >= 6.0 + 2.0  # 10% served for its whole 2 s dwell


def test_steps_do_not_pass_while_their_config_cannot_be_applied():
    """The Ray dashboard is down for the first 5 s of a rollout of 2 s steps: every apply
    fails. Before the fix the steps' clocks ran anyway: 10% and 20% "passed" without being
    applied and the first config that landed gave the candidate 100%, promoted a second later
    (applied weights [100, 0]). Now the step's dwell waits for its traffic to be in effect
    (``serving.appliedTraffic``): [10, 20, 100, 0], each step served for its whole dwell, and
    the guardrails kept judging the live traffic meanwhile (a failing candidate is rolled back
    whatever else fails)."""
    r = Rollout(steps=[{"weight": 10, "duration": "2s"}, {"weight": 20, "duration": "2s"},
                       {"weight": 100, "duration": "2s"}],
                analysis={**RAW["spec"]["analysis"],
                          "quality": {**RAW["spec"]["analysis"]["quality"], "interval": "1s"}})
    r.apply_error = "BackendUnavailable: the Ray dashboard does not answer"
    applied_at: dict[int, float] = {}
    while r.obj.get("status", {}).get("phase") != "Promoted" and r.t - T0 < 30:
        if r.t - T0 >= 5:
            r.apply_error = None
        r.tick()
        if r.applied:
            applied_at.setdefault(r.applied[-1].router.candidate_weight, r.t)
        assert r.status["currentStep"] == 0 or r.applied, "a step passed that never served"
        if r.t - T0 == 4:  # the guardrails judged what was live all along
            assert r.status["decisionState"]["lastGuardrailAt"] > T0
        r.t += 1.0
    assert [a.router.candidate_weight for a in r.applied] == [10, 20, 100, 0]
    assert applied_at[10] == T0 + 5  # the first apply that landed
    assert applied_at[20] - applied_at[10] >= 2 and applied_at[100] - applied_at[20] >= 2
    assert r.status["serving"]["appliedTraffic"] == {"weight": 0, "shadow": False}  # promoted


@pytest.mark.parametrize(("serve_message", "ours"), [
    ("ValueError: checkpoint sha256 mismatch: expected ab, got cd",
     "its checkpoint's sha256 does not match the spec"),
    ("_pickle.UnpicklingError: Weights only load failed", "its checkpoint is not a safe "
                                                          "tensor-only file"),
    ("FileNotFoundError: [Errno 2] No such file or directory: '/m/x.pt'",
     "a file it loads (checkpoint or concept bank) is missing"),
    ("ModuleNotFoundError: No module named 'lvm_serving.nope'", "an import failed"),
    ("Deployment has insufficient resources: {'pool_a100': 1}",
     "no node has the resources it asks for (its node pool?)"),
    ("The actor died unexpectedly before finishing this task", "its replicas died"),
    # an attacker's page at the backend URL: nothing of it is repeated
    ("<html>AWS_SECRET_ACCESS_KEY=abc</html>", "Serve's message says why"),
    ("", "Serve's message says why"),
])
def test_serve_failures_are_described_in_our_words(serve_message, ours):
    from lvm_operator.controller.readiness import serve_failure_kind

    assert serve_failure_kind(serve_message) == ours
    assert serve_message not in ours or not serve_message
