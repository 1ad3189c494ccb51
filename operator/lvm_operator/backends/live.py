"""Pure helpers over a live Serve config, shared by the backends.

Which applications a rollout owns, whether the live entries already equal the rendered ones (so
an unchanged config is never re-sent), the router's ``user_config`` and replica counts read back,
and the folding of Ray's per-application statuses into one :class:`~.protocol.AppStatus`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from lvm_serving.contracts.serve_config import (
    ROUTER_DEPLOYMENT,
    VERSION_APP_SEPARATOR,
    RouterConfig,
    is_owned_app,
)

from .protocol import AppStatus


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
