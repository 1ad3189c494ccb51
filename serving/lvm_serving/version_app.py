"""The version deployment: one model version (checkpoint + concept bank) behind a Serve handle.

The router calls :meth:`VersionModel.predict` with a dict whose ``context`` is a float32 array
(for a binary request, a read-only view of the request's bytes, never a list). The answer carries
the prediction and the version's own stage times (``timing``: queue, model, retrieval, version;
seconds), so the router can tell its transport (``hop``) from the version's work.

One inference at a time per replica, like the seed's timing of ``model.predict``: concurrent
requests wait for the inference slot instead of slicing the CPU between them, so the latency
metric measures the model and retrieval, not CPU contention inside the replica (the wait is the
``queue`` stage). Two ways to run it, chosen by the ``predict_inline`` arg:

* in a single worker thread (default) — the replica's event loop stays free to receive the next
  request while a forward pass runs; the wait for the worker (and for the GIL it needs to start)
  shows as ``queue``;
* inline (``predict_inline: true``) — on the replica's user event loop: no thread hand-off, but
  the loop is blocked while it runs, so the next request waits in Serve before our timers see it
  (``queue`` reads ~0 and the wait moves into the router's ``hop``).

``switch_interval_s`` (optional) sets ``sys.setswitchinterval`` in the replica: how long a thread
that wants the GIL waits for the one holding it (Python's default 5 ms). bench_router.py measures
these variants side by side under load; neither helped consistently on the 2-core test machine
(inline: lower replica timer in some runs, higher client latency in most), so the defaults are
the worker thread and Python's switch interval.
"""

from __future__ import annotations

import asyncio
import logging
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from lvm_serving.contracts import metrics as mc
from lvm_serving.router import (
    BadRequest,
    is_binary,
    parse_binary_request,
    parse_predict_request,
)
from lvm_serving.serve_common import (
    Metrics,
    StageClock,
    error,
    json_loads,
    server_timing,
    tags,
    with_reason,
)

logger = logging.getLogger("ray.serve")

TOKEN_K = 10  # the version always retrieves at least this many: Hit@10 needs the top 10


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})
class VersionModel:
    """One model version: ``predict(request dict) -> result dict`` (never raises)."""

    def __init__(self, args: dict) -> None:
        import torch

        from lvm_serving.predictor import Predictor

        torch.set_num_threads(int(args.get("torch_threads", 1)))
        if args.get("switch_interval_s"):
            sys.setswitchinterval(float(args["switch_interval_s"]))
        self.version = str(args["version"])
        self.family = str(args["family"])
        self.context_length = int(args["context_length"])
        self.predictor = Predictor.load(
            args["checkpoint"], args.get("sha256"), args["concept_bank_uri"],
            args.get("concept_bank_sha256"), device=args.get("device", "auto"),
            expected_family=self.family,
        )
        self.predictor.warmup(self.context_length)
        self.inline = bool(args.get("predict_inline", False))
        self._slot = asyncio.Lock()  # inline: one inference at a time (see the docstring)
        self._worker = None if self.inline else ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=f"{self.version}-")
        self.metrics = Metrics()
        logger.info("version %s (%s, context %d, d=%d) loaded on %s, %s", self.version,
                    self.family, self.context_length, self.predictor.d_model,
                    self.predictor.device, "inline" if self.inline else "worker thread")

    def info(self) -> dict:
        import ray

        return {"version": self.version, "family": self.family, "d_model": self.predictor.d_model,
                "context_length": self.context_length,
                "node_id": ray.get_runtime_context().get_node_id()}

    def _fail(self, labels: tuple, reason: mc.ErrorReason, status: int, message: str) -> dict:
        self.metrics.inc(mc.ERRORS, with_reason(*labels, str(reason)))
        return {"error": message, "reason": str(reason), "status": status,
                "version": self.version}

    async def _run(self, context, tmd, k: int):
        """(prediction, seconds waited for the inference slot)."""
        waiting = time.perf_counter()
        if self.inline:
            async with self._slot:
                started = time.perf_counter()
                return self.predictor.predict(context, tmd, k), started - waiting

        def timed():
            started = time.perf_counter()  # before predict: the queue stage is the wait only
            return self.predictor.predict(context, tmd, k), started - waiting

        return await asyncio.get_running_loop().run_in_executor(self._worker, timed)

    async def predict(self, req: dict) -> dict:
        """``req``: context float32 [T, D], tmd float32 [16], lane, k, rollout, shadow and
        truncate (a context longer than this version's window keeps its last vectors instead of
        being refused)."""
        received = time.perf_counter()
        rollout = req.get("rollout", "")
        labels = (rollout, self.version, req.get("lane", -1), bool(req.get("shadow")),
                  bool(req.get("pinned")))
        common = tags(*labels)  # requests (attempts) are counted by the router that sent it
        context = req["context"]
        if len(context) > self.context_length and req.get("truncate"):
            context = context[-self.context_length:]  # the most recent vectors
        if len(context) > self.context_length:
            return self._fail(labels, mc.ErrorReason.BAD_INPUT, 400,
                              f"context too long: {len(context)} vectors, version {self.version} "
                              f"takes at most {self.context_length}")
        from lvm_serving.models.base import InputError

        k = max(int(req.get("k", TOKEN_K)), TOKEN_K)
        try:
            p, queued_s = await self._run(context, req.get("tmd"), k)
        except InputError as exc:
            return self._fail(labels, mc.ErrorReason.BAD_INPUT, 400, str(exc))
        except Exception as exc:
            logger.exception("version %s failed", self.version)
            return self._fail(labels, mc.ErrorReason.EXCEPTION, 500,
                              f"version {self.version} failed: {type(exc).__name__}: {exc}")
        self.metrics.observe(mc.LATENCY, p.model_s + p.retrieval_s, common)
        timing = {str(mc.Stage.QUEUE): queued_s, str(mc.Stage.MODEL): p.model_s,
                  str(mc.Stage.RETRIEVAL): p.retrieval_s,
                  str(mc.Stage.VERSION): time.perf_counter() - received}
        self.metrics.stages(rollout, self.version, timing)
        if not bool(p.finite[0]):
            return self._fail(labels, mc.ErrorReason.NAN_OUTPUT, 500,
                              f"version {self.version} produced a NaN/Inf prediction "
                              f"(nan_output)")
        if bool(p.empty_hit[0]):
            self.metrics.inc(mc.EMPTY_HITS, common)
        return {"version": self.version, "vector": p.vectors[0], "ids": p.ids[0],
                "sims": p.sims[0], "finite": True, "empty_hit": bool(p.empty_hit[0]),
                "latency_s": p.model_s + p.retrieval_s, "timing": timing}

    async def __call__(self, request: Request) -> JSONResponse:
        """Direct HTTP access (benchmarks, debugging): the router's predict bodies (JSON or
        binary); no routing and no feedback token. Only reachable when the version app gets a
        route. Answers ``{"version", "vector", "ids", "sims"}`` with a ``server-timing`` header."""
        clock = StageClock()
        raw = await request.body()
        clock.lap(str(mc.Stage.READ))
        try:
            if is_binary(request.headers.get("content-type")):
                parsed = parse_binary_request(raw, request.headers, dim=self.predictor.d_model)
                rollout = "direct"
            else:
                body = json_loads(raw)
                parsed = parse_predict_request(body, dim=self.predictor.d_model)
                rollout = str(body.get("rollout", "direct"))
        except BadRequest as exc:
            return error(exc.status, "bad_input", str(exc))
        clock.lap(str(mc.Stage.PARSE))
        out = await self.predict({"context": parsed.context, "tmd": parsed.tmd,
                                  "lane": parsed.lane, "k": parsed.k, "rollout": rollout})
        if "error" in out:
            return error(out["status"], out["reason"], out["error"])
        clock.seconds.update(out["timing"])
        clock.last = time.perf_counter()
        response = JSONResponse({"version": self.version,
                                 "vector": np.asarray(out["vector"], np.float64).tolist(),
                                 "ids": out["ids"][:parsed.k].tolist(),
                                 "sims": out["sims"][:parsed.k].tolist()})
        clock.lap(str(mc.Stage.ENCODE))
        response.headers["server-timing"] = server_timing(clock.seconds)
        return response


def build_version(args: dict):
    """Application builder for ``<app>--<version>`` (see serve_config.VersionSpec.build_args)."""
    missing = [k for k in ("version", "checkpoint", "family", "context_length",
                           "concept_bank_uri") if not args.get(k)]
    if missing:
        raise ValueError(f"build_version: missing args {missing}")
    return VersionModel.options(name=str(args["version"])).bind(dict(args))
