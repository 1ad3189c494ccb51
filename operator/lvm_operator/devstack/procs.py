"""Start, wait for and stop the local stack's processes without leaving orphans.

Every component runs in its own POSIX session (``start_new_session=True``), so stopping it means
signalling every process in that session: Ray's ``ray start`` daemonises a dozen children that
outlive the command, and they would survive a plain ``terminate()`` of the launcher.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import psutil


class ComponentError(RuntimeError):
    """A stack component failed to start or stop; the message names it and its log."""

    def __init__(self, component: str, reason: str, log_path: Path | None = None):
        self.component = component
        self.log_path = log_path
        detail = f"{component}: {reason}"
        if log_path is not None:
            detail += f"\n  log: {log_path}\n{tail(log_path)}"
        super().__init__(detail)


def tail(path: Path, lines: int = 25) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "  (no log written)"
    return "\n".join(f"  | {line}" for line in text[-lines:])


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now (the OS picks it; races are retried by callers)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def free_ports(n: int) -> list[int]:
    """``n`` distinct free ports, held open together so the OS cannot hand out one twice."""
    socks = []
    try:
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def session_processes(sid: int) -> list[psutil.Process]:
    procs = []
    for proc in psutil.process_iter():
        try:
            if os.getsid(proc.pid) == sid:
                procs.append(proc)
        except (ProcessLookupError, PermissionError, psutil.Error):
            continue
    return procs


def kill_session(sid: int, grace_s: float = 10.0) -> None:
    """SIGTERM every process of session ``sid``, then SIGKILL what is left after ``grace_s``."""
    procs = session_processes(sid)
    for proc in procs:
        with contextlib.suppress(psutil.Error):
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    psutil.wait_procs(alive, timeout=5)
    # Children may have been forked between the listing and the kill; sweep once more.
    for proc in session_processes(sid):
        with contextlib.suppress(psutil.Error):
            proc.kill()


@dataclass
class ManagedProcess:
    """One component process (and whatever it forks), logging to ``log_path``."""

    name: str
    argv: Sequence[str]
    log_path: Path
    env: dict[str, str] | None = None
    cwd: Path | None = None
    popen: subprocess.Popen | None = None
    sid: int | None = None

    def start(self) -> ManagedProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child for its lifetime
        try:
            self.popen = subprocess.Popen(
                list(self.argv),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **(self.env or {})},
                cwd=self.cwd,
                start_new_session=True,
            )
        except OSError as exc:
            raise ComponentError(self.name, f"cannot execute {self.argv[0]}: {exc}") from exc
        finally:
            log.close()
        self.sid = self.popen.pid  # a session leader's sid is its pid
        return self

    def running(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait_ready(
        self,
        probe: Callable[[], bool],
        timeout_s: float,
        *,
        launcher_exits: bool = False,
        what: str = "ready",
    ) -> None:
        """Poll ``probe`` until it returns True; fail fast if the process dies.

        ``launcher_exits`` is for commands that daemonise (``ray start``): their exit is expected,
        only a non-zero exit code is a failure.
        """
        deadline = time.monotonic() + timeout_s
        delay = 0.05
        while True:
            if self.popen is not None and self.popen.poll() is not None:
                code = self.popen.returncode
                if not launcher_exits or code != 0:
                    raise ComponentError(self.name, f"exited with code {code} before {what}",
                                         self.log_path)
            with contextlib.suppress(Exception):
                if probe():
                    return
            if time.monotonic() > deadline:
                raise ComponentError(self.name, f"not {what} after {timeout_s:.0f}s", self.log_path)
            time.sleep(delay)
            delay = min(delay * 1.5, 0.5)

    def stop(self, grace_s: float = 10.0) -> None:
        if self.sid is not None:
            kill_session(self.sid, grace_s)
        if self.popen is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout=grace_s)
