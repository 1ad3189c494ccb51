"""Rollback reaction: from the first breaching scrape to 0% candidate traffic in Ray Serve.

One local stack (kube-apiserver, Prometheus scraping every 1 s, two Ray nodes), the operator as
its own process, the load generator, and ``--runs`` rollouts of the demo's slow candidate (15 ms
injected per request: FAULT INJECTION carried by its checkpoint) against the champion, each with
its own Serve application. For each run it finds, in Prometheus, the first scrape where the
candidate's P95 over the guardrail window exceeded 10 ms, and, from the live Serve config, when the
router's candidate weight became 0. Target (design §7): within two guardrail intervals plus one
scrape interval.

    python benchmarks/bench_rollback_reaction.py [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

from lvm_operator.analysis.prometheus import PrometheusReader
from lvm_operator.backends.ray_dashboard import RayDashboardBackend
from lvm_operator.demo import (
    CRDS,
    DemoOptions,
    LoadThread,
    artifacts,
    kubectl,
    rollout_manifest,
    start_operator,
    wait_for_router,
)
from lvm_operator.devstack.procs import free_ports
from lvm_operator.devstack.stack import start_stack

GUARDRAIL_S, SCRAPE_S = 2.0, 1.0


def first_breach_time(reader: PrometheusReader, rollout: str, version: str, since: float,
                      until: float) -> float | None:
    """Earliest evaluation (1 s resolution) where the candidate's P95 over 4 s was > 10 ms."""
    query = (
        'histogram_quantile(0.95, sum by (le) (rate({__name__="ray_lvm_request_latency_seconds_'
        f'bucket",rollout="{rollout}",version="{version}"}}[4s])))'
    )
    t = since
    while t <= until:
        samples = reader.query(query, at=t)
        if samples and samples[0].value > 0.010:
            return t
        t += 1.0
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()

    champion = artifacts.ensure(artifacts.CHAMPION)
    slow = artifacts.ensure(artifacts.SLOW_CANDIDATE)
    stack = start_stack(Path(tempfile.mkdtemp(prefix="bench-reaction-")))
    load: LoadThread | None = None
    reactions: list[float] = []
    try:
        for crd in CRDS:
            kubectl(stack, "apply", "--server-side", "-f", str(crd))
        kubectl(stack, "wait", "--for=condition=Established", "--all", "crd", "--timeout=60s")
        serve_port = free_ports(1)[0]
        start_operator(stack, serve_port)
        reader = PrometheusReader(stack.prometheus.url)
        backend = RayDashboardBackend(stack.ray.dashboard_url)
        options = DemoOptions(guardrail_interval=f"{GUARDRAIL_S:g}s")
        for run in range(args.runs):
            app, name = f"react{run}", f"react-{run}"
            manifest = rollout_manifest(stack, champion, slow, options)
            manifest["metadata"]["name"] = name
            manifest["spec"]["serve"]["application"] = app
            manifest["spec"]["analysis"]["guardrails"]["consecutiveBreaches"] = 2
            kubectl(stack, "apply", "-f", "-", input=yaml.safe_dump(manifest))
            router = f"http://127.0.0.1:{serve_port}/{app}"
            wait_for_router(router, stack.run_dir / "logs" / "operator.log")
            if load is not None:
                load.stop()
            load = LoadThread(router, 20.0).start()
            started = time.time()
            zero_at = None
            while time.time() - started < 120:
                observed = backend.observe(app)
                if observed.router and observed.router.candidate_weight == 0 and \
                        time.time() - started > 2:
                    zero_at = time.time()
                    break
                time.sleep(0.2)
            if zero_at is None:
                print(f"run {run}: no rollback within 120 s", file=sys.stderr)
                continue
            time.sleep(3)  # let the last scrapes land
            breach = first_breach_time(reader, f"default/{name}", slow.version, started,
                                       zero_at)
            if breach is None:
                print(f"run {run}: weight 0 at +{zero_at - started:.1f}s but no breaching "
                      "scrape found", file=sys.stderr)
                continue
            reactions.append(zero_at - breach)
            print(f"run {run}: first breaching scrape +{breach - started:.1f}s, weight 0 "
                  f"+{zero_at - started:.1f}s → reaction {zero_at - breach:.2f}s")
        if load is not None:
            load.stop()
        target = 2 * GUARDRAIL_S + SCRAPE_S
        if reactions:
            print(f"rollback reaction: median {statistics.median(reactions):.2f}s over "
                  f"{len(reactions)} runs (min {min(reactions):.2f}, max {max(reactions):.2f}); "
                  f"target ≤ {target:.0f}s (2 guardrail intervals + 1 scrape)")
        return 0 if reactions else 1
    finally:
        if load is not None:
            load.stop()
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
