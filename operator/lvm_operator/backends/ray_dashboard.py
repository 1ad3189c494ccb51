"""The Ray-dashboard serve backend: ``GET``/``PUT {url}/api/serve/applications/``.

For the local stack and plain VMs, where there is no KubeRay. The REST API is declarative and
  *whole-config*: a PUT replaces every application on the cluster, and any application missing from
  it is deleted. So every write is read-modify-write: GET the live config, replace only the
  applications this rollout owns (:func:`~lvm_serving.contracts.serve_config.merge_applications`),
  keep the others exactly as Ray reports them (``deployed_app_config``), and PUT the result.

``proxy_location`` and ``http_options`` are sent as configured on the backend (HeadOnly by
default: on the local stack both Ray nodes share one host, so only one proxy can bind the port).
Ray applies them when Serve starts and ignores later changes, so they never make a config
"changed" on their own: only our applications decide whether anything is sent.

Transport failures and 5xx answers are retried (tenacity, exponential back-off) and then raised
as :class:`~.BackendUnavailable`; a 4xx is the config's fault and raised at once as
:class:`~.BackendRejected`. Neither quotes Ray's answer: whatever answers at ``serve.url`` is not
ours, and an error message reaches status and Events, which anyone who can read the rollout
sees. The answer is logged (bounded) for the operator's admin instead.
"""

from __future__ import annotations

import logging
from typing import Any

import httpx
from tenacity import (
    retry,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential,
)

from lvm_serving.contracts.serve_config import (
    ROUTER_DEPLOYMENT,
    AppSpec,
    is_owned_app,
    merge_applications,
    render_applications,
)

from .errors import BackendConflict, BackendRejected, BackendUnavailable, UnexpectedResponse
from .live import (
    overall_status,
    router_config_of,
    same_applications,
    target_replicas_of,
    version_of,
)
from .protocol import ApplyResult, ObservedApp, ObservedVersion

log = logging.getLogger(__name__)

APPLICATIONS_PATH = "/api/serve/applications/"
DEFAULT_PROXY_LOCATION = "HeadOnly"
#: Ray application statuses of an application that is going away (its config may be gone).
_LEAVING = {"DELETING"}


class RayDashboardBackend:
    """Writes the rollout's applications through the Ray dashboard's Serve REST API."""

    def __init__(
        self,
        url: str,
        *,
        http_host: str | None = None,
        http_port: int | None = None,
        proxy_location: str | None = DEFAULT_PROXY_LOCATION,
        timeout_s: float = 30.0,
        attempts: int = 4,
        client: httpx.Client | None = None,
    ) -> None:
        self.url = url.rstrip("/")
        self.endpoint = self.url + APPLICATIONS_PATH
        self.http_host = http_host
        self.http_port = http_port
        self.proxy_location = proxy_location
        self.attempts = max(1, attempts)
        self._client = client or httpx.Client(timeout=timeout_s)
        self._owns_client = client is None

    # -- lifecycle ------------------------------------------------------------------------------

    def close(self) -> None:
        if self._owns_client:
            self._client.close()

    def __enter__(self) -> RayDashboardBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RayDashboardBackend({self.url!r})"

    # -- HTTP -----------------------------------------------------------------------------------

    def _request(self, method: str, body: dict | None = None) -> httpx.Response:
        @retry(
            retry=retry_if_exception_type(BackendUnavailable),
            stop=stop_after_attempt(self.attempts),
            wait=wait_exponential(multiplier=0.25, max=4),
            reraise=True,
        )
        def once() -> httpx.Response:
            try:
                resp = self._client.request(method, self.endpoint, json=body)
            except httpx.HTTPError as exc:
                raise BackendUnavailable(
                    f"{method} failed: {type(exc).__name__}: {exc}", self.endpoint) from exc
            if resp.status_code >= 500:
                _log_answer(method, self.endpoint, resp)
                raise BackendUnavailable(f"{method} failed{_SEE_LOG}", self.endpoint,
                                         resp.status_code)
            if resp.status_code >= 400:
                _log_answer(method, self.endpoint, resp)
                what = ": Ray refused the Serve config" if method == "PUT" else ""
                raise BackendRejected(f"{method} rejected{what}{_SEE_LOG}", self.endpoint,
                                      resp.status_code)
            return resp

        return once()

    def details(self) -> dict:
        """The raw ``GET`` answer (Ray's ``ServeInstanceDetails``)."""
        resp = self._request("GET")
        try:
            body = resp.json()
        except ValueError:
            _log_answer("GET", self.endpoint, resp)
            raise UnexpectedResponse(f"GET answered non-JSON{_SEE_LOG}", self.endpoint,
                                     resp.status_code) from None
        if not isinstance(body, dict) or not isinstance(body.get("applications", {}), dict):
            raise UnexpectedResponse("GET answered without an 'applications' mapping",
                                     self.endpoint, resp.status_code)
        return body

    # -- writing --------------------------------------------------------------------------------

    def _live_configs(self, details: dict) -> dict[str, dict | None]:
        return {name: app.get("deployed_app_config")
                for name, app in (details.get("applications") or {}).items()}

    def _deploy_options(self, details: dict) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.proxy_location:
            out["proxy_location"] = self.proxy_location
        elif details.get("proxy_location"):
            out["proxy_location"] = details["proxy_location"]
        live_http = details.get("http_options") or {}
        host = self.http_host or live_http.get("host")
        port = self.http_port or live_http.get("port")
        http = {k: v for k, v in (("host", host), ("port", port)) if v is not None}
        if http:
            out["http_options"] = http
        return out

    def apply_config(self, application: str, applications: list[dict]) -> ApplyResult:
        """Make ``applications`` the live entries owned by ``application``; keep all others.

        The lower level of :meth:`apply`: any Serve-config application entries, as long as each is
        named ``application`` or ``application--*``. Sends nothing when they are already live.
        """
        foreign = [a["name"] for a in applications if not is_owned_app(application, a["name"])]
        if foreign:
            raise ValueError(f"applications {foreign} are not owned by {application!r}; "
                             f"name them {application!r} or '{application}--<version>'")
        details = self.details()
        live = self._live_configs(details)
        ours_live = [cfg for name, cfg in live.items()
                     if is_owned_app(application, name) and cfg is not None]
        ours_names = {name for name in live if is_owned_app(application, name)}
        names = tuple(a["name"] for a in applications)
        if ours_names == set(names) and same_applications(ours_live, applications):
            return ApplyResult(changed=False, applications=names, target=self.endpoint,
                               detail="live config already matches")
        kept = []
        for name, cfg in sorted(live.items()):
            if is_owned_app(application, name):
                continue
            if cfg is None:
                status = (details["applications"][name] or {}).get("status")
                if status in _LEAVING:
                    continue
                raise BackendConflict(
                    f"application {name!r} has no deployed config (deployed with serve.run?), so "
                    f"a whole-config PUT would delete it; deploy it declaratively or remove it",
                    self.endpoint)
            kept.append(cfg)
        body = {**self._deploy_options(details),
                "applications": merge_applications(kept, application, applications)}
        self._request("PUT", body)
        log.info("serve config for %s sent to %s (%d applications of ours, %d kept)",
                 application, self.endpoint, len(applications), len(kept))
        return ApplyResult(changed=True, applications=names, target=self.endpoint,
                           detail=f"PUT {len(body['applications'])} applications")

    def apply(self, app: AppSpec) -> ApplyResult:
        return self.apply_config(app.application, render_applications(app))

    def delete(self, application: str) -> None:
        """Remove our applications with a PUT of everything else (Serve itself keeps running)."""
        details = self.details()
        live = self._live_configs(details)
        if not any(is_owned_app(application, name) for name in live):
            return
        kept = []
        for name, cfg in sorted(live.items()):
            if is_owned_app(application, name):
                continue
            if cfg is None:
                if (details["applications"][name] or {}).get("status") in _LEAVING:
                    continue
                raise BackendConflict(
                    f"application {name!r} has no deployed config, so a whole-config PUT would "
                    f"delete it too", self.endpoint)
            kept.append(cfg)
        self._request("PUT", {**self._deploy_options(details), "applications": kept})
        log.info("serve applications of %s deleted through %s", application, self.endpoint)

    # -- reading --------------------------------------------------------------------------------

    def observe(self, application: str) -> ObservedApp:
        details = self.details()
        owned = {name: app for name, app in (details.get("applications") or {}).items()
                 if is_owned_app(application, name)}
        # An application Ray is deleting is already gone from the config: not ours to report.
        apps = {name: app for name, app in owned.items() if app.get("status") not in _LEAVING}
        status, message = overall_status(
            {name: (app.get("status"), app.get("message") or "") for name, app in apps.items()})
        leaving = sorted(set(owned) - set(apps))
        if leaving:
            message = "; ".join(filter(None, [message, "being deleted: " + ", ".join(leaving)]))
        router_app = apps.get(application) or {}
        router = router_config_of(router_app.get("deployed_app_config"))
        if router is None:  # fall back to what the deployment itself reports
            dep = (router_app.get("deployments") or {}).get(ROUTER_DEPLOYMENT) or {}
            cfg = dep.get("deployment_config") or {}
            router = router_config_of({"deployments": [{**cfg, "name": ROUTER_DEPLOYMENT}]})
        versions = {}
        for name, app in sorted(apps.items()):
            version = version_of(application, name)
            if version is None:
                continue
            versions[version] = _observed_version(version, app)
        return ObservedApp(application=application, status=status, message=message,
                           router=router, versions=versions)

    def verify_applied(self, app: AppSpec) -> bool | None:
        """Whether the router's ``user_config`` for ``app`` is in effect.

        True when the live Router deployment carries our ``user_config`` and Ray reports it
        HEALTHY (Ray marks it UPDATING until every replica has run ``reconfigure``). False when
        it is not in effect (yet): no router is live, it carries another ``user_config``, or it
        is still updating. None when Ray's answer does not say (the app is still being built and
        lists no Router deployment).
        """
        wanted = app.router.to_dict()
        router_app = (self.details().get("applications") or {}).get(app.application)
        if not router_app or router_app.get("status") in _LEAVING:
            return False
        deployed = router_config_of(router_app.get("deployed_app_config"))
        if deployed is not None and deployed.to_dict() != wanted:
            return False
        dep = (router_app.get("deployments") or {}).get(ROUTER_DEPLOYMENT)
        if not dep:
            return None
        if (dep.get("deployment_config") or {}).get("user_config") != wanted:
            return False
        return dep.get("status") == "HEALTHY"


def _observed_version(version: str, app: dict) -> ObservedVersion:
    deployments = app.get("deployments") or {}
    # The deployment is named after the version; an app of one deployment may name it otherwise.
    dep = deployments.get(version) or (next(iter(deployments.values()))
                                       if len(deployments) == 1 else {})
    replicas = dep.get("replicas")
    running = [r for r in replicas or [] if r.get("state") == "RUNNING"]
    target = dep.get("target_num_replicas")
    if target is None and app.get("deployed_app_config"):
        target = target_replicas_of(app["deployed_app_config"], version)
    message = app.get("message") or dep.get("message") or ""
    return ObservedVersion(
        version=version,
        target_replicas=target,
        running_replicas=len(running) if replicas is not None else None,
        node_ids=tuple(sorted({r["node_id"] for r in running if r.get("node_id")}))
        if replicas is not None else None,
        status=app.get("status"),
        message=message.strip().splitlines()[-1] if message.strip() else "",
    )


_SEE_LOG = " (the answer is in the operator's log)"


def _log_answer(method: str, endpoint: str, resp: httpx.Response, limit: int = 2000) -> None:
    """Log an error answer for the admin; it never goes into an exception's message."""
    text = resp.text.strip()
    log.warning("%s %s answered %s: %s", method, endpoint, resp.status_code,
                text if len(text) <= limit else text[:limit] + "...")

