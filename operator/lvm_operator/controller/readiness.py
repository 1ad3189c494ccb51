"""Readiness before traffic (pure): a candidate that is deployed but not running gets no
traffic, its step's dwell clock waits for it, Serve's failure is a condition and an Event, and
past ``spec.progressDeadline`` the rollout is rolled back (Flagger's progressDeadlineSeconds).

The tick has already held the candidate's weight back (:func:`~.adapter.staged`); this module
decides what that means for the state, the status and the Events.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..api import HistoryEntry, LVMRolloutSpec, LVMRolloutStatus, Outcome, Serving
from ..api.durations import duration_seconds
from ..backends.protocol import ObservedApp
from ..decision import Phase, RolloutState, fmt
from . import adapter
from .status import CANDIDATE_READY, WARNING, Event
from .transitions import entry

#: Serve's states of an application that will not start by itself.
FAILED_STATES = ("DEPLOY_FAILED", "UNHEALTHY")

#: What Serve's message says, in our words: (words that identify it, our phrase). Serve's text
#: itself is never quoted into status or an Event (it comes from whatever answers at the
#: backend's URL, and anyone who can read the rollout reads status); the first match wins.
SERVE_FAILURE_KINDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("sha256",), "its checkpoint's sha256 does not match the spec"),
    (("weights_only", "unpicklingerror"), "its checkpoint is not a safe tensor-only file"),
    (("filenotfounderror", "no such file"), "a file it loads (checkpoint or concept bank) "
                                            "is missing"),
    (("modulenotfounderror", "importerror", "no module named"), "an import failed"),
    (("out of memory", "outofmemory", "oom"), "it ran out of memory"),
    (("infeasible", "insufficient resources", "cannot be scheduled", "resources"),
     "no node has the resources it asks for (its node pool?)"),
    (("actordiederror", "died", "crashed", "exited"), "its replicas died"),
    (("timed out", "timeout"), "it did not start in time"),
)


def serve_failure_kind(message: str) -> str:
    """Our phrase for Serve's failure message (see :data:`SERVE_FAILURE_KINDS`)."""
    text = message.lower()
    for words, phrase in SERVE_FAILURE_KINDS:
        if any(w in text for w in words):
            return phrase
    return "Serve's message says why"


def candidate_failure(observed: ObservedApp | None, version: str) -> str | None:
    """Why the candidate's application does not start, when Serve says it will not."""
    ov = observed.versions.get(version) if observed is not None else None
    status = str(ov.status or "").upper() if ov is not None else ""
    if ov is None or status not in FAILED_STATES:
        return None
    return (f"Serve reports {version}'s application {status}: {serve_failure_kind(ov.message)} "
            "(Serve's own message: `serve status` or the Ray dashboard)")


def step_traffic_in_effect(state: RolloutState, serving: Serving) -> bool:
    """Whether the Serve config last in effect gives the candidate this step's traffic.

    Not while the step's config is held back for a candidate that is not running (that config
    is not recorded), nor while applying it fails (the record stays the previous step's). A
    candidate that came back after a Ray restart keeps its record: its step goes on. A status
    from before ``appliedTraffic`` existed counts as in effect when it has a config hash."""
    applied = serving.applied_traffic
    if applied is None:
        return serving.config_hash is not None
    return (applied.weight == state.candidate_weight and applied.shadow == state.shadow
            and (applied.candidate == serving.candidate
                 or (state.candidate_weight == 0 and not state.shadow)))


def clock_waits_for_traffic(state: RolloutState, serving: Serving, now: float) -> RolloutState:
    """``state`` for this tick's decision: a step's dwell and first guardrail window start
    when its traffic is in effect, so until then they restart every tick. Otherwise a rollout
    whose Serve applies fail for longer than a step (the dashboard down), or whose candidate
    takes longer to start, would pass steps that never served and jump to a weight no step
    checked (10% -> 100%), or a late tick would judge a step on a dwell spent with no traffic.

    The guardrails' window restarts too while the candidate is held back (it has no traffic to
    judge, and its no-data clock must not run: ``progressDeadline`` covers it), but not while
    an apply fails: the previous config is live, and its traffic is judged (a rollback is what
    a failing candidate needs whatever else fails)."""
    if (state.current_step is None or state.phase.finished or state.paused_at is not None
            or step_traffic_in_effect(state, serving)):
        return state
    if serving.candidate_waiting_since is not None:
        return replace(state, step_started_at=now, guardrail_since=now)
    return replace(state, step_started_at=now)


@dataclass(frozen=True)
class Readiness:
    state: RolloutState
    serving: Serving
    not_ready: str | None = None  # the CandidateReady=False message
    rolled_back: str | None = None  # the rollback's reason, past the progress deadline
    events: list[Event] = field(default_factory=list)
    history: list[HistoryEntry] = field(default_factory=list)


def readiness(spec: LVMRolloutSpec, old: LVMRolloutStatus, state: RolloutState,
              serving: Serving, observed: ObservedApp | None, held_back: bool,
              now: float) -> Readiness:
    """What holding the candidate back (``held_back``) means at ``now``: the wait's start,
    the CandidateReady condition and Event, the rollback past ``progressDeadline``. (The step's
    clock waits for its traffic in :func:`clock_waits_for_traffic`, before the decision.)"""
    waited = adapter.from_rfc3339(serving.candidate_waiting_since)
    if not (held_back and state.current_step is not None and not state.phase.finished):
        if waited is not None:
            serving = serving.model_copy(update={"candidate_waiting_since": None})
        return Readiness(state, serving)
    since = waited if waited is not None else now
    serving = serving.model_copy(update={"candidate_waiting_since": adapter.to_rfc3339(since)})
    version = spec.candidate.version
    failure = candidate_failure(observed, version)
    events: list[Event] = []
    before = next((c for c in old.conditions or [] if c.type == CANDIDATE_READY), None)
    if failure is not None and (before is None or before.message != failure):
        events.append(Event(WARNING, "CandidateNotReady", f"{failure}; it gets no traffic"))
    deadline = duration_seconds(spec.progress_deadline)
    if now - since < deadline:
        return Readiness(state, serving, failure, events=events)
    reason = (f"rolled back: candidate {version} not running within progressDeadline "
              f"{fmt.duration(deadline)}: {failure or 'its application is still deploying'}")
    state = replace(state, phase=Phase.ROLLED_BACK, candidate_weight=0, shadow=False,
                    paused_at=None)
    serving = serving.model_copy(update={"candidate_waiting_since": None})
    added = entry(spec, version, Outcome.ROLLED_BACK, now, reason, old.history)
    events.append(Event(WARNING, "RolledBack", reason))
    return Readiness(state, serving, failure, reason, events, [added] if added else [])
