"""The local evaluation runner: child processes, started once per subject, collected once.

The real ``python -m lvm_serving.evaluate`` runs in tests/integration/test_evaluation_e2e.py.
Here the child is a FAULT INJECTION stand-in script (the runner's ``python`` argument), for the
faults that a real evaluation cannot be made to show on demand: hanging past the timeout,
crashing without a result, printing garbage.
"""

from __future__ import annotations

import json
import stat
import time
from pathlib import Path

import psutil
import pytest
from helpers import eventually

from lvm_operator.evaluation.runner import EvalRequest, Finished, LocalEvaluationRunner, Running


def request(timeout_s: float = 30.0, version: str = "v2") -> EvalRequest:
    return EvalRequest(rollout="ml/lvm", purpose="gate", version=version,
                       checkpoint="file:///m/v2.pt", checkpoint_sha256="2" * 64,
                       bank_uri="file:///m/bank.npz", bank_sha256=None,
                       eval_set_uri="file:///m/eval_set.npz", eval_set_sha256="e" * 64,
                       timeout_s=timeout_s)


def stand_in(tmp_path: Path, body: str) -> str:
    """A fake interpreter: a shell script that ignores its arguments and does ``body``."""
    script = tmp_path / "fake-python"
    script.write_text("#!/bin/sh\n" + body + "\n")
    script.chmod(script.stat().st_mode | stat.S_IEXEC)
    return str(script)


def finished(runner: LocalEvaluationRunner, req: EvalRequest) -> Finished:
    return eventually(lambda: isinstance(p := runner.poll(req), Finished) and p, 30,
                      "the evaluation to finish", interval_s=0.05)


def test_argv_passes_every_digest_and_the_key_ignores_purpose():
    req = request()
    argv = req.argv("python3", threads=2)
    assert argv[:3] == ["python3", "-m", "lvm_serving.evaluate"]
    assert argv[argv.index("--eval-sha256") + 1] == "e" * 64
    assert "--bank-sha256" not in argv  # not pinned in the spec: not verified
    assert argv[argv.index("--threads") + 1] == "2"
    drift = EvalRequest(**{**req.__dict__, "purpose": "drift", "timeout_s": 1.0})
    assert drift.key == req.key  # the same evaluation, whoever asks for it
    assert request(version="v3").key != req.key


def test_one_run_per_subject_and_its_output_is_collected_once(tmp_path):
    out = {"format": "lvm-eval-result", "format_version": 1, "n": 8, "hit@5": 0.5}
    marker = tmp_path / "runs"
    runner = LocalEvaluationRunner(workers=1, python=stand_in(
        tmp_path, f"echo run >> {marker}; sleep 0.3; echo '{json.dumps(out)}'"))
    req = request()
    assert runner.poll(req) is None
    first = runner.submit(req, now=100.0)
    again = runner.submit(req, now=105.0)
    assert isinstance(first, Running) and first.started_at == again.started_at == 100.0
    assert isinstance(runner.poll(req), Running)
    done = finished(runner, req)
    assert done.output == out
    runner.collect(req)
    assert runner.poll(req) is None
    assert marker.read_text().count("run") == 1
    runner.shutdown()


@pytest.mark.parametrize(("body", "timeout_s", "error_type", "message"), [
    ("exec sleep 5", 0.5, "Timeout", "timed out after 0.5 s (spec.evaluation.timeout)"),
    ("echo 'Traceback: boom' >&2; exit 1", 30, "EvaluationCrashed",
     "evaluation exited 1 without a result: Traceback: boom"),
    ("echo not-json", 30, "EvaluationCrashed", "without a result: not-json"),
])
def test_faults_become_error_results(tmp_path, body, timeout_s, error_type, message):
    runner = LocalEvaluationRunner(workers=1, python=stand_in(tmp_path, body))
    started = time.monotonic()
    runner.submit(request(timeout_s), now=0.0)
    done = finished(runner, request(timeout_s))
    assert done.output["error_type"] == error_type
    assert message in done.output["error"]
    assert time.monotonic() - started < 4.0  # the timeout really stops the child
    runner.shutdown()


def test_shutdown_kills_running_evaluations(tmp_path):
    pid_file = tmp_path / "pid"
    runner = LocalEvaluationRunner(workers=1, python=stand_in(
        tmp_path, f"echo $$ > {pid_file}; exec sleep 30"))
    runner.submit(request(), now=0.0)
    pid = int(eventually(lambda: pid_file.exists() and pid_file.read_text().strip(), 10,
                         "the evaluation to start"))
    runner.shutdown()
    eventually(lambda: not psutil.pid_exists(pid) or psutil.Process(pid).status()
               == psutil.STATUS_ZOMBIE, 10, "the child killed")


def test_a_missing_interpreter_is_an_error_result():
    runner = LocalEvaluationRunner(workers=1, python="/nonexistent/python")
    runner.submit(request(), now=0.0)
    done = finished(runner, request())
    assert done.output["error_type"] == "FileNotFoundError"
    assert "could not start the evaluation" in done.output["error"]
    runner.shutdown()
