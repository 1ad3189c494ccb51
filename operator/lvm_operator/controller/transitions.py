"""The rollout's transitions outside the decision core, as pure functions over plain data.

The core decides step by step from measurements; a few moves are made by the controller itself
and recorded in ``status.history`` and ``status.serving``: a manual command (``kubectl lvm``),
a promotion (the candidate becomes champion, the old champion stays warm a while), a spec change
that supersedes the candidate mid-rollout, and ``rollback --to`` a version from history. Each
is a function of (spec, state, serving, previous status, ``now``) returning the new ones, so
every verb × phase case is one row of ``tests/unit/test_controller_transitions.py``.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace

from ..api import (
    CommandResult,
    HistoryEntry,
    LastCommand,
    LVMRolloutSpec,
    LVMRolloutStatus,
    ModelVersion,
    Outcome,
    Serving,
)
from ..api.spec import DNS_LABEL_PATTERN
from ..commands import (
    ANNOTATION_COMMAND,
    ANNOTATION_COMMAND_BY,
    ANNOTATION_COMMAND_ID,
    COMMAND_ANNOTATIONS,
    Command,
    CommandError,
    Verb,
    bounded_who,
    parse_command,
    safe_command_id,
)
from ..decision import Action, Decision, Phase, RolloutState
from . import adapter
from .status import NORMAL, WARNING, Event

_VERSION = re.compile(DNS_LABEL_PATTERN)


# --- history entries -------------------------------------------------------------------------


def history_entry(mv: ModelVersion, outcome: Outcome, now: float, reason: str) -> HistoryEntry:
    return HistoryEntry(
        version=mv.version, checkpoint=mv.checkpoint, sha256=mv.sha256, family=mv.family,
        context_length=mv.context_length, node_pool=mv.node_pool, outcome=outcome,
        time=adapter.to_rfc3339(now), reason=reason[:1024],
    )


def entry(spec: LVMRolloutSpec, version: str, outcome: Outcome, now: float, reason: str,
          history: list[HistoryEntry] | None) -> HistoryEntry | None:
    """A history entry for ``version`` (from the spec, else from earlier history)."""
    for mv in (spec.candidate, spec.champion):
        if mv is not None and mv.version == version:
            return history_entry(mv, outcome, now, reason)
    for h in reversed(history or []):
        if h.version == version:
            return h.model_copy(update={"outcome": outcome, "time": adapter.to_rfc3339(now),
                                        "reason": reason[:1024]})
    return None


def _present(*entries: HistoryEntry | None) -> list[HistoryEntry]:
    return [e for e in entries if e is not None]


# --- promotion -------------------------------------------------------------------------------


def promoted(spec: LVMRolloutSpec, serving: Serving, now: float) -> Serving:
    """Serving after a promotion: the candidate is champion; the old one stays warm a while."""
    keep_s = spec.promotion.keep_champion_warm_for_seconds
    old_champion = serving.champion or spec.champion.version
    return serving.model_copy(update={
        "champion": spec.candidate.version,
        "candidate": None,
        "retiring": old_champion if keep_s > 0 else None,
        "retiring_until": adapter.to_rfc3339(now + keep_s) if keep_s > 0 else None,
    })


def promotion_history(spec: LVMRolloutSpec, now: float, reason: str,
                      history: list[HistoryEntry] | None) -> list[HistoryEntry]:
    """A promotion records the candidate (promoted) and the champion it replaced (superseded,
    with its checkpoint, so ``rollback --to`` can bring it back later)."""
    return _present(
        entry(spec, spec.champion.version, Outcome.SUPERSEDED, now,
              f"replaced by {spec.candidate.version} (promoted)", history),
        entry(spec, spec.candidate.version, Outcome.PROMOTED, now, reason, history),
    )


def decision_history(d: Decision, spec: LVMRolloutSpec, history: list[HistoryEntry] | None,
                     now: float) -> list[HistoryEntry]:
    """History entries the core's decision adds: a promotion or a rollback."""
    if d.action is Action.PROMOTE:
        return promotion_history(spec, now, d.reason, history)
    if d.action is Action.ROLLBACK:
        return _present(entry(spec, spec.candidate.version, Outcome.ROLLED_BACK, now, d.reason,
                              history))
    return []


def serving_after(d: Decision, spec: LVMRolloutSpec, serving: Serving, now: float) -> Serving:
    if d.action is Action.PROMOTE:
        return promoted(spec, serving, now)
    if d.action is Action.PAUSE:
        # The core paused for a person: recorded like kubectl lvm pause, so resume continues.
        return serving.model_copy(update={"manual_pause": True,
                                          "pause_reason": adapter.bounded(d.reason)})
    return serving


def retire_expired(serving: Serving, now: float) -> tuple[Serving, list[Event]]:
    """The warm old champion goes once its ``retiringUntil`` has passed."""
    if serving.retiring and serving.retiring_until is not None and \
            now >= serving.retiring_until.timestamp():
        return (serving.model_copy(update={"retiring": None, "retiring_until": None}),
                [Event(NORMAL, "ChampionRetired",
                       f"old champion {serving.retiring} removed after its warm period")])
    return serving, []


# --- a spec change -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Start:
    """Where a tick starts from: the decision state and serving record for this spec."""

    state: RolloutState
    serving: Serving
    history: list[HistoryEntry] = field(default_factory=list)


def start_for_spec(spec: LVMRolloutSpec, state: RolloutState, serving: Serving | None,
                   now: float) -> Start:
    """Reconcile the stored state with the spec: a new experiment after a finished one starts
    clean (a warm old champion stays until its deadline); a changed experiment mid-rollout
    supersedes the candidate (history) and the core restarts it at step 1."""
    fp = adapter.fingerprint(spec)
    serving = serving or Serving(champion=spec.champion.version,
                                 candidate=spec.candidate.version)
    history: list[HistoryEntry] = []
    who: dict = {"champion": spec.champion.version, "candidate": spec.candidate.version}
    if serving.pause_reason:  # the operator's pause was about the old experiment
        who |= {"manual_pause": None, "pause_reason": None}
    if state.fingerprint and state.fingerprint != fp and state.phase.finished:
        if state.identity and state.identity == adapter.identity(spec):
            return Start(state, serving, history)  # same models, new plan: stays finished
        state = RolloutState()
        serving = serving.model_copy(update=who)
    elif state.fingerprint and state.fingerprint != fp:
        was = serving.candidate_model
        if was is not None and was != spec.candidate:
            history.append(history_entry(
                was, Outcome.SUPERSEDED, now,
                f"superseded by {spec.candidate.version} at step "
                f"{(state.current_step or 0) + 1}"))
        serving = serving.model_copy(update=who)
    if serving.candidate == spec.candidate.version and serving.candidate_model != spec.candidate:
        serving = serving.model_copy(update={"candidate_model": spec.candidate})
    return Start(state, serving, history)


# --- manual commands -------------------------------------------------------------------------


@dataclass
class CommandEffect:
    """A command's effect: what it records, the state and serving after it, what it tells."""

    record: LastCommand
    state: RolloutState
    serving: Serving
    history: list[HistoryEntry]
    events: list[Event]
    message: str | None  # the status message (accepted commands only)
    reevaluate: bool = False  # retry of a blocked or failed pre-rollout gate


@dataclass(frozen=True)
class CommandRead:
    """The command annotations of one tick: the effect to apply (if any) and whether the
    annotations are to be removed after the status write."""

    effect: CommandEffect | None
    consume: bool

    @property
    def remove_annotations(self) -> tuple[str, ...]:
        return COMMAND_ANNOTATIONS if self.consume else ()


def read_command(annotations: Mapping[str, str] | None, spec: LVMRolloutSpec,
                 state: RolloutState, serving: Serving, old: LVMRolloutStatus, now: float,
                 field_manager: str | None = None) -> CommandRead:
    """Consume the command whose id differs from ``status.lastCommand.id``; a malformed one is
    rejected (recorded, Warning Event); one already recorded is only removed, never re-run."""
    annotations = dict(annotations or {})
    last_id = old.last_command.id if old.last_command is not None else None
    # A command already recorded (the annotation removal after the status write failed, or a
    # tool re-set it): remove it without running it again.
    stale = ANNOTATION_COMMAND in annotations and last_id is not None and \
        safe_command_id(annotations.get(ANNOTATION_COMMAND_ID)) == last_id
    effect = None
    try:
        parsed = parse_command(annotations)
    except CommandError as e:
        parsed = None
        cid = safe_command_id(annotations.get(ANNOTATION_COMMAND_ID))
        who = bounded_who(annotations.get(ANNOTATION_COMMAND_BY))
        if last_id != cid:
            effect = CommandEffect(
                LastCommand(verb="invalid", id=cid, time=adapter.to_rfc3339(now),
                            result=CommandResult.REJECTED, message=str(e)[:1024],
                            requested_by=who, field_manager=field_manager),
                state, serving, [],
                [Event(WARNING, "CommandRejected", f"{e}{_by(who, field_manager)}")], None)
    if parsed is not None and last_id != parsed.id:
        effect = apply_command(parsed, spec, state, serving, old, now, field_manager)
    return CommandRead(effect, effect is not None or stale)


def _by(who: str | None, manager: str | None) -> str:
    """`` (by alice via kubectl-lvm)``: who asked, for the Event."""
    parts = [f"by {who}" if who else "", f"via {manager}" if manager else ""]
    text = " ".join(p for p in parts if p)
    return f" ({text})" if text else ""


def apply_command(cmd: Command, spec: LVMRolloutSpec, state: RolloutState, serving: Serving,
                  old: LVMRolloutStatus, now: float,
                  field_manager: str | None = None) -> CommandEffect:
    """One manual command against the rollout as it stands: accepted (with its effect) or
    refused (state and serving unchanged), each with the message ``kubectl lvm`` shows."""
    verb = cmd.verb
    history: list[HistoryEntry] = []

    def done(ok: bool, text: str, st: RolloutState = state, sv: Serving = serving,
             message: str | None = None) -> CommandEffect:
        target = cmd.target_version
        if target is not None and not _VERSION.fullmatch(target[:63]):
            target = None  # not a version name at all; the message still quotes it
        record = LastCommand(
            verb=str(verb), id=cmd.id[:253], target_version=target,
            time=adapter.to_rfc3339(now),
            result=CommandResult.ACCEPTED if ok else CommandResult.REJECTED,
            message=text[:1024], requested_by=cmd.requested_by, field_manager=field_manager,
        )
        event = Event(NORMAL if ok else WARNING,
                      f"Command{str(verb).capitalize()}" if ok else "CommandRejected",
                      f"{verb}{':' + cmd.target_version if cmd.target_version else ''} "
                      f"(id {cmd.id}){_by(cmd.requested_by, field_manager)}: {text}")
        return CommandEffect(record, st if ok else state, sv if ok else serving,
                             history if ok else [], [event], message if ok else None)

    running = not state.phase.finished
    if verb is Verb.PAUSE:
        if serving.manual_pause or spec.paused:
            return done(False, "already paused")
        return done(True, "paused by command: step timers stop; guardrails stay armed",
                    sv=serving.model_copy(update={"manual_pause": True}))
    if verb is Verb.RESUME:
        if spec.paused:
            return done(False, "spec.paused is true; set it to false to resume")
        if not serving.manual_pause:
            return done(False, "not paused")
        return done(True, "resumed by command",
                    sv=serving.model_copy(update={"manual_pause": None, "pause_reason": None}))
    if verb is Verb.PROMOTE:
        if not running or state.current_step is None:
            return done(False, f"nothing to promote in phase {state.phase.value}")
        text = (f"promoted {spec.candidate.version} by command at step "
                f"{state.current_step + 1}/{len(spec.steps)} (remaining steps skipped)")
        history.extend(promotion_history(spec, now, text, old.history))
        st = replace(state, phase=Phase.PROMOTED, candidate_weight=100, shadow=False,
                     paused_at=None)
        return done(True, text, st, promoted(spec, serving, now), message=text)
    if verb is Verb.ABORT:
        if not running:
            return done(False, f"nothing to abort in phase {state.phase.value}")
        text = (f"aborted by command: all traffic to champion {spec.champion.version}; "
                f"candidate {spec.candidate.version} kept scaled down")
        history.extend(_present(entry(spec, spec.candidate.version, Outcome.ABORTED, now, text,
                                      old.history)))
        st = replace(state, phase=Phase.ROLLED_BACK, candidate_weight=0, shadow=False,
                     paused_at=None)
        return done(True, text, st, message=text)
    gate = old.evaluation.gate if old.evaluation is not None else None
    if verb is Verb.RETRY and state.current_step is None and not state.phase.finished \
            and gate is not None and gate.verdict.value in ("blocked", "error"):
        text = (f"re-evaluating candidate {spec.candidate.version} and champion on the eval "
                f"set by command (gate was {gate.verdict.value}: {gate.reason})")
        effect = done(True, text, message=text)
        effect.reevaluate = True
        return effect
    if verb is Verb.RETRY:
        if state.phase is not Phase.ROLLED_BACK:
            return done(False, f"retry needs a rolled-back or aborted rollout, or a "
                               f"blocked pre-rollout gate, not {state.phase.value}")
        if serving.champion and serving.champion != spec.champion.version:
            # after rollback --to: a retry against the spec's champion would switch the
            # champion's traffic to a version that does not serve
            return done(False, f"{serving.champion} serves, not spec.champion "
                               f"{spec.champion.version}: set spec.champion to "
                               "status.gitSpec.champion to retry from it")
        text = f"retrying {spec.candidate.version} from step 1 by command"
        sv = serving.model_copy(update={"champion": spec.champion.version,
                                        "candidate": spec.candidate.version})
        return done(True, text, RolloutState(fingerprint=adapter.fingerprint(spec)), sv,
                    message=text)
    return rollback_to(cmd.target_version or "", spec, state, serving, old, now, done, history,
                       force=cmd.force)


#: History outcomes of a version that served as champion: a rollback target without --force.
SERVED_AS_CHAMPION = (Outcome.PROMOTED, Outcome.SUPERSEDED)


def rollback_to(target: str, spec: LVMRolloutSpec, state: RolloutState, serving: Serving,
                old: LVMRolloutStatus, now: float, done: Callable[..., CommandEffect],
                history: list[HistoryEntry], *, force: bool = False) -> CommandEffect:
    """``rollback --to <version>``: a version that served as champion (the spec's champion, or
    promoted/superseded in history) takes all traffic; the candidate (running) or the replaced
    champion (finished) is recorded. A version that never served as champion (a rolled-back or
    aborted candidate) only with ``force``, which the message records. ``done`` records the
    command's result (see :func:`apply_command`)."""
    known = {h.version for h in old.history or []} | {spec.champion.version}
    if target not in known:
        return done(False, f"version {target!r} is not in history; known: "
                           f"{', '.join(sorted(known))}")
    champions = {h.version for h in old.history or [] if h.outcome in SERVED_AS_CHAMPION} | {
        spec.champion.version}
    forced = target not in champions
    if forced and not force:
        return done(False, f"version {target!r} never served as champion (a rolled-back or "
                           f"aborted candidate); champions: {', '.join(sorted(champions))}; "
                           "kubectl lvm rollback --force sends it anyway")
    running = not state.phase.finished
    current = serving.champion or spec.champion.version
    if target == current and not running:
        return done(False, f"{target} is already serving all traffic")
    text = f"rolled back by command to {target}: it serves all traffic" + (
        " (forced: it never served as champion)" if forced else "")
    if running:
        history.extend(_present(entry(spec, spec.candidate.version, Outcome.ROLLED_BACK, now,
                                      text, old.history)))
    elif current != target:
        history.extend(_present(entry(spec, current, Outcome.ROLLED_BACK, now, text,
                                      old.history)))
    st = replace(state, phase=Phase.ROLLED_BACK, candidate_weight=0, shadow=False,
                 paused_at=None)
    sv = serving.model_copy(update={"champion": target, "candidate": None,
                                    "retiring": None, "retiring_until": None})
    return done(True, text, st, sv, message=text)
