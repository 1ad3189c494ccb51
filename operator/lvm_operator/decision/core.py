"""``decide(plan, state, observations, now) -> Decision``: the rollout policy as a pure function.

The state goes in and comes out (Ray Serve's autoscaling policy does the same), so every timer
and counter that shapes a decision lives in the CR's status and a restarted operator resumes
exactly. No I/O here: the operator asks :func:`checks_due` which checks to run, queries
Prometheus, and hands the results in.

Order of evaluation in one call:

1. **Spec change** (``plan.fingerprint`` differs from ``state.fingerprint``): start over at
   step 0 (``RESTART``); a paused rollout goes back to no candidate traffic and waits.
2. **Finished** phases (Promoted, RolledBack, ...): hold; nothing left to decide.
3. **Not started**: go to step 0 (``ADVANCE``) unless paused, or unless ``plan.gate_required``
   and the pre-rollout gate has not passed: then the candidate gets no traffic and the rollout
   stays Pending with the gate's reason (blocked, failed or still evaluating).
4. **Pause bookkeeping**: pausing stops the dwell clock and the no-data clock; resuming shifts
   them by the time spent paused. Rollback triggers stay armed while paused: a paused rollout
   holds its step, it does not stop protecting users.
5. **Checks that are due**, each on its own interval, independent of the step's dwell time:

   * guardrails: ``breach`` adds one to ``consecutive_breaches``; ``pass`` or ``inconclusive``
     reset it; ``noData`` and ``error`` leave it as it is (a Prometheus blip neither extends
     nor launders a streak). K consecutive breaches roll back at once.
   * quality: judged only on ``min_requests`` feedback events; one ``breach`` (Hit@5 proxy
     below the rollback minimum, a lane failing completely) rolls back at once, since it is
     already accumulated evidence.

6. **No data**: while the latest verdict of either check is ``noData``/``error``, the step
   holds; after ``max_hold_s`` the NoData condition is raised once (``NO_DATA_TIMEOUT``), or
   the rollout rolls back if ``on_no_data`` is ``rollback``.
7. **Paused**: hold.
8. **Dwell**: before the step's end, hold. After it, advance (or promote after the last step)
   only if the latest guardrail *and* quality verdicts are ``pass`` and were taken during this
   step (after ``step_started_at``); ``inconclusive``, ``noData`` and ``error`` hold.
9. **Inconclusive**: a judged check that stays ``inconclusive`` after the dwell for
   ``max_inconclusive_s`` pauses the rollout for a person (``PAUSE``; the operator records
   it as a command-level pause, so ``kubectl lvm resume`` continues) or rolls back.

Why one module of some 400 lines: :func:`decide` is one ordered procedure, and its steps (and
the windows each check reads) read best top to bottom in that order.
"""

from __future__ import annotations

import math
from dataclasses import replace

from . import fmt
from .assess import assess_guardrails, assess_quality
from .model import (
    Action,
    Check,
    CheckOutcome,
    Condition,
    Decision,
    GateVerdict,
    InconclusiveAction,
    Judge,
    NoDataAction,
    Observations,
    Phase,
    Plan,
    RolloutState,
    Verdict,
    WindowObservation,
)

NO_DATA_CONDITION = "NoData"


def _due(last_at: float | None, interval_s: float, now: float) -> bool:
    # A clock that stepped backwards (now < last) must not switch the checks off until it
    # catches up: the circuit breaker stays armed.
    return last_at is None or now - last_at >= interval_s or now < last_at


def _guardrail_start(plan: Plan, state: RolloutState, now: float) -> float:
    """Where the next guardrail window starts: the last judged check, never before the step's
    weight (``guardrail_since`` is set on entering a step; the step's dwell may start later,
    when its traffic is in effect, and the guardrails judge what is live meanwhile)."""
    start = state.guardrail_since if state.guardrail_since is not None else state.step_started_at
    if start is None or start > now:  # none yet, or the clock stepped back: the shortest window
        start = now - plan.guardrails.window_s
    return start


def guardrail_window_s(plan: Plan, state: RolloutState, now: float) -> float:
    """The range the guardrail check at ``now`` reads: since the last judged check (or the
    step's start), in whole seconds, at least ``plan.guardrails.window_s``. Windows of judged
    checks never overlap (see :class:`~.model.GuardrailPolicy`)."""
    return max(plan.guardrails.window_s, float(math.floor(now - _guardrail_start(plan, state,
                                                                                   now))))


def quality_window_s(plan: Plan, state: RolloutState, now: float) -> float:
    """The quality check's range: ``quality.window_s``, but never reaching back before this
    attempt's first step (a retried candidate is not judged on the previous attempt's
    evidence) nor across the last failed quality check (a window spanning a Prometheus outage
    read a Hit@5 proxy of 54% for a 70% candidate: counters resumed unevenly after the gap).
    The sequential judge reads the whole step so far instead of ``window_s``."""
    window = plan.quality.window_s
    starts = [t for t in (state.attempt_started_at, state.quality_since) if t is not None]
    if plan.quality.judge is Judge.SEQUENTIAL:
        # the step so far: one stratum (never pooled across a weight change), however long
        window = math.inf
        starts += [t for t in (state.step_started_at,) if t is not None]
    start = max(starts) if starts else None
    if start is not None and start <= now:
        window = min(window, max(1.0, float(math.floor(now - start))))
    return window if math.isfinite(window) else plan.quality.window_s


def _spec_changed(plan: Plan, state: RolloutState) -> bool:
    return state.fingerprint != plan.fingerprint and state.current_step is not None


def checks_due(plan: Plan, state: RolloutState, now: float) -> frozenset[Check]:
    """The checks :func:`decide` will evaluate at ``now`` (and so needs observations for)."""
    if state.phase.finished or state.current_step is None or _spec_changed(plan, state):
        return frozenset()
    due = set()
    if _due(state.last_guardrail_at, plan.guardrails.interval_s, now) and (
            now - _guardrail_start(plan, state, now) >= plan.guardrails.window_s):
        due.add(Check.GUARDRAIL)
    if _due(state.last_quality_at, plan.quality.interval_s, now):
        due.add(Check.QUALITY)
    return frozenset(due)


def next_decision_in_s(plan: Plan, state: RolloutState, now: float) -> float | None:
    """Seconds until something can change (a check is due, a step ends, the no-data deadline).

    ``None`` when the rollout is finished. 0 when a decision is due now (e.g. not yet started).
    """
    if state.phase.finished:
        return None
    if state.current_step is None or _spec_changed(plan, state):
        # Waiting for the gate: the operator wakes when an evaluation finishes, not sooner.
        return 0.0 if not (plan.paused or plan.gate_required) else plan.guardrails.interval_s
    def last(at: float | None) -> float:
        return now if at is None else at

    times = [
        max(last(state.last_guardrail_at) + plan.guardrails.interval_s,
            _guardrail_start(plan, state, now) + plan.guardrails.window_s),
        last(state.last_quality_at) + plan.quality.interval_s,
    ]
    if state.paused_at is None and not plan.paused:
        deadlines = []
        if state.step_started_at is not None and state.current_step < len(plan.steps):
            deadlines.append(state.step_started_at + plan.steps[state.current_step].duration_s)
        if state.no_data_since is not None and plan.max_hold_s is not None:
            deadlines.append(state.no_data_since + plan.max_hold_s)
        if state.inconclusive_since is not None and plan.max_inconclusive_s is not None:
            deadlines.append(state.inconclusive_since + plan.max_inconclusive_s)
        # A deadline already past was acted on by the decision at ``now`` (a step whose dwell
        # is over waits for its next check, not for "now" again: waking at once would spin,
        # and 1,000 spinning rollouts starve the rest of the tick workers: issue 22).
        times += [t for t in deadlines if t > now]
    return max(0.0, min(times) - now)


def _short(fp: str) -> str:
    return (fp[:12] or '""')


def _where(plan: Plan, state: RolloutState) -> str:
    i = state.current_step
    if i is None:
        return "before the first step"
    shadow = ", shadow" if state.shadow else ""
    return f"step {i + 1}/{len(plan.steps)} (candidate {state.candidate_weight}%{shadow})"


def _enter_step(plan: Plan, state: RolloutState, index: int, now: float) -> RolloutState:
    step = plan.steps[index]
    return replace(
        state,
        phase=Phase.PAUSED if plan.paused else Phase.PROGRESSING,
        current_step=index,
        candidate_weight=step.weight,
        shadow=step.shadow,
        step_started_at=now,
        paused_at=now if plan.paused else None,
        guardrail_since=now,  # evidence never pools across a weight change
    )


def _step_text(plan: Plan, index: int) -> str:
    step = plan.steps[index]
    shadow = "" if not step.shadow else (
        " (shadow)" if step.shadow_percent >= 100 else f" (shadow {step.shadow_percent}%)")
    return (f"step {index + 1}/{len(plan.steps)}: candidate {plan.candidate} at "
            f"{step.weight}%{shadow} for {fmt.duration(step.duration_s)}")


def _start(plan: Plan, state: RolloutState, now: float,
           previous: RolloutState | None, observations: Observations) -> Decision:
    prefix = ""
    conditions: tuple[Condition, ...] = ()
    if previous is not None:
        prefix = (f"spec changed ({_short(previous.fingerprint)} -> {_short(plan.fingerprint)}) "
                  f"at {_where(plan, previous)}: ")
        if previous.no_data_raised:
            conditions = (Condition(NO_DATA_CONDITION, False, "SpecChanged",
                                    "the spec changed; analysis starts over"),)
    if plan.paused:
        state = replace(state, phase=Phase.PAUSED, candidate_weight=0, shadow=False)
        action = Action.RESTART if previous is not None else Action.HOLD
        return Decision(action, f"{prefix}paused before the first step: candidate "
                                f"{plan.candidate} gets no traffic until resumed", state,
                        conditions=conditions)
    gate = observations.gate
    if plan.gate_required and (gate is None or gate.verdict is not GateVerdict.PASS):
        state = replace(state, phase=Phase.PENDING, candidate_weight=0, shadow=False)
        action = Action.RESTART if previous is not None else Action.HOLD
        if gate is None or gate.verdict is GateVerdict.PENDING:
            why = (gate.reason if gate is not None and gate.reason else
                   f"evaluating candidate {plan.candidate} on the eval set before any traffic")
        elif gate.verdict is GateVerdict.BLOCKED:
            why = f"pre-rollout gate blocked {plan.candidate}: {gate.reason}"
        else:
            why = f"pre-rollout evaluation failed: {gate.reason}"
        return Decision(action, f"{prefix}not started: {why}", state, conditions=conditions)
    # Check clocks start with the step, so the first checks see an interval of traffic.
    state = replace(
        _enter_step(plan, state, 0, now),
        last_guardrail_at=now, last_quality_at=now, consecutive_breaches=0,
        attempt_started_at=now, identity=plan.identity,
    )
    action = Action.RESTART if previous is not None else Action.ADVANCE
    verb = "restarted at" if previous is not None else "started"
    return Decision(action, f"{prefix}{verb} {_step_text(plan, 0)}", state,
                    conditions=conditions)


def _rollback(plan: Plan, state: RolloutState, why: str, g: CheckOutcome | None,
              q: CheckOutcome | None, conditions: list[Condition]) -> Decision:
    state = replace(state, phase=Phase.ROLLED_BACK, candidate_weight=0, shadow=False,
                    paused_at=None)
    return Decision(Action.ROLLBACK, f"rolled back: {why}", state, g, q, tuple(conditions))


def _checks_text(plan: Plan, state: RolloutState) -> str:
    parts = []
    for label, verdict, reason in (
        ("guardrails", state.last_guardrail_verdict, state.last_guardrail_reason),
        ("quality", state.last_quality_verdict, state.last_quality_reason),
    ):
        if verdict is None:
            parts.append(f"{label} not checked yet")
        elif verdict is Verdict.PASS:
            parts.append(f"{label} pass")
        elif verdict is Verdict.BREACH and label == "guardrails":
            k = plan.guardrails.consecutive_breaches
            parts.append(f"guardrail breach {state.consecutive_breaches}/{k}: {reason}")
        else:
            parts.append(f"{label} {verdict.value}: {reason}")
    return "; ".join(parts)


def _run_check(
    check: Check, plan: Plan, obs: WindowObservation | None, state: RolloutState, now: float,
    reference: WindowObservation | None = None,
) -> tuple[CheckOutcome, RolloutState]:
    if obs is None:
        last = state.last_guardrail_at if check is Check.GUARDRAIL else state.last_quality_at
        raise ValueError(
            f"the {check.value} check is due at {now} (last at {last}) but observations."
            f"{check.value} is None; query the checks that checks_due() returns"
        )
    if check is Check.GUARDRAIL:
        out = assess_guardrails(plan, obs, reference)
        streak = state.consecutive_breaches
        if out.verdict is Verdict.BREACH:
            streak += 1
        elif out.verdict in (Verdict.PASS, Verdict.INCONCLUSIVE):
            streak = 0
        # A judged window is used up; too few samples (noData) or an error keep the window's
        # start, so the next check reads a longer window instead of a handful of requests.
        since = state.guardrail_since if out.verdict.lacks_evidence else now
        return out, replace(
            state, last_guardrail_at=now, last_guardrail_verdict=out.verdict,
            last_guardrail_reason=out.summary, consecutive_breaches=streak,
            guardrail_since=since,
        )
    out = assess_quality(plan, obs, candidate_weight=state.candidate_weight)
    return out, replace(
        state, last_quality_at=now, last_quality_verdict=out.verdict,
        last_quality_reason=out.summary,
        quality_since=now if out.verdict is Verdict.ERROR else state.quality_since,
    )


def _inconclusive(plan: Plan, state: RolloutState, now: float,
                  lacking: bool) -> tuple[RolloutState, str | None]:
    """The inconclusive clock after a step's dwell: (state, why it timed out or None).

    It runs while the latest checks were judged and at least one is inconclusive (between the
    success criteria and the rollback triggers); no data has its own clock (``max_hold_s``)."""
    inconclusive = [
        (label, reason) for label, verdict, reason in (
            ("guardrails", state.last_guardrail_verdict, state.last_guardrail_reason),
            ("quality", state.last_quality_verdict, state.last_quality_reason))
        if verdict is Verdict.INCONCLUSIVE
    ]
    if lacking or not inconclusive:
        return replace(state, inconclusive_since=None), None
    since = now if state.inconclusive_since is None else min(state.inconclusive_since, now)
    state = replace(state, inconclusive_since=since)
    limit = plan.max_inconclusive_s
    if limit is None or now - since < limit:
        return state, None
    what = "; ".join(f"{label}: {reason}" for label, reason in inconclusive)
    return state, (f"inconclusive for {fmt.duration(now - since)} after the step's dwell "
                   f"(limit {fmt.duration(limit)}): {what}")


def decide(plan: Plan, state: RolloutState, observations: Observations, now: float) -> Decision:
    """One step of the rollout policy. Pure: same inputs, same decision.

    ``observations`` must hold a :class:`WindowObservation` for every check in
    ``checks_due(plan, state, now)``; parts for checks that are not due are ignored (so an
    operator woken early cannot count one breach twice). Raises ``ValueError`` when a due check
    has no observation.
    """
    previous = None
    if state.fingerprint != plan.fingerprint:
        if state.current_step is None and not state.phase.finished:
            state = replace(state, fingerprint=plan.fingerprint)  # first sight: adopt it
        elif state.phase.finished and plan.identity and state.identity == plan.identity:
            # Same champion and candidate, another plan (a Git edit of the steps, thresholds,
            # intervals): a finished rollout stays finished.
            state = replace(state, fingerprint=plan.fingerprint)
        else:
            previous = state
            state = RolloutState(fingerprint=plan.fingerprint)
    if (state.current_step is not None and state.current_step >= len(plan.steps)
            and not state.phase.finished):
        # Only reachable when the operator's fingerprint missed a change to the steps.
        previous, state = state, RolloutState(fingerprint=plan.fingerprint)

    if state.phase.finished:
        return Decision(Action.HOLD, f"rollout finished ({state.phase.value}); "
                                     f"nothing to decide", state)
    if state.current_step is None:
        return _start(plan, state, now, previous, observations)

    # --- pause bookkeeping ------------------------------------------------------------------
    note = ""
    if plan.paused and state.paused_at is None:
        state = replace(state, phase=Phase.PAUSED, paused_at=now)
        note = "paused: dwell clock stopped"
    elif not plan.paused and state.paused_at is not None:
        paused_for = now - state.paused_at
        last_start = now if state.step_started_at is None else state.step_started_at
        no_data_since = state.no_data_since
        if no_data_since is not None:
            # Only the lacking time before the pause counts toward max_hold_s.
            no_data_since = now - max(0.0, state.paused_at - no_data_since)
        state = replace(
            state, phase=Phase.PROGRESSING, paused_at=None, no_data_since=no_data_since,
            step_started_at=last_start + paused_for,
            inconclusive_since=None,  # a person looked: a full limit again before the next pause
        )
        note = f"resumed after {fmt.duration(paused_for)} paused"
    elif not plan.paused and state.phase is Phase.PAUSED:
        state = replace(state, phase=Phase.PROGRESSING)

    # --- checks -----------------------------------------------------------------------------
    due = checks_due(plan, state, now)
    g = q = None
    if Check.GUARDRAIL in due:
        g, state = _run_check(Check.GUARDRAIL, plan, observations.guardrail, state, now,
                              observations.guardrail_reference)
    if Check.QUALITY in due:
        q, state = _run_check(Check.QUALITY, plan, observations.quality, state, now)

    conditions: list[Condition] = []
    why = []
    k = plan.guardrails.consecutive_breaches
    if g is not None and g.verdict is Verdict.BREACH and state.consecutive_breaches >= k:
        streak = state.consecutive_breaches
        why.append(g.summary + (f" for {streak} consecutive checks" if streak > 1 else ""))
    if q is not None and q.verdict is Verdict.BREACH:
        why.append(f"{q.summary} (quality, last {fmt.duration(plan.quality.window_s)})")
    if why:
        return _rollback(plan, state, "; ".join(why), g, q, conditions)

    # --- no data ----------------------------------------------------------------------------
    lacking = [
        (label, reason)
        for label, verdict, reason in (
            ("guardrails", state.last_guardrail_verdict, state.last_guardrail_reason),
            ("quality", state.last_quality_verdict, state.last_quality_reason),
        )
        if verdict is not None and verdict.lacks_evidence
    ]
    if lacking:
        if state.no_data_since is None:
            state = replace(state, no_data_since=now)
    elif state.no_data_since is not None or state.no_data_raised:
        if state.no_data_raised:
            conditions.append(Condition(NO_DATA_CONDITION, False, "DataResumed",
                                        f"analysis has data again at {_where(plan, state)}"))
        state = replace(state, no_data_since=None, no_data_raised=False)

    if lacking and state.paused_at is None and plan.max_hold_s is not None:
        assert state.no_data_since is not None
        held = now - state.no_data_since
        if held >= plan.max_hold_s:
            what = "; ".join(f"{label}: {reason}" for label, reason in lacking)
            text = (f"no usable analysis for {fmt.duration(held)} "
                    f"(max hold {fmt.duration(plan.max_hold_s)}): {what}")
            if plan.on_no_data is NoDataAction.ROLLBACK:
                return _rollback(plan, state, text, g, q, conditions)
            if not state.no_data_raised:
                state = replace(state, no_data_raised=True)
                conditions.append(Condition(NO_DATA_CONDITION, True, "NoDataTimeout", text))
                return Decision(Action.NO_DATA_TIMEOUT, f"holding at {_where(plan, state)}: "
                                f"{text}", state, g, q, tuple(conditions))

    # --- paused -----------------------------------------------------------------------------
    i = state.current_step
    step = plan.steps[i]
    assert state.step_started_at is not None
    ends_at = state.step_started_at + step.duration_s
    if state.paused_at is not None:
        left = max(0.0, ends_at - state.paused_at)
        head = note or "paused"
        return Decision(Action.HOLD, f"{head} at {_where(plan, state)} with "
                        f"{fmt.duration(left)} of dwell left; {_checks_text(plan, state)}",
                        state, g, q, tuple(conditions))

    prefix = f"{note}; " if note else ""
    # --- dwell ------------------------------------------------------------------------------
    if now < ends_at:
        return Decision(Action.HOLD, f"{prefix}holding at {_where(plan, state)}: "
                        f"{fmt.duration(ends_at - now)} of dwell left; "
                        f"{_checks_text(plan, state)}", state, g, q, tuple(conditions))

    started = state.step_started_at
    fresh_pass = (
        state.last_guardrail_verdict is Verdict.PASS
        and state.last_quality_verdict is Verdict.PASS
        and state.last_guardrail_at is not None and state.last_guardrail_at > started
        and state.last_quality_at is not None and state.last_quality_at > started
    )
    if not fresh_pass:
        stale = [
            label for label, at in (("guardrails", state.last_guardrail_at),
                                    ("quality", state.last_quality_at))
            if at is None or at <= started
        ]
        wait = (f"waiting for a {' and '.join(stale)} check in this step" if stale
                else "waiting for passing checks")
        state, timeout = _inconclusive(plan, state, now, bool(lacking or stale))
        if timeout is not None:
            if plan.on_inconclusive is InconclusiveAction.ROLLBACK:
                return _rollback(plan, state, timeout, g, q, conditions)
            state = replace(state, phase=Phase.PAUSED, paused_at=now, inconclusive_since=None)
            return Decision(Action.PAUSE, f"{prefix}paused at {_where(plan, state)} for a "
                            f"person: {timeout}; resume with kubectl lvm resume, or promote or "
                            "abort", state, g, q, tuple(conditions))
        return Decision(Action.HOLD, f"{prefix}holding at {_where(plan, state)}: dwell done; "
                        f"{wait}; {_checks_text(plan, state)}", state, g, q, tuple(conditions))
    state = replace(state, inconclusive_since=None)

    evidence = f"{state.last_guardrail_reason}; {state.last_quality_reason}"
    done = f"step {i + 1}/{len(plan.steps)} passed after {fmt.duration(now - started)}"
    if i + 1 == len(plan.steps):
        state = replace(state, phase=Phase.PROMOTED, candidate_weight=100, shadow=False)
        return Decision(Action.PROMOTE, f"{prefix}promoted {plan.candidate}: {done}: "
                        f"{evidence}", state, g, q, tuple(conditions))
    state = _enter_step(plan, state, i + 1, now)
    return Decision(Action.ADVANCE, f"{prefix}advanced to {_step_text(plan, i + 1)}; {done}: "
                    f"{evidence}", state, g, q, tuple(conditions))
