"""Choosing a serve backend: :func:`backend_for` from ``spec.serve``, and the operator's factory.

The operator builds backends through :func:`default_backend_factory`, which reads two kinds of
environment knobs here so the controller does not: where the Ray dashboard backend tells Serve to
listen (``LVM_RAY_SERVE_HTTP_HOST``/``_PORT``, local stacks pick free ports), and the test hook
``LVM_SERVE_BACKEND_FACTORY`` (``module:callable``) that swaps in a dry-run or recording backend.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from .errors import BackendConfigError
from .protocol import ServeBackend

if TYPE_CHECKING:
    from lvm_operator.api.spec import Serve

#: ``module:callable`` taking ``(serve_spec, *, namespace, kube_api_client)``: a dry-run or
#: test backend instead of :func:`backend_for`.
BACKEND_FACTORY_ENV = "LVM_SERVE_BACKEND_FACTORY"

SERVE_HTTP_HOST_ENV = "LVM_RAY_SERVE_HTTP_HOST"
SERVE_HTTP_PORT_ENV = "LVM_RAY_SERVE_HTTP_PORT"

#: ``(serve_spec, *, namespace, kube_api_client) -> ServeBackend``.
BackendFactory = Callable[..., ServeBackend]


def backend_for(
    serve_spec: Serve | Mapping[str, Any],
    *,
    kube_api_client: Any = None,
    namespace: str | None = None,
    dry_run: bool = False,
    **dashboard_options: Any,
) -> ServeBackend:
    """The backend selected by an LVMRollout's ``spec.serve``.

    ``kube_api_client`` (a ``kubernetes.client.ApiClient``) and ``namespace`` (the rollout's) are
    needed for ``rayService``; ``dashboard_options`` go to :class:`.RayDashboardBackend`
    (``http_host``, ``http_port``, ``proxy_location``, ``timeout_s``, ``attempts``).
    ``dry_run`` gives a :class:`.NoopBackend` that records instead of writing.
    """
    from lvm_operator.api.spec import Serve
    from lvm_operator.api.spec import ServeBackend as BackendKind

    spec = serve_spec if isinstance(serve_spec, Serve) else Serve.model_validate(dict(serve_spec))
    if dry_run:
        from .noop import NoopBackend

        return NoopBackend()
    if spec.backend is BackendKind.RAY_DASHBOARD:
        if not spec.url:
            raise BackendConfigError("serve.url is required for backend rayDashboard",
                                     "spec.serve")
        from lvm_operator.api.endpoints import check_endpoint

        problem = check_endpoint(spec.url, "spec.serve.url")  # SSRF: before any connection
        if problem is not None:
            raise BackendConfigError(problem, "spec.serve.url")
        from .ray_dashboard import RayDashboardBackend

        return RayDashboardBackend(spec.url, **dashboard_options)
    if spec.backend is BackendKind.RAY_SERVICE:
        if not spec.ray_service:
            raise BackendConfigError("serve.rayService is required for backend rayService",
                                     "spec.serve")
        if not namespace:
            raise BackendConfigError("the rollout's namespace is required for backend rayService",
                                     "spec.serve")
        from .rayservice import RayServiceBackend

        return RayServiceBackend(spec.ray_service, namespace, api_client=kube_api_client)
    raise BackendConfigError(  # pragma: no cover - the enum is closed
        f"unknown serve backend {spec.backend!r}; allowed: "
        + ", ".join(k.value for k in BackendKind), "spec.serve")


def factory_hook() -> str:
    """The ``LVM_SERVE_BACKEND_FACTORY`` value in effect ("" when unset): part of a cache key."""
    return os.environ.get(BACKEND_FACTORY_ENV, "")


def default_backend_factory() -> BackendFactory:
    """The factory the operator uses: the env hook's callable, else :func:`backend_for` with the
    Serve HTTP host/port options from the environment."""
    hook = factory_hook()
    if hook:
        module, _, attr = hook.partition(":")
        return getattr(importlib.import_module(module), attr)

    options: dict[str, Any] = {}
    if os.environ.get(SERVE_HTTP_HOST_ENV):
        options["http_host"] = os.environ[SERVE_HTTP_HOST_ENV]
    if os.environ.get(SERVE_HTTP_PORT_ENV):
        options["http_port"] = int(os.environ[SERVE_HTTP_PORT_ENV])

    def make(serve_spec: Any, *, namespace: str, kube_api_client: Any) -> ServeBackend:
        return backend_for(serve_spec, namespace=namespace, kube_api_client=kube_api_client,
                           **options)

    return make
