"""Where evaluations run: child processes of the operator (``python -m lvm_serving.evaluate``).

Why a child process, not the operator's own threads: torch stays out of the operator process
(its memory, its threads, its import time); a crash or an out-of-memory of one evaluation kills
only that child; a timeout can actually stop it; and the reconcile loop never waits on a model.
A tick *starts* an evaluation and later ticks *collect* it, so the guardrails of a rollout in
progress keep their rhythm while its champion is re-evaluated for drift.

Runs are keyed by what they evaluate (:attr:`EvalRequest.key`), so asking twice starts once.
A finished run's output is held until a tick collects it. The registry is in memory: after an
operator restart, an evaluation in flight is simply started again (its status says so).

Why not a Kubernetes Job: on the local stack there is no kubelet to run one, and the models
and eval sets here are small enough for seconds of CPU. In a cluster the operator pod must see
the checkpoint and eval-set files (mount their volume; see the chart's ``extraVolumes``) and
have the CPU and memory an evaluation needs (``resources``); a Job on the version's GPU pool is
the natural next backend behind this same ``submit/poll`` interface.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor

from lvm_serving.contracts import eval_result

from .protocol import EvalRequest, EvaluationRunner, Finished, Running

__all__ = ["EvalRequest", "EvaluationRunner", "Finished", "LocalEvaluationRunner", "Running"]

log = logging.getLogger("lvm_operator.evaluation")

WORKERS_ENV = "LVM_EVAL_WORKERS"
THREADS_ENV = "LVM_EVAL_TORCH_THREADS"


class LocalEvaluationRunner:
    """Evaluations as child processes, at most ``workers`` at once (the rest queue)."""

    def __init__(self, workers: int | None = None, threads: int | None = None,
                 python: str = sys.executable) -> None:
        self.workers = workers or int(os.environ.get(WORKERS_ENV, "2"))
        self.threads = threads or int(os.environ.get(THREADS_ENV, "1"))
        self.python = python
        self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix="lvm-eval")
        self._runs: dict[str, tuple[float, Future[Finished]]] = {}
        self._procs: set[subprocess.Popen[str]] = set()
        self._lock = threading.Lock()

    def submit(self, request: EvalRequest, now: float) -> Running:
        with self._lock:
            known = self._runs.get(request.key)
            if known is None:
                log.info("%s: evaluating %s (%s) on %s", request.rollout, request.version,
                         request.purpose, request.eval_set_uri)
                known = (now, self._pool.submit(self._run, request))
                self._runs[request.key] = known
            return Running(known[0])

    def poll(self, request: EvalRequest) -> Running | Finished | None:
        with self._lock:
            known = self._runs.get(request.key)
        if known is None:
            return None
        started, future = known
        return future.result() if future.done() else Running(started)

    def collect(self, request: EvalRequest) -> None:
        """Forget a finished run once its result is recorded in status."""
        with self._lock:
            known = self._runs.get(request.key)
            if known is not None and known[1].done():
                del self._runs[request.key]

    def shutdown(self) -> None:
        """Stop: queued evaluations are dropped, running ones killed."""
        self._pool.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            procs = list(self._procs)
        for proc in procs:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()

    def _run(self, request: EvalRequest) -> Finished:
        argv = request.argv(self.python, self.threads)
        try:
            # Same process group and session as the operator: whatever stops the operator (a
            # container exit, the local stack's session kill) stops its evaluations too.
            proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    text=True)
        except OSError as e:
            return self._error(f"could not start the evaluation: {e}", type(e).__name__)
        with self._lock:
            self._procs.add(proc)
        try:
            stdout, stderr = proc.communicate(timeout=request.timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            return self._error(f"timed out after {request.timeout_s:g} s "
                               "(spec.evaluation.timeout)", "Timeout")
        finally:
            with self._lock:
                self._procs.discard(proc)
        output = eval_result.parse(stdout)
        if output is None:
            tail = (stderr or stdout)[-600:].strip()
            return self._error(f"evaluation exited {proc.returncode} without a result: {tail}",
                               "EvaluationCrashed")
        if proc.returncode != 0 and "error" not in output:
            output = {**output, "error": f"evaluation exited {proc.returncode}"}
        log.info("%s: evaluated %s: %s", request.rollout, request.version,
                 output.get("error") or f"Hit@5 {output.get('hit@5')}")
        return Finished(output, time.time())

    @staticmethod
    def _error(message: str, kind: str) -> Finished:
        return Finished(eval_result.error_result(message, kind), time.time())
