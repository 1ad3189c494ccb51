"""What an evaluation is asked and answers: plain data shared by the runner and the tick.

The controller's pure tick decides which evaluations it wants (:class:`EvalRequest`) and reads
what they answered (:class:`Running`, :class:`Finished`) without importing the runner, which
owns child processes; :mod:`.runner` re-exports these names.
"""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class EvalRequest:
    """Everything one evaluation needs; ``rollout`` and ``purpose`` are only for logs."""

    rollout: str
    purpose: str
    version: str
    checkpoint: str
    checkpoint_sha256: str
    bank_uri: str
    bank_sha256: str | None
    eval_set_uri: str
    eval_set_sha256: str | None
    timeout_s: float

    @property
    def key(self) -> str:
        what = {k: v for k, v in asdict(self).items() if k not in ("purpose", "timeout_s")}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:20]

    def argv(self, python: str = sys.executable, threads: int = 1) -> list[str]:
        argv = [python, "-m", "lvm_serving.evaluate", "--checkpoint", self.checkpoint,
                "--sha256", self.checkpoint_sha256, "--bank", self.bank_uri,
                "--eval-set", self.eval_set_uri, "--threads", str(threads)]
        if self.bank_sha256:
            argv += ["--bank-sha256", self.bank_sha256]
        if self.eval_set_sha256:
            argv += ["--eval-sha256", self.eval_set_sha256]
        return argv


@dataclass(frozen=True)
class Finished:
    output: dict[str, Any]  # lvm_serving.evaluate's JSON (or an "error" one)
    finished_at: float


@dataclass(frozen=True)
class Running:
    started_at: float


class EvaluationRunner(Protocol):
    def submit(self, request: EvalRequest, now: float) -> Running: ...

    def poll(self, request: EvalRequest) -> Running | Finished | None: ...

    def collect(self, request: EvalRequest) -> None: ...
