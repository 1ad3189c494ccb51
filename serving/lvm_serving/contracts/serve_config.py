"""The Serve-config contract between the operator and the serving application: defined once, here.

The operator describes what should run (:class:`AppSpec`); :func:`render_applications` turns it
into Ray Serve config ``applications`` entries, identical for both serve backends (the Ray
dashboard's ``PUT /api/serve/applications/`` and KubeRay's ``RayService.spec.serveConfigV2``).

Layout, chosen so that the frequent changes are lightweight in Ray Serve:

* one **router** application named ``<application>`` at route ``/<application>``; its deployment
  ``Router`` reads weights, routing mode and shadow from ``user_config`` (:class:`RouterConfig`),
  so a weight change is a ``reconfigure()`` call — no restart, no dropped request;
* one **version** application per model version, named ``<application>--<version>``, holding one
  deployment named after the version, pinned to its node pool through a Ray custom resource and
  with its own replica count. Adding or removing a version adds or removes an application and
  leaves the router and the other version untouched; the router finds versions by name.

Rendering is deterministic (sorted, no timestamps) so an unchanged spec renders byte-identical
config and a backend can skip re-sending it. This module is stdlib-only so the operator can import
it without Ray or torch.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

ROUTER_DEPLOYMENT = "Router"
ROUTER_IMPORT_PATH = "lvm_serving.app:build_router"
VERSION_IMPORT_PATH = "lvm_serving.app:build_version"
VERSION_APP_SEPARATOR = "--"
#: Set to 1 on the serving processes to honour a checkpoint's FAULT INJECTION switches (the
#: local test and demo stack does); unset, such a checkpoint is refused when it loads.
ALLOW_FAULT_INJECTION_ENV = "LVM_ALLOW_FAULT_INJECTION"
#: URI schemes of artifacts (checkpoints, concept banks, eval sets) the serving side fetches from
#: object storage (lvm_serving.remote); besides them: file:///path and absolute paths.
REMOTE_URI_SCHEMES = ("s3", "gs", "https")
#: The most feedback events one user (the pseudonym its tokens carry) counts per version and
#: hour; more are answered 429 and not counted (router arg ``feedback_per_user_per_hour``).
FEEDBACK_PER_USER_PER_HOUR = 60
#: How long the router waits for a version's answer unless its args say otherwise
#: (``request_timeout_s``, from ``spec.routing.requestTimeout``).
ROUTER_REQUEST_TIMEOUT_S = 30.0
#: A replica asks for this much of its node pool's Ray custom resource.
POOL_RESOURCE_PER_REPLICA = 1


class RoutingMode(StrEnum):
    WEIGHTED = "weighted"
    USER_HASH = "userHash"
    CONTEXT_LENGTH = "contextLength"


@dataclass(frozen=True)
class RouterConfig:
    """The router's ``user_config``: everything that changes during a rollout."""

    rollout: str  # "namespace/name": the ``rollout`` metric label
    champion: str
    candidate: str | None = None  # None: every request goes to the champion
    candidate_weight: int = 0  # percent of eligible traffic, 0..100
    mode: RoutingMode = RoutingMode.WEIGHTED
    user_key: str = "user_id"  # request field hashed in userHash mode
    context_threshold: int | None = None  # contextLength mode: longer contexts are eligible
    shadow: bool = False  # the candidate also answers champion traffic; the client never sees it
    shadow_percent: int = 100  # with shadow: the percent of champion traffic mirrored, 1..100
    #: The longest context (vectors) a routed version takes; a longer one, and a body too big to
    #: hold it, is refused before parsing (None: only the absolute body cap).
    max_context: int | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.shadow_percent <= 100:
            raise ValueError(f"shadow_percent={self.shadow_percent!r} is invalid: must be 1..100")

    def to_dict(self) -> dict:
        out = asdict(self)
        out["mode"] = str(self.mode)
        return out

    @classmethod
    def from_dict(cls, data: dict) -> RouterConfig:
        known = {f for f in cls.__dataclass_fields__}
        unknown = set(data) - known
        if unknown:
            raise ValueError(
                f"unknown router config keys {sorted(unknown)}; known: {sorted(known)}"
            )
        values = dict(data)
        if "mode" in values:
            values["mode"] = RoutingMode(values["mode"])
        return cls(**values)


@dataclass(frozen=True)
class VersionSpec:
    """One model version's deployment."""

    version: str
    checkpoint: str  # file:// URI or absolute path
    sha256: str
    family: str
    context_length: int
    node_pool: str | None = None  # Ray custom resource, e.g. "pool_a100"
    replicas: int = 1
    num_cpus: float = 0.5
    num_gpus: float = 0.0  # per replica; 0: none (Ray then hides the node's GPUs from it)

    def build_args(self, concept_bank_uri: str, concept_bank_sha256: str | None) -> dict:
        return {
            "version": self.version,
            "checkpoint": self.checkpoint,
            "sha256": self.sha256,
            "family": self.family,
            "context_length": self.context_length,
            "concept_bank_uri": concept_bank_uri,
            "concept_bank_sha256": concept_bank_sha256,
        }


@dataclass(frozen=True)
class AppSpec:
    application: str
    concept_bank_uri: str
    router: RouterConfig
    versions: tuple[VersionSpec, ...]
    concept_bank_sha256: str | None = None
    router_replicas: int = 1
    #: Name of the environment variable holding the feedback-token signing key on the Ray nodes.
    feedback_key_env: str = "LVM_FEEDBACK_KEY"
    extra_router_args: dict = field(default_factory=dict)

    def version_names(self) -> list[str]:
        return [v.version for v in self.versions]


def version_app_name(application: str, version: str) -> str:
    return f"{application}{VERSION_APP_SEPARATOR}{version}"


def is_owned_app(application: str, app_name: str) -> bool:
    """Whether a Serve application name belongs to the rollout app ``application``."""
    return app_name == application or app_name.startswith(application + VERSION_APP_SEPARATOR)


def render_applications(spec: AppSpec) -> list[dict]:
    """Serve-config application entries for ``spec``, router first, versions sorted by name."""
    names = spec.version_names()
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate versions in {names}")
    for needed in filter(None, (spec.router.champion, spec.router.candidate)):
        if needed not in names:
            raise ValueError(f"router routes to {needed!r}, which is not among versions {names}")
    router = {
        "name": spec.application,
        "route_prefix": f"/{spec.application}",
        "import_path": ROUTER_IMPORT_PATH,
        "args": {
            # No version list here: the router finds versions by name, and args that change
            # with the versions would make Serve redeploy the router on every version change.
            "application": spec.application,
            "concept_bank_uri": spec.concept_bank_uri,
            "concept_bank_sha256": spec.concept_bank_sha256,
            "feedback_key_env": spec.feedback_key_env,
            **spec.extra_router_args,
        },
        "deployments": [{
            "name": ROUTER_DEPLOYMENT,
            "num_replicas": spec.router_replicas,
            "user_config": spec.router.to_dict(),
        }],
    }
    apps = [router]
    for v in sorted(spec.versions, key=lambda v: v.version):
        actor_options: dict = {"num_cpus": v.num_cpus}
        if v.num_gpus > 0:
            actor_options["num_gpus"] = v.num_gpus
        if v.node_pool:
            actor_options["resources"] = {v.node_pool: POOL_RESOURCE_PER_REPLICA}
        apps.append({
            "name": version_app_name(spec.application, v.version),
            "route_prefix": None,
            "import_path": VERSION_IMPORT_PATH,
            "args": v.build_args(spec.concept_bank_uri, spec.concept_bank_sha256),
            "deployments": [{
                "name": v.version,
                "num_replicas": v.replicas,
                "ray_actor_options": actor_options,
            }],
        })
    return apps


def merge_applications(existing: list[dict], application: str, ours: list[dict]) -> list[dict]:
    """Replace the applications owned by ``application`` in a full Serve config; keep others."""
    kept = [app for app in existing if not is_owned_app(application, app["name"])]
    return sorted([*kept, *ours], key=lambda app: app["name"])


def replicas_for_share(share_percent: float, bounds: tuple[int, int], peak_replicas: int) -> int:
    """Replicas for a version carrying ``share_percent`` of traffic, within ``bounds``.

    ``peak_replicas`` is what 100% of traffic needs; the share scales it (rounded up, so any
    traffic gets at least one replica) and the result is clamped to the spec's {min, max}.
    """
    lo, hi = bounds
    if lo > hi:
        raise ValueError(f"replica bounds min {lo} > max {hi}")
    needed = -(-peak_replicas * max(share_percent, 0.0) // 100)  # ceil without floats
    return int(min(max(needed, lo), hi))
