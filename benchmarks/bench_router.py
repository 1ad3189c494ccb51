"""Where a prediction's time goes, before and after the binary path, side by side in one run.

    ~/.cache/lvm-rollout/venv/bin/python benchmarks/bench_router.py [--d-model 768]
        [--requests 60] [--contexts 100,500] [--rps 20] [--load-s 10] [--big-bank 638000]
        [--before-ref 7059fd5] [--json]

1. Trains one checkpoint (``--family``, context length = the longest measured) and times the
   model's forward pass alone (``Predictor.predict_tensor``, one torch thread, batch 1).
2. Starts its own Ray cluster (``start_stack(components=("ray",))``) and deploys, on the same
   cluster at the same time:

   * *before* — the serving code of ``--before-ref`` (``git archive``; shipped to its replicas
     with ``runtime_env.working_dir``): application ``old`` and its version ``old--<version>``;
   * *inline args* — this tree's code with ``RAY_max_direct_call_object_size`` = 8 MiB in its
     replicas' environment (application ``inl``, version ``<version>-inl``): the context goes to
     the version inside the RPC, not through the object store (Ray's default limit: 100 KiB);
   * *after* — this tree's code: application ``bench`` routing to ``<version>`` (the default
     settings), plus the same checkpoint as variants that differ in how the replica runs
     inference: ``-inline`` (on the replica's event loop instead of the single worker thread),
     ``-si1`` / ``-inline-si1`` (``sys.setswitchinterval(0.001)``). Each version app also gets
     a route ``/direct-<app>`` so the same body can go to it straight.

3. Per context length, at concurrency 1 (``--requests`` each): JSON numbers, ``context_b64``
   and (after only) the binary body, through the router and straight to the version;
   ``router_hop`` = router minus direct with the same encoding. Every answer of the new code has
   a ``server-timing`` header: the per-stage breakdown (medians) is printed next to the client's
   total (client minus the router's own total = client + Serve proxy + HTTP).
4. Open-loop load at ``--rps`` for ``--load-s`` seconds (binary body, no vector in the answer)
   through the router, then straight to each variant: the version's model + retrieval P95 (the
   ``lvm_request_latency_seconds`` timer, from its server-timing stages) against the forward.
5. Stops the stack; then, standalone, top-k retrieval over a random ``--big-bank`` x d bank
   (the seed's bank has 638k concepts): the bank's own search (torch matmul + topk) and a NumPy
   matmul + argpartition, batch 1 and batch 16.

``--json`` prints one JSON object on stdout (tables go to stderr): per context length
``forward_ms``, ``router_p50_ms``, ``direct_p50_ms`` (JSON body), ``binary_p50_ms`` (router,
binary), ``router_hop_ms`` (binary, router minus direct) and ``router_hop_json_ms``,
``version_p95_ms_at_20rps``, the before figures and the breakdown; and the big-bank figures.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import zipfile
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
)
from lvm_serving.serve_common import parse_server_timing

NEW, OLD, INLINE = "bench", "old", "inl"
# The INLINE application's replicas pass arguments and results of up to 8 MiB inline in the RPC
# instead of through the object store (Ray's default limit is 100 KiB: a 100 x 768 float32
# context is 300 KiB).
INLINE_ENV = {"RAY_max_direct_call_object_size": str(8 << 20)}
LANE = 3
BINARY_HEADERS = {"content-type": "application/octet-stream", "x-lvm-lane": str(LANE),
                  "x-lvm-k": "10"}
JSON_HEADERS = {"content-type": "application/json"}
# variant suffix -> version args that differ from the defaults
VARIANTS = {"": {}, "-inline": {"predict_inline": True},
            "-si1": {"switch_interval_s": 0.001},
            "-inline-si1": {"predict_inline": True, "switch_interval_s": 0.001}}
STAGES = ("read", "parse", "call", "hop", "encode", "router",
          "queue", "model", "retrieval", "version")

OUT = sys.stdout


def say(*parts, **kw) -> None:
    print(*parts, file=OUT, flush=True, **kw)


def train(out: Path, family: str, ctx: int, d_model: int, code: Path | None = None) -> dict:
    """A checkpoint trained by this tree's code, or by the serving code unpacked at ``code``
    (the 'before' code trains its own: its networks' state dicts are its own)."""
    argv = [sys.executable, "-m", "lvm_serving.train", "--family", family, "--context-length",
            str(ctx), "--out", str(out / family), "--d-model", str(d_model), "--steps", "5",
            "--eval-size", "16", "--threads", "1", "--version", family.replace("_", "-")]
    env = None if code is None else {**os.environ, "PYTHONPATH": str(code)}
    proc = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=900,
                          env=env)
    return json.loads(proc.stdout)


def train_before(zip_uri: str, out: Path, family: str, ctx: int, d_model: int) -> dict:
    with zipfile.ZipFile(Path(urllib.parse.urlparse(zip_uri).path)) as z:
        z.extractall(out / "code")
    return train(out, family, ctx, d_model, code=out / "code" / "before")


def forward_ms(info: dict, contexts: list[int], reps: int = 20) -> dict[int, float]:
    import torch

    from lvm_serving.predictor import Predictor

    torch.set_num_threads(1)
    p = Predictor.load(info["checkpoint"]["uri"], info["checkpoint"]["sha256"],
                       info["concept_bank"]["uri"], device="cpu")
    out = {}
    for ctx in contexts:
        x = torch.nn.functional.normalize(torch.randn(1, ctx, p.d_model), dim=-1)
        tmd = torch.zeros(1, 16)
        tmd[:, LANE] = 1
        p.predict_tensor(x, tmd)
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            p.predict_tensor(x, tmd)
            samples.append((time.perf_counter() - t0) * 1000)
        out[ctx] = statistics.median(samples)
    return out


def export_before(ref: str, into: Path) -> str | None:
    """A ``file://`` zip of the serving package as of ``ref``, for a ``runtime_env.working_dir``
    (one top-level folder holding ``lvm_serving/``; the Serve REST API takes only URIs there).
    None when git cannot give it."""
    root = Path(__file__).resolve().parents[1]
    into.mkdir(parents=True, exist_ok=True)
    try:
        archive = subprocess.run(["git", "-C", str(root), "archive", "--format=zip",
                                  "--prefix=before/", f"{ref}:serving", "lvm_serving"],
                                 capture_output=True, check=True, timeout=60).stdout
    except (subprocess.CalledProcessError, OSError) as exc:
        say(f"# no 'before' code from {ref!r}: {exc}")
        return None
    path = into / f"before-{ref}.zip"
    path.write_bytes(archive)
    return path.as_uri()


def deploy(dashboard: str, port: int, info: dict, family: str, old_code: str | None,
           old_info: dict | None = None) -> dict:
    """Deploy both applications; returns {label: direct URL path} and the router paths."""
    env = {"env_vars": {"LVM_FEEDBACK_KEY": "bench-feedback-key-" + "0" * 32,
                        "OMP_NUM_THREADS": "1"}}
    base = info["version"]

    def spec(app: str, suffixes, champion: str = base, info: dict = info) -> AppSpec:
        versions = tuple(
            VersionSpec(version=base + s, checkpoint=info["checkpoint"]["uri"],
                        sha256=info["checkpoint"]["sha256"], family=family,
                        context_length=info["context_length"], num_cpus=0.1)
            for s in suffixes)
        return AppSpec(application=app, concept_bank_uri=info["concept_bank"]["uri"],
                       concept_bank_sha256=info["concept_bank"]["sha256"],
                       router=RouterConfig(rollout=f"bench/{app}", champion=champion),
                       versions=versions)

    apps = []
    for app in render_applications(spec(NEW, VARIANTS)):
        app["runtime_env"] = env
        if app["name"] != NEW:
            version = app["deployments"][0]["name"]
            app["args"].update(VARIANTS[version.removeprefix(base)])
            app["route_prefix"] = f"/direct-{version}"
        apps.append(app)
    for app in render_applications(spec(INLINE, ["-inl"], champion=base + "-inl")):
        app["runtime_env"] = {"env_vars": {**env["env_vars"], **INLINE_ENV}}
        if app["name"] != INLINE:
            app["route_prefix"] = "/direct-inl"
        apps.append(app)
    if old_code is not None:
        for app in render_applications(spec(OLD, [""], info=old_info or info)):
            app["runtime_env"] = {**env, "working_dir": old_code}
            if app["name"] != OLD:
                app["route_prefix"] = "/direct-old"
            apps.append(app)
    config = {"proxy_location": "HeadOnly", "http_options": {"host": "127.0.0.1", "port": port},
              "applications": apps}
    resp = httpx.put(f"{dashboard}/api/serve/applications/", json=config, timeout=60)
    if resp.status_code != 200:
        raise SystemExit(f"deploy refused: {resp.status_code} {resp.text[:2000]}")
    names = [a["name"] for a in apps]

    def ready() -> bool:
        body = httpx.get(f"{dashboard}/api/serve/applications/", timeout=10).json()
        statuses = [body["applications"].get(n, {}).get("status") for n in names]
        if "DEPLOY_FAILED" in statuses:
            raise SystemExit(f"deploy failed: {body['applications']}")
        return all(s == "RUNNING" for s in statuses)

    wait_for(ready, 600, "bench apps RUNNING")
    return {"versions": [base + s for s in VARIANTS], "old": old_code is not None}


class Sample:
    __slots__ = ("client_ms", "stages")

    def __init__(self, client_ms: float, stages: dict[str, float]) -> None:
        self.client_ms = client_ms
        self.stages = stages


def one(client: httpx.Client, url: str, body: bytes, headers: dict) -> Sample:
    t0 = time.perf_counter()
    r = client.post(url, content=body, headers=headers)
    dt = (time.perf_counter() - t0) * 1000
    if r.status_code != 200:
        raise SystemExit(f"{url}: {r.status_code} {r.text[:500]}")
    return Sample(dt, parse_server_timing(r.headers.get("server-timing", "")))


def closed_loop(client: httpx.Client, url: str, bodies: list[bytes], headers: dict) -> list:
    for b in bodies[:3]:  # warm the path
        one(client, url, b, headers)
    return [one(client, url, b, headers) for b in bodies]


def open_loop(client: httpx.Client, url: str, bodies: list[bytes], headers: dict, rps: float,
              seconds: float) -> list:
    """Requests start every 1/rps seconds whatever the answers (as independent clients do)."""
    n = max(1, int(rps * seconds))
    for b in bodies[:3]:
        one(client, url, b, headers)
    out: list = []
    lock = threading.Lock()
    start = time.perf_counter() + 0.05

    def fire(i: int) -> None:
        delay = start + i / rps - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        s = one(client, url, bodies[i % len(bodies)], headers)
        with lock:
            out.append(s)

    with ThreadPoolExecutor(16) as pool:
        list(pool.map(fire, range(n)))
    return out


def pct(values, q: float) -> float:
    return float(np.percentile(list(values), q)) if len(values) else float("nan")


def p50(samples: list) -> float:
    return pct([s.client_ms for s in samples], 50)


def breakdown(samples: list) -> dict[str, float]:
    """Median ms per stage, and ``client+proxy`` = client total minus the router's total."""
    out = {st: pct([s.stages[st] for s in samples if st in s.stages], 50) for st in STAGES
           if any(st in s.stages for s in samples)}
    if "router" in out:
        out["proxy+http"] = pct([s.client_ms - s.stages["router"] for s in samples
                                 if "router" in s.stages], 50)
    out["client"] = p50(samples)
    return out


def model_retrieval_p95(samples: list) -> float:
    return pct([s.stages.get("model", np.nan) + s.stages.get("retrieval", np.nan)
                for s in samples], 95)


def bodies_for(rng, n: int, ctx: int, d: int) -> dict[str, list[bytes]]:
    out: dict[str, list[bytes]] = {"json": [], "b64": [], "binary": []}
    for _ in range(n):
        x = rng.standard_normal((ctx, d)).astype("<f4")
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out["json"].append(json.dumps({"context": x.round(6).tolist(), "lane": LANE,
                                       "k": 10}).encode())
        out["b64"].append(json.dumps({"context_b64": base64.b64encode(x.tobytes()).decode(),
                                      "lane": LANE, "k": 10}).encode())
        out["binary"].append(x.tobytes())
    return out


def big_bank(n: int, d: int, reps: int = 5) -> dict[str, float]:
    """Top-10 retrieval over a random ``n x d`` bank, one torch thread (ms per query)."""
    import torch

    from lvm_serving.concept_bank import ConceptBank

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((n, d), dtype=np.float32)
    bank = ConceptBank(np.arange(n), vectors, np.arange(n) % 16)
    del vectors
    q = torch.nn.functional.normalize(torch.randn(16, d), dim=-1)
    mat = bank.vectors.numpy()
    qn = q.numpy()

    def timed(fn) -> float:
        fn()
        samples = []
        for _ in range(reps):
            t0 = time.perf_counter()
            fn()
            samples.append((time.perf_counter() - t0) * 1000)
        return statistics.median(samples)

    def np_search(queries: np.ndarray) -> np.ndarray:
        sims = queries @ mat.T
        top = np.argpartition(-sims, 10, axis=1)[:, :10]
        return np.take_along_axis(top, np.argsort(-np.take_along_axis(sims, top, 1), 1), 1)

    out = {
        "bank_mb": mat.nbytes / 1e6,
        "torch_b1_ms": timed(lambda: bank.search_tensor(q[:1], 10)),
        "numpy_b1_ms": timed(lambda: np_search(qn[:1])),
        "torch_b16_per_query_ms": timed(lambda: bank.search_tensor(q, 10)) / 16,
    }
    assert (bank.search(q[:1], 10)[0][0] == np_search(qn[:1])[0]).all()
    return out


def main() -> int:
    global OUT
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--d-model", type=int, default=768)
    ap.add_argument("--family", default="memory_gru")
    ap.add_argument("--requests", type=int, default=60)
    ap.add_argument("--contexts", default="100,500")
    ap.add_argument("--rps", type=float, default=20.0)
    ap.add_argument("--load-s", type=float, default=10.0)
    ap.add_argument("--big-bank", type=int, default=638_000, help="0: skip")
    ap.add_argument("--before-ref", default="7059fd5",
                    help="git ref of the 'before' serving code ('' to skip)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    if args.json:
        OUT = sys.stderr
    contexts = [int(c) for c in args.contexts.split(",")]
    report: dict = {"d_model": args.d_model, "family": args.family, "requests": args.requests,
                    "rps": args.rps, "contexts": {}}

    with tempfile.TemporaryDirectory(prefix="lvm-bench-") as tmp:
        tmpdir = Path(tmp)
        t0 = time.perf_counter()
        info = train(tmpdir / "ckpt", args.family, max(contexts), args.d_model)
        fwd = forward_ms(info, contexts)
        old_code = export_before(args.before_ref, tmpdir / "before") if args.before_ref else None
        old_info = (train_before(old_code, tmpdir / "old", args.family, max(contexts),
                                 args.d_model) if old_code else None)
        say(f"# bench_router: {args.family}, d_model={args.d_model}, trained in "
            f"{time.perf_counter() - t0:.0f}s; {args.requests} requests per cell, concurrency 1; "
            f"before = {args.before_ref or '-'}")

        stack = start_stack(tmpdir / "stack", components=("ray",))
        try:
            port = free_port()
            deployed = deploy(stack.ray.dashboard_url, port, info, args.family, old_code,
                              old_info)
            base = f"http://127.0.0.1:{port}"
            version = info["version"]
            client = httpx.Client(timeout=120, limits=httpx.Limits(max_connections=64))
            rng = np.random.default_rng(0)
            for ctx in contexts:
                bodies = bodies_for(rng, args.requests, ctx, args.d_model)
                cells: dict[str, list] = {}
                router, direct = f"{base}/{NEW}/predict", f"{base}/direct-{version}"
                if deployed["old"]:
                    cells["before router json"] = closed_loop(client, f"{base}/{OLD}/predict",
                                                              bodies["json"], JSON_HEADERS)
                    cells["before direct json"] = closed_loop(client, f"{base}/direct-old",
                                                              bodies["json"], JSON_HEADERS)
                    cells["before router b64"] = closed_loop(client, f"{base}/{OLD}/predict",
                                                             bodies["b64"], JSON_HEADERS)
                    if any(s.stages for s in cells["before router json"]):
                        say("# WARNING: the 'before' router answered with server-timing: it "
                            "runs the new code")
                cells["router json"] = closed_loop(client, router, bodies["json"], JSON_HEADERS)
                cells["direct json"] = closed_loop(client, direct, bodies["json"], JSON_HEADERS)
                cells["router b64"] = closed_loop(client, router, bodies["b64"], JSON_HEADERS)
                cells["router binary"] = closed_loop(client, router, bodies["binary"],
                                                     BINARY_HEADERS)
                cells["direct binary"] = closed_loop(client, direct, bodies["binary"],
                                                     BINARY_HEADERS)
                cells["router binary, no vector"] = closed_loop(
                    client, router + "?vector=0", bodies["binary"], BINARY_HEADERS)
                cells["inline-args router binary"] = closed_loop(
                    client, f"{base}/{INLINE}/predict", bodies["binary"], BINARY_HEADERS)
                cells["inline-args direct binary"] = closed_loop(
                    client, f"{base}/direct-inl", bodies["binary"], BINARY_HEADERS)

                say(f"\n## context {ctx}: forward pass alone {fwd[ctx]:.2f} ms; client-measured "
                    f"ms (concurrency 1)")
                say(f"{'cell':<28}{'p50':>9}{'p95':>9}{'x fwd':>8}")
                for name, samples in cells.items():
                    say(f"{name:<28}{p50(samples):>9.1f}"
                        f"{pct([s.client_ms for s in samples], 95):>9.1f}"
                        f"{p50(samples) / fwd[ctx]:>8.2f}")

                say(f"\n### breakdown, median ms per stage (server-timing), context {ctx}")
                shown = ["router json", "router b64", "router binary", "direct binary",
                         "inline-args router binary"]
                rows = {n: breakdown(cells[n]) for n in shown}
                keys = [k for k in (*STAGES, "proxy+http", "client")
                        if any(k in r for r in rows.values())]
                say(f"{'stage':<12}" + "".join(f"{n[:15]:>16}" for n in shown))
                for k in keys:
                    say(f"{k:<12}" + "".join(f"{rows[n].get(k, float('nan')):>16.2f}"
                                              for n in shown))

                say(f"\n### open loop {args.rps:g} req/s for {args.load_s:g}s, binary, no "
                    f"vector: model+retrieval P95 and client P50/P95, ms")
                load = {"router": open_loop(client, router + "?vector=0", bodies["binary"],
                                            BINARY_HEADERS, args.rps, args.load_s)}
                for suffix in VARIANTS:
                    load[f"direct{suffix or ' (default)'}"] = open_loop(
                        client, f"{base}/direct-{version}{suffix}?vector=0", bodies["binary"],
                        BINARY_HEADERS, args.rps, args.load_s)
                load["inline-args router"] = open_loop(
                    client, f"{base}/{INLINE}/predict?vector=0", bodies["binary"],
                    BINARY_HEADERS, args.rps, args.load_s)
                say(f"{'target':<22}{'model+retr p95':>16}{'x fwd':>8}{'queue p95':>11}"
                    f"{'client p50':>12}{'p95':>9}")
                for name, samples in load.items():
                    mr = model_retrieval_p95(samples)
                    say(f"{name:<22}{mr:>16.2f}{mr / fwd[ctx]:>8.2f}"
                        f"{pct([s.stages.get('queue', 0.0) for s in samples], 95):>11.2f}"
                        f"{p50(samples):>12.1f}{pct([s.client_ms for s in samples], 95):>9.1f}")

                row = {
                    "forward_ms": fwd[ctx],
                    "router_p50_ms": p50(cells["router json"]),
                    "direct_p50_ms": p50(cells["direct json"]),
                    "b64_p50_ms": p50(cells["router b64"]),
                    "binary_p50_ms": p50(cells["router binary"]),
                    "binary_no_vector_p50_ms": p50(cells["router binary, no vector"]),
                    "direct_binary_p50_ms": p50(cells["direct binary"]),
                    "router_hop_ms": p50(cells["router binary"]) - p50(cells["direct binary"]),
                    "router_hop_json_ms": p50(cells["router json"]) - p50(cells["direct json"]),
                    "inline_args_binary_p50_ms": p50(cells["inline-args router binary"]),
                    "inline_args_router_hop_ms": p50(cells["inline-args router binary"])
                    - p50(cells["inline-args direct binary"]),
                    "version_p95_ms_at_20rps": model_retrieval_p95(load["router"]),
                    "version_p95_ms_at_20rps_by_variant": {
                        n: model_retrieval_p95(s) for n, s in load.items()},
                    "breakdown_ms": rows,
                }
                if deployed["old"]:
                    row["before"] = {
                        "router_p50_ms": p50(cells["before router json"]),
                        "direct_p50_ms": p50(cells["before direct json"]),
                        "b64_p50_ms": p50(cells["before router b64"]),
                        "router_hop_json_ms": p50(cells["before router json"])
                        - p50(cells["before direct json"]),
                    }
                report["contexts"][str(ctx)] = row
            client.close()
        finally:
            stack.stop()

    if args.big_bank:
        bb = big_bank(args.big_bank, args.d_model)
        report["big_bank"] = {"n": args.big_bank, **bb}
        say(f"\n## top-10 retrieval over {args.big_bank} x {args.d_model} float32 "
            f"({bb['bank_mb']:.0f} MB), one thread, ms per query")
        say(f"bank.search_tensor (torch matmul + topk), batch 1: {bb['torch_b1_ms']:.1f}")
        say(f"numpy matmul + argpartition, batch 1:           {bb['numpy_b1_ms']:.1f}")
        say(f"bank.search_tensor, batch 16, per query:        "
            f"{bb['torch_b16_per_query_ms']:.1f}")
    if args.json:
        print(json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
