"""``kubectl lvm`` through the real kubectl binary against the real apiserver.

kubectl finds ``kubectl-lvm`` on PATH (the virtualenv's bin). Commands must only set the one-shot
annotations (spec and generation unchanged); ``status`` and ``get`` render a realistic status built
with the API's own status models and written through the status subresource, as the operator
would.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import typer
import yaml
from helpers import eventually

from lvm_operator.api import (
    Condition,
    ConditionStatus,
    HistoryEntry,
    LastAnalysis,
    LVMRolloutStatus,
    Measurement,
    Outcome,
    Phase,
    Verdict,
)
from lvm_operator.api.status import CommandResult, LastCommand
from lvm_operator.commands import ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID, parse_command
from lvm_operator.kubectl_plugin import cluster, commands

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = Path(sys.executable).parent
SHA = "ef" * 32


@pytest.fixture
def env(kube):
    env = dict(kube.env)
    env["PATH"] = os.pathsep.join([str(VENV_BIN), env["PATH"]])
    env["COLUMNS"] = "220"  # wide enough that rich does not wrap the tables
    return env


def run(env, *args, check=True, timeout=60) -> subprocess.CompletedProcess:
    proc = subprocess.run([*args], capture_output=True, text=True, env=env, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{args} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
    return proc


def kubectl(env, *args, **kw) -> subprocess.CompletedProcess:
    return run(env, "kubectl", *args, **kw)


@pytest.fixture
def rollout(kube, crd_installed):
    """A rollout from examples/local-fast.yaml in a fresh namespace: (namespace, name)."""
    ns = kube.new_namespace("plug")
    manifest = yaml.safe_load((REPO / "examples" / "local-fast.yaml").read_text())
    manifest["metadata"] = {"name": "lvm", "namespace": ns}
    kube.apply(manifest)
    return ns, "lvm"


@pytest.fixture
def api(kube):
    from kubernetes import client

    return client.CustomObjectsApi(kube.api_client())


def get(api, ns, name="lvm") -> dict:
    return api.get_namespaced_custom_object("lvm.rollout.io", "v1alpha1", ns, "lvmrollouts", name)


def patch_status(api, ns, status: dict, name="lvm") -> None:
    api.patch_namespaced_custom_object_status(
        "lvm.rollout.io", "v1alpha1", ns, "lvmrollouts", name, {"status": status},
        _content_type="application/merge-patch+json")


def realistic_status(weight: int = 50, step: int = 1) -> dict:
    now = datetime.now(UTC).replace(microsecond=0)
    return LVMRolloutStatus(
        phase=Phase.PROGRESSING,
        observed_generation=1,
        current_step=step,
        candidate_weight=weight,
        step_started_at=now - timedelta(seconds=4),
        next_step_at=now + timedelta(minutes=10),
        consecutive_breaches=1,
        last_analysis=LastAnalysis(
            time=now - timedelta(seconds=2),
            check="quality",
            verdict=Verdict.BREACH,
            reason="quality: candidate hit5Proxy 0.52 < rollback 0.55 (1200 requests)",
            measurements=[
                Measurement(version="phase2-500ctx", metric="hit5Proxy", value=0.52,
                            threshold=0.55, samples=1200, verdict=Verdict.BREACH),
                Measurement(version="phase2-500ctx", metric="p95LatencyMs", value=4.2,
                            threshold=5.0, samples=1200, verdict=Verdict.PASS),
                Measurement(version="phase2-500ctx", lane=3, metric="errorRate", value=0.0004,
                            threshold=0.001, samples=80, verdict=Verdict.PASS),
                Measurement(version="phase2-500ctx", lane=7, metric="hit5Proxy",
                            samples=0, verdict=Verdict.NO_DATA),
            ],
        ),
        history=[HistoryEntry(version="phase0-legacy", checkpoint="file:///ckpt/legacy.pt",
                              sha256=SHA, outcome=Outcome.SUPERSEDED,
                              time=now - timedelta(days=7), reason="promoted phase1-baseline")],
        conditions=[Condition(type="Progressing", status=ConditionStatus.TRUE,
                              reason="StepAdvanced", message="step 2/3: candidate at 50%",
                              last_transition_time=now - timedelta(seconds=4))],
        last_command=LastCommand(verb="pause", id="20261125T000000Z-aaaa0000",
                                 time=now - timedelta(minutes=1), result=CommandResult.REJECTED,
                                 message="not paused"),
    ).to_k8s()


def test_kubectl_finds_the_plugin(env):
    out = kubectl(env, "plugin", "list").stdout
    assert str(VENV_BIN / "kubectl-lvm") in out
    assert "kubectl-lvm" in kubectl(env, "lvm", "version").stdout


@pytest.mark.parametrize(("args", "value"), [
    (["promote"], "promote"), (["abort"], "abort"), (["retry"], "retry"),
    (["pause"], "pause"), (["resume"], "resume"),
])
def test_commands_set_annotations_only(env, api, rollout, args, value):
    ns, name = rollout
    before = get(api, ns)
    out = kubectl(env, "lvm", *args, name, "-n", ns).stdout
    after = get(api, ns)
    command = parse_command(after["metadata"]["annotations"])
    assert command is not None and command.annotation_value() == value
    assert f"{value} requested (command id {command.id})" in out and ns in out
    assert after["spec"] == before["spec"]
    assert after["metadata"]["generation"] == before["metadata"]["generation"]


def test_rollback_needs_a_version_from_history(env, api, rollout):
    ns, name = rollout
    proc = kubectl(env, "lvm", "rollback", name, "--to", "phase0-legacy", "-n", ns, check=False)
    assert proc.returncode == 1
    assert f"LVMRollout {ns}/{name} has no version 'phase0-legacy'" in proc.stderr
    assert ANNOTATION_COMMAND not in (get(api, ns)["metadata"].get("annotations") or {})

    patch_status(api, ns, realistic_status())
    kubectl(env, "lvm", "rollback", name, "--to", "phase0-legacy", "-n", ns)
    annotations = get(api, ns)["metadata"]["annotations"]
    assert annotations[ANNOTATION_COMMAND] == "rollback:phase0-legacy"
    first_id = annotations[ANNOTATION_COMMAND_ID]

    # A second command before the operator consumed the first: warned, replaced, new id.
    proc = kubectl(env, "lvm", "rollback", name, "--to", "nowhere", "--force", "-n", ns)
    assert "replacing the pending command 'rollback:phase0-legacy'" in proc.stderr
    annotations = get(api, ns)["metadata"]["annotations"]
    # --force travels to the operator, which records that the rollback was forced
    assert annotations[ANNOTATION_COMMAND] == "rollback:nowhere:force"
    assert annotations[ANNOTATION_COMMAND_ID] != first_id


def test_errors_name_the_rollout_and_what_to_do(env, kube, rollout, capsys):
    ns, _ = rollout
    proc = kubectl(env, "lvm", "promote", "missing", "-n", ns, check=False)
    assert proc.returncode == 1
    assert f"LVMRollout 'missing' not found in namespace '{ns}'" in proc.stderr
    assert f"kubectl lvm get -n {ns}" in proc.stderr

    # A group/version the apiserver does not serve answers like a missing CRD (in-process run:
    # a client speaking another API version, reported as the commands report every failure).
    stale = dataclasses.replace(cluster.connect(kube.kubeconfig, None), version="v9alpha9")
    with pytest.raises(typer.Exit) as result, commands.reporting():
        stale.get("lvm", ns)
    assert result.value.exit_code == 1
    output = capsys.readouterr().err
    assert "CRD (lvmrollouts.lvm.rollout.io) is not installed" in output
    assert "kubectl apply --server-side -f crds/lvmrollout.yaml" in output


def test_current_namespace_comes_from_the_kubeconfig(env, api, rollout, tmp_path, kube):
    ns, name = rollout
    config = tmp_path / "kubeconfig"
    config.write_text(Path(kube.kubeconfig).read_text())
    env = {**env, "KUBECONFIG": str(config)}
    kubectl(env, "config", "set-context", "--current", f"--namespace={ns}")
    kubectl(env, "lvm", "pause", name)  # no -n: the context's namespace
    assert get(api, ns)["metadata"]["annotations"][ANNOTATION_COMMAND] == "pause"


def test_status_renders_everything(env, api, rollout):
    ns, name = rollout
    patch_status(api, ns, realistic_status(weight=50, step=1))
    out = kubectl(env, "lvm", "status", name, "-n", ns).stdout
    for expected in [
        f"{ns}/{name}", "Progressing", "Candidate weight", "50%",
        "phase1-baseline (memory_gru, 100 ctx, pool pool_a10)",
        "phase2-500ctx (memory_gru, 500 ctx, pool pool_a100)",
        "Step", "2/3",
        "Next step", "in 9m",  # nextStepAt is 10 minutes after the status was built
        "1 in a row (rollback at 2)",
        "quality: candidate hit5Proxy 0.52 < rollback 0.55 (1200 requests)",
        "Last analysis: quality · breach",
        "hit5Proxy", "0.52", "≥ 0.55", "breach",
        "p95LatencyMs", "4.2 ms", "≤ 5 ms", "pass",
        "errorRate", "0.04%", "≤ 0.1%",
        "noData",
        "Progressing", "StepAdvanced", "step 2/3: candidate at 50%",
        "Last command: pause rejected", "not paused",
        "History", "phase0-legacy", "superseded", "file:///ckpt/legacy.pt",
    ]:
        assert expected in out, f"{expected!r} missing from:\n{out}"
    # The current step is marked, the earlier one done, the later one pending.
    step_lines = [line for line in out.splitlines() if "%" in line and "s " in line]
    assert any("▶" in line and "50%" in line and "current" in line for line in step_lines), out
    assert any("25%" in line and "done" in line for line in step_lines), out
    assert any("100%" in line and "pending" in line for line in step_lines), out

    kubectl(env, "lvm", "promote", name, "-n", ns)
    out = kubectl(env, "lvm", "status", name, "-n", ns).stdout
    assert "Pending command: promote" in out and "not consumed by the operator yet" in out


def test_get_lists_and_watches(env, api, rollout):
    ns, name = rollout
    out = kubectl(env, "lvm", "get", "-n", ns).stdout.splitlines()
    assert out[0].split()[:4] == ["NAME", "CHAMPION", "CANDIDATE", "PHASE"]
    assert out[1].split()[:4] == [name, "phase1-baseline", "phase2-500ctx", "<none>"]

    patch_status(api, ns, realistic_status(weight=25, step=0))
    out = kubectl(env, "lvm", "get", "-A").stdout
    row = next(line for line in out.splitlines() if line.startswith(ns))
    assert row.split()[:7] == [ns, name, "phase1-baseline", "phase2-500ctx", "Progressing",
                               "1/3", "25%"]

    proc = subprocess.Popen(["kubectl", "lvm", "get", "-n", ns, "-w", "--watch-timeout", "30"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(iter(proc.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        eventually(lambda: any("25%" in line for line in lines), timeout_s=20,
                   what="the initial row")
        # No race with the watch starting: it resumes from the listing's resourceVersion.
        patch_status(api, ns, {"candidateWeight": 50, "currentStep": 1})
        eventually(lambda: any("50%" in line and "2/3" in line for line in lines),
                   timeout_s=20, what=f"a new row after the change; got {lines}")
        assert lines[0].index("PHASE") == lines[-1].index("Progressing")  # rows line up
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_wait_reports_what_the_operator_recorded(env, api, rollout):
    ns, name = rollout

    def operator_stand_in():
        """Records the command the way the operator does (the operator is not under test)."""
        def pending():
            return parse_command(get(api, ns)["metadata"].get("annotations"))
        command = eventually(pending, timeout_s=20, what="the command annotation")
        patch_status(api, ns, {"lastCommand": {
            "verb": "promote", "id": command.id, "time": datetime.now(UTC).isoformat(),
            "result": "accepted", "message": "promoted at step 1/3"}})

    thread = threading.Thread(target=operator_stand_in, daemon=True)
    thread.start()
    out = kubectl(env, "lvm", "promote", name, "-n", ns, "--wait", "--timeout", "30").stdout
    thread.join(timeout=5)
    assert "operator: accepted: promoted at step 1/3" in out


def test_status_watch_exits_with_the_rollouts_outcome(env, api, rollout):
    """For CI pipelines, through the real kubectl: each change printed once; exit 0 on
    Promoted, 1 on RolledBack, 2 when --timeout passes first."""
    ns, name = rollout
    patch_status(api, ns, {"phase": "Progressing", "observedGeneration": 1, "currentStep": 0,
                           "candidateWeight": 25, "message": "step 1/3"})
    argv = ["kubectl", "lvm", "status", name, "-n", ns, "--watch", "--timeout", "60s"]
    watcher = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env=env)
    try:
        time.sleep(3.0)
        assert watcher.poll() is None  # still waiting while it progresses
        patch_status(api, ns, {"currentStep": 1, "candidateWeight": 50, "message": "step 2/3"})
        time.sleep(2.0)
        patch_status(api, ns, {"phase": "Promoted", "candidateWeight": 100,
                               "message": "promoted phase2-500ctx"})
        out, errs = watcher.communicate(timeout=30)
    finally:
        watcher.kill()
    assert watcher.returncode == 0, errs
    lines = out.splitlines()
    assert sum("step 1 | candidate 25%" in ln for ln in lines) == 1, out
    assert sum("step 2 | candidate 50%" in ln for ln in lines) == 1, out
    assert "Promoted: promoted phase2-500ctx" in out
    patch_status(api, ns, {"phase": "RolledBack", "candidateWeight": 0, "message": "breach"})
    rolled = kubectl(env, "lvm", "status", name, "-n", ns, "--watch", "--timeout", "30s",
                     check=False)
    assert rolled.returncode == 1 and "RolledBack: breach" in rolled.stdout, rolled
    patch_status(api, ns, {"phase": "Progressing", "candidateWeight": 25})
    slow = kubectl(env, "lvm", "status", name, "-n", ns, "--watch", "--timeout", "2s",
                   check=False)
    assert slow.returncode == 2 and "timed out after 2s" in slow.stderr, slow
