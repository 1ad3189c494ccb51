"""Failed requests while the candidate weight changes under load (target: 0).

Starts its own Ray cluster (two nodes, loopback), deploys the demo's champion and candidate
through the real Ray-dashboard serve backend, runs the load generator, and applies ``--flips``
weight changes (0 → 100 and back in steps) while traffic flows. Prints the figures: requests
sent, failed, per version, client p50/p95, and how long each change took to apply.

    python benchmarks/bench_weight_changes.py [--flips 50] [--rps 30]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

from lvm_operator.backends.ray_dashboard import RayDashboardBackend
from lvm_operator.demo import artifacts, wait_for_router
from lvm_operator.devstack.procs import free_port
from lvm_operator.devstack.stack import start_stack
from lvm_serving.contracts.serve_config import AppSpec, RouterConfig, VersionSpec
from lvm_serving.loadgen import LoadConfig, LoadStats, run_load
from lvm_serving.synthetic import WorldSpec


def app_spec(champion, candidate, weight: int) -> AppSpec:
    versions = tuple(
        VersionSpec(version=a.version, checkpoint=a.checkpoint_uri, sha256=a.checkpoint_sha256,
                    family=a.family, context_length=artifacts.CONTEXT_LENGTH, node_pool=pool)
        for a, pool in ((champion, "pool_a10"), (candidate, "pool_a100")))
    return AppSpec(application="bench", concept_bank_uri=champion.bank_uri,
                   concept_bank_sha256=champion.bank_sha256, versions=versions,
                   router=RouterConfig(rollout="bench/weights", champion=champion.version,
                                       candidate=candidate.version, candidate_weight=weight))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--flips", type=int, default=50)
    parser.add_argument("--rps", type=float, default=30.0)
    args = parser.parse_args()

    champion = artifacts.ensure(artifacts.CHAMPION)
    candidate = artifacts.ensure(artifacts.GOOD_CANDIDATE)
    stack = start_stack(Path(tempfile.mkdtemp(prefix="bench-weights-")), components=("ray",))
    try:
        port = free_port()
        backend = RayDashboardBackend(stack.ray.dashboard_url, http_host="127.0.0.1",
                                      http_port=port)
        backend.apply(app_spec(champion, candidate, 0))
        router = f"http://127.0.0.1:{port}/bench"
        wait_for_router(router, stack.run_dir / "logs" / "ray-head.log")

        stats = LoadStats()
        stop = asyncio.Event()
        loop = asyncio.new_event_loop()
        config = LoadConfig(url=router, rps=args.rps, duration_s=3600, concurrency=8,
                            context_lengths=(8, 40), world=WorldSpec(d_model=64, seed=0))
        worker = threading.Thread(target=loop.run_until_complete,
                                  args=(run_load(config, stop, stats),), daemon=True)
        worker.start()
        time.sleep(3)

        weights = [10, 20, 50, 100, 50, 20, 10, 0]
        apply_s = []
        for i in range(args.flips):
            weight = weights[i % len(weights)]
            began = time.monotonic()
            backend.apply(app_spec(champion, candidate, weight))
            while backend.verify_applied(app_spec(champion, candidate, weight)) is not True:
                time.sleep(0.05)
            apply_s.append(time.monotonic() - began)
            time.sleep(0.5)
        time.sleep(2)
        loop.call_soon_threadsafe(stop.set)
        worker.join(60)

        summary = stats.summary()
        print(f"weight changes applied:     {args.flips}")
        print(f"apply+verify seconds:       median {statistics.median(apply_s):.2f}, "
              f"max {max(apply_s):.2f}")
        print(f"requests sent / ok:         {summary['sent']} / {summary['ok']}")
        print(f"requests failed:            {stats.failures}  {summary['failed']}")
        print(f"served per version:         {summary['by_version']}")
        print(f"client p50 / p95 ms:        {summary['p50_ms']:.1f} / {summary['p95_ms']:.1f}")
        return 0 if stats.failures == 0 else 1
    finally:
        stack.stop()


if __name__ == "__main__":
    sys.exit(main())
