"""The Ray Serve application: one router (ingress) and one deployment per model version.

The layout and the builders' ``args`` are defined by :mod:`lvm_serving.contracts.serve_config`:

* ``build_router(args)`` — application ``<app>`` at ``/<app>``, deployment ``Router``. Its
  ``user_config`` is a :class:`~lvm_serving.contracts.serve_config.RouterConfig`, applied in
  :meth:`Router.reconfigure` (no restart). It finds versions by name
  (``serve.get_deployment_handle(version, app_name="<app>--<version>")``, looked up lazily and
  cached), so a version application deployed later is found on the first request routed to it.
* ``build_version(args)`` — application ``<app>--<version>``, one deployment named after the
  version, loading the checkpoint (sha256-verified) and the concept bank.

The code: :mod:`lvm_serving.router_app` (the router deployment), :mod:`lvm_serving.version_app`
(the version deployment), :mod:`lvm_serving.serve_common` (metrics and HTTP helpers they share),
:mod:`lvm_serving.router` (the pure routing and request validation). This module is the import
path the serve configs name.

HTTP API (JSON answers; errors are ``{"error": message, "reason": ...}`` with a 4xx/5xx status)::

    POST /<app>/predict   {"context": [[float]*D]*T, "tmd": [16 floats] | "lane": 0..15,
                           "user_id": "...", "k": 10}
        ("context_b64": base64 of little-endian float32 [T, D] may replace "context": the same
        request without JSON number parsing, which dominates latency at 768-d x 1000)
        200 {"vector": [D floats], "concepts": [{"id", "similarity", "lane", "text"?}] (k),
             "version", "lane", "rollout", "feedback_token"}
    POST /<app>/predict   content-type: application/octet-stream; body: little-endian float32
                          [T, D] (row-major, nothing else); headers x-lvm-lane: 0..15 or
                          x-lvm-tmd: 16 comma-separated numbers, x-lvm-k, x-lvm-user
        (the binary request: no JSON, no base64; the context reaches the version as a view
        of the body's bytes)
        200 as above, with "vector_b64" (base64 little-endian float32 [D]) for "vector"
    ?vector=0 (or header x-lvm-vector: 0) on either form: the answer omits the vector
    Every predict answer has a server-timing header: ms per stage (see contracts.metrics.Stage)
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
timeout, exception when a version cannot be reached), feedback and the shadow comparisons. Both
record ``lvm_stage_latency_seconds`` per stage of the path.
"""

from __future__ import annotations

from lvm_serving.router_app import Router, build_router
from lvm_serving.version_app import VersionModel, build_version

__all__ = ["Router", "VersionModel", "build_router", "build_version"]
