"""Issue 15 #9: a Git edit after a rollout moves no traffic the wrong way, a champion-only spec
is valid, and status says what to write in Git. The pure tick over plain data (the
:class:`~test_controller_tick.Rollout` of the tick tests: a CR dict carried from tick to tick)."""

from __future__ import annotations

import copy

import pytest
from decision_fixtures import GOOD
from test_controller_tick import CANDIDATE, CHAMPION, RAW, Rollout, conditions

from lvm_operator.api import parse_rollout
from lvm_operator.decision import VersionMetrics


def finish(r: Rollout, *, bad: bool = False) -> None:
    """Walk ``r`` to Promoted (or, with a failing candidate, RolledBack)."""
    r.tick()
    if bad:
        r.candidate = VersionMetrics(**{**GOOD, "error_rate": 0.05})
    while r.status.get("phase") not in ("Promoted", "RolledBack"):
        r.t += 11.0
        r.tick()


def git_edit(r: Rollout, **spec) -> None:
    """What a GitOps tool applies: the spec replaced (None removes a field), generation + 1."""
    for key, value in spec.items():
        if value is None:
            r.obj["spec"].pop(key, None)
        else:
            r.obj["spec"][key] = value
    r.obj["metadata"]["generation"] += 1


def champion_only(version: str = CANDIDATE) -> dict:
    """``spec.champion`` as status.gitSpec says to write it (the served version's entry)."""
    role = "candidate" if version == CANDIDATE else "champion"
    return copy.deepcopy(RAW["spec"][role])


def test_a_champion_only_spec_is_valid_and_a_candidate_equal_to_it_is_not():
    spec = {k: v for k, v in RAW["spec"].items() if k != "candidate"}
    assert parse_rollout({**RAW, "spec": spec}).spec.candidate is None


def test_after_a_promotion_status_says_what_to_write_and_writing_it_moves_nothing():
    r = Rollout()
    finish(r)
    git = r.status["gitSpec"]
    assert (git["inSync"], git["removeCandidate"]) == (False, True)
    assert git["champion"] == champion_only(CANDIDATE)  # the promoted candidate's entry
    assert "was promoted" in git["message"]
    applied, history = len(r.applied), copy.deepcopy(r.status["history"])

    git_edit(r, champion=git["champion"], candidate=None)  # exactly what status said
    r.t += 1.0
    r.tick()
    assert r.status["phase"] == "Steady" and r.status["candidateWeight"] == 0
    assert len(r.applied) == applied  # the same config: nothing re-applied, nothing moved
    assert r.status["history"] == history
    assert r.status["gitSpec"]["inSync"] is True
    assert r.reasons()[-1] == "Steady"
    assert conditions(r)["Ready"]["status"] == "True"
    r.t += 60.0  # past the warm period: the old champion goes, the promoted one stays
    r.tick()
    assert [v.version for v in r.applied[-1].versions] == [CANDIDATE]


def test_a_harmless_git_edit_of_a_promoted_rollout_does_not_unpromote():
    r = Rollout()
    finish(r)
    applied = len(r.applied)
    git_edit(r, steps=[{"weight": 10, "duration": "5s"}, {"weight": 100, "duration": "5s"}])
    r.t += 1.0
    r.tick()
    assert r.status["phase"] == "Promoted" and len(r.applied) == applied


@pytest.mark.parametrize("named", [CHAMPION, "phase9-typo"])  # a Git revert; a typo
def test_a_champion_only_spec_naming_another_version_switches_nothing(named):
    r = Rollout()
    finish(r)
    applied = len(r.applied)
    champion = {**champion_only(CHAMPION), "version": named}
    git_edit(r, champion=champion, candidate=None)
    for _ in range(2):
        r.t += 1.0
        r.tick()
    ready = conditions(r)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ChampionNotServing")
    assert f"spec.champion names {named}, but {CANDIDATE} serves" in ready["message"]
    assert len(r.applied) == applied  # the promoted version keeps all traffic
    assert r.status["serving"]["champion"] == CANDIDATE and r.status["phase"] == "Steady"
    assert r.status["gitSpec"]["champion"] == champion_only(CANDIDATE)
    assert r.reasons().count("ChampionNotServing") == 1  # once, not every tick
    git_edit(r, champion=champion_only(CANDIDATE))  # put right in Git
    r.t += 1.0
    r.tick()
    assert conditions(r)["Ready"]["status"] == "True" and r.status["gitSpec"]["inSync"]


def test_a_champion_only_spec_when_what_serves_is_unknown_is_refused_outright():
    """Mid-rollout, Git names only a new champion: the version that serves (the old spec's
    champion, never in history) cannot be rendered, so nothing is applied or decided."""
    r = Rollout()
    r.tick()
    before = copy.deepcopy(r.status["decisionState"])
    applied = len(r.applied)
    git_edit(r, champion={**champion_only(CHAMPION), "version": "phase9-other"}, candidate=None)
    r.t += 1.0
    r.tick()
    ready = conditions(r)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ChampionNotServing")
    assert "nothing is changed until then" in ready["message"]
    assert len(r.applied) == applied and r.status["decisionState"] == before
    assert r.status["phase"] == "Progressing"


def test_the_serving_champion_under_its_name_with_another_checkpoint_is_refused():
    r = Rollout()
    finish(r)
    git_edit(r, champion=champion_only(CANDIDATE), candidate=None)
    r.t += 1.0
    r.tick()
    applied = len(r.applied)
    swapped = {**champion_only(CANDIDATE), "sha256": "f" * 64}  # new bytes, same name
    git_edit(r, champion=swapped)
    r.t += 1.0
    r.tick()
    assert conditions(r)["Ready"]["reason"] == "ChampionNotServing"
    assert "another model under the same name" in conditions(r)["Ready"]["message"]
    assert len(r.applied) == applied


def test_a_fresh_champion_only_rollout_serves_the_champion_alone():
    r = Rollout()
    git_edit(r, candidate=None)
    r.tick()
    assert r.status["phase"] == "Steady" and r.status["candidateWeight"] == 0
    (app,) = r.applied
    assert [v.version for v in app.versions] == [CHAMPION]
    assert (app.router.candidate, app.router.candidate_weight) == (None, 0)
    assert r.status["gitSpec"] == {"inSync": True, "champion": champion_only(CHAMPION),
                                   "removeCandidate": False,
                                   "message": f"the spec describes what serves: {CHAMPION} alone"}
    r.t += 1.0
    r.tick()
    assert len(r.applied) == 1  # nothing to do


def test_removing_the_candidate_mid_rollout_aborts_at_once():
    r = Rollout()
    r.tick()
    assert r.status["candidateWeight"] == 25
    git_edit(r, candidate=None)
    r.t += 1.0
    r.tick()
    s = r.status
    assert s["phase"] == "Steady" and s["candidateWeight"] == 0
    assert [v.version for v in r.applied[-1].versions] == [CHAMPION]
    assert r.applied[-1].router.candidate_weight == 0
    last = s["history"][-1]
    assert (last["version"], last["outcome"]) == (CANDIDATE, "aborted")
    assert "spec.candidate was removed at step 1 (25%)" in last["reason"]
    assert "CandidateRemoved" in r.reasons()


def test_a_candidate_added_to_a_steady_spec_starts_at_step_one():
    r = Rollout()
    finish(r)
    git_edit(r, champion=champion_only(CANDIDATE), candidate=None)
    r.t += 1.0
    r.tick()
    nxt = {**champion_only(CHAMPION), "version": "phase3-next", "sha256": "e" * 64}
    git_edit(r, candidate=nxt)
    r.t += 1.0
    r.tick()
    s = r.status
    assert (s["phase"], s["currentStep"], s["candidateWeight"]) == ("Progressing", 0, 25)
    assert s["serving"]["champion"] == CANDIDATE and "gitSpec" not in s  # none while it runs
    assert r.applied[-1].router.candidate == "phase3-next"


def test_rollback_to_a_former_champion_while_steady_is_served_and_reported():
    r = Rollout()
    finish(r)
    git_edit(r, champion=champion_only(CANDIDATE), candidate=None)
    r.t += 1.0
    r.tick()
    r.command(f"rollback:{CHAMPION}", "c-1")
    r.t += 1.0
    r.tick()
    s = r.status
    assert s["lastCommand"]["result"] == "accepted" and s["phase"] == "Steady"
    assert s["serving"]["champion"] == CHAMPION
    assert [v.version for v in r.applied[-1].versions] == [CHAMPION]
    git = s["gitSpec"]
    assert git["inSync"] is False and git["champion"]["version"] == CHAMPION
    assert "set spec.champion to status.gitSpec.champion" in git["message"]
    applied = len(r.applied)
    r.t += 1.0
    r.tick()  # the next tick keeps serving the rollback target (no switch back to Git's)
    assert len(r.applied) == applied
    assert conditions(r)["Ready"]["reason"] == "ChampionNotServing"  # until Git says CHAMPION


def test_after_a_rollback_status_says_to_remove_the_candidate():
    r = Rollout()
    finish(r, bad=True)
    git = r.status["gitSpec"]
    assert (git["inSync"], git["removeCandidate"]) == (False, True)
    assert git["champion"] == champion_only(CHAMPION)
    assert f"candidate {CANDIDATE} is done with (RolledBack)" in git["message"]


def test_kubectl_lvm_status_shows_what_to_write_in_git():
    import io
    from datetime import UTC, datetime

    from rich.console import Console

    from lvm_operator.kubectl_plugin import views

    def rendered(r: Rollout) -> str:
        out = io.StringIO()
        console = Console(file=out, width=300, color_system=None)
        for part in views.render_status(r.obj, datetime.fromtimestamp(r.t, UTC)):
            console.print(part)
        return out.getvalue()

    def head(out: str, key: str) -> str:
        line = next(x for x in out.splitlines() if x.startswith(key + "  "))
        return line.removeprefix(key).strip()

    r = Rollout()
    finish(r)
    assert head(rendered(r), "Git").startswith(f"{CANDIDATE} was promoted: set spec.champion")
    git_edit(r, champion=champion_only(CANDIDATE), candidate=None)
    r.t += 1.0
    r.tick()
    out = rendered(r)
    assert head(out, "Phase") == "Steady"
    assert head(out, "Candidate") == "— (none: the champion serves all traffic)"
    assert head(out, "Git") == f"the spec describes what serves: {CANDIDATE} alone"


def test_a_new_candidate_with_the_old_champion_still_in_git_is_refused():
    """After a promotion, Git adds the next candidate but still names the old champion: starting
    would send the champion's share to the old version without judging it. Refused until
    spec.champion is the version that serves; then the rollout starts from it."""
    r = Rollout()
    finish(r)
    applied = len(r.applied)
    nxt = {**champion_only(CHAMPION), "version": "phase3-next", "sha256": "e" * 64}
    git_edit(r, candidate=nxt)  # champion still phase1-baseline
    for _ in range(2):
        r.t += 1.0
        r.tick()
    ready = conditions(r)["Ready"]
    assert (ready["status"], ready["reason"]) == ("False", "ChampionNotServing")
    assert f"spec.champion names {CHAMPION}, but {CANDIDATE} serves" in ready["message"]
    assert len(r.applied) == applied and r.status["phase"] == "Promoted"
    assert r.reasons().count("ChampionNotServing") == 1
    git_edit(r, champion=champion_only(CANDIDATE))
    r.t += 1.0
    r.tick()
    s = r.status
    assert (s["phase"], s["candidateWeight"], s["serving"]["champion"]) == (
        "Progressing", 25, CANDIDATE)
    assert {v.version for v in r.applied[-1].versions} == {CANDIDATE, "phase3-next"}
