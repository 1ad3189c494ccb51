"""Compute the whole new status from one tick, diff it, and derive Events from the same diff.

Argo Rollouts and Kopf both write status once per reconcile and skip the write when nothing
changed; this module is the pure half of that. :func:`compute` takes the previous status and
what happened in the tick (:class:`TickResult`) and returns the new status, the minimal JSON
merge patch against the previous one (``None`` when unchanged), and the Events to emit. Events
come from the decision and from condition transitions, never from a timer, so a tick that
changes nothing emits nothing, and every Event carries the numbers behind it.

Conditions follow Kubernetes conventions (metav1.Condition): one entry per type, ``reason``
CamelCase, ``lastTransitionTime`` changes only when ``status`` does, ``observedGeneration`` is
the generation the condition was computed for.

Types: kstatus's (``Ready``: the desired state is reached, promoted or steady; ``Reconciling``:
moving on by itself; ``Stalled``: it will not without a person) and the terminal ``Promoted`` and
``RolledBack`` (for ``kubectl wait --for=condition=Promoted``); ``Applied`` (the Serve config
for the current decision is in effect), ``Progressing`` (the rollout is moving), ``Degraded``
(rolled back, or the serve backend / analysis is failing), ``NoData`` (the no-data deadline
passed); with ``spec.evaluation``: ``GatePassed`` (the candidate passed the pre-rollout
evaluation) and ``Drifted`` (the champion's eval-set numbers moved beyond the limit); always:
``LanesDegraded`` (a lane is far below its version's overall).

Why one module of some 480 lines: the status, its conditions and its Events are three views of
the same diff; kept together, a new field cannot gain a condition without its Event.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lvm_serving.contracts.metrics import NUM_LANES

from ..api import (
    Condition,
    ConditionStatus,
    DriftVerdict,
    EvaluationStatus,
    GateVerdict,
    GitSpec,
    HistoryEntry,
    LaneHealthStatus,
    LaneHealthVerdict,
    LastAnalysis,
    LastCommand,
    LVMRolloutStatus,
    Measurement,
    Serving,
)
from ..api.status import MAX_HISTORY, MAX_MEASUREMENTS
from ..decision import (
    Action,
    Check,
    CheckOutcome,
    Decision,
    MetricResult,
    Phase,
    Plan,
    RolloutState,
    Verdict,
)
from ..decision.fmt import fraction as _pct
from .adapter import state_to_status, to_rfc3339

MAX_TEXT = 1024

NORMAL = "Normal"
WARNING = "Warning"

READY = "Ready"
APPLIED = "Applied"
RECONCILING = "Reconciling"
STALLED = "Stalled"
PROMOTED = "Promoted"
ROLLED_BACK = "RolledBack"
PROGRESSING = "Progressing"
DEGRADED = "Degraded"
NO_DATA = "NoData"
CANDIDATE_READY = "CandidateReady"
GATE_PASSED = "GatePassed"
DRIFTED = "Drifted"
LANES_DEGRADED = "LanesDegraded"

#: Core metric names -> the status's names (and a factor to the status's unit).
_METRICS: dict[str, tuple[str, float]] = {
    "error_rate": ("errorRate", 1.0),
    "p95_latency_seconds": ("p95LatencyMs", 1000.0),
    "empty_hit_rate": ("emptyHitRate", 1.0),
    "hit5_proxy": ("hit5Proxy", 1.0),
    "hit5_delta": ("hit5Delta", 1.0),
    "lane_hit5_delta": ("laneHit5Delta", 1.0),
}


@dataclass(frozen=True)
class Event:
    """A Kubernetes Event to emit (``type`` Normal/Warning), with the numbers in ``message``."""

    type: str
    reason: str
    message: str


#: :attr:`TickResult.git_spec` when a tick leaves ``status.gitSpec`` as it is.
KEEP = object()


@dataclass
class TickResult:
    """What one reconcile tick did; everything :func:`compute` needs besides the old status."""

    now: float
    generation: int | None
    state: RolloutState | None = None  # None: the spec is invalid (phase Failed)
    plan: Plan | None = None
    decision: Decision | None = None
    serving: Serving | None = None
    invalid: str | None = None  # the validation message for an invalid spec
    apply_error: str | None = None  # the serve backend failed (retried next tick)
    message: str | None = None  # overrides the decision's reason (commands, promotions)
    history_add: list[HistoryEntry] = field(default_factory=list)
    command: LastCommand | None = None
    events: list[Event] = field(default_factory=list)  # from the reconcile (commands...)
    evaluation: EvaluationStatus | None = None  # None: unchanged
    lane_health: LaneHealthStatus | None = None  # None: unchanged
    # The candidate's application failed to start (Serve's DEPLOY_FAILED/UNHEALTHY, its last
    # line): it gets no traffic; None: not failing (or not known to be)
    candidate_not_ready: str | None = None
    # Nothing is applied or decided, and why: (Ready's reason, its message), e.g. another
    # rollout serves the application, or a champion-only spec names a version that does not serve
    refused: tuple[str, str] | None = None
    # What to write in Git (status.gitSpec); KEEP: this tick does not say (unchanged)
    git_spec: GitSpec | object | None = field(default_factory=lambda: KEEP)


@dataclass(frozen=True)
class StatusUpdate:
    status: LVMRolloutStatus
    patch: dict[str, Any] | None
    events: list[Event]


def _text(s: str | None) -> str | None:
    if s is None:
        return None
    return s if len(s) <= MAX_TEXT else s[: MAX_TEXT - 3] + "..."


# --- lastAnalysis ----------------------------------------------------------------------------


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def measurement(r: MetricResult) -> Measurement:
    name, factor = _METRICS.get(r.metric, (r.metric, 1.0))
    limit = r.rollback_limit if r.verdict.value == "breach" else r.success_limit
    lane = int(r.lane) if r.lane is not None and str(r.lane).isdigit() else None
    value = _finite(r.value)
    return Measurement(
        version=r.version,
        lane=lane,
        metric=name[:63],
        value=None if value is None else value * factor,
        threshold=None if _finite(limit) is None else float(limit) * factor,
        samples=round(r.samples) if math.isfinite(r.samples) else None,
        verdict=r.verdict,
        ci_low=None if r.interval is None else _finite(r.interval[0]),
        ci_high=None if r.interval is None else _finite(r.interval[1]),
        evidence_rollback=None if r.evidence is None else _finite(r.evidence[0]),
        evidence_pass=None if r.evidence is None else _finite(r.evidence[1]),
        events_to_decide=(None if r.events_to_decide is None
                          or not math.isfinite(r.events_to_decide)
                          else min(round(r.events_to_decide), 2**53)),
    )


_ORDER = ("breach", "error", "noData", "inconclusive", "pass")


def last_analysis(outcomes: list[CheckOutcome], now: float) -> LastAnalysis | None:
    """One lastAnalysis from the checks evaluated in a tick (the worse verdict leads)."""
    if not outcomes:
        return None
    worst = min(outcomes, key=lambda o: _ORDER.index(o.verdict.value))
    checks = {Check.GUARDRAIL: "guardrails", Check.QUALITY: "quality"}
    rows = [measurement(r) for o in outcomes for r in o.results
            if r.lane is None or (str(r.lane).isdigit() and int(r.lane) < NUM_LANES)
            ][:MAX_MEASUREMENTS]
    return LastAnalysis(
        time=to_rfc3339(now),
        check="+".join(checks[o.check] for o in outcomes),
        verdict=worst.verdict,
        reason=_text("; ".join(f"{checks[o.check]}: {o.summary}" for o in outcomes)),
        measurements=rows or None,
    )


# --- conditions ------------------------------------------------------------------------------


def _condition(prev: Mapping[str, Condition], type_: str, ok: bool, reason: str, message: str,
               now: float, generation: int | None) -> Condition:
    status = ConditionStatus.TRUE if ok else ConditionStatus.FALSE
    old = prev.get(type_)
    since = old.last_transition_time if old is not None and old.status == status else None
    return Condition(
        type=type_, status=status, reason=reason, message=_text(message) or "",
        last_transition_time=since or to_rfc3339(now), observed_generation=generation,
    )


#: Phases in which the desired state is reached (kstatus ``Ready``): nothing left to do.
_DONE = (Phase.PROMOTED, Phase.STEADY)


def kstatus_conditions(old: Mapping[str, Condition], phase: Phase, t: TickResult,
                       applied: tuple[bool, str, str], message: str) -> list[Condition]:
    """``Ready``, ``Reconciling``, ``Stalled``, ``Promoted`` and ``RolledBack`` as kstatus and
    ``kubectl wait`` read them: Ready only once the desired state is reached (promoted, or the
    champion alone serving what a champion-only spec names); Reconciling while a rollout moves
    on by itself; Stalled when it will not without a person (rolled back, failed, refused, a
    blocked gate, paused for a person)."""
    now, gen = t.now, t.generation
    ok, applied_reason, applied_message = applied
    gate = t.evaluation.gate if t.evaluation is not None else None
    blocked = phase is Phase.PENDING and gate is not None and gate.verdict in (
        GateVerdict.BLOCKED, GateVerdict.ERROR)
    paused_for = t.serving.pause_reason if t.serving is not None else None
    stalled: tuple[str, str] | None = None
    if t.invalid is not None or t.refused is not None:
        stalled = (applied_reason, applied_message)
    elif phase in (Phase.ROLLED_BACK, Phase.FAILED):
        stalled = (phase.value, message)
    elif blocked:
        assert gate is not None
        stalled = ("GateBlocked" if gate.verdict is GateVerdict.BLOCKED else "EvaluationFailed",
                   message)
    elif phase is Phase.PAUSED and paused_for:
        stalled = ("InconclusiveTimeout", paused_for)
    # Moving on by itself: a step, the gate's evaluation, an apply being retried
    reconciling = stalled is None and (phase in (Phase.PENDING, Phase.PROGRESSING) or not ok)
    if not ok:
        ready = (False, applied_reason, applied_message)
    elif phase in _DONE:
        ready = (True, phase.value, message)
    else:
        ready = (False, stalled[0] if stalled else "RolloutProgressing" if reconciling
                 else phase.value, message)
    return [
        _condition(old, READY, *ready, now, gen),
        _condition(old, RECONCILING, reconciling,
                   applied_reason if not ok else "RolloutProgressing" if reconciling
                   else phase.value, message if ok else applied_message, now, gen),
        _condition(old, STALLED, stalled is not None, *(stalled or ("AsExpected", "")), now,
                   gen),
        _condition(old, PROMOTED, phase is Phase.PROMOTED, phase.value, message, now, gen),
        _condition(old, ROLLED_BACK, phase is Phase.ROLLED_BACK, phase.value, message, now,
                   gen),
    ]


def conditions_for(prev: list[Condition] | None, phase: Phase, t: TickResult,
                   verdict: Verdict | None, message: str) -> list[Condition]:
    old = {c.type: c for c in prev or []}
    now, gen = t.now, t.generation
    out = []
    if t.invalid is not None:
        applied = (False, "InvalidSpec", t.invalid)
    elif t.refused is not None:
        applied = (False, *t.refused)
    elif t.apply_error is not None:
        applied = (False, "ServeApplyFailed", t.apply_error)
    else:
        weight = t.state.candidate_weight if t.state is not None else 0
        applied = (True, "ServeConfigApplied",
                   f"the Serve config for {phase.value} (candidate {weight}%) is applied")
    out.append(_condition(old, APPLIED, *applied, now, gen))
    out += kstatus_conditions(old, phase, t, applied, message)
    moving = phase in (Phase.PENDING, Phase.PROGRESSING)
    reason = "RolloutProgressing" if moving else phase.value  # e.g. Promoted, Steady
    gate = t.evaluation.gate if t.evaluation is not None else None
    if phase is Phase.PENDING and gate is not None and gate.verdict in (
            GateVerdict.BLOCKED, GateVerdict.ERROR):
        # Not started, and it will not start by itself: not progressing, and why.
        moving = False
        reason = "GateBlocked" if gate.verdict is GateVerdict.BLOCKED else "EvaluationFailed"
    paused_for = t.serving.pause_reason if t.serving is not None else None
    if phase is Phase.PAUSED and paused_for:
        # Paused by the operator for a person: the condition keeps saying why until resumed.
        reason, message = "InconclusiveTimeout", paused_for
    out.append(_condition(old, PROGRESSING, moving, reason, message, now, gen))
    if t.invalid is not None:
        degraded = (True, "InvalidSpec", t.invalid)
    elif phase is Phase.ROLLED_BACK:
        degraded = (True, "RolledBack", message)
    elif t.apply_error is not None:
        degraded = (True, "ServeApplyFailed", t.apply_error)
    elif verdict is Verdict.ERROR:
        degraded = (True, "AnalysisError", message)
    else:
        degraded = (False, "AsExpected", "")
    out.append(_condition(old, DEGRADED, *degraded, now, gen))
    was = old.get(CANDIDATE_READY)
    if t.candidate_not_ready is not None:
        out.append(_condition(old, CANDIDATE_READY, False, "CandidateNotReady",
                              t.candidate_not_ready, now, gen))
    elif was is not None:  # raised before: say it cleared (and keep saying it)
        out.append(_condition(old, CANDIDATE_READY, True, "CandidateRunning",
                              "the candidate's application is not failing", now, gen))
    no_data = old.get(NO_DATA)
    raised = [c for c in (t.decision.conditions if t.decision else ()) if c.type == NO_DATA]
    if raised:
        c = raised[-1]
        out.append(_condition(old, NO_DATA, c.status, c.reason, c.message, now, gen))
    elif no_data is not None:
        out.append(no_data.model_copy(update={"observed_generation": gen}))
    else:
        out.append(_condition(old, NO_DATA, False, "HasData", "", now, gen))
    return out


def evaluation_conditions(prev: list[Condition] | None, new: LVMRolloutStatus,
                          t: TickResult) -> list[Condition]:
    """GatePassed, Drifted and LanesDegraded, from status.evaluation and status.laneHealth."""
    old = {c.type: c for c in prev or []}
    now, gen = t.now, t.generation
    out = []
    ev = new.evaluation
    if ev is not None and ev.gate is not None:
        g = ev.gate
        reason = {GateVerdict.PASS: "GatePassed", GateVerdict.BLOCKED: "GateBlocked",
                  GateVerdict.PENDING: "Evaluating", GateVerdict.ERROR: "EvaluationFailed"}
        out.append(_condition(old, GATE_PASSED, g.verdict is GateVerdict.PASS,
                              reason[g.verdict], g.reason, now, gen))
    if ev is not None and ev.drift is not None and ev.drift.verdict is not DriftVerdict.PENDING:
        d = ev.drift
        reason = {DriftVerdict.OK: "WithinLimit", DriftVerdict.DRIFTED: "DriftDetected",
                  DriftVerdict.ERROR: "EvaluationFailed"}
        out.append(_condition(old, DRIFTED, d.verdict is DriftVerdict.DRIFTED,
                              reason[d.verdict], d.reason, now, gen))
    lh = new.lane_health
    if lh is not None:
        reason = {LaneHealthVerdict.HEALTHY: "LanesHealthy",
                  LaneHealthVerdict.DEGRADED: "LaneBelowOverall",
                  LaneHealthVerdict.NO_DATA: "NotEnoughFeedback",
                  LaneHealthVerdict.ERROR: "AnalysisError"}
        out.append(_condition(old, LANES_DEGRADED, lh.verdict is LaneHealthVerdict.DEGRADED,
                              reason[lh.verdict], lh.reason, now, gen))
    return out


# --- events ----------------------------------------------------------------------------------


def evaluation_events(old: LVMRolloutStatus, new: LVMRolloutStatus) -> list[Event]:
    """Events from the evaluation and lane-health diff: each finished evaluation, gate, drift
    and lane-health transitions, a newly recorded baseline. Each carries its numbers."""
    events = []
    before = old.evaluation or EvaluationStatus()
    after = new.evaluation or EvaluationStatus()
    seen = {(r.version, r.time, r.purpose) for r in before.history or []}
    for r in after.history or []:
        if (r.version, r.time, r.purpose) in seen:
            continue
        if r.error is not None:
            events.append(Event(WARNING, "EvaluationFailed",
                                f"evaluating {r.version} ({r.purpose.value}) failed: {r.error}"))
        else:
            events.append(Event(NORMAL, "Evaluated", (
                f"{r.version} ({r.purpose.value}) on the eval set: Hit@1 {_pct(r.hit1)}, "
                f"Hit@5 {_pct(r.hit5)}, Hit@10 {_pct(r.hit10)}, empty hits "
                f"{_pct(r.empty_hit_rate)}, NaN {_pct(r.nan_rate)} over {r.sequences} sequences "
                f"in {r.seconds or 0:.1f} s")))
    g0, g1 = before.gate, after.gate
    if g1 is not None and g1.verdict in (GateVerdict.PASS, GateVerdict.BLOCKED) and (
            g0 is None or (g0.candidate, g0.verdict) != (g1.candidate, g1.verdict)):
        if g1.verdict is GateVerdict.PASS:
            events.append(Event(NORMAL, "GatePassed", g1.reason))
        else:
            events.append(Event(WARNING, "GateBlocked", g1.reason))
    d0, d1 = before.drift, after.drift
    was_drifted = d0 is not None and d0.verdict is DriftVerdict.DRIFTED
    if d1 is not None and d1.verdict is DriftVerdict.DRIFTED and (
            not was_drifted or d0.time != d1.time):
        events.append(Event(WARNING, "ModelDrift", d1.reason))
    elif was_drifted and d1 is not None and d1.verdict is DriftVerdict.OK:
        events.append(Event(NORMAL, "DriftResolved", d1.reason))
    b0, b1 = before.baseline, after.baseline
    if b1 is not None and b1.source == "recorded" and (
            b0 is None or (b0.version, b0.time) != (b1.version, b1.time)):
        events.append(Event(NORMAL, "BaselineRecorded", (
            f"drift baseline of {b1.version}: Hit@1 {_pct(b1.hit1)}, Hit@5 {_pct(b1.hit5)}, "
            f"Hit@10 {_pct(b1.hit10)} (its first evaluation)")))
    l0, l1 = old.lane_health, new.lane_health
    flagged0 = {(f.version, f.lane, f.source) for f in (l0.flagged or [])} if l0 else set()
    flagged1 = {(f.version, f.lane, f.source) for f in (l1.flagged or [])} if l1 else set()
    if l1 is not None and flagged1 - flagged0:
        events.append(Event(WARNING, "LaneUnhealthy", l1.reason))
    elif l1 is not None and flagged0 and not flagged1:
        events.append(Event(NORMAL, "LanesHealthy", l1.reason))
    return events



_ACTION_EVENTS = {
    Action.ADVANCE: (NORMAL, "StepAdvanced"),
    Action.RESTART: (NORMAL, "Superseded"),
    Action.PROMOTE: (NORMAL, "Promoted"),
    Action.ROLLBACK: (WARNING, "RolledBack"),
    Action.NO_DATA_TIMEOUT: (WARNING, "NoDataTimeout"),
    Action.PAUSE: (WARNING, "InconclusiveTimeout"),
}


def events_for(old: LVMRolloutStatus, new: LVMRolloutStatus, t: TickResult) -> list[Event]:
    events = list(t.events) + evaluation_events(old, new)
    d = t.decision
    if d is not None and d.action in _ACTION_EVENTS:
        kind, reason = _ACTION_EVENTS[d.action]
        if d.action is Action.ADVANCE and d.state.current_step == 0:
            reason = "Started"  # the first step (also after a retry)
        events.append(Event(kind, reason, d.reason))
    elif d is not None and d.guardrail is not None and d.guardrail.verdict.value == "breach":
        k = t.plan.guardrails.consecutive_breaches if t.plan else 0
        events.append(Event(WARNING, "GuardrailBreach",
                            f"breach {d.state.consecutive_breaches}/{k}: {d.guardrail.summary}"))
    if d is not None:
        for c in d.conditions:
            if c.type == NO_DATA and not c.status:
                events.append(Event(NORMAL, c.reason, c.message))
    old_verdict = old.last_analysis.verdict if old.last_analysis else None
    new_verdict = new.last_analysis.verdict if new.last_analysis else None
    if new_verdict != old_verdict and new.last_analysis is not None and (
        d is None or d.action is Action.HOLD
    ):
        if new_verdict is Verdict.ERROR:
            events.append(Event(WARNING, "AnalysisError", new.last_analysis.reason or ""))
        elif new_verdict is Verdict.NO_DATA:
            events.append(Event(NORMAL, "WaitingForData", new.message or ""))
    old_c = {c.type: c for c in old.conditions or []}
    for c in new.conditions or []:
        before = old_c.get(c.type)
        changed = before is None or before.status != c.status or before.reason != c.reason
        if c.type == APPLIED and changed and c.reason in ("ServeApplyFailed", "InvalidSpec"):
            events.append(Event(WARNING, c.reason, c.message))
        elif (c.type == APPLIED and changed and before is not None
              and before.reason == "ServeApplyFailed"):
            events.append(Event(NORMAL, "ServeApplyRecovered", c.message))
    return events


# --- the whole status ------------------------------------------------------------------------

def compute(old: LVMRolloutStatus, t: TickResult) -> StatusUpdate:
    """The new status after tick ``t``, its merge patch against ``old``, and the Events."""
    new = old.model_copy(deep=True)
    new.observed_generation = t.generation
    if t.invalid is not None:
        new.phase = Phase.FAILED
        new.message = _text(f"invalid spec: {t.invalid}")
    else:
        assert t.state is not None
        s = t.state
        new.phase = s.phase
        new.current_step = s.current_step
        new.candidate_weight = s.candidate_weight
        new.consecutive_breaches = s.consecutive_breaches
        new.step_started_at = to_rfc3339(s.step_started_at)
        ends = None
        if (t.plan is not None and s.current_step is not None and s.step_started_at is not None
                and s.paused_at is None and s.phase is Phase.PROGRESSING
                and s.current_step < len(t.plan.steps)):
            ends = s.step_started_at + t.plan.steps[s.current_step].duration_s
        new.next_step_at = to_rfc3339(ends)
        new.decision_state = state_to_status(s)
        if t.serving is not None:
            new.serving = t.serving
        if t.message is not None:
            new.message = _text(t.message)
        elif t.decision is not None and (
            t.decision.action is not Action.HOLD or t.decision.guardrail or t.decision.quality
            or t.decision.conditions or not old.message
            or t.decision.state.current_step is None  # e.g. the gate's verdict changed
        ):
            # A plain hold between checks only restates the countdown: not worth a write.
            new.message = _text(t.decision.reason)
        if t.decision is not None:
            outcomes = [o for o in (t.decision.guardrail, t.decision.quality) if o is not None]
            analysis = last_analysis(outcomes, t.now)
            if analysis is not None:
                new.last_analysis = analysis
    if t.evaluation is not None:
        new.evaluation = t.evaluation
    if t.lane_health is not None:
        new.lane_health = t.lane_health
    if t.git_spec is not KEEP:
        new.git_spec = t.git_spec  # type: ignore[assignment]
    if t.command is not None:
        new.last_command = t.command
    if t.history_add:
        new.history = [*(old.history or []), *t.history_add][-MAX_HISTORY:]
    verdict = new.last_analysis.verdict if new.last_analysis else None
    new.conditions = conditions_for(old.conditions, new.phase, t, verdict, new.message or "") \
        + evaluation_conditions(old.conditions, new, t)
    new = LVMRolloutStatus.model_validate(new.model_dump())  # re-check every constraint
    patch = merge_patch(old.to_k8s(), new.to_k8s())
    return StatusUpdate(new, patch, events_for(old, new, t))


def merge_patch(old: Mapping[str, Any], new: Mapping[str, Any]) -> dict[str, Any] | None:
    """RFC 7386 merge patch turning ``old`` into ``new`` (lists replaced whole); None if equal."""
    patch: dict[str, Any] = {}
    for key, value in new.items():
        before = old.get(key)
        if before == value:
            continue
        if isinstance(value, Mapping) and isinstance(before, Mapping):
            sub = merge_patch(before, value)
            if sub:
                patch[key] = sub
        else:
            patch[key] = value
    for key in old:
        if key not in new:
            patch[key] = None
    return patch or None


def tick_failed(old: LVMRolloutStatus, error_type: str, now: float,
                generation: int | None) -> StatusUpdate:
    """The status and Event for a tick that raised: ``Degraded=True`` (``TickFailed``) with the
    exception's type, never its text (it may quote another service's response), so a tick that
    keeps failing is visible in ``kubectl get``/``describe`` instead of only in the log. The next
    successful tick recomputes the conditions and clears it."""
    message = (f"a reconcile tick failed ({error_type[:100]}); the operator retries with "
               "back-off: see its log")
    prev = {c.type: c for c in old.conditions or []}
    degraded = _condition(prev, DEGRADED, True, "TickFailed", message, now, generation)
    conditions = [c for c in old.conditions or [] if c.type != DEGRADED] + [degraded]
    new = old.model_copy(update={"conditions": conditions})
    patch = merge_patch(old.to_k8s(), new.to_k8s())
    return StatusUpdate(new, patch, [Event(WARNING, "TickFailed", message)])
