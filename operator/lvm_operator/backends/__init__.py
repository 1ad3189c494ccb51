"""Serve backends: one small protocol for "make this Serve application live", one module each.

The operator decides *what* should run (an :class:`~lvm_serving.contracts.serve_config.AppSpec`); a
backend decides *where* it is written:

* :mod:`.ray_dashboard` — the Ray dashboard's REST API (``PUT /api/serve/applications/``), for
  the local stack and plain VMs;
* :mod:`.rayservice` — a KubeRay ``RayService``'s ``spec.serveConfigV2``, inside a cluster;
* :mod:`.noop` — records what it would apply, for dry runs and unit tests.

Every backend renders with :func:`~lvm_serving.contracts.serve_config.render_applications` (so both
real backends write byte-identical application entries), touches only the applications owned by the
rollout (``<app>`` and ``<app>--<version>``), keeps everyone else's, and sends nothing when the
live config of our applications already equals the rendered one: reconciling every few seconds must
not re-send a config (a PUT or a patch is never free, and an unchanged RayService must keep its
``resourceVersion``).

The calls are synchronous (httpx, the kubernetes client); from an async Kopf handler run them with
``await asyncio.to_thread(backend.apply, app)``. Errors form one flat set (:mod:`.errors`);
each message names the URL or object and, for HTTP answers, the status code.

The modules: :mod:`.protocol` (the protocol and what a backend reports), :mod:`.errors`,
:mod:`.live` (pure helpers over a live config), :mod:`.factory` (choosing a backend); this package
re-exports them.
"""

from .errors import (
    BackendConfigError,
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendRejected,
    BackendUnavailable,
    UnexpectedResponse,
)
from .factory import backend_for
from .live import (
    overall_status,
    owned_apps,
    router_config_of,
    same_applications,
    target_replicas_of,
    version_of,
)
from .protocol import ApplyResult, AppStatus, ObservedApp, ObservedVersion, ServeBackend

__all__ = [
    "AppStatus",
    "ApplyResult",
    "BackendConfigError",
    "BackendConflict",
    "BackendError",
    "BackendNotFound",
    "BackendRejected",
    "BackendUnavailable",
    "ObservedApp",
    "ObservedVersion",
    "ServeBackend",
    "UnexpectedResponse",
    "backend_for",
    "overall_status",
    "owned_apps",
    "router_config_of",
    "same_applications",
    "target_replicas_of",
    "version_of",
]
