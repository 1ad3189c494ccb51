"""One operator replica, 200 LVMRollouts: CPU used and how late reconciles run.

Starts kube-apiserver + etcd and Prometheus (no Ray: serving goes to the DRY-RUN backend, so the
benchmark measures the operator, not Serve), creates ``--rollouts`` rollouts from
``examples/local-fast.yaml`` (2 s guardrail interval, so every rollout ticks every 2 s; no traffic,
so each holds on noData and keeps checking), runs the operator for ``--seconds`` and prints its CPU
use, the reconcile delay (``lvm_operator_reconcile_delay_seconds``: how late a due tick ran) and
how many rollouts it reached.

    python benchmarks/bench_operator_scale.py [--rollouts 200] [--seconds 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import psutil
import yaml

from lvm_operator.devstack.procs import ManagedProcess, free_ports
from lvm_operator.devstack.stack import start_stack
from lvm_operator.devstack.tools import REPO_ROOT


def scrape(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
        text = resp.read().decode()
    out = {}
    for line in text.splitlines():
        if line.startswith("lvm_operator_reconcile_delay_seconds_") and "{" not in line:
            name, value = line.split()
            out[name] = float(value)
        if line.startswith("lvm_operator_reconcile_delay_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[f"le={le}"] = float(line.split()[-1])
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=60)
    args = parser.parse_args()

    run_dir = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    stack = start_stack(run_dir, components=("kube", "prometheus"))
    env = {**os.environ, **stack.env()}

    def kubectl(*a: str, input: str | None = None) -> str:
        return subprocess.run([str(stack.tools.kubectl), *a], env=env, input=input, text=True,
                              capture_output=True, check=True, timeout=300).stdout

    try:
        for crd in ("lvmrollout.yaml", "kopf-peering.yaml"):
            kubectl("apply", "--server-side", "-f", str(REPO_ROOT / "crds" / crd))
        kubectl("wait", "--for=condition=Established", "--all", "crd", "--timeout=60s")
        base = yaml.safe_load((REPO_ROOT / "examples" / "local-fast.yaml").read_text())
        base["spec"]["prometheus"]["url"] = stack.prometheus.url
        docs = []
        for i in range(args.rollouts):
            doc = yaml.safe_load(yaml.safe_dump(base))
            doc["metadata"] = {"name": f"lvm-{i:03d}", "namespace": "default"}
            # one Serve application per rollout (one owner each: a shared name is refused)
            doc["spec"]["serve"]["application"] = f"lvm-{i:03d}"
            docs.append(doc)
        kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))

        liveness, metrics_port = free_ports(2)
        operator = ManagedProcess(
            "operator",
            [str(Path(sys.executable).parent / "lvm-rollout"), "operator", "--all-namespaces",
             "--standalone", "--liveness-port", str(liveness), "--metrics-port", str(metrics_port)],
            run_dir / "operator.log",
            env={**stack.env(),
                 "LVM_SERVE_BACKEND_FACTORY": "lvm_operator.backends.noop:dry_run_factory"},
        ).start()
        stack.extra_sessions["operator"] = operator.sid
        operator.wait_ready(lambda: scrape(metrics_port) is not None, 120, what="serving /metrics")
        time.sleep(15)  # let every daemon start before measuring
        proc = psutil.Process(operator.popen.pid)
        cpu0, t0, m0 = sum(proc.cpu_times()[:2]), time.monotonic(), scrape(metrics_port)
        time.sleep(args.seconds)
        cpu1, t1, m1 = sum(proc.cpu_times()[:2]), time.monotonic(), scrape(metrics_port)

        phases = yaml.safe_load(kubectl("get", "lvmrollouts", "-o", "yaml"))["items"]
        reached = sum(1 for item in phases if (item.get("status") or {}).get("phase"))
        count = m1["lvm_operator_reconcile_delay_seconds_count"] - m0[
            "lvm_operator_reconcile_delay_seconds_count"]
        total = m1["lvm_operator_reconcile_delay_seconds_sum"] - m0[
            "lvm_operator_reconcile_delay_seconds_sum"]
        within = {le: (m1[le] - m0.get(le, 0)) / count for le in ("le=0.1", "le=0.5", "le=1.0")
                  if le in m1 and count}
        print(f"rollouts:                    {args.rollouts} ({reached} with a status phase)")
        print(f"operator CPU:                {(cpu1 - cpu0) / (t1 - t0):.2f} cores "
              f"over {t1 - t0:.0f}s (machine: {psutil.cpu_count()} cores)")
        print(f"reconciles in window:        {count:.0f} ({count / (t1 - t0):.1f}/s; "
              f"ideal {args.rollouts / 2:.0f}/s at a 2 s interval)")
        print(f"reconcile delay:             mean {total / count * 1000:.0f} ms; "
              + ", ".join(f"{k.replace('le=', '≤')}s: {v:.0%}" for k, v in within.items()))
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
