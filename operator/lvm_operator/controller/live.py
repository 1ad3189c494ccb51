"""What the live Serve application means for a tick (pure): what to apply, drift, ownership.

:func:`render` takes the config a tick wants (already rendered from the decision) and what the
backend reports live, and says what to apply: nothing when the recorded hash matches and
nothing drifted; the desired config again when someone changed what is live (a
``ServeConfigDrift`` Warning Event); the config with no traffic to a candidate that is not
running yet (readiness before traffic). :func:`other_owner` reads who owns the application.
"""

from __future__ import annotations

from dataclasses import dataclass

from lvm_serving.contracts.serve_config import AppSpec

from ..api import AppliedTraffic, LVMRolloutStatus, Serving
from ..backends.protocol import AppStatus, ObservedApp
from . import adapter
from .status import APPLIED, WARNING, Event


@dataclass(frozen=True)
class Rendered:
    """What to apply for a rendered ``app``, and the serving record after it."""

    serving: Serving
    digest: str
    to_apply: AppSpec | None = None
    held_back: AppSpec | None = None  # ``to_apply`` with no traffic to a not-running candidate
    apply_error: str | None = None  # the last apply failed and nothing new is to be applied
    events: tuple[Event, ...] = ()


def render(app: AppSpec, serving: Serving, observed: ObservedApp | None,
           old: LVMRolloutStatus, now: float) -> Rendered:
    """Apply ``app`` when its hash differs from the recorded one, or when what is live drifted
    from it; a candidate that is not running yet is deployed with no traffic first."""
    digest = adapter.config_hash(app)
    events: list[Event] = []
    drift = live_drift(app, observed)
    if drift is not None and digest == serving.config_hash:
        # Someone (a person, a GitOps tool, a restarted Ray cluster) changed what is live:
        # put the desired config back, and say what was changed.
        events.append(Event(WARNING, "ServeConfigDrift", f"the live Serve config of "
                            f"{app.application} was changed outside the operator ({drift}); "
                            "re-applying the desired one"))
        serving = serving.model_copy(update={"config_hash": None})
    if digest != serving.config_hash:
        held_back = None
        if observed is not None:
            held_back = adapter.staged(app, running_versions(observed))
        if held_back is not None:
            # The candidate is not running yet: deploy it with no traffic; the hash stays
            # unrecorded, so the next tick looks again and moves the weight once it runs.
            return Rendered(serving, digest, held_back, held_back, events=tuple(events))
        # assumed applied; settle() says otherwise
        return Rendered(recorded(serving, digest, now, app), digest, app, events=tuple(events))
    ready = next((c for c in old.conditions or [] if c.type == APPLIED), None)
    failed = ready.message if ready is not None and ready.reason == "ServeApplyFailed" else None
    return Rendered(serving, digest, apply_error=failed, events=tuple(events))


def live_drift(app: AppSpec, observed: ObservedApp | None) -> str | None:
    """What differs between the desired ``app`` and what the backend reports live, in one
    bounded line, or None (also when the backend cannot tell: ``observed`` None or UNKNOWN)."""
    if observed is None or observed.status is AppStatus.UNKNOWN:
        return None
    if observed.status is AppStatus.NOT_DEPLOYED:
        return "none of its applications is deployed"
    if observed.router is None:
        return "the router's config is missing"
    want, live = app.router.to_dict(), observed.router.to_dict()
    changed = [f"{k} {live.get(k)!r} instead of {v!r}" for k, v in want.items()
               if live.get(k) != v]
    missing = sorted(set(app.version_names()) - set(observed.versions))
    if missing:
        changed.append(f"version application(s) missing: {', '.join(missing)}")
    return "; ".join(changed)[:300] or None


def other_owner(key: str, observed: ObservedApp | None) -> str | None:
    """The rollout ("namespace/name") whose router serves ``observed``, when it is not ``key``:
    the shell then checks that it still exists (an owner that was deleted can be adopted)."""
    router = observed.router if observed is not None else None
    if router is None or not router.rollout or router.rollout == key:
        return None
    return router.rollout


def running_versions(observed: ObservedApp) -> set[str]:
    """The versions whose application the backend reports running with a replica up."""
    return {v for v, ov in observed.versions.items()
            if str(ov.status or "").upper() == "RUNNING"
            and (ov.running_replicas is None or ov.running_replicas > 0)}


def recorded(serving: Serving, digest: str, now: float, app: AppSpec) -> Serving:
    """``serving`` once ``app`` (hash ``digest``) is in effect."""
    r = app.router
    traffic = AppliedTraffic(candidate=r.candidate, weight=r.candidate_weight, shadow=r.shadow)
    return serving.model_copy(update={"config_hash": digest, "applied_traffic": traffic,
                                      "applied_at": adapter.to_rfc3339(now)})
