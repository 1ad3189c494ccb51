"""One reconcile tick of one LVMRollout as pure functions over plain data.

The shell (:mod:`.reconcile`) does the I/O; everything it must decide is here, in three steps:

1. :func:`plan_tick` — from the CR object as read and ``now``: validate the spec (an invalid one
   becomes phase Failed, nothing applied), reconcile the stored state with the spec (a new or
   changed experiment, :func:`~.transitions.start_for_spec`), consume a manual command
   (:func:`~.transitions.read_command`), and say what must be measured before deciding: the
   checks :func:`~lvm_operator.decision.checks_due` asks for, whether the production lane check
   is due, and which offline evaluations should be running.
2. :func:`tick` — from that plan and what the shell saw (:class:`Seen`: the observations, the
   production lane window, the evaluation runner's answers, the live Serve application): judge
   the evaluations and lane health, decide with the core, record promotions/rollbacks, render
   the Serve config, and compute the whole new status, its merge patch and the Events. The
   result (:class:`TickOutcome`) assumes the config it asks to apply goes live.
   A champion-only spec takes a shorter path through both steps (:mod:`.steady`); what the
   live application means for the apply (drift, staging, its owner) is :mod:`.live`.
3. :func:`settle` — fold what the apply did (:class:`ApplyReport`: failed, not in effect yet,
   or applied) into the status, the Events and the next wait.

Why split this way: measuring and evaluating must know what is due before the decision, and
applying must know the decision; everything between is a function of plain data, so the tick is
tested as tables (``tests/unit/test_controller_tick.py``) with no apiserver, Prometheus or
backend. Why one module of some 450 lines: the three steps share their types (the plan, what
was seen, the outcome), and one tick reads top to bottom in the order the shell calls it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from lvm_serving.contracts.serve_config import AppSpec

from ..api import (
    CommandResult,
    HistoryEntry,
    InvalidRolloutError,
    LVMRolloutSpec,
    LVMRolloutStatus,
    Serving,
    parse_rollout,
    parse_status,
)
from ..backends.protocol import ObservedApp
from ..commands import command_field_manager
from ..decision import (
    Check,
    Decision,
    Observations,
    Plan,
    RolloutState,
    WindowObservation,
    checks_due,
    decide,
    next_decision_in_s,
)
from ..evaluation.protocol import EvalRequest, Finished, Running
from . import adapter
from .evaluations import (
    EVAL_POLL_S,
    EvaluationPlan,
    evaluation_tick,
    lane_check_due,
    lane_health_tick,
    plan_evaluations,
)
from .live import recorded, render
from .readiness import clock_waits_for_traffic, readiness
from .status import APPLIED, WARNING, Event, StatusUpdate, TickResult, compute
from .steady import SteadyStart, champion_not_serving, git_spec, steady_start
from .transitions import (
    CommandRead,
    decision_history,
    read_command,
    retire_expired,
    serving_after,
    start_for_spec,
)

#: Longest sleep between ticks of a finished rollout (commands and spec changes also wake it).
IDLE_TICK_S = 10.0
#: Shortest sleep, so a rollout whose next decision is "now" cannot spin.
MIN_TICK_S = 0.05
#: Longest sleep after a failed apply (the apply is retried next tick).
APPLY_RETRY_S = 2.0


# --- step 1: plan ----------------------------------------------------------------------------


@dataclass(frozen=True)
class LaneCheck:
    """The production lane-health window to read (a quality query)."""

    url: str
    window_s: float


@dataclass(frozen=True)
class TickPlan:
    """What a tick knows before measuring, and what it asks the shell to measure and run."""

    namespace: str
    name: str
    now: float
    generation: int | None
    old: LVMRolloutStatus
    invalid: str | None = None  # the validation message of an invalid spec
    notes: tuple[str, ...] = ()  # things worth a log line (e.g. an unreadable old status)
    # -- the rest only for a valid spec --
    spec: LVMRolloutSpec | None = None
    state: RolloutState = field(default_factory=RolloutState)
    serving: Serving | None = None
    history: tuple[HistoryEntry, ...] = ()  # entries added before deciding (supersede, command)
    command: CommandRead = field(default_factory=lambda: CommandRead(None, False))
    plan: Plan | None = None
    decides: bool = False  # the core has something to decide
    checks: frozenset[Check] = frozenset()  # the checks to measure (when it decides)
    lane_check: LaneCheck | None = None
    evaluations: EvaluationPlan | None = None
    lane_versions: tuple[str, ...] = ()
    # A champion-only spec (``plan`` is None), or a refused one (``steady.refused``)
    steady: SteadyStart | None = None

    @property
    def key(self) -> str:
        return adapter.rollout_key(self.namespace, self.name)

    @property
    def prometheus_url(self) -> str | None:
        return self.spec.prometheus.url if self.spec is not None else None

    @property
    def application(self) -> str | None:
        """The Serve application to observe (None: no valid spec, nothing to observe)."""
        return self.spec.serve.application if self.spec is not None else None

    @property
    def evaluation_requests(self) -> list[EvalRequest]:
        return self.evaluations.requests if self.evaluations is not None else []


def plan_tick(obj: Mapping[str, Any], now: float) -> TickPlan:
    """Step 1: what this tick starts from and what it needs measured (see the module doc)."""
    meta = obj.get("metadata", {})
    namespace, name = meta["namespace"], meta["name"]
    generation = meta.get("generation")
    notes: list[str] = []
    try:
        old = parse_status(obj.get("status"))
    except InvalidRolloutError as e:
        notes.append(f"unreadable status, starting from an empty one: {e}")
        old = LVMRolloutStatus()
    try:
        rollout = parse_rollout({k: v for k, v in obj.items() if k != "status"})
    except InvalidRolloutError as e:
        return TickPlan(namespace, name, now, generation, old, invalid=str(e),
                        notes=tuple(notes))
    spec = rollout.spec
    key = adapter.rollout_key(namespace, name)
    if spec.candidate is None:
        return _plan_steady(namespace, name, now, generation, old, tuple(notes), spec, meta)
    stored = adapter.state_from_status(old.decision_state)
    refused = champion_not_serving(spec, stored, old.serving)
    if refused is not None:  # nothing is applied or decided (a pending command waits)
        assert old.serving is not None
        return TickPlan(namespace, name, now, generation, old, notes=tuple(notes), spec=spec,
                        state=stored, serving=old.serving,
                        steady=SteadyStart(stored, old.serving, refused=refused))
    start = start_for_spec(spec, stored, old.serving, now)
    state, serving, history = start.state, start.serving, list(start.history)
    command = read_command(meta.get("annotations"), spec, state, serving, old, now,
                           command_field_manager(meta))
    if command.effect is not None:
        state, serving = command.effect.state, command.effect.serving
        history += command.effect.history

    plan = adapter.plan_for(spec, paused=bool(serving.manual_pause))
    versions = adapter.known_versions(spec, old.history)
    champion = versions.get(serving.champion or "") or versions[spec.champion.version]
    not_started = (state.current_step is None and not state.phase.finished) or bool(
        state.fingerprint and state.fingerprint != plan.fingerprint)
    in_rollout = serving.candidate == spec.candidate.version
    evaluations = plan_evaluations(
        spec, key, old.evaluation, not_started=not_started, champion=champion,
        candidate=versions[spec.candidate.version] if in_rollout else None, now=now,
        reevaluate=command.effect is not None and command.effect.reevaluate)
    lane_versions = (champion.version,) + (
        (spec.candidate.version,) if in_rollout and not state.phase.finished else ())
    lane_check = None
    if lane_check_due(old.lane_health, now):
        lane_check = LaneCheck(spec.prometheus.url, spec.analysis.lane_health.window_seconds)
    decides = not state.phase.finished or state.fingerprint != plan.fingerprint
    return TickPlan(
        namespace, name, now, generation, old, notes=tuple(notes), spec=spec, state=state,
        serving=serving, history=tuple(history), command=command, plan=plan, decides=decides,
        checks=checks_due(plan, state, now) if decides else frozenset(),
        lane_check=lane_check, evaluations=evaluations, lane_versions=lane_versions,
    )


def _plan_steady(namespace: str, name: str, now: float, generation: int | None,
                 old: LVMRolloutStatus, notes: tuple[str, ...], spec: LVMRolloutSpec,
                 meta: Mapping[str, Any]) -> TickPlan:
    """Step 1 for a champion-only spec (:mod:`.steady`): no decision, only the champion."""
    key = adapter.rollout_key(namespace, name)
    history = list(old.history or [])
    start = steady_start(spec, adapter.state_from_status(old.decision_state), old.serving,
                         history, now)
    if start.refused is not None:  # a pending command waits too
        return TickPlan(namespace, name, now, generation, old, notes=notes, spec=spec,
                        state=start.state, serving=start.serving, steady=start)
    command = read_command(meta.get("annotations"), spec, start.state, start.serving, old, now,
                           command_field_manager(meta))
    added = list(start.history)
    if command.effect is not None and command.effect.record.result is CommandResult.ACCEPTED:
        # rollback --to: another served version takes all traffic, and stays steady
        added += command.effect.history
        again = steady_start(spec, command.effect.state, command.effect.serving,
                             history + added, now)
        if again.refused is None:
            added += again.history
            start = replace(again, events=[*start.events, *again.events],
                            message=command.effect.message or again.message)
    versions = adapter.known_versions(spec, history + added)
    champion = versions[start.serving.champion or spec.champion.version]
    evaluations = plan_evaluations(spec, key, old.evaluation, not_started=False,
                                   champion=champion, candidate=None, now=now,
                                   reevaluate=False)
    lane_check = None
    if lane_check_due(old.lane_health, now):
        lane_check = LaneCheck(spec.prometheus.url, spec.analysis.lane_health.window_seconds)
    return TickPlan(namespace, name, now, generation, old, notes=notes, spec=spec,
                    state=start.state, serving=start.serving, history=tuple(added),
                    command=command, lane_check=lane_check, evaluations=evaluations,
                    lane_versions=(champion.version,), steady=start)


# --- step 2: tick ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Seen:
    """What the shell measured and observed for a :class:`TickPlan`."""

    observations: Observations = field(default_factory=Observations)  # for ``plan.checks``
    lane: WindowObservation | None = None  # the production window, when ``plan.lane_check``
    evaluations: tuple[Running | Finished, ...] = ()  # one per ``plan.evaluation_requests``
    serving: ObservedApp | None = None  # the live Serve application; None: unknown
    # Another LVMRollout ("namespace/name") that exists and whose router serves this
    # application: this rollout must not touch it
    owner: str | None = None


@dataclass(frozen=True)
class ApplyReport:
    """What applying :attr:`TickOutcome.apply` did."""

    error: str | None = None  # the backend failed (retried next tick)
    in_effect: bool = True  # False: the router's config is not live yet (apply again next tick)


@dataclass(frozen=True)
class TickOutcome:
    """Everything the shell must do after a tick: apply, write, remove, emit, sleep."""

    update: StatusUpdate  # the whole new status, its merge patch (None: no write), the Events
    apply: AppSpec | None  # the Serve config to apply (its hash differs from the recorded one)
    remove_annotations: tuple[str, ...]  # the consumed command's annotations
    wait_s: float  # seconds until the next tick is useful
    decision: Decision | None = None
    observed: ObservedApp | None = None  # the live application as seen before the apply
    # what :func:`settle` needs to redo the status after a failed or unverified apply
    result: TickResult | None = None
    digest: str | None = None
    busy: bool = False  # an evaluation is running
    next_at: tuple[float, ...] = ()  # evaluation / lane-health times that bound the wait
    held_back: bool = False  # ``apply`` keeps a not-yet-running candidate at 0% for now

    @property
    def status(self) -> LVMRolloutStatus:
        return self.update.status

    @property
    def events(self) -> list[Event]:
        return self.update.events


def tick(p: TickPlan, seen: Seen) -> TickOutcome:
    """Step 2: the decision and everything that follows from it (see the module doc)."""
    old, now = p.old, p.now
    if p.invalid is not None:
        result = TickResult(now=now, generation=p.generation, invalid=p.invalid)
        return TickOutcome(compute(old, result), None, (), IDLE_TICK_S, result=result)
    if p.steady is not None and p.steady.refused is not None:
        return _refused(p, "ChampionNotServing", p.steady.refused)
    spec, plan, state, serving = p.spec, p.plan, p.state, p.serving
    assert spec is not None and serving is not None and p.evaluations is not None
    effect = p.command.effect
    history = list(p.history)
    events = list(effect.events) if effect is not None else []

    evaluation = evaluation_tick(spec, p.evaluations, seen.evaluations)
    lane_health = lane_health_tick(
        spec, old.lane_health, evaluation.status or old.evaluation,
        versions=list(p.lane_versions),
        observation=seen.lane if p.lane_check is not None else None, now=now)

    if seen.owner is not None and seen.owner != p.key:
        return _refused(p, "ApplicationOwnedElsewhere", (
            f"Serve application {spec.serve.application!r} is served by LVMRollout "
            f"{seen.owner}; this rollout changes nothing until that one is deleted or points "
            "elsewhere (or set spec.serve.application to another name)"))
    if p.steady is not None:
        return _steady_tick(p, seen, evaluation, lane_health, events, history)
    assert plan is not None
    decision: Decision | None = None
    if p.decides:
        state = clock_waits_for_traffic(state, serving, now)
        decision = decide(plan, state, replace(seen.observations, gate=evaluation.gate), now)
        state = decision.state
        history += decision_history(decision, spec, old.history, now)
        serving = serving_after(decision, spec, serving, now)
    serving, retired = retire_expired(serving, now)
    events += retired

    app = adapter.app_spec_for(spec, p.key, state, serving, [*(old.history or []), *history],
                               now=now)
    r = render(app, serving, seen.serving, old, now)
    serving, to_apply, held_back, apply_error, digest = (
        r.serving, r.to_apply, r.held_back, r.apply_error, r.digest)
    events += r.events
    message = effect.message if effect is not None else None
    wait = readiness(spec, old, state, serving, seen.serving, held_back is not None, now)
    state, serving = wait.state, wait.serving
    events += wait.events
    history += wait.history
    if wait.rolled_back is not None:
        # Past the progress deadline: the champion takes everything, as after any rollback.
        message = wait.rolled_back
        app = adapter.app_spec_for(spec, p.key, state, serving,
                                   [*(old.history or []), *history], now=now)
        digest = adapter.config_hash(app)
        to_apply, held_back = app, None
        serving = recorded(serving, digest, now, app)

    result = TickResult(
        now=now, generation=p.generation, state=state, plan=plan, decision=decision,
        serving=serving, apply_error=apply_error, message=message, history_add=history,
        command=effect.record if effect is not None else None, events=events,
        evaluation=evaluation.status, lane_health=lane_health,
        candidate_not_ready=wait.not_ready,
        git_spec=git_spec(spec, state, serving, [*(old.history or []), *history]),
    )
    next_at = tuple(t for t in (evaluation.next_at, lane_health.next_check_at
                                and lane_health.next_check_at.timestamp()) if t is not None)
    return TickOutcome(
        compute(old, result), to_apply, p.command.remove_annotations,
        wait_s(plan, state, serving, now,
               apply_failed=apply_error is not None or held_back is not None,
               busy=evaluation.busy, next_at=next_at),
        decision=decision, observed=seen.serving, result=result, digest=digest,
        busy=evaluation.busy, next_at=next_at, held_back=held_back is not None,
    )


def _steady_tick(p: TickPlan, seen: Seen, evaluation, lane_health, events: list[Event],
                 history: list[HistoryEntry]) -> TickOutcome:
    """Step 2 for a champion-only spec: serve the champion alone (see :mod:`.steady`)."""
    assert p.spec is not None and p.steady is not None and p.serving is not None
    old, now, effect = p.old, p.now, p.command.effect
    serving, retired = retire_expired(p.serving, now)
    events = [*events, *p.steady.events, *retired]
    refused = None
    if p.steady.mismatch is not None:
        refused = ("ChampionNotServing", p.steady.mismatch)
        previous = next((c for c in old.conditions or [] if c.type == APPLIED), None)
        if previous is None or previous.reason != refused[0]:
            events.append(Event(WARNING, *refused))
    known = [*(old.history or []), *history]
    app = adapter.app_spec_for(p.spec, p.key, p.state, serving, known, now=now)
    r = render(app, serving, seen.serving, old, now)
    result = TickResult(
        now=now, generation=p.generation, state=p.state, serving=r.serving,
        apply_error=r.apply_error,
        message=(effect.message if effect is not None else None) or p.steady.message,
        history_add=history, command=effect.record if effect is not None else None,
        events=[*events, *r.events], evaluation=evaluation.status, lane_health=lane_health,
        git_spec=git_spec(p.spec, p.state, r.serving, known), refused=refused,
    )
    next_at = tuple(t for t in (evaluation.next_at, lane_health.next_check_at
                                and lane_health.next_check_at.timestamp()) if t is not None)
    return TickOutcome(
        compute(old, result), r.to_apply, p.command.remove_annotations,
        wait_s(None, p.state, r.serving, now, apply_failed=r.apply_error is not None,
               busy=evaluation.busy, next_at=next_at),
        observed=seen.serving, result=result, digest=r.digest, busy=evaluation.busy,
        next_at=next_at)


def _refused(p: TickPlan, reason: str, text: str) -> TickOutcome:
    """Nothing is applied, decided or commanded (a pending command waits), and the Ready
    condition (False, ``reason``) and one Warning Event say why: one owner per Serve
    application; a champion-only spec must name the version that serves."""
    assert p.spec is not None and p.serving is not None
    events = []
    previous = next((c for c in p.old.conditions or [] if c.type == APPLIED), None)
    if previous is None or previous.reason != reason:
        events.append(Event(WARNING, reason, text))
    result = TickResult(now=p.now, generation=p.generation,
                        state=adapter.state_from_status(p.old.decision_state), plan=p.plan,
                        serving=p.old.serving or p.serving, refused=(reason, text),
                        events=events)
    return TickOutcome(compute(p.old, result), None, (), IDLE_TICK_S, result=result)


# --- step 3: settle --------------------------------------------------------------------------


def settle(p: TickPlan, outcome: TickOutcome, report: ApplyReport) -> TickOutcome:
    """Step 3: the outcome after applying ``outcome.apply`` as ``report`` says."""
    if outcome.apply is None or (report.error is None and report.in_effect):
        return outcome
    result = outcome.result
    assert result is not None and result.serving is not None and result.state is not None
    # The hash stays unrecorded, so the next tick applies again (a no-op when live) and
    # re-checks; a failure also becomes the Ready/Degraded conditions and a Warning Event.
    before = p.serving
    assert before is not None
    serving = result.serving.model_copy(update={"config_hash": before.config_hash,
                                                "applied_at": before.applied_at,
                                                "applied_traffic": before.applied_traffic})
    result = replace(result, serving=serving, apply_error=report.error)
    return replace(
        outcome, update=compute(p.old, result), result=result,
        wait_s=wait_s(p.plan, result.state, serving, p.now,
                      apply_failed=report.error is not None, busy=outcome.busy,
                      next_at=outcome.next_at))


def wait_s(plan: Plan | None, state: RolloutState, serving: Serving, now: float, *,
           apply_failed: bool, busy: bool, next_at: tuple[float, ...]) -> float:
    """Seconds until the next tick is useful: the core's next decision, a warm champion's
    deadline, a running evaluation's poll, a drift or lane check; soon after a failed apply.
    ``plan`` None: a champion-only spec (nothing to decide)."""
    interval = plan.guardrails.interval_s if plan is not None else IDLE_TICK_S
    if apply_failed:
        return min(interval, APPLY_RETRY_S)
    wait = next_decision_in_s(plan, state, now) if plan is not None else None
    if wait is None:
        wait = IDLE_TICK_S
        if serving.retiring_until is not None:
            wait = min(wait, max(0.0, serving.retiring_until.timestamp() - now))
    if busy:
        wait = min(wait, EVAL_POLL_S)
    for due_at in next_at:
        wait = min(wait, max(0.0, due_at - now))
    return max(MIN_TICK_S, min(wait, interval, IDLE_TICK_S))
