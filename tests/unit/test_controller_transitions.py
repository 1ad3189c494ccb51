"""The controller's own transitions as tables: one row per case, the expectation in the row.

Manual commands (verb × where the rollout stands → accepted or refused, with the message),
promotion and its history entries, a spec change that supersedes the candidate, rollback --to.
"""

from __future__ import annotations

import copy
import hashlib
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from lvm_operator.api import (
    EvaluationStatus,
    GateStatus,
    HistoryEntry,
    LVMRolloutStatus,
    Outcome,
    Serving,
    parse_rollout,
)
from lvm_operator.commands import (
    ANNOTATION_COMMAND,
    ANNOTATION_COMMAND_BY,
    ANNOTATION_COMMAND_ID,
    Command,
    Verb,
)
from lvm_operator.controller import adapter
from lvm_operator.controller.transitions import (
    apply_command,
    promoted,
    promotion_history,
    read_command,
    retire_expired,
    start_for_spec,
)
from lvm_operator.decision import Phase, RolloutState

RAW = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "local-fast.yaml")
                     .read_text())
SPEC = parse_rollout({**copy.deepcopy(RAW), "metadata": {"name": "r", "namespace": "ml"}}).spec
CHAMPION, CANDIDATE = SPEC.champion.version, SPEC.candidate.version  # 3 steps; warm for 30 s
NOW = 1_700_000_000.0
FP = adapter.fingerprint(SPEC)

PENDING = RolloutState(fingerprint=FP)
AT_STEP_2 = RolloutState(phase=Phase.PROGRESSING, fingerprint=FP, current_step=1,
                         candidate_weight=50, step_started_at=NOW - 3)
PAUSED = RolloutState(phase=Phase.PAUSED, fingerprint=FP, current_step=0, candidate_weight=25,
                      paused_at=NOW - 1)
PROMOTED = RolloutState(phase=Phase.PROMOTED, fingerprint=FP, current_step=2,
                        candidate_weight=100)
ROLLED_BACK = RolloutState(phase=Phase.ROLLED_BACK, fingerprint=FP, current_step=1)

ROLLING = Serving(champion=CHAMPION, candidate=CANDIDATE)
MANUALLY_PAUSED = Serving(champion=CHAMPION, candidate=CANDIDATE, manual_pause=True)
AFTER_PROMOTION = Serving(champion=CANDIDATE, candidate=None)

OLD = HistoryEntry(version="phase0", checkpoint="file:///c/phase0.safetensors", sha256="0" * 64,
                   outcome=Outcome.SUPERSEDED, time=datetime.fromtimestamp(NOW - 99, UTC),
                   reason="replaced")
NO_STATUS = LVMRolloutStatus()
WITH_PHASE0 = LVMRolloutStatus(history=[OLD])
WITH_ABORTED_PHASE0 = LVMRolloutStatus(history=[OLD.model_copy(update={
    "outcome": Outcome.ABORTED})])
GATE_BLOCKED = LVMRolloutStatus(evaluation=EvaluationStatus(gate=GateStatus(
    verdict="blocked", reason="candidate Hit@5 0.410 < minimum 0.660", candidate=CANDIDATE)))


def cmd(value: str) -> Command:
    verb, _, rest = value.partition(":")
    target, _, flag = rest.partition(":")
    return Command(Verb(verb), "c1", target or None, force=flag == "force")


@pytest.mark.parametrize(("command", "state", "serving", "old", "accepted", "message", "phase"), [
    # pause / resume
    ("pause", AT_STEP_2, ROLLING, NO_STATUS, True,
     "paused by command: step timers stop; guardrails stay armed", Phase.PROGRESSING),
    ("pause", AT_STEP_2, MANUALLY_PAUSED, NO_STATUS, False, "already paused", Phase.PROGRESSING),
    ("resume", PAUSED, MANUALLY_PAUSED, NO_STATUS, True, "resumed by command", Phase.PAUSED),
    ("resume", AT_STEP_2, ROLLING, NO_STATUS, False, "not paused", Phase.PROGRESSING),
    # promote: only a rollout at a step; 2 of 3 steps done -> "at step 2/3"
    ("promote", AT_STEP_2, ROLLING, NO_STATUS, True,
     f"promoted {CANDIDATE} by command at step 2/3 (remaining steps skipped)", Phase.PROMOTED),
    ("promote", PENDING, ROLLING, NO_STATUS, False, "nothing to promote in phase Pending",
     Phase.PENDING),
    ("promote", ROLLED_BACK, ROLLING, NO_STATUS, False,
     "nothing to promote in phase RolledBack", Phase.ROLLED_BACK),
    # abort: any running rollout
    ("abort", AT_STEP_2, ROLLING, NO_STATUS, True,
     f"aborted by command: all traffic to champion {CHAMPION}; candidate {CANDIDATE} kept "
     "scaled down", Phase.ROLLED_BACK),
    ("abort", PENDING, ROLLING, NO_STATUS, True,
     f"aborted by command: all traffic to champion {CHAMPION}; candidate {CANDIDATE} kept "
     "scaled down", Phase.ROLLED_BACK),
    ("abort", PROMOTED, AFTER_PROMOTION, NO_STATUS, False, "nothing to abort in phase Promoted",
     Phase.PROMOTED),
    # retry: after a rollback, or a blocked gate before step 1
    ("retry", ROLLED_BACK, ROLLING, NO_STATUS, True,
     f"retrying {CANDIDATE} from step 1 by command", Phase.PENDING),
    # ...but not after rollback --to another version: the spec's champion does not serve
    ("retry", ROLLED_BACK, Serving(champion="phase0"), WITH_PHASE0, False,
     f"phase0 serves, not spec.champion {CHAMPION}: set spec.champion to "
     "status.gitSpec.champion to retry from it", Phase.ROLLED_BACK),
    ("retry", PENDING, ROLLING, GATE_BLOCKED, True,
     f"re-evaluating candidate {CANDIDATE} and champion on the eval set by command (gate was "
     "blocked: candidate Hit@5 0.410 < minimum 0.660)", Phase.PENDING),
    ("retry", AT_STEP_2, ROLLING, GATE_BLOCKED, False,
     "retry needs a rolled-back or aborted rollout, or a blocked pre-rollout gate, not "
     "Progressing", Phase.PROGRESSING),
    ("retry", PROMOTED, AFTER_PROMOTION, NO_STATUS, False,
     "retry needs a rolled-back or aborted rollout, or a blocked pre-rollout gate, not Promoted",
     Phase.PROMOTED),
    # rollback --to: the spec's champion or a version from history
    (f"rollback:{CHAMPION}", AT_STEP_2, ROLLING, NO_STATUS, True,
     f"rolled back by command to {CHAMPION}: it serves all traffic", Phase.ROLLED_BACK),
    ("rollback:phase0", PROMOTED, AFTER_PROMOTION, WITH_PHASE0, True,
     "rolled back by command to phase0: it serves all traffic", Phase.ROLLED_BACK),
    ("rollback:phase9", AT_STEP_2, ROLLING, WITH_PHASE0, False,
     f"version 'phase9' is not in history; known: phase0, {CHAMPION}", Phase.PROGRESSING),
    (f"rollback:{CHAMPION}", ROLLED_BACK, ROLLING, NO_STATUS, False,
     f"{CHAMPION} is already serving all traffic", Phase.ROLLED_BACK),
    # issue #15: the just-aborted candidate is no rollback target (it would get 100%)...
    ("rollback:phase0", AT_STEP_2, ROLLING, WITH_ABORTED_PHASE0, False,
     "version 'phase0' never served as champion (a rolled-back or aborted candidate); "
     f"champions: {CHAMPION}; kubectl lvm rollback --force sends it anyway", Phase.PROGRESSING),
    # ...unless forced, and the record says so
    ("rollback:phase0:force", AT_STEP_2, ROLLING, WITH_ABORTED_PHASE0, True,
     "rolled back by command to phase0: it serves all traffic (forced: it never served as "
     "champion)", Phase.ROLLED_BACK),
])
def test_commands(command, state, serving, old, accepted, message, phase):
    effect = apply_command(cmd(command), SPEC, state, serving, old, NOW)
    assert effect.record.result.value == ("accepted" if accepted else "rejected")
    assert effect.record.message == message
    assert effect.state.phase is phase
    assert effect.message == (message if accepted and command not in ("pause", "resume")
                              else None)
    verb = command.partition(":")[0]
    event = effect.events[0]
    assert (event.type, event.reason) == (("Normal", f"Command{verb.capitalize()}") if accepted
                                          else ("Warning", "CommandRejected"))
    assert event.message.endswith(f"(id c1): {message}")
    if not accepted:
        assert (effect.state, effect.serving, effect.history) == (state, serving, [])


@pytest.mark.parametrize(("command", "state", "serving", "old", "champion", "candidate",
                          "weight", "history"), [
    # promote: the candidate serves all; the champion it replaced stays warm 30 s
    ("promote", AT_STEP_2, ROLLING, NO_STATUS, CANDIDATE, None, 100,
     [(CHAMPION, "superseded"), (CANDIDATE, "promoted")]),
    # abort: the candidate is recorded as aborted, the champion keeps everything
    ("abort", AT_STEP_2, ROLLING, NO_STATUS, CHAMPION, CANDIDATE, 0, [(CANDIDATE, "aborted")]),
    # rollback --to while running: the candidate is the one rolled back
    (f"rollback:{CHAMPION}", AT_STEP_2, ROLLING, NO_STATUS, CHAMPION, None, 0,
     [(CANDIDATE, "rolledBack")]),
    # rollback --to after a promotion: the promoted version is the one rolled back
    ("rollback:phase0", PROMOTED, AFTER_PROMOTION, WITH_PHASE0, "phase0", None, 0,
     [(CANDIDATE, "rolledBack")]),
    # retry: back to step 1, same champion and candidate, nothing recorded
    ("retry", ROLLED_BACK, Serving(champion=CHAMPION, candidate=None), NO_STATUS, CHAMPION,
     CANDIDATE, 0, []),
])
def test_accepted_commands_move_serving_and_history(command, state, serving, old, champion,
                                                    candidate, weight, history):
    effect = apply_command(cmd(command), SPEC, state, serving, old, NOW)
    assert (effect.serving.champion, effect.serving.candidate) == (champion, candidate)
    assert effect.state.candidate_weight == weight
    assert [(h.version, h.outcome.value) for h in effect.history] == history
    assert all(h.time.timestamp() == NOW for h in effect.history)


def test_pause_and_resume_toggle_the_manual_pause():
    paused = apply_command(cmd("pause"), SPEC, AT_STEP_2, ROLLING, NO_STATUS, NOW)
    assert paused.serving.manual_pause is True
    resumed = apply_command(cmd("resume"), SPEC, PAUSED, paused.serving, NO_STATUS, NOW)
    assert resumed.serving.manual_pause is None


def test_a_blocked_gate_retry_asks_for_reevaluation():
    effect = apply_command(cmd("retry"), SPEC, PENDING, ROLLING, GATE_BLOCKED, NOW)
    assert effect.reevaluate and effect.state == PENDING


@pytest.mark.parametrize(("annotations", "last_id", "ran", "result", "consume"), [
    ({}, None, False, None, False),  # no command
    ({ANNOTATION_COMMAND: "pause", ANNOTATION_COMMAND_ID: "c1"}, None, True, "accepted", True),
    # the same id as status.lastCommand: removed, not run again
    ({ANNOTATION_COMMAND: "pause", ANNOTATION_COMMAND_ID: "c1"}, "c1", False, None, True),
    # malformed: rejected (recorded) and removed
    ({ANNOTATION_COMMAND: "explode", ANNOTATION_COMMAND_ID: "x"}, None, True, "rejected", True),
    ({ANNOTATION_COMMAND: "explode", ANNOTATION_COMMAND_ID: "x"}, "x", False, None, True),
    # an id that is not an id (too long, odd characters): rejected once under a safe name,
    # then only removed
    ({ANNOTATION_COMMAND: "pause", ANNOTATION_COMMAND_ID: "x" * 300}, None, True, "rejected",
     True),
    ({ANNOTATION_COMMAND: "pause", ANNOTATION_COMMAND_ID: "x" * 300},
     "invalid-" + hashlib.sha256(b"x" * 300).hexdigest()[:16], False, None, True),
    ({ANNOTATION_COMMAND: "pause"}, None, True, "rejected", True),  # no id at all
])
def test_reading_the_command_annotations(annotations, last_id, ran, result, consume):
    from lvm_operator.api import CommandResult, LastCommand

    old = NO_STATUS if last_id is None else LVMRolloutStatus(last_command=LastCommand(
        verb="pause", id=last_id, time=datetime.fromtimestamp(NOW - 5, UTC),
        result=CommandResult.ACCEPTED, message="earlier"))
    read = read_command(annotations, SPEC, AT_STEP_2, ROLLING, old, NOW)
    assert (read.effect is not None) == ran
    assert (read.effect.record.result.value if read.effect else None) == result
    assert read.remove_annotations == ((ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID,
                                        ANNOTATION_COMMAND_BY) if consume else ())


# --- promotion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("keep", "serving", "retiring", "until"), [
    ("30s", ROLLING, CHAMPION, NOW + 30),  # the replaced champion stays warm 30 s
    ("0s", ROLLING, None, None),  # no warm period: it goes at once
    ("30s", Serving(champion="phase0", candidate=CANDIDATE), "phase0", NOW + 30),  # after --to
])
def test_promotion_serving(keep, serving, retiring, until):
    spec = SPEC.model_copy(update={"promotion": SPEC.promotion.model_copy(
        update={"keep_champion_warm_for": keep})})
    after = promoted(spec, serving, NOW)
    assert (after.champion, after.candidate, after.retiring) == (CANDIDATE, None, retiring)
    assert (after.retiring_until.timestamp() if after.retiring_until else None) == until


def test_promotion_history_records_both_versions_with_their_checkpoints():
    entries = promotion_history(SPEC, NOW, "all steps passed", None)
    assert [(e.version, e.outcome, e.reason) for e in entries] == [
        (CHAMPION, Outcome.SUPERSEDED, f"replaced by {CANDIDATE} (promoted)"),
        (CANDIDATE, Outcome.PROMOTED, "all steps passed"),
    ]
    assert [e.checkpoint for e in entries] == [SPEC.champion.checkpoint,
                                               SPEC.candidate.checkpoint]


@pytest.mark.parametrize(("retiring_until", "now", "retired"), [
    (NOW + 30, NOW + 29.9, False),
    (NOW + 30, NOW + 30, True),  # at the deadline: gone
    (None, NOW + 999, False),  # no deadline: nothing to retire
])
def test_warm_champion_retires_at_its_deadline(retiring_until, now, retired):
    serving = Serving(champion=CANDIDATE, retiring=CHAMPION,
                      retiring_until=adapter.to_rfc3339(retiring_until))
    after, events = retire_expired(serving, now)
    assert (after.retiring is None) == retired
    assert [e.reason for e in events] == (["ChampionRetired"] if retired else [])


# --- a spec change -----------------------------------------------------------------------------

NEW_CANDIDATE = SPEC.model_copy(update={"candidate": SPEC.candidate.model_copy(
    update={"version": "phase3"})})


@pytest.mark.parametrize(("spec", "state", "serving", "restarted", "history", "who"), [
    # same experiment: nothing changes
    (SPEC, AT_STEP_2, ROLLING, False, [], (CHAMPION, CANDIDATE)),
    # a new candidate mid-rollout: the old one is superseded at step 2; the core restarts it
    (NEW_CANDIDATE, AT_STEP_2, ROLLING.model_copy(update={"candidate_model": SPEC.candidate}),
     False, [(CANDIDATE, "superseded", "superseded by phase3 at step 2")],
     (CHAMPION, "phase3")),
    # a new experiment after a finished one: a clean start, nothing recorded
    (NEW_CANDIDATE, PROMOTED, AFTER_PROMOTION, True, [], (CHAMPION, "phase3")),
])
def test_start_for_spec(spec, state, serving, restarted, history, who):
    start = start_for_spec(spec, state, serving, NOW)
    assert (start.state == RolloutState()) == restarted
    assert [(h.version, h.outcome.value, h.reason) for h in start.history] == history
    assert (start.serving.champion, start.serving.candidate) == who
    assert start.serving.candidate_model == spec.candidate


def test_no_serving_record_yet_serves_the_spec():
    start = start_for_spec(SPEC, PENDING, None, NOW)
    assert (start.serving.champion, start.serving.candidate) == (CHAMPION, CANDIDATE)


@pytest.mark.parametrize(("value", "target", "force", "error"), [
    ("rollback:phase0", "phase0", False, None),
    ("rollback:phase0:force", "phase0", True, None),
    ("rollback:phase0:yes", None, None, "use rollback:<version> or rollback:<version>:force"),
    ("pause:force", None, None, "pause takes no argument"),
])
def test_rollback_force_travels_in_the_annotation(value, target, force, error):
    from lvm_operator.commands import CommandError, parse_command

    annotations = {ANNOTATION_COMMAND: value, ANNOTATION_COMMAND_ID: "c9"}
    if error is not None:
        with pytest.raises(CommandError, match=error):
            parse_command(annotations)
        return
    c = parse_command(annotations)
    assert (c.target_version, c.force) == (target, force)
    assert c.annotation_value() == value  # what the plugin writes is what the operator reads


def test_a_command_records_who_asked_and_which_field_manager_wrote_it():
    from lvm_operator.commands import command_field_manager

    meta = {"managedFields": [
        {"manager": "kubectl-client-side-apply", "fieldsV1": {"f:spec": {}}},
        {"manager": "kubectl-lvm", "operation": "Update", "fieldsV1": {"f:metadata": {
            "f:annotations": {"f:lvm.rollout.io/command": {}, "f:lvm.rollout.io/command-id": {}}}}},
    ]}
    manager = command_field_manager(meta)
    assert manager == "kubectl-lvm"
    annotations = {ANNOTATION_COMMAND: "pause", ANNOTATION_COMMAND_ID: "c9",
                   ANNOTATION_COMMAND_BY: "alice@example.com\x1b[31m" + "!" * 300}
    read = read_command(annotations, SPEC, AT_STEP_2, ROLLING, NO_STATUS, NOW, manager)
    record = read.effect.record
    assert record.field_manager == "kubectl-lvm"
    # printable only, bounded: no terminal escapes in status or kubectl lvm status
    assert record.requested_by.startswith("alice@example.com[31m!")
    assert len(record.requested_by) == 128
    (event,) = read.effect.events
    assert "(id c9) (by alice@example.com[31m" in event.message
    assert "via kubectl-lvm): paused by command" in event.message
    assert command_field_manager({}) is None
    assert command_field_manager({"managedFields": [{"manager": "x", "fieldsV1": {
        "f:metadata": {"f:labels": {}}}}]}) is None
