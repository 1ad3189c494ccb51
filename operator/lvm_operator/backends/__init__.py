"""Serve backends: one small protocol for "make this Serve application live", one module each.

The operator decides *what* should run (an :class:`~lvm_serving.serve_config.AppSpec`); a backend
decides *where* it is written:

* :mod:`.ray_dashboard` — the Ray dashboard's REST API (``PUT /api/serve/applications/``), for
  the local stack and plain VMs;
* :mod:`.rayservice` — a KubeRay ``RayService``'s ``spec.serveConfigV2``, inside a cluster;
* :mod:`.noop` — records what it would apply, for dry runs and unit tests.

Every backend renders with :func:`~lvm_serving.serve_config.render_applications` (so both real
backends write byte-identical application entries), touches only the applications owned by the
rollout (``<app>`` and ``<app>--<version>``), keeps everyone else's, and sends nothing when the
live config of our applications already equals the rendered one: reconciling every few seconds
must not re-send a config (a PUT or a patch is never free, and an unchanged RayService must keep
its ``resourceVersion``).

The calls are synchronous (httpx, the kubernetes client); from an async Kopf handler run them with
``await asyncio.to_thread(backend.apply, app)``. Errors form one flat set below; each message
names the URL or object and, for HTTP answers, the status code.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from lvm_serving.contracts.serve_config import (
    ROUTER_DEPLOYMENT,
    VERSION_APP_SEPARATOR,
    AppSpec,
    RouterConfig,
    is_owned_app,
)

if TYPE_CHECKING:
    from lvm_operator.api.spec import Serve


# ---------------------------------------------------------------------------------------------
# What a backend reports
# ---------------------------------------------------------------------------------------------


class AppStatus(StrEnum):
    """The rollout's Serve application as a whole (router and version applications together)."""

    RUNNING = "RUNNING"  # every owned application runs
    DEPLOYING = "DEPLOYING"  # at least one is (re)deploying; none failed
    DEPLOY_FAILED = "DEPLOY_FAILED"  # at least one failed to deploy or is unhealthy
    NOT_DEPLOYED = "NOT_DEPLOYED"  # none of our applications is in the live config
    UNKNOWN = "UNKNOWN"  # the backend cannot tell (e.g. KubeRay has not reported yet)


@dataclass(frozen=True)
class ApplyResult:
    """What :meth:`ServeBackend.apply` did.

    ``changed`` is False when the live config already matched and nothing was sent.
    ``applications`` are the application names written (ours, in rendered order).
    """

    changed: bool
    applications: tuple[str, ...]
    target: str  # the URL or object written, for log lines and Events
    detail: str = ""


@dataclass(frozen=True)
class ObservedVersion:
    """One model version's deployment as the backend sees it."""

    version: str
    target_replicas: int | None = None  # what the config asks for
    running_replicas: int | None = None  # None: the backend cannot see replicas
    node_ids: tuple[str, ...] | None = None  # Ray node ids of running replicas, if known
    status: str | None = None  # the backend's raw status for this version's application
    message: str = ""


@dataclass(frozen=True)
class ObservedApp:
    """What is live for one rollout application."""

    application: str
    status: AppStatus
    message: str = ""
    router: RouterConfig | None = None  # the router's user_config, None if absent/unreadable
    versions: Mapping[str, ObservedVersion] = field(default_factory=dict)

    @property
    def deployed(self) -> bool:
        return self.status is not AppStatus.NOT_DEPLOYED

    def version_names(self) -> list[str]:
        return sorted(self.versions)


# ---------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------


@runtime_checkable
class ServeBackend(Protocol):
    """Where a rollout's Serve application is written and read back."""

    def apply(self, app: AppSpec) -> ApplyResult:
        """Make ``render_applications(app)`` live; idempotent; sends nothing when unchanged."""
        ...

    def observe(self, application: str) -> ObservedApp:
        """What is live for ``application`` (router config, versions, replicas, status)."""
        ...

    def verify_applied(self, app: AppSpec) -> bool | None:
        """Whether the router's ``user_config`` of ``app`` is in effect; None: cannot tell yet."""
        ...

    def delete(self, application: str) -> None:
        """Remove the rollout's applications (router and versions); others stay."""
        ...


# ---------------------------------------------------------------------------------------------
# Errors: one flat set
# ---------------------------------------------------------------------------------------------


class BackendError(Exception):
    """Base class: the backend could not do what was asked. ``target`` names the URL/object."""

    def __init__(self, message: str, target: str, status_code: int | None = None) -> None:
        where = f"{target} answered {status_code}" if status_code is not None else target
        super().__init__(f"{message} ({where})")
        self.message = message
        self.target = target
        self.status_code = status_code


class BackendUnavailable(BackendError):
    """Connection refused, timed out, or a 5xx answer (after retries): try again later."""


class BackendRejected(BackendError):
    """The backend refused the config or the request (4xx): retrying the same thing won't help."""


class BackendNotFound(BackendError):
    """The target does not exist: the RayService object, or the RayService CRD itself."""


class BackendConflict(BackendError):
    """Someone else changed the target between our read and our write, again and again; or a
    foreign application cannot be preserved (deployed imperatively, without a config)."""


class UnexpectedResponse(BackendError):
    """The backend answered, but not in the shape we know (a Ray/KubeRay version mismatch?)."""


class BackendConfigError(BackendError):
    """The rollout's ``spec.serve`` cannot select a backend (a missing URL or RayService name)."""


# ---------------------------------------------------------------------------------------------
# Helpers shared by the backends
# ---------------------------------------------------------------------------------------------


def owned_apps(application: str, applications: list[dict]) -> list[dict]:
    """The entries of ``applications`` owned by ``application``, sorted by name."""
    return sorted((a for a in applications if is_owned_app(application, a.get("name", ""))),
                  key=lambda a: a["name"])


def same_applications(live: list[dict], rendered: list[dict]) -> bool:
    """Whether the live entries equal the rendered ones (order-insensitive, exact otherwise).

    Exact on purpose: Ray keeps explicit ``None`` values (``route_prefix: null`` differs from an
    absent ``route_prefix``, which means ``/``), and JSON's ``0`` and ``0.0`` compare equal here.
    """
    def key(a: dict) -> str:
        return a.get("name", "")

    return sorted(live, key=key) == sorted(rendered, key=key)


def version_of(application: str, app_name: str) -> str | None:
    """``v2`` for ``lvm--v2`` when ``application`` is ``lvm``; None for the router or others."""
    prefix = application + VERSION_APP_SEPARATOR
    return app_name[len(prefix):] if app_name.startswith(prefix) else None


def router_config_of(app_entry: Mapping[str, Any] | None) -> RouterConfig | None:
    """The router's ``user_config`` in a Serve-config application entry, or None."""
    if not app_entry:
        return None
    for deployment in app_entry.get("deployments") or []:
        if deployment.get("name") == ROUTER_DEPLOYMENT and deployment.get("user_config"):
            try:
                return RouterConfig.from_dict(deployment["user_config"])
            except (TypeError, ValueError):
                return None
    return None


def target_replicas_of(app_entry: Mapping[str, Any], deployment_name: str) -> int | None:
    for deployment in app_entry.get("deployments") or []:
        if deployment.get("name") == deployment_name:
            replicas = deployment.get("num_replicas")
            return replicas if isinstance(replicas, int) else None
    return None


#: Ray Serve's application statuses mapped onto ours.
_RAY_STATUS = {
    "RUNNING": AppStatus.RUNNING,
    "DEPLOYING": AppStatus.DEPLOYING,
    "NOT_STARTED": AppStatus.DEPLOYING,
    "DELETING": AppStatus.DEPLOYING,
    "DEPLOY_FAILED": AppStatus.DEPLOY_FAILED,
    "UNHEALTHY": AppStatus.DEPLOY_FAILED,
}


def overall_status(statuses: Mapping[str, tuple[str | None, str]]) -> tuple[AppStatus, str]:
    """Fold per-application Ray statuses ``{name: (status, message)}`` into one, with a message.

    The worst wins: a failed application makes the whole rollout app failed; an unknown one makes
    it unknown unless something failed; otherwise deploying beats running.
    """
    if not statuses:
        return AppStatus.NOT_DEPLOYED, "no application of this rollout is deployed"
    mapped = {name: _RAY_STATUS.get(str(s or "").upper(), AppStatus.UNKNOWN)
              for name, (s, _) in statuses.items()}
    for worst in (AppStatus.DEPLOY_FAILED, AppStatus.UNKNOWN, AppStatus.DEPLOYING):
        bad = sorted(name for name, status in mapped.items() if status is worst)
        if bad:
            parts = []
            for name in bad:
                raw, message = statuses[name]
                first_line = _last_line(message)
                parts.append(f"{name}: {raw or 'no status'}" + (f": {first_line}"
                                                                 if first_line else ""))
            return worst, "; ".join(parts)
    return AppStatus.RUNNING, ""


def _last_line(message: str | None, limit: int = 300) -> str:
    """The informative line of a Ray message (tracebacks end with the exception)."""
    lines = [line.strip() for line in (message or "").strip().splitlines() if line.strip()]
    if not lines:
        return ""
    line = lines[-1]
    return line if len(line) <= limit else line[: limit - 3] + "..."


# ---------------------------------------------------------------------------------------------
# Choosing a backend
# ---------------------------------------------------------------------------------------------


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
