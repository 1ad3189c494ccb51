"""One operator replica, N LVMRollouts: does it keep every rollout's guardrails on schedule?

Starts kube-apiserver + etcd and Prometheus (no Ray: serving goes to the DRY-RUN backend, so the
benchmark measures the operator, not Serve), creates ``--rollouts`` rollouts from
``examples/local-fast.yaml`` with a ``--interval`` guardrail interval (no traffic, so each holds on
noData and keeps checking), runs the operator for ``--seconds`` and prints: guardrail checks/s
achieved (``lvm_operator_checks_total``) vs needed (rollouts / interval), the decision lag
(``lvm_rollout_decision_lag_seconds``, sampled from the operator's /metrics every few seconds:
it counts the rollouts that were never reached, unlike the reconcile-delay histogram of the
ticks that ran), the operator's CPU and memory, and Prometheus' queries per second. ``--json``
prints one JSON object instead.

    python benchmarks/bench_operator_scale.py [--rollouts 200] [--interval 30] [--seconds 60]
"""

from __future__ import annotations

import argparse
import json
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
        if line.startswith('lvm_operator_checks_total{check="guardrail"}'):
            out["guardrail_checks"] = float(line.split()[-1])
        if line.startswith("lvm_operator_reconcile_delay_seconds_bucket"):
            le = line.split('le="')[1].split('"')[0]
            out[f"le={le}"] = float(line.split()[-1])
    return out


def lags(port: int) -> list[float]:
    """Every rollout's decision lag now (seconds), from the operator's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return [float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
            if line.startswith("lvm_rollout_decision_lag_seconds{")]


def prometheus_queries(url: str) -> float:
    """Instant queries Prometheus has answered so far (its own counter)."""
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total{")
               and 'handler="/api/v1/query"' in line)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rollouts", type=int, default=200)
    parser.add_argument("--interval", type=float, default=30.0,
                        help="guardrail interval in seconds (the example's is 30 s in clusters)")
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--tick-workers", type=int, default=None,
                        help="the operator's --tick-workers (default: the operator's own)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
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
        base["spec"]["analysis"]["guardrails"]["interval"] = f"{args.interval:g}s"
        # quality every 10 guardrail intervals (the seed's 30 s : 5 min), never more often
        # than the guardrails: "needed" is then one tick per rollout per interval
        base["spec"]["analysis"]["quality"]["interval"] = f"{10 * args.interval:g}s"
        base["spec"]["analysis"]["onNoData"] = {"action": "hold", "maxHold": "24h"}
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
             "--standalone", "--liveness-port", str(liveness), "--metrics-port", str(metrics_port),
             *(["--tick-workers", str(args.tick_workers)] if args.tick_workers else [])],
            run_dir / "operator.log",
            env={**stack.env(),
                 "LVM_SERVE_BACKEND_FACTORY": "lvm_operator.backends.noop:dry_run_factory"},
        ).start()
        stack.extra_sessions["operator"] = operator.sid
        t_start = time.monotonic()
        operator.wait_ready(lambda: scrape(metrics_port) is not None, 120, what="serving /metrics")
        # Steady state: every rollout started and checked at least once (the start-up burst
        # of 1,000 first ticks, each applying a Serve config and writing status twice, is not
        # what a running operator does every interval), then one more interval.
        deadline = time.monotonic() + 900
        while len(lags(metrics_port)) < args.rollouts and time.monotonic() < deadline:
            time.sleep(5)
        started_s = time.monotonic() - t_start
        # each rollout's first steps (readiness, traffic moved, dwell over) happen in its
        # first intervals: measure after them
        time.sleep(max(30.0, 3 * args.interval))
        proc = psutil.Process(operator.popen.pid)
        cpu0, t0, m0 = sum(proc.cpu_times()[:2]), time.monotonic(), scrape(metrics_port)
        q0 = prometheus_queries(stack.prometheus.url)
        sampled: list[float] = []
        rss = 0.0
        while time.monotonic() - t0 < args.seconds:
            time.sleep(min(5.0, args.seconds / 4))
            sampled += lags(metrics_port)
            rss = max(rss, proc.memory_info().rss / 2**20)
        cpu1, t1, m1 = sum(proc.cpu_times()[:2]), time.monotonic(), scrape(metrics_port)
        q1 = prometheus_queries(stack.prometheus.url)

        phases = yaml.safe_load(kubectl("get", "lvmrollouts", "-o", "yaml"))["items"]
        reached = sum(1 for item in phases if (item.get("status") or {}).get("phase"))
        # guardrail checks judged (a tick that ran but checked nothing does not count)
        count = m1.get("guardrail_checks", 0.0) - m0.get("guardrail_checks", 0.0)
        wakes = m1["lvm_operator_reconcile_delay_seconds_count"] - m0[
            "lvm_operator_reconcile_delay_seconds_count"]
        span = t1 - t0
        result = {
            "rollouts": args.rollouts, "interval_s": args.interval, "seconds": round(span, 1),
            "startup_s": round(started_s, 1),
            "reached": reached,
            "achieved_per_s": round(count / span, 2),
            "timer_wakes_per_s": round(wakes / span, 2),
            "needed_per_s": round(args.rollouts / args.interval, 2),
            "lag_p50_s": round(percentile(sampled, 0.50), 2),
            "lag_p90_s": round(percentile(sampled, 0.90), 2),
            "lag_p99_s": round(percentile(sampled, 0.99), 2),
            "lag_max_s": round(max(sampled, default=float("nan")), 2),
            "late_share": round(sum(x > args.interval for x in sampled) / max(1, len(sampled)),
                                4),
            "cpu_cores": round((cpu1 - cpu0) / span, 2),
            "rss_mb": round(rss, 1),
            "prometheus_queries_per_s": round((q1 - q0) / span, 1),
        }
        if args.json:
            print(json.dumps(result))
            return 0
        print(f"rollouts:                 {args.rollouts} ({reached} with a status phase), "
              f"guardrails every {args.interval:g} s")
        print(f"guardrail checks/s:       {result['achieved_per_s']} achieved of "
              f"{result['needed_per_s']} needed "
              f"({result['achieved_per_s'] / result['needed_per_s']:.0%}); "
              f"{result['timer_wakes_per_s']} timer wake-ups/s")
        print(f"decision lag:             p50 {result['lag_p50_s']} s, p90 "
              f"{result['lag_p90_s']} s, p99 {result['lag_p99_s']} s, max "
              f"{result['lag_max_s']} s (one interval: {args.interval:g} s); "
              f"{result['late_share']:.1%} of samples over one interval")
        print(f"operator:                 {result['cpu_cores']} cores over {span:.0f} s "
              f"(machine: {psutil.cpu_count()}), RSS {result['rss_mb']} MB")
        print(f"Prometheus queries/s:     {result['prometheus_queries_per_s']}")
        print(f"start-up:                 {result['startup_s']} s until every rollout had "
              f"been checked once")
        return 0
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
