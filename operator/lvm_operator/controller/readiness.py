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
from .live import running_versions
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


def _moved(waiting_since: float, state: RolloutState) -> bool:
    """Whether the step's weight reached the candidate before a wait that began at
    ``waiting_since``: the wait began after the step started (a step that starts while the
    candidate is held back begins waiting in the same tick). ``waiting_since`` went through
    RFC3339 (microseconds) and ``stepStartedAt`` is a float set from the same ``now``: the
    round trip can land just below it (38% of the time), so a millisecond counts as the same."""
    return state.step_started_at is not None and waiting_since > state.step_started_at + 1e-3


def clock_when_traffic_moves(state: RolloutState, serving: Serving,
                             observed: ObservedApp | None, now: float) -> RolloutState:
    """``state`` for this tick's decision: a step whose weight never reached its candidate
    (it waited from the step's start) starts its dwell and first guardrail window ``now``, the
    tick in which the candidate is seen running and its weight is applied. Otherwise a tick
    that comes late (a busy operator) could judge the step on a dwell it spent with no traffic
    and advance it before its weight was ever applied."""
    waited = adapter.from_rfc3339(serving.candidate_waiting_since)
    if (waited is None or state.current_step is None or state.phase.finished
            or state.paused_at is not None or _moved(waited, state)):
        return state
    candidate = serving.candidate
    if observed is not None and candidate not in running_versions(observed):
        return state  # still waiting: readiness() restarts the clock after the decision
    return replace(state, step_started_at=now, guardrail_since=now)


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
    """What holding the candidate back (``held_back``) means at ``now``.

    A step's dwell and its first guardrail window start when its traffic moves, so a step
    whose weight has not reached the candidate yet keeps restarting its clock. Whether it has
    is told by when the wait began (``candidateWaitingSince``): a wait that began after the
    step started is a candidate that came back (a Ray restart, an out-of-band deletion: it is
    redeployed and the step goes on, clock kept); one that began at or before the step's start
    means this step's weight never moved. Not ``appliedAt``: the config that holds the
    candidate back is an apply too.
    """
    waited = adapter.from_rfc3339(serving.candidate_waiting_since)
    if not (held_back and state.current_step is not None and not state.phase.finished):
        # Not waiting any more (the step's clock, if its weight never moved, was restarted
        # before this tick's decision: :func:`clock_when_traffic_moves`).
        if waited is not None:
            serving = serving.model_copy(update={"candidate_waiting_since": None})
        return Readiness(state, serving)
    since = waited if waited is not None else now
    if state.paused_at is None and not _moved(since, state):
        state = replace(state, step_started_at=now, guardrail_since=now)
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
