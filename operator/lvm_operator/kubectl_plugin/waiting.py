"""``kubectl lvm status NAME --watch``: when a pipeline may stop waiting, and with what exit code.

Pure: a rollout object in, a :class:`WaitResult` out. A status whose ``observedGeneration`` is
behind the object's generation is not an answer yet (the operator has not seen the latest spec).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

#: Exit codes, for CI: 0 done, 1 failed (or needs a person), 2 timed out.
SUCCEEDED, FAILED, TIMED_OUT = 0, 1, 2

_UNTIL_STEP = re.compile(r"step:([1-9][0-9]{0,2})")


@dataclass(frozen=True)
class WaitResult:
    code: int | None  # None: keep waiting
    why: str


def parse_until(text: str | None) -> int | None:
    """``step:N`` (1-based) -> N; None for no target; ValueError with the accepted form."""
    if text is None:
        return None
    m = _UNTIL_STEP.fullmatch(text.strip())
    if m is None:
        raise ValueError(f"--until {text!r}: use step:N (N from 1, e.g. step:2)")
    return int(m.group(1))


def _condition(status: dict, type_: str) -> dict:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def outcome(obj: dict, until_step: int | None = None) -> WaitResult:
    """Whether waiting on ``obj`` is over: Promoted (or the step reached) is 0; RolledBack,
    Failed, a blocked gate or a pause for a person is 1; anything else keeps waiting."""
    status = obj.get("status") or {}
    generation = (obj.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if generation is not None and observed is not None and observed < generation:
        return WaitResult(None, f"the operator has not seen generation {generation} yet")
    phase = status.get("phase") or "Pending"
    reason = status.get("message") or ""
    if phase in ("Promoted", "Steady"):  # Steady: the spec names no candidate
        return WaitResult(SUCCEEDED, f"{phase}: {reason}")
    if phase in ("RolledBack", "Failed"):
        return WaitResult(FAILED, f"{phase}: {reason}")
    progressing = _condition(status, "Progressing")
    if progressing.get("reason") in ("GateBlocked", "EvaluationFailed", "InconclusiveTimeout"):
        return WaitResult(FAILED, f"{progressing['reason']}: {progressing.get('message', '')}")
    step = status.get("currentStep")
    if until_step is not None and phase == "Progressing" and step is not None \
            and step + 1 >= until_step:
        return WaitResult(SUCCEEDED, f"at step {step + 1} (waited for step {until_step})")
    return WaitResult(None, phase)


def change_line(obj: dict) -> str:
    """One line for a change a pipeline log should show."""
    status = obj.get("status") or {}
    step = status.get("currentStep")
    analysis = status.get("lastAnalysis") or {}
    parts = [status.get("phase") or "Pending",
             f"step {step + 1}" if step is not None else "no step",
             f"candidate {status.get('candidateWeight') or 0}%",
             f"verdict {analysis.get('verdict') or '-'}"]
    if status.get("message"):
        parts.append(str(status["message"]))
    return " | ".join(parts)
