"""The README's first command: bring up the real local stack and show an LVMRollout in it.

Today the demo starts kube-apiserver + etcd, Prometheus and the two-node Ray cluster, installs the
LVMRollout CRD, applies the fast local example and shows it the way on-call sees it
(``kubectl get`` / ``kubectl describe``), checks that Prometheus scrapes Ray, and stops
everything (or keeps it with ``--keep``). The progressive rollout itself arrives with the
operator (issue 6) and the full demo (issue 8).
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from rich.console import Console

from lvm_operator.devstack.procs import ComponentError
from lvm_operator.devstack.stack import Stack, start_stack, stop_recorded, wait_for
from lvm_operator.devstack.tools import REPO_ROOT

CRD = REPO_ROOT / "crds" / "lvmrollout.yaml"
EXAMPLE = REPO_ROOT / "examples" / "local-fast.yaml"


def _kubectl(stack: Stack, *args: str) -> str:
    env = {**os.environ, **stack.env()}
    proc = subprocess.run([str(stack.tools.kubectl), *args], capture_output=True, text=True,
                          env=env, timeout=120)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def run_demo(run_dir: Path, keep: bool, console: Console) -> int:
    stop_recorded(run_dir)  # a previous --keep run: start clean, never clash
    started = time.monotonic()
    console.rule("[bold]lvm-rollout local demo")
    console.print("starting kube-apiserver + etcd, a two-node Ray cluster and Prometheus…")
    try:
        stack = start_stack(run_dir)
    except ComponentError as exc:
        console.print(f"[red]a component failed to start[/]\n{exc}")
        return 1
    try:
        console.print(f"[green]stack up[/] in {time.monotonic() - started:.1f}s")
        for key, value in stack.endpoints().items():
            console.print(f"  {key:15} {value}")

        console.rule("install the LVMRollout CRD and apply the fast example")
        print(_kubectl(stack, "apply", "--server-side", "-f", str(CRD)).strip())
        _kubectl(stack, "wait", "--for=condition=Established", "crd/lvmrollouts.lvm.rollout.io",
                 "--timeout=60s")
        print(_kubectl(stack, "apply", "-f", str(EXAMPLE)).strip())

        console.rule("kubectl get lvmrollouts")
        print(_kubectl(stack, "get", "lvmrollouts", "-A"))
        console.rule("kubectl get lvmrollouts -o yaml (defaults filled in by the apiserver)")
        print(_kubectl(stack, "get", "lvmrollouts", "-A", "-o", "yaml"))

        console.rule("Prometheus scrapes both Ray nodes")
        prom = stack.prometheus
        wait_for(lambda: prom.query('count by (instance) ({__name__=~"ray_.+"})').__len__() == 2,
                 60, "ray_ series from both Ray nodes", "prometheus")
        for row in prom.query('count by (instance) ({__name__=~"ray_.+"})'):
            console.print(f"  {row['metric']['instance']}: {row['value'][1]} ray_ series")
    except Exception as exc:
        console.print(f"[red]demo failed:[/] {exc}\n  logs: {run_dir / 'logs'}")
        stack.stop()
        return 1

    if keep:
        stack.write_state()
        console.rule("stack kept running")
        console.print(f"export KUBECONFIG={stack.kubeconfig}\n"
                      "explore with kubectl; stop with `lvm-rollout dev down`")
    else:
        stack.stop()
        console.print(f"[green]demo finished[/] in {time.monotonic() - started:.1f}s; "
                      "everything stopped")
    return 0
