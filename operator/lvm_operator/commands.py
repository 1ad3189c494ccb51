"""Manual control without spec edits: one-shot annotations the operator consumes once.

GitOps tools revert spec edits, so ``kubectl lvm promote|abort|retry|pause|resume|rollback`` never
touch the spec. The plugin sets two annotations on the LVMRollout:

* ``lvm.rollout.io/command``: ``<verb>``, ``rollback:<version>`` or ``rollback:<version>:force``
  (``kubectl lvm rollback --force``: a version that never served as champion);
* ``lvm.rollout.io/command-id``: a fresh id, so the same verb given twice is two commands
  (1-63 characters: letters, digits, ``.``, ``_``, ``-``);
* ``lvm.rollout.io/command-by``: who asked (the plugin writes the kubeconfig context's user).

Who asked is recorded in ``status.lastCommand`` and the Event twice: ``requestedBy`` as the
client said it, and ``fieldManager``, the name the apiserver recorded in ``managedFields`` for the
write that set the command (``kubectl-lvm`` for the plugin, ``kubectl-annotate``, ``argocd-...``),
so a command set by hand or by a tool is told apart from one the plugin sent.

The operator acts on a command whose id differs from ``status.lastCommand.id``, records it there
(verb, id, time, result) and removes both annotations in the same patch. A command it cannot carry
out (``rollback`` to a version not in history, ``resume`` when not paused) is recorded as rejected
with the reason, and an Event says why.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

ANNOTATION_COMMAND = "lvm.rollout.io/command"
ANNOTATION_COMMAND_ID = "lvm.rollout.io/command-id"
ANNOTATION_COMMAND_BY = "lvm.rollout.io/command-by"
COMMAND_ANNOTATIONS = (ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID, ANNOTATION_COMMAND_BY)
#: The field manager ``kubectl lvm`` writes with.
PLUGIN_FIELD_MANAGER = "kubectl-lvm"
COMMAND_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
#: Kubernetes bounds a field manager to 128 printable characters; a requester gets the same.
MAX_WHO = 128


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
    requested_by: str | None = None  # as the client said it (bounded, printable)

    def annotation_value(self) -> str:
        if self.verb is Verb.ROLLBACK and self.target_version:
            return f"{self.verb}:{self.target_version}" + (":force" if self.force else "")
        return str(self.verb)

    def annotations(self) -> dict[str, str]:
        out = {ANNOTATION_COMMAND: self.annotation_value(), ANNOTATION_COMMAND_ID: self.id}
        if self.requested_by:
            out[ANNOTATION_COMMAND_BY] = self.requested_by
        return out


class CommandError(ValueError):
    pass


def bounded_who(text: Any) -> str | None:
    """A requester or field manager as we record it: printable, at most :data:`MAX_WHO`."""
    if not isinstance(text, str):
        return None
    clean = "".join(ch for ch in text if ch.isprintable()).strip()[:MAX_WHO]
    return clean or None


def safe_command_id(command_id: Any) -> str:
    """The id as recorded: itself when well-formed, else ``invalid-<digest>`` (bounded and
    safe, and still one per distinct id, so each malformed command is recorded once)."""
    if isinstance(command_id, str) and COMMAND_ID_PATTERN.fullmatch(command_id):
        return command_id
    digest = hashlib.sha256(str(command_id).encode("utf-8", "replace")).hexdigest()[:16]
    return f"invalid-{digest}"


def command_field_manager(metadata: Mapping[str, Any] | None) -> str | None:
    """The manager that last wrote the command annotation, from ``metadata.managedFields``."""
    key = f"f:{ANNOTATION_COMMAND}"
    found = None
    for entry in (metadata or {}).get("managedFields") or []:
        fields = (entry.get("fieldsV1") or {}) if isinstance(entry, Mapping) else {}
        annotations = (fields.get("f:metadata") or {}).get("f:annotations") or {}
        if isinstance(annotations, Mapping) and key in annotations:
            found = entry.get("manager")  # later entries are later writes
    return bounded_who(found)


def parse_command(annotations: dict[str, str] | None) -> Command | None:
    """The pending command in ``annotations``, or None; raises CommandError when malformed."""
    annotations = annotations or {}
    raw = annotations.get(ANNOTATION_COMMAND)
    if raw is None:
        return None
    command_id = annotations.get(ANNOTATION_COMMAND_ID, "")
    if not command_id:
        raise CommandError(
            f"annotation {ANNOTATION_COMMAND}={raw[:80]!r} has no {ANNOTATION_COMMAND_ID}"
        )
    if not COMMAND_ID_PATTERN.fullmatch(command_id):
        raise CommandError(
            f"annotation {ANNOTATION_COMMAND_ID}={command_id[:40]!r}"
            f"{'...' if len(command_id) > 40 else ''}: a command id is 1-63 characters: "
            "letters, digits, '.', '_' or '-', starting with a letter or digit")
    if len(raw) > 200:  # no command is this long; and the messages below quote it
        raise CommandError(f"annotation {ANNOTATION_COMMAND} is {len(raw)} characters long: "
                           "use promote, abort, retry, pause, resume or rollback:<version>")
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
                   force=flag == "force",
                   requested_by=bounded_who(annotations.get(ANNOTATION_COMMAND_BY)))
