"""The Ray Serve application: one router (ingress) and one deployment per model version.

The layout and the builders' ``args`` are defined by :mod:`lvm_serving.contracts.serve_config`:

* ``build_router(args)`` — application ``<app>`` at ``/<app>``, deployment ``Router``. Its
  ``user_config`` is a :class:`~lvm_serving.contracts.serve_config.RouterConfig`, applied in
  :meth:`Router.reconfigure` (no restart). It finds versions by name
  (``serve.get_deployment_handle(version, app_name="<app>--<version>")``, looked up lazily and
  cached), so a version application deployed later is found on the first request routed to it.
* ``build_version(args)`` — application ``<app>--<version>``, one deployment named after the
  version, loading the checkpoint (sha256-verified) and the concept bank.

HTTP API (all JSON; errors are ``{"error": message, "reason": ...}`` with a 4xx/5xx status)::

    POST /<app>/predict   {"context": [[float]*D]*T, "tmd": [16 floats] | "lane": 0..15,
                           "user_id": "...", "k": 10}
        ("context_b64": base64 of little-endian float32 [T, D] may replace "context": the same
        request without JSON number parsing, which dominates latency at 768-d x 1000)
        200 {"vector": [D floats], "concepts": [{"id", "similarity", "lane", "text"?}] (k),
             "version", "lane", "rollout", "feedback_token"}
        400 bad input (names the problem: dimension, NaN/Inf, context too long for the
        version, unknown lane, malformed JSON, k) · 500 nan_output / exception · 503 no config
        yet, or the version's application is not deployed / its replica died · 504 timeout
        (args["request_timeout_s"], default 30)
    POST /<app>/feedback  {"token": "...", "clicked_concept_id": 123}
        200 {"version", "lane", "rollout", "cosine", "hit@1_proxy", "hit@1_exact", ... "hit@10_*"}
        400 malformed body/token or unknown concept · 403 forged/tampered/expired token
    GET  /<app>/healthz   200 {"status": "ok", "application", "config"} (503 before a config)

Metrics (names, help and labels from :mod:`lvm_serving.contracts.metrics`) go through
``ray.util.metrics``: the version deployment records requests, latency (model + retrieval),
empty hits and its errors (nan_output, exception, bad_input) with ``shadow`` telling whether the
client saw the answer; the router records the errors it sees itself (bad_input before routing,
timeout, exception when a version cannot be reached), feedback and the shadow comparisons.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
from ray import serve
from ray.util import metrics as ray_metrics
from starlette.requests import Request
from starlette.responses import JSONResponse

from lvm_serving.contracts import metrics as mc
from lvm_serving.contracts.serve_config import RouterConfig, version_app_name
from lvm_serving.feedback import DEFAULT_TTL_S, TokenError, TokenSigner, keys_from_env
from lvm_serving.router import (
    BadRequest,
    PredictRequest,
    choose_route,
    parse_predict_request,
    shadow_comparison,
)

logger = logging.getLogger("ray.serve")

DEFAULT_TIMEOUT_S = 30.0
TOKEN_K = 10  # the version always retrieves at least this many: Hit@10 needs the top 10


# --------------------------------------------------------------------------------------------
# Metrics


class Metrics:
    """The contract's metrics as ``ray.util.metrics`` objects (one set per replica process)."""

    def __init__(self) -> None:
        self._m: dict[str, Any] = {}
        for d in mc.ALL_METRICS:
            description = d.description
            if d.kind is mc.MetricKind.HISTOGRAM:
                self._m[d.name] = ray_metrics.Histogram(
                    d.name, description=description,
                    boundaries=list(mc.LATENCY_BUCKETS_SECONDS), tag_keys=d.labels,
                )
            else:
                self._m[d.name] = ray_metrics.Counter(d.name, description=description,
                                                      tag_keys=d.labels)

    def inc(self, metric: mc.MetricDef, tags: dict[str, str], value: float = 1.0) -> None:
        if value > 0:  # Ray counters refuse 0
            self._m[metric.name].inc(value, tags={k: tags[k] for k in metric.labels})

    def observe(self, metric: mc.MetricDef, value: float, tags: dict[str, str]) -> None:
        self._m[metric.name].observe(value, tags={k: tags[k] for k in metric.labels})


def _tags(rollout: str, version: str, lane: Any, shadow: bool = False) -> dict[str, str]:
    return {mc.LABEL_ROLLOUT: rollout, mc.LABEL_VERSION: version, mc.LABEL_LANE: str(lane),
            mc.LABEL_SHADOW: "true" if shadow else "false"}


def _error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason}, status_code=status)


async def _json_body(request: Request) -> Any:
    raw = await request.body()
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None


def _route_name(request: Request) -> str:
    return request.url.path.rstrip("/").rsplit("/", 1)[-1]


# --------------------------------------------------------------------------------------------
# Version deployment


@serve.deployment(max_ongoing_requests=16, ray_actor_options={"num_cpus": 0.5})
class VersionModel:
    """One model version: ``predict(request dict) -> result dict`` (never raises)."""

    def __init__(self, args: dict) -> None:
        import torch

        from lvm_serving.predictor import Predictor

        torch.set_num_threads(int(args.get("torch_threads", 1)))
        self.version = str(args["version"])
        self.family = str(args["family"])
        self.context_length = int(args["context_length"])
        self.predictor = Predictor.load(
            args["checkpoint"], args.get("sha256"), args["concept_bank_uri"],
            args.get("concept_bank_sha256"), device=args.get("device", "auto"),
            expected_family=self.family,
        )
        self.predictor.warmup(self.context_length)
        # One inference at a time per replica, like the seed's timing of ``model.predict``:
        # concurrent requests wait for the worker instead of slicing the CPU between them, so
        # the latency metric measures the model and retrieval, not CPU contention inside the
        # replica (the queueing shows up in the router's and the client's latency instead).
        self._worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{self.version}-")
        self.metrics = Metrics()
        logger.info("version %s (%s, context %d, d=%d) loaded on %s", self.version, self.family,
                    self.context_length, self.predictor.d_model, self.predictor.device)

    def info(self) -> dict:
        import ray

        return {"version": self.version, "family": self.family, "d_model": self.predictor.d_model,
                "context_length": self.context_length,
                "node_id": ray.get_runtime_context().get_node_id()}

    def _fail(self, tags: dict[str, str], reason: mc.ErrorReason, status: int,
              message: str) -> dict:
        self.metrics.inc(mc.ERRORS, {**tags, mc.LABEL_REASON: str(reason)})
        return {"error": message, "reason": str(reason), "status": status,
                "version": self.version}

    async def predict(self, req: dict) -> dict:
        """``req``: context float32 [T, D], tmd float32 [16], lane, k, rollout, shadow and
        truncate (a context longer than this version's window keeps its last vectors instead of
        being refused)."""
        tags = _tags(req.get("rollout", ""), self.version, req.get("lane", -1),
                     bool(req.get("shadow")))
        self.metrics.inc(mc.REQUESTS, tags)
        context = req["context"]
        if len(context) > self.context_length and req.get("truncate"):
            context = context[-self.context_length:]  # the most recent vectors
        if len(context) > self.context_length:
            return self._fail(tags, mc.ErrorReason.BAD_INPUT, 400,
                              f"context too long: {len(context)} vectors, version {self.version} "
                              f"takes at most {self.context_length}")
        from lvm_serving.models.base import InputError

        k = max(int(req.get("k", TOKEN_K)), TOKEN_K)
        tmd = req.get("tmd")

        def timed_predict():
            began = time.perf_counter()
            return self.predictor.predict(context, tmd, k), time.perf_counter() - began

        try:
            p, model_s = await asyncio.get_running_loop().run_in_executor(
                self._worker, timed_predict)
        except InputError as exc:
            return self._fail(tags, mc.ErrorReason.BAD_INPUT, 400, str(exc))
        except Exception as exc:
            logger.exception("version %s failed", self.version)
            return self._fail(tags, mc.ErrorReason.EXCEPTION, 500,
                              f"version {self.version} failed: {type(exc).__name__}: {exc}")
        self.metrics.observe(mc.LATENCY, model_s, tags)
        if not bool(p.finite[0]):
            return self._fail(tags, mc.ErrorReason.NAN_OUTPUT, 500,
                              f"version {self.version} produced a NaN/Inf prediction "
                              f"(nan_output)")
        if bool(p.empty_hit[0]):
            self.metrics.inc(mc.EMPTY_HITS, tags)
        return {"version": self.version, "vector": p.vectors[0], "ids": p.ids[0],
                "sims": p.sims[0], "finite": True, "empty_hit": bool(p.empty_hit[0]),
                "latency_s": model_s}

    async def __call__(self, request: Request) -> JSONResponse:
        """Direct HTTP access (benchmarks, debugging): same body as the router's predict; no
        routing and no feedback token. Only reachable when the version app gets a route."""
        try:
            body = await _json_body(request)
            parsed = parse_predict_request(body, dim=self.predictor.d_model)
        except BadRequest as exc:
            return _error(exc.status, "bad_input", str(exc))
        out = await self.predict({"context": parsed.context, "tmd": parsed.tmd,
                                  "lane": parsed.lane, "k": parsed.k,
                                  "rollout": str(body.get("rollout", "direct"))})
        if "error" in out:
            return _error(out["status"], out["reason"], out["error"])
        return JSONResponse({"version": self.version, "vector": out["vector"].tolist(),
                             "ids": out["ids"][:parsed.k].tolist(),
                             "sims": out["sims"][:parsed.k].tolist()})


def build_version(args: dict):
    """Application builder for ``<app>--<version>`` (see serve_config.VersionSpec.build_args)."""
    missing = [k for k in ("version", "checkpoint", "family", "context_length",
                           "concept_bank_uri") if not args.get(k)]
    if missing:
        raise ValueError(f"build_version: missing args {missing}")
    return VersionModel.options(name=str(args["version"])).bind(dict(args))


# --------------------------------------------------------------------------------------------
# Router


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
class Router:
    def __init__(self, args: dict) -> None:
        from lvm_serving.concept_bank import ConceptBank

        self.application = str(args["application"])
        self.bank = ConceptBank.load(args["concept_bank_uri"], args.get("concept_bank_sha256"),
                                     device="cpu")
        env_name = str(args.get("feedback_key_env") or "LVM_FEEDBACK_KEY")
        keys, derived = keys_from_env(
            env_name, f"{self.application}:{args.get('concept_bank_sha256') or ''}")
        if derived:
            logger.warning(
                "%s is not set on this node: feedback tokens are signed with a key derived from "
                "the application name, which anyone can recompute (forgeable). Set %s (the same "
                "value on every Ray node) in production.", env_name, env_name)
        self.signer = TokenSigner(keys, ttl_s=int(args.get("feedback_ttl_s", DEFAULT_TTL_S)))
        self.timeout_s = float(args.get("request_timeout_s", DEFAULT_TIMEOUT_S))
        self.config: RouterConfig | None = None
        self.handles: dict[str, Any] = {}
        self.metrics = Metrics()
        self.rng = random.Random()
        self._background: set[asyncio.Task] = set()

    def reconfigure(self, user_config: dict) -> None:
        config = RouterConfig.from_dict(dict(user_config or {}))
        if not config.champion:
            raise ValueError("router config needs a champion")
        self.config = config  # one atomic swap: in-flight requests keep the config they read
        logger.info("router config: %s", config.to_dict())

    def _handle(self, version: str):
        handle = self.handles.get(version)
        if handle is None:
            handle = serve.get_deployment_handle(
                version, app_name=version_app_name(self.application, version))
            self.handles[version] = handle
        return handle

    async def _call(self, version: str, payload: dict) -> dict:
        response = self._handle(version).predict.remote(payload)

        async def wait() -> dict:
            return await response

        try:
            return await asyncio.wait_for(wait(), self.timeout_s)
        except TimeoutError:
            with contextlib.suppress(Exception):
                response.cancel()
            raise

    # ---- HTTP ------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> JSONResponse:
        route = _route_name(request)
        try:
            if route == "predict" and request.method == "POST":
                return await self._predict(request)
            if route == "feedback" and request.method == "POST":
                return await self._feedback(request)
            if route in ("healthz", self.application) and request.method == "GET":
                return self._healthz()
        except BadRequest as exc:
            return _error(exc.status, "bad_input", str(exc))
        if route in ("predict", "feedback", "healthz"):
            return _error(405, "bad_input", f"{request.method} not allowed on /{route}")
        return _error(404, "bad_input", f"unknown path {request.url.path!r}: use "
                      f"POST /{self.application}/predict, POST /{self.application}/feedback or "
                      f"GET /{self.application}/healthz")

    def _healthz(self) -> JSONResponse:
        if self.config is None:
            return _error(503, "not_ready", "router has no user_config yet")
        return JSONResponse({"status": "ok", "application": self.application,
                             "config": self.config.to_dict()})

    async def _predict(self, request: Request) -> JSONResponse:
        config = self.config
        if config is None:
            return _error(503, "not_ready", "router has no user_config yet")
        body: Any = None
        try:
            body = await _json_body(request)
            req = parse_predict_request(body, dim=self.bank.dim, user_key_field=config.user_key)
        except BadRequest as exc:
            lane = body.get("lane") if isinstance(body, dict) else None
            lane = lane if isinstance(lane, int) and 0 <= lane < mc.NUM_LANES else "unknown"
            self.metrics.inc(mc.ERRORS, {**_tags(config.rollout, config.champion, lane),
                                         mc.LABEL_REASON: str(mc.ErrorReason.BAD_INPUT)})
            return _error(exc.status, "bad_input", str(exc))
        route = choose_route(config, user_key=req.user_key, context_length=len(req.context),
                             rng=self.rng)
        payload = {"context": req.context, "tmd": req.tmd, "lane": req.lane,
                   "k": max(req.k, TOKEN_K), "rollout": config.rollout, "shadow": False,
                   # contextLength mode: an eligible long context the weight left on the
                   # champion is cut to the champion's window instead of being refused
                   "truncate": route.reason == "long_context"}
        main = asyncio.ensure_future(self._call(route.version, payload))
        if route.shadow:
            shadow_payload = {**payload, "shadow": True}
            task = asyncio.ensure_future(self._shadow(config, req, main, route.shadow,
                                                      shadow_payload))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        tags = _tags(config.rollout, route.version, req.lane)
        try:
            out = await asyncio.shield(main)
        except TimeoutError:
            self.metrics.inc(mc.ERRORS, {**tags, mc.LABEL_REASON: str(mc.ErrorReason.TIMEOUT)})
            return _error(504, "timeout", f"version {route.version} did not answer within "
                          f"{self.timeout_s:g}s (is application "
                          f"{version_app_name(self.application, route.version)!r} deployed?)")
        except Exception as exc:  # not deployed (KeyError: does not exist), replica died, ...
            self.handles.pop(route.version, None)  # look it up afresh next time
            self.metrics.inc(mc.ERRORS, {**tags, mc.LABEL_REASON: str(mc.ErrorReason.EXCEPTION)})
            logger.warning("version %s unreachable: %r", route.version, exc)
            app = version_app_name(self.application, route.version)
            return _error(503, "exception", f"version {route.version} is unavailable "
                          f"(is application {app!r} deployed?): {type(exc).__name__}: {exc}")
        if "error" in out:
            return _error(out["status"], out["reason"], out["error"])
        return JSONResponse(self._answer(config, req, out))

    def _answer(self, config: RouterConfig, req: PredictRequest, out: dict) -> dict:
        ids = np.asarray(out["ids"])
        sims = np.asarray(out["sims"])
        top = ids[:req.k]
        lanes = self.bank.lanes_for(top)
        concepts = []
        for cid, sim, lane in zip(top, sims[:req.k], lanes, strict=True):
            item = {"id": int(cid), "similarity": float(sim), "lane": int(lane)}
            if self.bank.texts is not None:
                item["text"] = self.bank.text_for(int(cid))
            concepts.append(item)
        token = self.signer.sign(rollout=config.rollout, version=out["version"], lane=req.lane,
                                 ids=ids[:TOKEN_K], vector=out["vector"])
        return {"vector": np.asarray(out["vector"], dtype=np.float64).tolist(),
                "concepts": concepts, "version": out["version"], "lane": req.lane,
                "rollout": config.rollout, "feedback_token": token}

    async def _shadow(self, config: RouterConfig, req: PredictRequest, main: asyncio.Future,
                      version: str, payload: dict) -> None:
        """Ask the candidate too; when both answered, record the paired metrics."""
        try:
            shadow_out, main_out = await asyncio.gather(self._call(version, payload),
                                                        asyncio.shield(main))
        except Exception as exc:  # the candidate's own errors are counted by the candidate
            logger.debug("shadow request to %s failed: %r", version, exc)
            return
        if "error" in shadow_out or "error" in main_out:
            return
        overlap, cosine = shadow_comparison(main_out["vector"], main_out["ids"],
                                            shadow_out["vector"], shadow_out["ids"])
        tags = {mc.LABEL_ROLLOUT: config.rollout, mc.LABEL_VERSION: version,
                mc.LABEL_LANE: str(req.lane)}
        self.metrics.inc(mc.SHADOW_COMPARISONS, tags)
        self.metrics.inc(mc.SHADOW_TOP5_OVERLAP, tags, overlap)
        self.metrics.inc(mc.SHADOW_COSINE, tags, max(cosine, 0.0))

    async def _feedback(self, request: Request) -> JSONResponse:
        from lvm_serving.predictor import hits

        body = await _json_body(request)
        if not isinstance(body, dict):
            raise BadRequest("request body must be a JSON object")
        if "token" not in body:
            raise BadRequest("missing field 'token' (the feedback_token of a prediction)")
        clicked = body.get("clicked_concept_id")
        if isinstance(clicked, bool) or not isinstance(clicked, int):
            raise BadRequest(f"clicked_concept_id must be an integer concept id, got {clicked!r}")
        if not self.bank.contains(clicked):
            raise BadRequest(f"unknown concept id {clicked}: not in the concept bank")
        try:
            claims = self.signer.verify(body["token"])
        except TokenError as exc:
            return _error(exc.status, "bad_token", str(exc))
        clicked_vec = self.bank.vectors_for([clicked]).cpu().numpy()
        if clicked_vec.shape[-1] != claims.vector.shape[0]:
            raise BadRequest("feedback token does not match this application's concept bank")
        result = {k: bool(v[0]) for k, v in
                  hits(claims.vector[None], np.asarray(claims.ids)[None], [clicked],
                       clicked_vec).items()}
        v = claims.vector.astype(np.float64)
        c = clicked_vec[0].astype(np.float64)
        denom = float(np.linalg.norm(v) * np.linalg.norm(c))
        cosine = float(v @ c) / denom if denom > 0 else 0.0
        tags = _tags(claims.rollout, claims.version, claims.lane)
        self.metrics.inc(mc.FEEDBACK, tags)
        for key, hit in result.items():
            if hit:  # "hit@5_proxy" -> k="5", kind="proxy"
                k, kind = key.removeprefix("hit@").split("_")
                self.metrics.inc(mc.FEEDBACK_HITS, {**tags, mc.LABEL_K: k,
                                                    mc.LABEL_HIT_KIND: kind})
        return JSONResponse({"version": claims.version, "lane": claims.lane,
                             "rollout": claims.rollout, "cosine": cosine, **result})


def build_router(args: dict):
    """Application builder for ``<app>`` (see serve_config.render_applications)."""
    missing = [k for k in ("application", "concept_bank_uri") if not args.get(k)]
    if missing:
        raise ValueError(f"build_router: missing args {missing}")
    return Router.bind(dict(args))


__all__ = ["Router", "VersionModel", "build_router", "build_version"]
