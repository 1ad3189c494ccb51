"""When ``kubectl lvm status --watch`` stops waiting, and its exit code, one row per case."""

from __future__ import annotations

import pytest

from lvm_operator.kubectl_plugin.waiting import outcome, parse_until


def obj(phase=None, step=None, generation=1, observed=1, progressing=None) -> dict:
    status = {"phase": phase, "currentStep": step, "observedGeneration": observed,
              "message": "why"}
    if progressing:
        status["conditions"] = [{"type": "Progressing", "status": "False",
                                 "reason": progressing, "message": "because"}]
    return {"metadata": {"generation": generation},
            "status": {k: v for k, v in status.items() if v is not None}}


@pytest.mark.parametrize(("o", "until", "code", "why"), [
    (obj("Promoted"), None, 0, "done"),
    (obj("Steady"), None, 0, "a champion-only spec: what the spec says serves"),
    (obj("RolledBack"), None, 1, "rolled back: the pipeline fails"),
    (obj("Failed"), None, 1, "invalid spec"),
    (obj("Pending", progressing="GateBlocked"), None, 1, "the gate will not let it start"),
    (obj("Paused", step=1, progressing="InconclusiveTimeout"), None, 1, "needs a person"),
    (obj("Paused", step=1), None, None, "paused by a person: they will resume it"),
    (obj("Progressing", step=0), None, None, "still rolling out"),
    (obj("Progressing", step=1), 2, 0, "--until step:2 and currentStep 1 is step 2"),
    (obj("Progressing", step=0), 2, None, "step 1 < step 2"),
    (obj("Promoted", generation=2, observed=1), None, None,
     "observedGeneration 1 < generation 2: the status predates the latest spec"),
    ({"metadata": {"generation": 1}}, None, None, "no status yet"),
])
def test_outcome(o, until, code, why):
    assert outcome(o, until).code == code, why


def test_until_accepts_only_steps():
    assert parse_until("step:3") == 3 and parse_until(None) is None
    for bad in ("3", "step:0", "phase:Promoted", "step:x"):
        with pytest.raises(ValueError, match="use step:N"):
            parse_until(bad)
