"""Latency through the router vs straight to the version deployment (prints figures; not a test).

    ~/.cache/lvm-rollout/venv/bin/python benchmarks/bench_router.py [--d-model 768]
        [--requests 40] [--concurrency 1,4] [--contexts 100,500,1000] [--batch 16]

1. Trains one small checkpoint per family (context length = the longest measured) into a temp
   directory and times the model's forward pass alone (``Predictor.predict_tensor``, one torch
   thread) at batch 1 and ``--batch``.
2. Starts its own two-node Ray cluster (``start_stack(components=("ray",))``), deploys the
   serving app through the dashboard REST API (router + one version app per family; each version
   app also gets a route ``/direct-<version>`` so the same JSON body can go to it straight), and
   for every family x context length x concurrency sends the same pre-encoded bodies through the
   router (``POST /bench/predict``) and straight to the version (``POST /direct-<version>``),
   client-measured p50/p95 and the router/direct ratio, in one run; then the same contexts
   through the router in the compact form (``context_b64``, "b64" columns).
3. Stops the stack.
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np

from lvm_operator.devstack.procs import free_port
from lvm_operator.devstack.stack import start_stack, wait_for
from lvm_serving.contracts.serve_config import (
    AppSpec,
    RouterConfig,
    VersionSpec,
    render_applications,
    version_app_name,
)

APP = "bench"
FAMILIES = ("memory_gru", "hierarchical_gru", "tmd_moe")


def train(out: Path, family: str, ctx: int, d_model: int) -> dict:
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", family, "--context-length",
            str(ctx), "--out", str(out / family), "--d-model", str(d_model), "--steps", "5",
            "--eval-size", "16", "--threads", "1", "--version", family.replace("_", "-")]
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900)
    return json.loads(proc.stdout)


def forward_times(trained: dict, contexts: list[int], batch: int, reps: int = 10) -> None:
    import torch

    from lvm_serving.predictor import Predictor

    torch.set_num_threads(1)
    print(f"\n## model forward alone (predict_tensor, 1 torch thread), median of {reps}, ms")
    print(f"{'family':<18}{'context':>8}{'batch 1':>10}{f'batch {batch}':>12}{'per item':>10}")
    for family, info in trained.items():
        p = Predictor.load(info["checkpoint"]["uri"], info["checkpoint"]["sha256"],
                           info["concept_bank"]["uri"], device="cpu")
        for ctx in contexts:
            row = []
            for b in (1, batch):
                x = torch.nn.functional.normalize(torch.randn(b, ctx, p.d_model), dim=-1)
                tmd = torch.zeros(b, 16)
                tmd[:, 3] = 1
                p.predict_tensor(x, tmd)
                samples = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    p.predict_tensor(x, tmd)
                    samples.append((time.perf_counter() - t0) * 1000)
                row.append(statistics.median(samples))
            print(f"{family:<18}{ctx:>8}{row[0]:>10.2f}{row[1]:>12.2f}{row[1] / batch:>10.2f}")


def deploy(dashboard: str, port: int, trained: dict, champion: str) -> None:
    some = next(iter(trained.values()))
    versions = tuple(
        VersionSpec(version=info["version"], checkpoint=info["checkpoint"]["uri"],
                    sha256=info["checkpoint"]["sha256"], family=family,
                    context_length=info["context_length"], num_cpus=0.1)
        for family, info in trained.items()
    )
    spec = AppSpec(application=APP, concept_bank_uri=some["concept_bank"]["uri"],
                   concept_bank_sha256=some["concept_bank"]["sha256"],
                   router=RouterConfig(rollout="bench/bench", champion=champion),
                   versions=versions)
    apps = render_applications(spec)
    for app in apps:
        app["runtime_env"] = {"env_vars": {"LVM_FEEDBACK_KEY": "bench", "OMP_NUM_THREADS": "1"}}
        if app["name"] != APP:
            app["route_prefix"] = "/direct-" + app["deployments"][0]["name"]
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
              "applications": apps}
    httpx.put(f"{dashboard}/api/serve/applications/", json=config, timeout=60).raise_for_status()
    names = [APP, *(version_app_name(APP, v.version) for v in versions)]

    def ready() -> bool:
        body = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).json()
        statuses = [body["applications"].get(n, {}).get("status") for n in names]
        if "DEPLOY_FAILED" in statuses:
            raise SystemExit(f"deploy failed: {body['applications']}")
        health = httpx.get(f"http://127.0.0.1:{port}/{APP}/healthz", timeout=10)
        return all(s == "RUNNING" for s in statuses) and \
            health.json()["config"]["champion"] == champion

    wait_for(ready, 300, f"bench apps RUNNING with champion {champion}")


def measure(client: httpx.Client, url: str, bodies: list[bytes], concurrency: int) -> list[float]:
    def one(body: bytes) -> float:
        t0 = time.perf_counter()
        r = client.post(url, content=body, headers={"content-type": "application/json"})
        dt = time.perf_counter() - t0
        r.raise_for_status()
        return dt * 1000

    for b in bodies[:3]:  # warm the path
        one(b)
    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, bodies))


def pct(samples: list[float], q: float) -> float:
    return float(np.percentile(samples, q))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--concurrency", default="1,4")
    ap.add_argument("--contexts", default="100,500,1000")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--families", default=",".join(FAMILIES))
    args = ap.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    levels = [int(c) for c in args.concurrency.split(",")]
    families = args.families.split(",")

    with tempfile.TemporaryDirectory(prefix="lvm-bench-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        trained = {f: train(tmpdir / "ckpt", f, max(contexts), args.d_model) for f in families}
        print(f"# bench_router: d_model={args.d_model}, trained {len(trained)} checkpoints in "
              f"{time.perf_counter() - t0:.0f}s; {args.requests} requests per cell")
        forward_times(trained, contexts, args.batch)

        stack = start_stack(tmpdir / "stack", components=("ray",))
        try:
            port = free_port()
            client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64))
            rng = np.random.default_rng(0)
            print("\n## end to end over HTTP (client-measured, ms): router vs straight to the "
                  "version")
            print(f"{'family':<18}{'ctx':>6}{'conc':>6}{'router p50':>12}{'p95':>9}"
                  f"{'direct p50':>12}{'p95':>9}{'ratio p50':>11}{'ratio p95':>11}"
                  f"{'b64 p50':>12}{'p95':>9}")
            for family in families:
                version = trained[family]["version"]
                deploy(stack.ray.dashboard_url, port, trained, champion=version)
                for ctx in contexts:
                    bodies, compact = [], []
                    for _ in range(args.requests):
                        x = rng.standard_normal((ctx, args.d_model)).astype(np.float32)
                        x /= np.linalg.norm(x, axis=1, keepdims=True)
                        bodies.append(json.dumps({"context": x.round(6).tolist(),
                                                  "lane": 3, "k": 10}).encode())
                        b64 = base64.b64encode(x.astype("<f4").tobytes()).decode()
                        compact.append(json.dumps({"context_b64": b64, "lane": 3,
                                                   "k": 10}).encode())
                    for conc in levels:
                        router_url = f"http://127.0.0.1:{port}/{APP}/predict"
                        via = measure(client, router_url, bodies, conc)
                        direct = measure(client, f"http://127.0.0.1:{port}/direct-{version}",
                                         bodies, conc)
                        via_b64 = measure(client, router_url, compact, conc)
                        r50, r95, d50, d95 = (pct(via, 50), pct(via, 95), pct(direct, 50),
                                              pct(direct, 95))
                        print(f"{family:<18}{ctx:>6}{conc:>6}{r50:>12.1f}{r95:>9.1f}"
                              f"{d50:>12.1f}{d95:>9.1f}{r50 / d50:>11.2f}{r95 / d95:>11.2f}"
                              f"{pct(via_b64, 50):>12.1f}{pct(via_b64, 95):>9.1f}", flush=True)
            print(f"\nbody size at ctx {max(contexts)}: JSON {len(bodies[0]) / 1e6:.1f} MB, "
                  f"context_b64 {len(compact[0]) / 1e6:.1f} MB")
            client.close()
        finally:
            stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
