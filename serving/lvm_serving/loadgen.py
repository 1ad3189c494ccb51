"""A load generator that behaves like the LVM's clients: many users, all 16 lanes, short and long
contexts, and click feedback for the concept that really came next.

Requests come from the same synthetic world the checkpoints were trained on (same
:class:`~lvm_serving.synthetic.WorldSpec`, so the same concept bank), which is what makes the
feedback meaningful: the "click" is the chain's true next concept, so a better model earns a
higher Hit@5 proxy in Prometheus and a degraded lane shows up as a lane delta.

Bounded by design: it stops after ``duration_s`` or ``max_requests`` (whichever first), sends at
most ``rps`` requests per second with at most ``concurrency`` in flight, and only to the URL it is
given (the local router on 127.0.0.1).

    python -m lvm_serving.loadgen --url http://127.0.0.1:8000/lvm --rps 40 --duration 30 \\
        --d-model 64 --context-lengths 8,40
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import time
from collections import Counter
from dataclasses import dataclass, field

import httpx
import numpy as np

from lvm_serving.contracts.metrics import NUM_LANES
from lvm_serving.synthetic import SyntheticWorld, WorldSpec, one_hot_tmd


@dataclass(frozen=True)
class LoadConfig:
    url: str  # the router's base URL, e.g. http://127.0.0.1:8000/lvm
    rps: float = 20.0
    duration_s: float = 30.0
    max_requests: int | None = None
    concurrency: int = 8
    users: int = 1000
    context_lengths: tuple[int, ...] = (8, 40)  # a mix of short and long contexts
    feedback_rate: float = 1.0  # fraction of answered predictions that get click feedback
    lanes: tuple[int, ...] = tuple(range(NUM_LANES))
    k: int = 10
    world: WorldSpec = field(default_factory=WorldSpec)
    seed: int = 0
    timeout_s: float = 10.0
    pool_size: int = 512  # pre-built requests, cycled, so generating load costs little CPU
    binary: bool = False  # send the binary body (float32 bytes + x-lvm-* headers), not JSON


@dataclass
class LoadStats:
    sent: int = 0
    ok: int = 0
    failed: Counter = field(default_factory=Counter)  # HTTP status (or exception name) → count
    by_version: Counter = field(default_factory=Counter)
    feedback_ok: int = 0
    feedback_failed: int = 0
    first_errors: list[str] = field(default_factory=list)
    latencies_s: list[float] = field(default_factory=list)

    @property
    def failures(self) -> int:
        return sum(self.failed.values())

    def summary(self) -> dict:
        lat = np.array(self.latencies_s) if self.latencies_s else np.array([np.nan])
        return {
            "sent": self.sent, "ok": self.ok, "failed": dict(self.failed),
            "by_version": dict(self.by_version),
            "feedback_ok": self.feedback_ok, "feedback_failed": self.feedback_failed,
            "p50_ms": float(np.nanpercentile(lat, 50) * 1000),
            "p95_ms": float(np.nanpercentile(lat, 95) * 1000),
            "first_errors": self.first_errors,
        }

    def _error(self, key: str, detail: str) -> None:
        self.failed[key] += 1
        if len(self.first_errors) < 20:
            self.first_errors.append(detail[:300])


def binary_request(payload: dict) -> tuple[bytes, dict[str, str]]:
    """The binary form of a pool payload: (body, headers) for ``POST /predict``."""
    headers = {"content-type": "application/octet-stream",
               "x-lvm-tmd": ",".join(repr(float(x)) for x in payload["tmd"]),
               "x-lvm-user": payload["user_id"], "x-lvm-k": str(payload["k"])}
    return base64.b64decode(payload["context_b64"]), headers


def build_requests(config: LoadConfig) -> list[tuple[dict, int]]:
    """``pool_size`` (payload, clicked concept id) pairs spread over lanes, users and lengths."""
    world = SyntheticWorld(config.world)
    rng = np.random.default_rng(config.seed)
    pool: list[tuple[dict, int]] = []
    per_length = max(1, config.pool_size // len(config.context_lengths))
    for length in config.context_lengths:
        lanes = rng.choice(np.array(config.lanes), size=per_length)
        contexts, targets, lanes = world.sample(rng, per_length, length, lanes=lanes)
        tmd = one_hot_tmd(lanes)
        for ctx, target, lane_tmd in zip(contexts, targets, tmd, strict=True):
            # base64 float32 instead of JSON numbers: several times cheaper to build and parse.
            context = np.ascontiguousarray(world.vectors[ctx], dtype="<f4")
            payload = {
                "context_b64": base64.b64encode(context.tobytes()).decode("ascii"),
                "tmd": lane_tmd.tolist(),
                "user_id": f"user-{int(rng.integers(config.users))}",
                "k": config.k,
            }
            pool.append((payload, int(world.ids[target])))
    order = rng.permutation(len(pool))
    return [pool[i] for i in order]


async def run_load(config: LoadConfig, stop: asyncio.Event | None = None,
                   stats: LoadStats | None = None) -> LoadStats:
    """Send load until the duration, the request budget or ``stop``; returns the statistics.

    ``stats`` may be passed in to watch progress while it runs.
    """
    stats = stats or LoadStats()
    pool = build_requests(config)
    stop = stop or asyncio.Event()
    rng = np.random.default_rng(config.seed + 1)
    gate = asyncio.Semaphore(config.concurrency)
    predict_url = config.url.rstrip("/") + "/predict"
    feedback_url = config.url.rstrip("/") + "/feedback"
    interval = 1.0 / config.rps if config.rps > 0 else 0.0
    deadline = time.monotonic() + config.duration_s
    tasks: set[asyncio.Task] = set()

    async def one(client: httpx.AsyncClient, payload: dict, clicked: int) -> None:
        async with gate:
            started = time.monotonic()
            try:
                if config.binary:
                    body, headers = binary_request(payload)
                    resp = await client.post(predict_url, content=body, headers=headers)
                else:
                    resp = await client.post(predict_url, json=payload)
            except httpx.HTTPError as exc:
                stats._error(type(exc).__name__, f"predict: {exc!r}")
                return
            stats.latencies_s.append(time.monotonic() - started)
            if resp.status_code != 200:
                stats._error(str(resp.status_code), f"predict {resp.status_code}: {resp.text}")
                return
            stats.ok += 1
            body = resp.json()
            stats.by_version[body.get("version", "?")] += 1
            token = body.get("feedback_token")
            if token and rng.random() < config.feedback_rate:
                try:
                    fb = await client.post(feedback_url, json={"token": token,
                                                               "clicked_concept_id": clicked})
                    if fb.status_code == 200:
                        stats.feedback_ok += 1
                    else:
                        stats.feedback_failed += 1
                        stats._error(f"feedback-{fb.status_code}", f"feedback: {fb.text}")
                except httpx.HTTPError as exc:
                    stats.feedback_failed += 1
                    stats._error(f"feedback-{type(exc).__name__}", f"feedback: {exc!r}")

    limits = httpx.Limits(max_connections=config.concurrency * 2)
    async with httpx.AsyncClient(timeout=config.timeout_s, limits=limits) as client:
        i = 0
        next_at = time.monotonic()
        while not stop.is_set() and time.monotonic() < deadline:
            if config.max_requests is not None and stats.sent >= config.max_requests:
                break
            payload, clicked = pool[i % len(pool)]
            i += 1
            stats.sent += 1
            task = asyncio.create_task(one(client, payload, clicked))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            next_at += interval
            delay = next_at - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                next_at = time.monotonic()  # behind schedule: don't burst to catch up
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
    return stats


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True, help="router base URL, e.g. http://127.0.0.1:8000/lvm")
    parser.add_argument("--rps", type=float, default=20.0)
    parser.add_argument("--duration", type=float, default=30.0, help="seconds")
    parser.add_argument("--max-requests", type=int)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--context-lengths", default="8,40")
    parser.add_argument("--feedback-rate", type=float, default=1.0)
    parser.add_argument("--d-model", type=int, default=768,
                        help="must match the world the checkpoints were trained on")
    parser.add_argument("--world-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--binary", action="store_true",
                        help="send the binary body (float32 context, x-lvm-* headers)")
    args = parser.parse_args(argv)
    config = LoadConfig(
        url=args.url, rps=args.rps, duration_s=args.duration, max_requests=args.max_requests,
        concurrency=args.concurrency, users=args.users,
        context_lengths=tuple(int(x) for x in args.context_lengths.split(",")),
        feedback_rate=args.feedback_rate,
        world=WorldSpec(d_model=args.d_model, seed=args.world_seed), seed=args.seed,
        binary=args.binary,
    )
    stats = asyncio.run(run_load(config))
    print(json.dumps(stats.summary(), indent=2))


if __name__ == "__main__":
    main()
