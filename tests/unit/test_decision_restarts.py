"""When a rollout starts over: a change of *what* is rolled out, never a Git edit of the plan
after it finished (issue #15: changing only ``spec.steps`` of a promoted rollout brought the old
champion back at 80%)."""

from __future__ import annotations

from dataclasses import replace

import pytest
from decision_fixtures import STEPS, plan

from lvm_operator.decision import Action, Observations, Phase, RolloutState, Step, decide

ID = "models-1"


def finished(phase: Phase) -> RolloutState:
    return RolloutState(phase=phase, fingerprint="fp-1", current_step=3,
                        candidate_weight=100 if phase is Phase.PROMOTED else 0, identity=ID,
                        step_started_at=0.0)


@pytest.mark.parametrize(
    ("phase", "new_fingerprint", "new_identity", "action", "why"),
    [
        (Phase.PROMOTED, "fp-2", ID, Action.HOLD, "steps edited after promotion: stays promoted"),
        (Phase.ROLLED_BACK, "fp-2", ID, Action.HOLD,
         "steps edited after a rollback: stays rolled back (kubectl lvm retry starts again)"),
        (Phase.PROMOTED, "fp-2", "models-2", Action.RESTART,
         "a new candidate after promotion: a new rollout from step 1"),
        (Phase.PROMOTED, "fp-2", "", Action.RESTART,
         "no identity known (an older status): the fingerprint rule, as before"),
        (Phase.PROMOTED, "fp-1", ID, Action.HOLD, "nothing changed"),
    ],
)
def test_a_finished_rollout_restarts_only_for_new_models(phase, new_fingerprint, new_identity,
                                                         action, why):
    p = plan(fingerprint=new_fingerprint, identity=new_identity,
             steps=(Step(25, 100.0), *STEPS[2:]) if new_fingerprint != "fp-1" else STEPS)
    d = decide(p, finished(phase), Observations(), 5000.0)
    assert d.action is action, why
    if action is Action.HOLD:
        assert d.state.phase is phase and d.state.fingerprint == new_fingerprint
        assert d.state.candidate_weight == finished(phase).candidate_weight


def test_mid_rollout_a_plan_change_still_restarts():
    s = replace(finished(Phase.PROGRESSING), current_step=1, candidate_weight=20)
    d = decide(plan(fingerprint="fp-2", identity=ID), s, Observations(), 5000.0)
    assert d.action is Action.RESTART and d.state.current_step == 0


def test_a_started_attempt_records_its_models():
    d = decide(plan(identity=ID), RolloutState(fingerprint="fp-1"), Observations(), 0.0)
    assert d.state.identity == ID
