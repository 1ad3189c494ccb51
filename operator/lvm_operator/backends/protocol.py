"""What a serve backend is: the protocol the controller drives, and the plain data it reports.

The controller holds a backend by this type only (:class:`ServeBackend`): it applies an
:class:`~lvm_serving.contracts.serve_config.AppSpec`, verifies the router config is in effect, and
observes what is live (:class:`ObservedApp`, from which readiness will be built). Nothing here does
I/O, so the pure tick may import these types."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from lvm_serving.contracts.serve_config import AppSpec, RouterConfig


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
