"""The steady state and what Git should say (pure).

A spec may name a champion and no candidate: the state Git describes between rollouts. The
champion then serves all traffic and nothing is decided (phase ``Steady``). Three rules keep a
Git edit from moving traffic the wrong way (issue 15 #9):

* the champion-only spec must name the version that **serves** (the promoted candidate after a
  promotion, the ``rollback --to`` target after one): a spec whose champion is another version
  (a Git revert to an older commit, a typo) does not switch models without a rollout; the
  version that serves keeps serving, and ``Ready=False`` (``ChampionNotServing``) and
  ``status.gitSpec`` say what to write;
* when what serves cannot be rendered (its name now has another checkpoint in the spec, or it
  is known neither from the spec nor from history), the tick is refused outright: nothing is
  applied or decided, and the stored state waits for the spec to be put right;
* removing the candidate mid-rollout aborts the rollout: all traffic to the champion at once,
  the candidate's application removed, an ``aborted`` history entry and a Warning Event (the
  GitOps way to roll back is to revert the commit that added the candidate).

After a rollout ends (Promoted, RolledBack, Failed) :func:`git_spec` says what to write in Git
so that the spec describes what serves (``status.gitSpec``); the operator never edits the spec
(a GitOps tool would put its copy back).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..api import GitSpec, HistoryEntry, LVMRolloutSpec, ModelVersion, Outcome, Serving
from ..api.spec import ReplicaBounds
from ..decision import Phase, RolloutState
from . import adapter
from .status import NORMAL, WARNING, Event
from .transitions import history_entry


@dataclass(frozen=True)
class SteadyStart:
    """Where a champion-only tick starts from; ``refused``: nothing may be applied (why)."""

    state: RolloutState
    serving: Serving
    history: list[HistoryEntry] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    message: str = ""
    refused: str | None = None
    mismatch: str | None = None  # the spec's champion does not serve (what serves keeps serving)


def _served_model_changed(spec: LVMRolloutSpec, state: RolloutState, serving: Serving,
                          history: list[HistoryEntry]) -> bool:
    """Whether the spec's champion has the serving champion's name but another model (another
    checkpoint or digest): what serves then cannot be rendered from the spec."""
    if serving.champion != spec.champion.version:
        return False
    if state.phase is Phase.STEADY:
        return bool(state.identity) and state.identity != adapter.identity(spec)
    promoted = next((h for h in reversed(history) if h.version == serving.champion
                     and h.outcome is Outcome.PROMOTED), None)
    if promoted is not None:
        return (promoted.checkpoint, promoted.sha256) != (spec.champion.checkpoint,
                                                           spec.champion.sha256)
    if serving.candidate_model is not None and state.identity:
        # The attempt's identity covered this champion and that candidate: recompute it with
        # the spec's champion; a different digest means the champion's model changed.
        was = spec.model_copy(update={"candidate": serving.candidate_model})
        return adapter.identity(was) != state.identity
    return False  # cannot tell (a status from before identities were recorded)


def steady_start(spec: LVMRolloutSpec, state: RolloutState, serving: Serving | None,
                 history: list[HistoryEntry], now: float) -> SteadyStart:
    """The steady state for a champion-only ``spec`` from the stored state (see the module doc)."""
    assert spec.candidate is None
    if serving is None or serving.champion is None:  # nothing served yet: serve the champion
        serving = Serving(champion=spec.champion.version)
    served = serving.champion
    assert served is not None
    known = adapter.known_versions(spec, history)
    if served not in known or _served_model_changed(spec, state, serving, history):
        what = ("another model under the same name (its checkpoint or sha256 changed)"
                if served in known else f"{spec.champion.version}")
        return SteadyStart(state, serving, refused=(
            f"the spec names no candidate and its champion is {what}, but {served} serves: a "
            f"champion-only spec must describe the version that serves; set spec.champion back "
            f"to {served}, or roll the new model out as spec.candidate; nothing is changed "
            "until then"))
    events: list[Event] = []
    added: list[HistoryEntry] = []
    if not state.phase.finished and serving.candidate is not None:
        text = (f"aborted: spec.candidate was removed at step {(state.current_step or 0) + 1} "
                f"({state.candidate_weight}%): all traffic to champion {served} at once, "
                f"candidate {serving.candidate}'s application removed")
        if serving.candidate_model is not None:
            added.append(history_entry(serving.candidate_model, Outcome.ABORTED, now, text))
        events.append(Event(WARNING, "CandidateRemoved", text))
    message = f"steady: {served} serves all traffic (the spec names no candidate)"
    mismatch = None
    if served != spec.champion.version:
        mismatch = (f"spec.champion names {spec.champion.version}, but {served} serves and "
                    f"keeps all traffic (no model is switched without a rollout): set "
                    f"spec.champion to status.gitSpec.champion, or roll "
                    f"{spec.champion.version} out as spec.candidate")
    if state.phase is not Phase.STEADY:
        events.append(Event(NORMAL, "Steady", message))
    # The identity of what serves (the next tick compares the spec's champion with it)
    model = _model_of(spec, served, history) if mismatch else spec.champion
    identity = adapter.identity(spec.model_copy(update={"champion": model})) if model else ""
    steady = RolloutState(phase=Phase.STEADY, fingerprint=adapter.fingerprint(spec),
                          identity=identity)
    serving = serving.model_copy(update={
        "candidate": None, "candidate_model": None, "manual_pause": None, "pause_reason": None,
        "candidate_waiting_since": None})
    return SteadyStart(steady, serving, added, events, message, mismatch=mismatch)


def champion_not_serving(spec: LVMRolloutSpec, state: RolloutState,
                         serving: Serving | None) -> str | None:
    """Why a new rollout must not start from this two-version spec, or None: after a rollout
    has ended, one whose ``spec.champion`` is not the version that serves (Git still names the
    old champion after a promotion or a ``rollback --to``) would switch all of the champion's
    traffic to that version without judging it."""
    if spec.candidate is None or serving is None or serving.champion is None:
        return None
    if not state.phase.finished or serving.champion == spec.champion.version:
        return None
    if state.identity and state.identity == adapter.identity(spec):
        return None  # not a new rollout: the finished one stays as it is
    return (f"spec.champion names {spec.champion.version}, but {serving.champion} serves: a new "
            f"rollout of {spec.candidate.version} must start from the version that serves; set "
            f"spec.champion to status.gitSpec.champion ({serving.champion}); nothing is changed "
            "until then")


def _model_of(spec: LVMRolloutSpec, version: str,
              history: list[HistoryEntry]) -> ModelVersion | None:
    """``version`` as a ``spec.champion`` entry: the spec's own, else rebuilt from history."""
    for mv in (spec.champion, spec.candidate):
        if mv is not None and mv.version == version:
            return mv
    served = adapter.known_versions(spec, history).get(version)
    if served is None or not served.sha256:
        return None
    return ModelVersion(
        version=served.version, checkpoint=served.checkpoint, sha256=served.sha256,
        family=served.family, context_length=served.context_length,
        node_pool=served.node_pool,
        replicas=ReplicaBounds(min=served.min_replicas, max=served.max_replicas))


def git_spec(spec: LVMRolloutSpec, state: RolloutState, serving: Serving | None,
             history: list[HistoryEntry]) -> GitSpec | None:
    """What to write in Git once a rollout has ended; None while one runs."""
    if not state.phase.finished:
        return None
    served = (serving.champion if serving is not None else None) or spec.champion.version
    champion = _model_of(spec, served, history)
    moved = served != spec.champion.version
    if spec.candidate is None and not moved:
        return GitSpec(in_sync=True, champion=champion,
                       message=f"the spec describes what serves: {served} alone")
    if spec.candidate is None:
        text = (f"spec.champion names {spec.champion.version}, but {served} serves (no model "
                f"is switched without a rollout): set spec.champion to status.gitSpec.champion, "
                f"or roll {spec.champion.version} out as spec.candidate")
    elif state.phase is Phase.PROMOTED and served == spec.candidate.version:
        text = (f"{served} was promoted: set spec.champion to status.gitSpec.champion and "
                "remove spec.candidate (or name the next candidate)")
    else:
        text = (f"candidate {spec.candidate.version} is done with ({state.phase.value}) and "
                f"{served} serves all traffic: remove spec.candidate (or name a fixed one)")
        if moved:
            text += " and set spec.champion to status.gitSpec.champion"
    return GitSpec(in_sync=False, champion=champion, remove_candidate=spec.candidate is not None,
                   message=text[:1024])

