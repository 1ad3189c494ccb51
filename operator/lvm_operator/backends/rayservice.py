"""The KubeRay serve backend: our applications inside a ``RayService``'s ``spec.serveConfigV2``.

In a cluster KubeRay owns the Ray cluster and pushes ``spec.serveConfigV2`` (a YAML *string*
holding a whole Serve config) to it; the operator only edits that string. The RayService usually
belongs to someone else (a Helm release, a GitOps repo) and may carry other applications, so the
backend parses the YAML, replaces only the applications this rollout owns
(:func:`~lvm_serving.contracts.serve_config.merge_applications`), leaves every other key and
application alone, and re-dumps it deterministically (sorted keys, block style) so that the same
config is always the same string.

When our applications already equal the rendered ones nothing is patched: an unchanged config is
never re-sent, the object's ``resourceVersion`` stays, and KubeRay is not woken up. The patch is a
JSON merge patch that carries the ``resourceVersion`` we read, so a concurrent writer makes the
apiserver answer 409 and we read, merge and try again instead of overwriting them.

What is live is read back from the object: the config from ``spec`` and, when KubeRay has
reported it, each application's status from ``status.activeServiceStatus.applicationStatuses``
(or ``pendingServiceStatus`` during a cluster upgrade). KubeRay does not report replica placement,
so replica counts are the configured ones and node ids are unknown.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import yaml

from lvm_serving.contracts.serve_config import (
    ROUTER_DEPLOYMENT,
    AppSpec,
    is_owned_app,
    merge_applications,
    render_applications,
)

from .errors import (
    BackendConflict,
    BackendError,
    BackendNotFound,
    BackendRejected,
    BackendUnavailable,
    UnexpectedResponse,
)
from .live import (
    overall_status,
    owned_apps,
    router_config_of,
    same_applications,
    target_replicas_of,
    version_of,
)
from .protocol import ApplyResult, ObservedApp, ObservedVersion

log = logging.getLogger(__name__)

GROUP = "ray.io"
VERSION = "v1"
PLURAL = "rayservices"
KIND = "RayService"
CRD_NAME = f"{PLURAL}.{GROUP}"
MERGE_PATCH = "application/merge-patch+json"


def dump_serve_config(config: dict) -> str:
    """The ``serveConfigV2`` string for ``config``: sorted keys, block style, stable."""
    return yaml.safe_dump(config, sort_keys=True, default_flow_style=False, allow_unicode=True,
                          width=1000)


def parse_serve_config(text: str | None, target: str) -> dict:
    """Parse a ``serveConfigV2`` string ('' or absent → empty config)."""
    if not text or not text.strip():
        return {}
    try:
        config = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UnexpectedResponse(f"spec.serveConfigV2 is not valid YAML: {exc}", target) from None
    if config is None:
        return {}
    if not isinstance(config, dict) or not isinstance(config.get("applications", []), list):
        raise UnexpectedResponse(
            "spec.serveConfigV2 is not a Serve config (a mapping with an 'applications' list)",
            target)
    return config


class RayServiceBackend:
    """Patches the rollout's applications into ``RayService/<name>`` in ``namespace``."""

    def __init__(self, name: str, namespace: str, *, api_client: Any = None,
                 conflict_attempts: int = 5) -> None:
        from kubernetes import client

        self.name = name
        self.namespace = namespace
        self.conflict_attempts = max(1, conflict_attempts)
        self._api = client.CustomObjectsApi(api_client)

    @property
    def target(self) -> str:
        return f"{KIND} {self.namespace}/{self.name}"

    def __repr__(self) -> str:
        return f"RayServiceBackend({self.namespace!r}/{self.name!r})"

    # -- kube calls -----------------------------------------------------------------------------

    def _error(self, exc: Exception, doing: str) -> BackendError:
        from kubernetes.client.exceptions import ApiException

        if not isinstance(exc, ApiException):
            return BackendUnavailable(f"{doing} failed: {type(exc).__name__}: {exc}", self.target)
        status = exc.status
        body = _status_body(exc)
        # The apiserver's (or an admission webhook's) text is logged, not repeated: only its
        # StatusReason, a CamelCase word from a fixed Kubernetes set, goes into our message.
        log.warning("%s on %s: HTTP %s: %.2000s", doing, self.target, status,
                    body.get("message") or exc.body or exc.reason or "")
        reason = body.get("reason") if isinstance(body.get("reason"), str) else ""
        message = (f"the apiserver answered {reason}" if re.fullmatch(r"[A-Za-z]{1,40}", reason)
                   else "the apiserver refused it") + " (its message is in the operator's log)"
        if status == 404:
            if body.get("reason") == "NotFound" and (body.get("details") or {}).get("name"):
                return BackendNotFound(
                    f"{doing} failed: {KIND} {self.name!r} not found in namespace "
                    f"{self.namespace!r}; create it (KubeRay) or fix spec.serve.rayService",
                    self.target, status)
            return BackendNotFound(
                f"{doing} failed: the {CRD_NAME} CRD is not installed; install KubeRay's CRDs",
                self.target, status)
        if status == 409:
            return BackendConflict(f"{doing} failed: {message}", self.target, status)
        if status in (401, 403):
            return BackendRejected(
                f"{doing} failed: {message}; the operator needs get and patch on {CRD_NAME}",
                self.target, status)
        if status in (0, None, 429) or status >= 500:
            return BackendUnavailable(f"{doing} failed: {message}", self.target, status)
        return BackendRejected(f"{doing} failed: {message}", self.target, status)

    def get(self) -> dict:
        """The RayService object as the apiserver has it."""
        try:
            return self._api.get_namespaced_custom_object(GROUP, VERSION, self.namespace, PLURAL,
                                                          self.name)
        except Exception as exc:
            raise self._error(exc, "get") from exc

    def _patch(self, body: dict) -> dict:
        try:
            return self._api.patch_namespaced_custom_object(
                GROUP, VERSION, self.namespace, PLURAL, self.name, body,
                _content_type=MERGE_PATCH)
        except Exception as exc:
            raise self._error(exc, "patch") from exc

    def serve_config(self, obj: dict | None = None) -> dict:
        """The parsed ``spec.serveConfigV2`` (of ``obj``, or of a fresh read)."""
        obj = obj if obj is not None else self.get()
        return parse_serve_config((obj.get("spec") or {}).get("serveConfigV2"), self.target)

    # -- writing --------------------------------------------------------------------------------

    def _write(self, application: str, applications: list[dict] | None) -> ApplyResult:
        """Replace our applications by ``applications`` (None: remove them), with retries."""
        names = tuple(a["name"] for a in applications or [])
        for attempt in range(1, self.conflict_attempts + 1):
            obj = self.get()
            config = self.serve_config(obj)
            live = config.get("applications") or []
            ours_live = owned_apps(application, live)
            if applications is None and not ours_live:
                return ApplyResult(False, (), self.target, "no applications of ours to delete")
            if applications is not None and same_applications(ours_live, applications):
                return ApplyResult(False, names, self.target, "serveConfigV2 already matches")
            new_config = {**config,
                          "applications": merge_applications(live, application,
                                                             list(applications or []))}
            text = dump_serve_config(new_config)
            rv = (obj.get("metadata") or {}).get("resourceVersion")
            patch = {"spec": {"serveConfigV2": text}}
            if rv:
                patch["metadata"] = {"resourceVersion": rv}
            try:
                patched = self._patch(patch)
            except BackendConflict:
                if attempt == self.conflict_attempts:
                    raise
                log.info("%s changed while we patched it; reading it again (attempt %d)",
                         self.target, attempt)
                continue
            new_rv = (patched.get("metadata") or {}).get("resourceVersion")
            log.info("serveConfigV2 of %s patched for %s (resourceVersion %s -> %s)",
                     self.target, application, rv, new_rv)
            return ApplyResult(True, names, self.target,
                               f"patched serveConfigV2 (resourceVersion {new_rv})")
        raise AssertionError("unreachable")  # pragma: no cover

    def apply_config(self, application: str, applications: list[dict]) -> ApplyResult:
        """Make ``applications`` our entries in ``serveConfigV2``; everything else stays."""
        foreign = [a["name"] for a in applications if not is_owned_app(application, a["name"])]
        if foreign:
            raise ValueError(f"applications {foreign} are not owned by {application!r}")
        return self._write(application, applications)

    def apply(self, app: AppSpec) -> ApplyResult:
        return self.apply_config(app.application, render_applications(app))

    def delete(self, application: str) -> None:
        self._write(application, None)

    # -- reading --------------------------------------------------------------------------------

    def _app_statuses(self, obj: dict) -> dict[str, dict]:
        status = obj.get("status") or {}
        out: dict[str, dict] = {}
        for key in ("pendingServiceStatus", "activeServiceStatus"):  # active wins
            out.update(((status.get(key) or {}).get("applicationStatuses")) or {})
        return out

    def observe(self, application: str) -> ObservedApp:
        obj = self.get()
        apps = {a["name"]: a for a in owned_apps(application,
                                                 self.serve_config(obj).get("applications") or [])}
        reported = self._app_statuses(obj)
        statuses = {}
        for name in apps:
            st = reported.get(name) or {}
            statuses[name] = (st.get("status"),
                              st.get("message") or ("" if st else "not reported by KubeRay yet"))
        status, message = overall_status(statuses)
        versions = {}
        for name, entry in apps.items():
            version = version_of(application, name)
            if version is None:
                continue
            st = reported.get(name) or {}
            versions[version] = ObservedVersion(
                version=version,
                target_replicas=target_replicas_of(entry, version),
                status=st.get("status"),
                message=(st.get("message") or "").strip(),
            )
        return ObservedApp(application=application, status=status, message=message,
                           router=router_config_of(apps.get(application)), versions=versions)

    def verify_applied(self, app: AppSpec) -> bool | None:
        """False if ``spec`` carries another router config; True once KubeRay has reconciled this
        generation and reports the router application RUNNING with a HEALTHY Router deployment;
        otherwise None (KubeRay does not say which user_config the replicas run)."""
        obj = self.get()
        apps = {a["name"]: a for a in self.serve_config(obj).get("applications") or []}
        live = router_config_of(apps.get(app.application))
        if live is None or live.to_dict() != app.router.to_dict():
            return False
        status = obj.get("status") or {}
        generation = (obj.get("metadata") or {}).get("generation")
        observed = status.get("observedGeneration")
        if generation is None or observed is None or observed < generation:
            return None
        st = ((status.get("activeServiceStatus") or {}).get("applicationStatuses") or {}).get(
            app.application) or {}
        router = (st.get("serveDeploymentStatuses") or {}).get(ROUTER_DEPLOYMENT) or {}
        if st.get("status") == "RUNNING" and router.get("status") == "HEALTHY":
            return True
        return None


def _status_body(exc: Any) -> dict:
    try:
        body = json.loads(exc.body or "")
    except (TypeError, ValueError):
        return {}
    return body if isinstance(body, dict) else {}
