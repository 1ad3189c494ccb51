"""Manual control without spec edits: one-shot annotations the operator consumes once.

GitOps tools revert spec edits, so ``kubectl lvm promote|abort|retry|pause|resume|rollback`` never
touch the spec. The plugin sets two annotations on the LVMRollout:

* ``lvm.rollout.io/command``: ``<verb>``, ``rollback:<version>`` or ``rollback:<version>:force``
  (``kubectl lvm rollback --force``: a version that never served as champion);
* ``lvm.rollout.io/command-id``: a fresh id, so the same verb given twice is two commands.

The operator acts on a command whose id differs from ``status.lastCommand.id``, records it there
(verb, id, time, result) and removes both annotations in the same patch. A command it cannot carry
out (``rollback`` to a version not in history, ``resume`` when not paused) is recorded as rejected
with the reason, and an Event says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

ANNOTATION_COMMAND = "lvm.rollout.io/command"
ANNOTATION_COMMAND_ID = "lvm.rollout.io/command-id"


class Verb(StrEnum):
    PROMOTE = "promote"  # skip the remaining steps: promote now (checks still recorded)
    ABORT = "abort"  # all traffic to the champion, candidate kept scaled down; phase RolledBack,
    #                  recorded as "aborted" in history and status.lastCommand
    RETRY = "retry"  # after a rollback/abort: start again from step 1 with the same candidate
    PAUSE = "pause"  # freeze step timers; guardrail rollbacks stay armed
    RESUME = "resume"
    ROLLBACK = "rollback"  # rollback:<version> — serve an earlier version from history


@dataclass(frozen=True)
class Command:
    verb: Verb
    id: str
    target_version: str | None = None  # only for rollback
    force: bool = False  # rollback to a version that never served as champion (recorded)

    def annotation_value(self) -> str:
        if self.verb is Verb.ROLLBACK and self.target_version:
            return f"{self.verb}:{self.target_version}" + (":force" if self.force else "")
        return str(self.verb)

    def annotations(self) -> dict[str, str]:
        return {ANNOTATION_COMMAND: self.annotation_value(), ANNOTATION_COMMAND_ID: self.id}


class CommandError(ValueError):
    pass


def parse_command(annotations: dict[str, str] | None) -> Command | None:
    """The pending command in ``annotations``, or None; raises CommandError when malformed."""
    annotations = annotations or {}
    raw = annotations.get(ANNOTATION_COMMAND)
    if raw is None:
        return None
    command_id = annotations.get(ANNOTATION_COMMAND_ID, "")
    if not command_id:
        raise CommandError(
            f"annotation {ANNOTATION_COMMAND}={raw!r} has no {ANNOTATION_COMMAND_ID}"
        )
    verb_text, _, rest = raw.partition(":")
    target, _, flag = rest.partition(":")
    if flag not in ("", "force"):
        raise CommandError(f"annotation {ANNOTATION_COMMAND}={raw!r}: use "
                           "rollback:<version> or rollback:<version>:force")
    try:
        verb = Verb(verb_text.strip())
    except ValueError:
        allowed = ", ".join(v.value for v in Verb)
        raise CommandError(
            f"annotation {ANNOTATION_COMMAND}={raw!r}: unknown command; allowed: {allowed}"
        ) from None
    if verb is Verb.ROLLBACK and not target.strip():
        raise CommandError(f"annotation {ANNOTATION_COMMAND}={raw!r}: use rollback:<version>")
    if verb is not Verb.ROLLBACK and target:
        raise CommandError(f"annotation {ANNOTATION_COMMAND}={raw!r}: {verb} takes no argument")
    return Command(verb=verb, id=command_id, target_version=target.strip() or None,
                   force=flag == "force")
