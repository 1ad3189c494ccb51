"""What serving looks like after an LVMRollout is deleted (pure): Flagger's revertOnDeletion.

A rollout deleted mid-way (Pending, Progressing, Paused) must not leave its candidate's share
running unguarded: the champion that serves takes all traffic and the candidate's application
goes, before the object disappears (the operator's finalizer waits for it, also while the
operator is down). A finished rollout (Promoted, RolledBack, Failed) leaves what serves alone:
deleting the object that promoted a version must not take that version away.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from lvm_serving.contracts.serve_config import AppSpec

from ..api import InvalidRolloutError, LVMRolloutSpec, parse_rollout, parse_status
from ..decision import Phase, RolloutState
from . import adapter


@dataclass(frozen=True)
class DeletionPlan:
    """``app``: the Serve application to apply before the object may go (None: leave serving
    as it is); ``reason``: one line for the log and the Event."""

    spec: LVMRolloutSpec | None
    app: AppSpec | None
    reason: str


def plan_deletion(obj: Mapping[str, Any], now: float) -> DeletionPlan:
    meta = obj.get("metadata", {})
    key = adapter.rollout_key(meta.get("namespace", ""), meta.get("name", ""))
    try:
        spec = parse_rollout({k: v for k, v in obj.items() if k != "status"}).spec
    except InvalidRolloutError:
        return DeletionPlan(None, None, "invalid spec: nothing was served from it; "
                                        "serving left as it is")
    try:
        old = parse_status(obj.get("status"))
    except InvalidRolloutError:
        return DeletionPlan(spec, None, "unreadable status: serving left as it is")
    state = adapter.state_from_status(old.decision_state)
    serving = old.serving
    if serving is None:  # never reconciled: nothing of it can be serving
        return DeletionPlan(spec, None, "never reconciled: serving left as it is")
    if state.phase.finished:
        return DeletionPlan(spec, None, f"rollout {state.phase.value}: the serving champion "
                                        f"{serving.champion or spec.champion.version} is left "
                                        "as it is")
    champion = serving.champion or spec.champion.version
    # The champion alone: no candidate, no warm old champion, weight 0.
    alone = serving.model_copy(update={"candidate": None, "retiring": None,
                                       "retiring_until": None})
    app = adapter.app_spec_for(spec, key, RolloutState(phase=Phase.PROMOTED), alone,
                               old.history, now=now)
    return DeletionPlan(spec, app, f"deleted in phase {state.phase.value} (candidate "
                                   f"{state.candidate_weight}%): all traffic to champion "
                                   f"{champion}; candidate "
                                   f"{serving.candidate or spec.champion.version}'s "
                                   "application removed")
