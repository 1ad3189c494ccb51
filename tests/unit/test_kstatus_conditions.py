"""Issue 20 #1: conditions GitOps tools can wait on, on statuses made by the tick itself.

kstatus (kubernetes-sigs/cli-utils, the library behind Flux's health assessment and
``kubectl``-style waiting) reads a custom resource as: ``InProgress`` while
``status.observedGeneration`` is behind ``metadata.generation`` or ``Reconciling`` is True,
``Failed`` when ``Stalled`` is True, otherwise ``Current``. :func:`kstatus` below is those rules
(from its README: ``helpers.kstatus``), applied to what :class:`~test_controller_tick.Rollout`
writes; the e2e tests apply it to the objects the real apiserver returns.
"""

from __future__ import annotations

import pytest
from decision_fixtures import GOOD
from helpers import kstatus
from test_controller_steady import champion_only, finish, git_edit
from test_controller_tick import CANDIDATE, Rollout, conditions

from lvm_operator.decision import VersionMetrics


def progressing() -> Rollout:
    r = Rollout()
    r.tick()
    return r


def apply_failing() -> Rollout:
    r = Rollout()
    r.apply_error = "ConnectionError: dashboard refused"
    r.tick()
    return r


def paused_by_command() -> Rollout:
    r = progressing()
    r.command("pause", "c-1")
    r.t += 1.0
    r.tick()
    return r


def rolled_back() -> Rollout:
    r = Rollout()
    finish(r, bad=True)
    return r


def promoted() -> Rollout:
    r = Rollout()
    finish(r)
    return r


def steady() -> Rollout:
    r = promoted()
    git_edit(r, champion=champion_only(CANDIDATE), candidate=None)
    r.t += 1.0
    r.tick()
    return r


def champion_not_serving() -> Rollout:
    r = steady()
    git_edit(r, champion={**champion_only(CANDIDATE), "version": "phase9-typo"})
    r.t += 1.0
    r.tick()
    return r


def invalid() -> Rollout:
    r = Rollout(steps=[{"weight": 50, "duration": "1s"}])
    r.tick()
    return r


def not_seen_yet() -> Rollout:
    r = promoted()
    r.obj["metadata"]["generation"] += 1  # a spec change the operator has not read yet
    return r


@pytest.mark.parametrize(("make", "ready", "reconciling", "stalled", "promoted_", "rolled",
                          "kstatus_says"), [
    # step 1 of 3: moving on by itself; not there yet
    (progressing, ("False", "RolloutProgressing"), "True", "False", "False", "False",
     "InProgress"),
    # the backend fails, the apply is retried: still moving, and Ready says why it is not
    (apply_failing, ("False", "ServeApplyFailed"), "True", "False", "False", "False",
     "InProgress"),
    # a person paused it: it waits for them, nothing is wrong
    (paused_by_command, ("False", "Paused"), "False", "False", "False", "False", "Current"),
    # rolled back by the guardrails: it will not reach the candidate without a person
    (rolled_back, ("False", "RolledBack"), "False", "True", "False", "True", "Failed"),
    (promoted, ("True", "Promoted"), "False", "False", "True", "False", "Current"),
    # a champion-only spec, served
    (steady, ("True", "Steady"), "False", "False", "False", "False", "Current"),
    # a champion-only spec naming another version than the one serving: refused
    (champion_not_serving, ("False", "ChampionNotServing"), "False", "True", "False", "False",
     "Failed"),
    (invalid, ("False", "InvalidSpec"), "False", "True", "False", "False", "Failed"),
    # whatever the conditions say, a status older than the spec is not an answer
    (not_seen_yet, ("True", "Promoted"), "False", "False", "True", "False", "InProgress"),
])
def test_conditions_and_what_kstatus_makes_of_them(make, ready, reconciling, stalled,
                                                   promoted_, rolled, kstatus_says):
    r = make()
    c = conditions(r)
    assert (c["Ready"]["status"], c["Ready"]["reason"]) == ready
    assert (c["Reconciling"]["status"], c["Stalled"]["status"], c["Promoted"]["status"],
            c["RolledBack"]["status"]) == (reconciling, stalled, promoted_, rolled)
    assert kstatus(r.obj) == kstatus_says
    generation = r.status["observedGeneration"]
    assert all(x["observedGeneration"] == generation for x in r.status["conditions"])


def test_a_new_candidate_after_a_promotion_clears_promoted():
    r = steady()
    git_edit(r, candidate={**champion_only(CANDIDATE), "version": "phase3-next",
                           "sha256": "e" * 64})
    r.t += 1.0
    r.tick()
    c = conditions(r)
    assert (c["Promoted"]["status"], c["Ready"]["status"], c["Reconciling"]["status"]) == (
        "False", "False", "True")
    assert kstatus(r.obj) == "InProgress"


def test_stalled_clears_when_a_rolled_back_rollout_is_retried():
    r = rolled_back()
    r.candidate = VersionMetrics(**GOOD)
    r.command("retry", "c-9")
    r.t += 1.0
    r.tick()
    c = conditions(r)
    assert (c["Stalled"]["status"], c["RolledBack"]["status"], c["Reconciling"]["status"]) == (
        "False", "False", "True")
