"""A dry-run serve backend: records what it would apply and deploys nothing.

For ``--dry-run`` operation and for unit tests of the code that drives a backend. It behaves like
the real backends where that matters to a caller — it renders with
:func:`~lvm_serving.contracts.serve_config.render_applications`, keeps other applications, reports
``changed=False`` for an unchanged config, and :meth:`observe` reads back what it recorded — but
nothing leaves the process. Every write that would have been sent is appended to :attr:`sent`.
"""

from __future__ import annotations

import copy
import logging

from lvm_serving.contracts.serve_config import (
    AppSpec,
    is_owned_app,
    merge_applications,
    render_applications,
)

from .live import owned_apps, router_config_of, same_applications, target_replicas_of, version_of
from .protocol import ApplyResult, AppStatus, ObservedApp, ObservedVersion

log = logging.getLogger(__name__)

TARGET = "noop (dry run)"


class NoopBackend:
    """Keeps a would-be Serve config in memory.

    ``applications`` is the whole would-be config (other rollouts' entries included);
    ``sent`` lists every config that a real backend would have written, oldest first;
    ``status`` is what :meth:`observe` reports for deployed applications.
    """

    def __init__(self, applications: list[dict] | None = None,
                 status: AppStatus = AppStatus.RUNNING) -> None:
        self.applications: list[dict] = copy.deepcopy(applications or [])
        self.sent: list[list[dict]] = []
        self.status = status

    def __repr__(self) -> str:
        return f"NoopBackend({len(self.applications)} applications)"

    def apply_config(self, application: str, applications: list[dict]) -> ApplyResult:
        foreign = [a["name"] for a in applications if not is_owned_app(application, a["name"])]
        if foreign:
            raise ValueError(f"applications {foreign} are not owned by {application!r}")
        names = tuple(a["name"] for a in applications)
        if same_applications(owned_apps(application, self.applications), applications):
            return ApplyResult(False, names, TARGET, "would-be config already matches")
        self.applications = merge_applications(self.applications, application,
                                               copy.deepcopy(applications))
        self.sent.append(copy.deepcopy(self.applications))
        log.info("dry run: would apply %d applications for %s", len(applications), application)
        return ApplyResult(True, names, TARGET, "dry run: recorded, nothing deployed")

    def apply(self, app: AppSpec) -> ApplyResult:
        return self.apply_config(app.application, render_applications(app))

    def delete(self, application: str) -> None:
        if owned_apps(application, self.applications):
            self.applications = merge_applications(self.applications, application, [])
            self.sent.append(copy.deepcopy(self.applications))

    def observe(self, application: str) -> ObservedApp:
        apps = {a["name"]: a for a in owned_apps(application, self.applications)}
        if not apps:
            return ObservedApp(application, AppStatus.NOT_DEPLOYED,
                               "dry run: no application of this rollout recorded")
        versions = {}
        for name, entry in apps.items():
            version = version_of(application, name)
            if version is not None:
                versions[version] = ObservedVersion(
                    version=version, target_replicas=target_replicas_of(entry, version),
                    status=str(self.status))
        return ObservedApp(application, self.status, "dry run (noop backend): nothing deployed",
                           router=router_config_of(apps.get(application)), versions=versions)

    def verify_applied(self, app: AppSpec) -> bool | None:
        live = router_config_of(next((a for a in self.applications
                                      if a["name"] == app.application), None))
        return live is not None and live.to_dict() == app.router.to_dict()


def dry_run_factory(serve_spec, *, namespace=None, kube_api_client=None) -> NoopBackend:
    """A DRY-RUN backend factory for ``LVM_SERVE_BACKEND_FACTORY``: every rollout records its
    Serve config instead of applying it (scale benchmarks, dry runs)."""
    return NoopBackend()
