"""The demo's side of the local stack: a clean run directory, kubectl, the operator as its own
process, and waiting for the router the operator deploys."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

from lvm_operator.devstack.procs import ComponentError, ManagedProcess, free_ports
from lvm_operator.devstack.stack import Stack, stop_recorded, wait_for
from lvm_operator.devstack.tools import REPO_ROOT

from .manifest import NAME, NAMESPACE

CRDS = (REPO_ROOT / "crds" / "lvmrollout.yaml", REPO_ROOT / "crds" / "kopf-peering.yaml")


def kubectl(stack: Stack, *args: str, input: str | None = None) -> str:
    env = {**os.environ, **stack.env()}
    proc = subprocess.run([str(stack.tools.kubectl), *args], capture_output=True, text=True,
                          env=env, timeout=120, input=input)
    if proc.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {proc.stderr.strip()}")
    return proc.stdout


def http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def start_operator(stack: Stack, serve_port: int) -> ManagedProcess:
    liveness, metrics = free_ports(2)
    cli = str(Path(sys.executable).parent / "lvm-rollout")
    env = {**stack.env(), "LVM_RAY_SERVE_HTTP_HOST": "127.0.0.1",
           "LVM_RAY_SERVE_HTTP_PORT": str(serve_port), "PYTHONUNBUFFERED": "1"}
    proc = ManagedProcess(
        "operator",
        [cli, "operator", "--all-namespaces", "--liveness-port", str(liveness),
         "--metrics-port", str(metrics), "--dev"],
        stack.run_dir / "logs" / "operator.log", env=env,
    ).start()
    stack.extra_sessions["operator"] = proc.sid
    proc.wait_ready(lambda: http_ok(f"http://127.0.0.1:{liveness}/healthz"), 120,
                    what="live (/healthz)")
    return proc


def wait_for_router(router: str, log_path: Path, timeout_s: float = 240) -> None:
    """Until the router answers ``/healthz`` (the operator has deployed the Serve app)."""
    try:
        wait_for(lambda: http_ok(f"{router}/healthz"), timeout_s, f"{router}/healthz",
                 "ray-serve")
    except ComponentError as exc:
        raise ComponentError("ray-serve", f"router not healthy at {router}/healthz",
                             log_path) from exc


def events(stack: Stack) -> str:
    return kubectl(stack, "get", "events", "-n", NAMESPACE,
                    "--field-selector", f"involvedObject.name={NAME}",
                    "--sort-by=.lastTimestamp", "-o",
                    "custom-columns=TYPE:.type,REASON:.reason,MESSAGE:.message")


#: What a previous run leaves in the run directory and a new one must not inherit: etcd's data
#: (an old rollout would be "configured" instead of created, with a recorded Serve config hash
#: that makes the operator skip deploying to the new Ray cluster), Prometheus' series, logs.


#: What a previous run leaves in the run directory and a new one must not inherit: etcd's data
#: (an old rollout would be "configured" instead of created, with a recorded Serve config hash
#: that makes the operator skip deploying to the new Ray cluster), Prometheus' series, logs.
PREVIOUS_RUN = ("etcd-data", "prometheus", "logs", "report", "pki")


def clean_run_dir(run_dir: Path) -> list[str]:
    """Stop whatever an earlier (kept or interrupted) run left running and remove its state, so
    the demo starts from a clean control plane; returns what was removed."""
    stop_recorded(run_dir)
    removed = []
    for name in PREVIOUS_RUN:
        path = run_dir / name
        if path.exists():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(name)
    return removed
