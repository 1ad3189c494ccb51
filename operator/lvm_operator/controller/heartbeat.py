"""Which status writes can wait: a tick whose only news is newer numbers.

A rollout that holds (waiting for data, dwelling in a long step) re-checks every guardrail
interval, and each check changes its status only in numbers (when it ran, the window it read,
the countdown in the message) and in ``lastAnalysis``, the view of the latest check. Writing
each of those is one PATCH, one watch event to every watcher and one more object version in
etcd, per rollout per interval: at 1,000 rollouts it is most of the apiserver's work (issue
22's profile). So such a status is written at most every :func:`heartbeat_s` (the operator
keeps the newer one in memory and decides from it, see :class:`~.reconcile.Reconciler`), while
anything else (a phase, a step, a breach count, a check's verdict, a condition, a reason's
words) is written at once. The live ``lvm_rollout_decision_lag_seconds`` comes from memory, so
the starvation alert never waits.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

#: Each number in a free-text field ("0 requests in the last 1m 28s") is masked, so two texts
#: that differ only in their numbers read the same.
_NUMBER = re.compile(r"\d+(?:\.\d+)?")
#: decisionState clocks that every check moves (the transitions' own clocks, such as
#: stepStartedAt or noDataSince, are not here: they change only with a decision).
_CHECK_CLOCKS = ("lastGuardrailAt", "lastQualityAt", "guardrailSince", "qualitySince")
_REASONS = ("lastGuardrailReason", "lastQualityReason")


def _text(s: Any) -> Any:
    return _NUMBER.sub("#", s) if isinstance(s, str) else s


def shape(status: Mapping[str, Any]) -> dict[str, Any]:
    """The status with every heartbeat number masked: what must be written at once."""
    out = dict(status)
    out["message"] = _text(out.get("message"))
    ds = dict(out.get("decisionState") or {})
    for key in _CHECK_CLOCKS:
        ds.pop(key, None)
    for key in _REASONS:
        ds[key] = _text(ds.get(key))
    out["decisionState"] = ds
    # lastAnalysis is a view of the latest check, which alternates between guardrails and
    # quality when they fall due on different ticks; the decisions are in decisionState (each
    # check's verdict), the conditions and the phase, which are kept
    out.pop("lastAnalysis", None)
    out["conditions"] = [{**c, "message": _text(c.get("message"))}
                         for c in out.get("conditions") or []]
    return out


def heartbeat_only(old: Mapping[str, Any], new: Mapping[str, Any]) -> bool:
    """True when ``new`` differs from ``old`` only in heartbeat numbers."""
    return shape(old) == shape(new)


def heartbeat_s(guardrail_interval_s: float | None) -> float:
    """How long a numbers-only status may wait: five guardrail intervals, at most 5 minutes
    (a 30 s interval: every 2.5 min; the e2e tests' 1 s: every 5 s)."""
    return min(300.0, 5.0 * (guardrail_interval_s or 60.0))
