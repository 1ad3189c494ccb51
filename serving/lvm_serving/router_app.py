"""The router deployment (the application's ingress): parse, route, call the version, answer.

A predict request arrives as JSON (``context`` as numbers, or ``context_b64``) or as the binary
body (``content-type: application/octet-stream``: the context's little-endian float32 bytes, the
scalars in ``x-lvm-*`` headers; see :func:`lvm_serving.router.parse_binary_request`). Either way
the version gets the context as a float32 array (for the binary body a read-only view of the
request's bytes). The answer is JSON: the concepts, the feedback token, and the predicted vector
unless ``?vector=0`` / ``x-lvm-vector: 0`` (as numbers for a JSON request, as ``vector_b64`` for a
binary one). Every answer has a ``server-timing`` header (ms per stage: the router's read, parse,
call, hop, encode and router; the version's queue, model, retrieval and version), and the same
stages go to the ``lvm_stage_latency_seconds`` histogram.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import random
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from lvm_serving.contracts import metrics as mc
from lvm_serving.contracts.serve_config import (
    FEEDBACK_PER_USER_PER_HOUR,
    ROUTER_REQUEST_TIMEOUT_S,
    RouterConfig,
    version_app_name,
)
from lvm_serving.feedback import (
    DEFAULT_TTL_S,
    TokenError,
    TokenSigner,
    keys_from_env,
    token_id,
)
from lvm_serving.replay_guard import RayKVReplayGuard
from lvm_serving.router import (
    HEADER_LANE,
    HEADER_PIN,
    HEADER_VECTOR,
    QUERY_VECTOR,
    BadRequest,
    PredictRequest,
    body_limit,
    choose_route,
    is_binary,
    parse_binary_request,
    parse_feedback_request,
    parse_predict_request,
    pinned_version,
    shadow_comparison,
    wants_vector,
)
from lvm_serving.serve_common import (
    MAX_BODY_BYTES,
    Metrics,
    StageClock,
    error,
    json_body,
    json_loads,
    read_body,
    route_name,
    server_timing,
    tags,
    with_reason,
)
from lvm_serving.version_app import TOKEN_K

logger = logging.getLogger("ray.serve")
#: JSON bodies up to this size are parsed on the event loop (a thread hop costs more).
INLINE_JSON_BYTES = 256 * 1024

S = mc.Stage


@serve.deployment(max_ongoing_requests=256, ray_actor_options={"num_cpus": 0.25})
class Router:
    def __init__(self, args: dict) -> None:
        from lvm_serving.concept_bank import ConceptBank

        self.application = str(args["application"])
        self.bank = ConceptBank.load(args["concept_bank_uri"], args.get("concept_bank_sha256"),
                                     device="cpu")
        env_name = str(args.get("feedback_key_env") or "LVM_FEEDBACK_KEY")
        keys, self.key_problem = keys_from_env(env_name)
        # Fail closed: no key, no tokens (answers carry none) and /feedback answers 503.
        self.signer = TokenSigner(keys, ttl_s=int(args.get("feedback_ttl_s", DEFAULT_TTL_S))) \
            if keys else None
        if self.key_problem:
            logger.error("feedback disabled: %s", self.key_problem)
        self.guard = RayKVReplayGuard() if self.signer is not None else None
        self.user_cap = int(args.get("feedback_per_user_per_hour", FEEDBACK_PER_USER_PER_HOUR))
        self.timeout_s = float(args.get("request_timeout_s", ROUTER_REQUEST_TIMEOUT_S))
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
        """Send one request to ``version``, counting it as an attempt of that version.

        The router counts requests (not the version): a version that is down or never
        answers then has attempts and errors, an error rate the guardrail can judge, instead
        of no traffic at all ("no data" would hold it for maxHold instead of rolling back).
        """
        labels = (payload["rollout"], version, payload["lane"], bool(payload["shadow"]),
                  bool(payload.get("pinned")))
        self.metrics.inc(mc.REQUESTS, tags(*labels))
        response = None
        try:
            response = self._handle(version).predict.remote(payload)

            async def wait() -> dict:
                return await response

            return await asyncio.wait_for(wait(), self.timeout_s)
        except TimeoutError:
            if response is not None:
                with contextlib.suppress(Exception):
                    response.cancel()
            self.metrics.inc(mc.ERRORS, with_reason(*labels, str(mc.ErrorReason.TIMEOUT)))
            raise
        except Exception:  # not deployed (KeyError: does not exist), replica died, ...
            self.handles.pop(version, None)  # look it up afresh next time
            self.metrics.inc(mc.ERRORS, with_reason(*labels, str(mc.ErrorReason.EXCEPTION)))
            raise

    # ---- HTTP ------------------------------------------------------------------------------

    async def __call__(self, request: Request) -> JSONResponse:
        route = route_name(request)
        try:
            if route == "predict" and request.method == "POST":
                return await self._predict(request)
            if route == "feedback" and request.method == "POST":
                return await self._feedback(request)
            if route in ("healthz", self.application) and request.method == "GET":
                return self._healthz()
        except BadRequest as exc:
            return error(exc.status, "bad_input", str(exc))
        if route in ("predict", "feedback", "healthz"):
            return error(405, "bad_input", f"{request.method} not allowed on /{route}")
        return error(404, "bad_input", f"unknown path {request.url.path!r}: use "
                      f"POST /{self.application}/predict, POST /{self.application}/feedback or "
                      f"GET /{self.application}/healthz")

    def _healthz(self) -> JSONResponse:
        if self.config is None:
            return error(503, "not_ready", "router has no user_config yet")
        return JSONResponse({"status": "ok", "application": self.application,
                             "config": self.config.to_dict()})

    async def _predict(self, request: Request) -> JSONResponse:
        clock = StageClock()
        config = self.config
        if config is None:
            return error(503, "not_ready", "router has no user_config yet")
        binary = is_binary(request.headers.get("content-type"))
        body: Any = None
        try:
            # refused before it is read when no routed version could take a context that big
            raw = await read_body(request, body_limit(config.max_context, self.bank.dim,
                                                      binary=binary, absolute=MAX_BODY_BYTES))
            clock.lap(S.READ)
            if binary:
                req = parse_binary_request(raw, request.headers, dim=self.bank.dim,
                                           max_context=config.max_context)
            else:
                # a big JSON body is parsed off the event loop: other requests keep flowing
                body = json_loads(raw) if len(raw) < INLINE_JSON_BYTES else \
                    await asyncio.to_thread(json_loads, raw)
                req = parse_predict_request(body, dim=self.bank.dim,
                                            max_context=config.max_context,
                                            user_key_field=config.user_key)
            with_vector = wants_vector(request.query_params.get(QUERY_VECTOR),
                                       request.headers.get(HEADER_VECTOR))
            pinned = pinned_version(config, request.headers.get(HEADER_PIN))
        except BadRequest as exc:
            lane = (request.headers.get(HEADER_LANE, "") if binary else
                    body.get("lane") if isinstance(body, dict) else None)
            lane = int(lane) if isinstance(lane, str) and lane.isdigit() else lane
            lane = lane if isinstance(lane, int) and 0 <= lane < mc.NUM_LANES else "unknown"
            self.metrics.inc(mc.ERRORS, with_reason(config.rollout, config.champion, lane, False,
                                                    False,
                                                    str(mc.ErrorReason.BAD_INPUT)))
            return error(exc.status, "bad_input", str(exc))
        route = choose_route(config, user_key=req.user_key, context_length=len(req.context),
                             rng=self.rng, pinned=pinned)
        payload = {"context": req.context, "tmd": req.tmd, "lane": req.lane,
                   "k": max(req.k, TOKEN_K), "rollout": config.rollout, "shadow": False,
                   "pinned": route.pinned,
                   # contextLength mode: an eligible long context the weight left on the
                   # champion is cut to the champion's window instead of being refused
                   "truncate": route.reason == "long_context"}
        clock.lap(S.PARSE)
        main = asyncio.ensure_future(self._call(route.version, payload))
        if route.shadow:
            shadow_payload = {**payload, "shadow": True}
            task = asyncio.ensure_future(self._shadow(config, req, main, route.shadow,
                                                      shadow_payload))
            self._background.add(task)
            task.add_done_callback(self._background.discard)
        try:
            out = await asyncio.shield(main)
        except TimeoutError:  # counted by _call
            return error(504, "timeout", f"version {route.version} did not answer within "
                         f"{self.timeout_s:g}s (is application "
                         f"{version_app_name(self.application, route.version)!r} deployed?)")
        except Exception as exc:  # counted by _call
            logger.warning("version %s unreachable: %r", route.version, exc)
            app = version_app_name(self.application, route.version)
            return error(503, "exception", f"version {route.version} is unavailable "
                         f"(is application {app!r} deployed?): {type(exc).__name__}: {exc}")
        clock.lap(S.CALL)
        if "error" in out:
            return error(out["status"], out["reason"], out["error"])
        timing = out.get("timing", {})
        clock.add(S.HOP, max(clock.seconds[S.CALL] - timing.get(S.VERSION, 0.0), 0.0))
        response = JSONResponse(self._answer(config, req, out, binary=binary,
                                             with_vector=with_vector, pinned=route.pinned))
        clock.lap(S.ENCODE)
        clock.total(S.ROUTER)
        self.metrics.stages(config.rollout, route.version, clock.seconds)
        response.headers["server-timing"] = server_timing({**clock.seconds, **timing})
        return response

    def _answer(self, config: RouterConfig, req: PredictRequest, out: dict, *,
                binary: bool = False, with_vector: bool = True, pinned: bool = False) -> dict:
        ids = np.asarray(out["ids"])
        top = ids[:req.k]
        sims = np.asarray(out["sims"])[:req.k].tolist()
        lanes = self.bank.lanes_for(top).tolist()
        texts = self.bank.texts
        concepts = []
        for cid, sim, lane in zip(top.tolist(), sims, lanes, strict=True):
            item = {"id": cid, "similarity": sim, "lane": lane}
            if texts is not None:
                item["text"] = self.bank.text_for(cid)
            concepts.append(item)
        vector = out["vector"]
        token = None if self.signer is None else self.signer.sign(
            rollout=config.rollout, version=out["version"], lane=req.lane,
            ids=ids[:TOKEN_K].tolist(), vector=vector, pinned=pinned, user=req.user_key)
        answer: dict[str, Any] = {"concepts": concepts, "version": out["version"],
                                  "lane": req.lane, "rollout": config.rollout,
                                  "feedback_token": token}
        if with_vector and binary:
            f32 = np.ascontiguousarray(vector, dtype="<f4")
            answer["vector_b64"] = base64.b64encode(f32.tobytes()).decode("ascii")
        elif with_vector:
            answer["vector"] = np.asarray(vector, dtype=np.float64).tolist()
        return answer

    async def _shadow(self, config: RouterConfig, req: PredictRequest, main: asyncio.Future,
                      version: str, payload: dict) -> None:
        """Ask the candidate too; when both answered, record the paired metrics."""
        try:
            shadow_out, main_out = await asyncio.gather(self._call(version, payload),
                                                        asyncio.shield(main))
        except Exception as exc:  # counted against the version by _call
            logger.debug("shadow request to %s failed: %r", version, exc)
            return
        if "error" in shadow_out or "error" in main_out:
            return
        overlap, cosine = shadow_comparison(main_out["vector"], main_out["ids"],
                                            shadow_out["vector"], shadow_out["ids"])
        pair = tags(config.rollout, version, req.lane)
        self.metrics.inc(mc.SHADOW_COMPARISONS, pair)
        self.metrics.inc(mc.SHADOW_TOP5_OVERLAP, pair, overlap)
        self.metrics.inc(mc.SHADOW_COSINE, pair, max(cosine, 0.0))

    def _rejected(self, rollout: str, reason: mc.FeedbackRejection,
                  version: str = "unknown") -> None:
        self.metrics.inc(mc.FEEDBACK_REJECTED, {mc.LABEL_ROLLOUT: rollout,
                                                mc.LABEL_VERSION: version,
                                                mc.LABEL_REASON: str(reason)})

    async def _feedback(self, request: Request) -> JSONResponse:
        from lvm_serving.predictor import hits

        token, clicked = parse_feedback_request(await json_body(request))
        if not self.bank.contains(clicked):
            raise BadRequest(f"unknown concept id {clicked}: not in the concept bank")
        rollout = self.config.rollout if self.config is not None else ""
        if self.signer is None or self.guard is None:
            self._rejected(rollout, mc.FeedbackRejection.NO_KEY)
            return error(503, "feedback_unavailable", f"feedback is not accepted here: "
                         f"{self.key_problem}")
        try:
            claims = self.signer.verify(token)
        except TokenError as exc:
            self._rejected(rollout, mc.FeedbackRejection(exc.kind))
            return error(exc.status, "bad_token", str(exc))
        clicked_vec = self.bank.vectors_for([clicked]).cpu().numpy()
        if clicked_vec.shape[-1] != claims.vector.shape[0]:
            raise BadRequest("feedback token does not match this application's concept bank")
        # Once per token, across replicas and restarts (the last check: a refused click above
        # does not use the token up).
        if claims.issued_at < self.guard.epoch:
            self._rejected(claims.rollout, mc.FeedbackRejection.UNVOUCHED, claims.version)
            return error(409, "replay", "feedback token was issued before this serving "
                         "cluster's replay guard began (Ray restarted): it cannot be counted")
        first = await asyncio.to_thread(self.guard.first_use, claims.rollout,
                                        token_id(token), claims.expires_at)
        if not first:
            self._rejected(claims.rollout, mc.FeedbackRejection.REPLAY, claims.version)
            return error(409, "replay", "feedback token already used: each prediction's "
                         "feedback counts once")
        if claims.user is not None and not await asyncio.to_thread(
                self.guard.claim_user_slot, claims.rollout, claims.version, claims.user,
                self.user_cap):
            self._rejected(claims.rollout, mc.FeedbackRejection.USER_CAP, claims.version)
            return error(429, "user_cap", f"this user's feedback for {claims.version} is at its "
                         f"cap of {self.user_cap} per hour: further clicks are not counted")
        result = {k: bool(v[0]) for k, v in
                  hits(claims.vector[None], np.asarray(claims.ids)[None], [clicked],
                       clicked_vec).items()}
        v = claims.vector.astype(np.float64)
        c = clicked_vec[0].astype(np.float64)
        denom = float(np.linalg.norm(v) * np.linalg.norm(c))
        cosine = float(v @ c) / denom if denom > 0 else 0.0
        # feedback on a pinned answer is QA's, not a user's: counted apart, never judged
        common = tags(claims.rollout, claims.version, claims.lane, False, claims.pinned)
        self.metrics.inc(mc.FEEDBACK, common)
        for key, hit in result.items():
            if hit:  # "hit@5_proxy" -> k="5", kind="proxy"
                k, kind = key.removeprefix("hit@").split("_")
                self.metrics.inc(mc.FEEDBACK_HITS, {**common, mc.LABEL_K: k,
                                                    mc.LABEL_HIT_KIND: kind})
        return JSONResponse({"version": claims.version, "lane": claims.lane,
                             "rollout": claims.rollout, "cosine": cosine, **result})


def build_router(args: dict):
    """Application builder for ``<app>`` (see serve_config.render_applications)."""
    missing = [k for k in ("application", "concept_bank_uri") if not args.get(k)]
    if missing:
        raise ValueError(f"build_router: missing args {missing}")
    return Router.bind(dict(args))


