"""Pure mappings between the API (pydantic spec/status) and the decision core and Serve config.

The decision core speaks seconds, fractions and plain dataclasses; the CR speaks Go durations,
milliseconds and camelCase. Everything that translates between them lives here, with no I/O, so
each rule has a table test (``tests/unit/test_controller_adapter.py``):

* :func:`plan_for` — spec → :class:`~lvm_operator.decision.Plan` (the numbers the core judges by);
* :func:`state_from_status` / :func:`state_to_status` — the core's ``RolloutState`` ↔
  ``status.decisionState`` (the copy a restarted operator reads back);
* :func:`app_spec_for` — what to serve for a given decision state and serving record
  (weights, shadow, replicas per version, warm old champion, rolled-back candidate);
* :func:`config_hash` — a stable hash of the rendered Serve config, so an unchanged config is not
  sent again.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from lvm_serving.contracts import metrics as mc
from lvm_serving.contracts.serve_config import (
    ROUTER_REQUEST_TIMEOUT_S,
    AppSpec,
    RouterConfig,
    RoutingMode,
    VersionSpec,
    render_applications,
    replicas_for_share,
)

from ..api import DecisionState, HistoryEntry, LVMRolloutSpec, ModelVersion, Serving
from ..api.spec import ChampionScale, UnjudgedLanes
from ..decision import (
    DifferenceTest,
    GuardrailPolicy,
    NoDataAction,
    Phase,
    Plan,
    QualityPolicy,
    RolloutState,
    Step,
    Thresholds,
)

#: The shortest guardrail window: two scrapes at the local stack's 1 s (increase() needs two
#: samples; a window that caught only one reads as noData and simply grows). Windows are
#: otherwise "since the last judged check" (see GuardrailPolicy).
MIN_GUARDRAIL_WINDOW_S = 2.0


def rollout_key(namespace: str, name: str) -> str:
    """The ``rollout`` metric label and the key of a rollout's observations."""
    return f"{namespace}/{name}"


def _model_identity(mv: ModelVersion | None) -> dict[str, Any] | None:
    if mv is None:  # a champion-only spec
        return None
    return {k: v for k, v in mv.to_k8s().items() if k != "replicas"}  # scaling only


def _digest(essence: dict[str, Any]) -> str:
    text = json.dumps(essence, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def identity(spec: LVMRolloutSpec) -> str:
    """A stable hash of *what is rolled out*: the champion and the candidate, without replica
    bounds. A finished rollout starts again only when this changes (a Git edit of the steps,
    thresholds or intervals of a promoted rollout must not un-promote it)."""
    return _digest({"champion": _model_identity(spec.champion),
                    "candidate": _model_identity(spec.candidate)})


def fingerprint(spec: LVMRolloutSpec) -> str:
    """A stable hash of what defines the experiment: champion, candidate and steps.

    A change of any of these mid-rollout restarts at step 1; threshold, interval or replica
    bound changes do not (they apply from the next check or apply on).
    """
    return _digest({
        "champion": _model_identity(spec.champion),
        "candidate": _model_identity(spec.candidate),
        "steps": [s.to_k8s() for s in spec.steps],
    })


#: A lane's Hit@5 proxy is a proportion; from fewer feedback events than this it is noise
#: (0 hits out of 2 is not "a lane failing completely"), so such lanes are reported, not judged.
LANE_MIN_REQUESTS_FLOOR = 20


def lane_min_requests(min_requests: int) -> int:
    """Evidence one lane needs on both versions before it is compared: an even share of the
    version's minimum over the 16 lanes, and never fewer than ``LANE_MIN_REQUESTS_FLOOR``."""
    return max(LANE_MIN_REQUESTS_FLOOR, math.ceil(min_requests / mc.NUM_LANES))


def plan_for(spec: LVMRolloutSpec, *, paused: bool = False) -> Plan:
    """The decision plan for ``spec``; ``paused`` adds a command-level pause to ``spec.paused``."""
    assert spec.candidate is not None, "a champion-only spec has no plan (see .steady)"
    a = spec.analysis
    q = a.sequential
    judge_test = DifferenceTest(
        rollback_margin=q.rollback_margin, rollback_alpha=q.rollback_alpha,
        pass_margin=q.pass_margin, pass_alpha=q.pass_alpha, rollback_tau=q.rollback_tau,
        pass_tau=q.pass_tau, min_events=q.min_events)
    g_interval = a.guardrails.interval_seconds
    return Plan(
        champion=spec.champion.version,
        candidate=spec.candidate.version,
        steps=tuple(Step(s.weight, s.duration_seconds, s.shadow, s.shadow_percent or 100)
                    for s in spec.steps),
        guardrails=GuardrailPolicy(
            interval_s=g_interval,
            consecutive_breaches=a.guardrails.consecutive_breaches,
            window_s=MIN_GUARDRAIL_WINDOW_S,
            min_requests=a.guardrails.min_samples,
            latency_vs_champion=a.guardrails.latency_vs_champion,
            latency_margin=a.guardrails.latency_margin,
        ),
        quality=QualityPolicy(
            interval_s=a.quality.interval_seconds,
            window_s=a.quality.window_seconds,
            min_requests=a.quality.min_requests,
            lane_min_requests=lane_min_requests(a.quality.min_requests),
            hold_unjudged_lanes=a.quality.unjudged_lanes is UnjudgedLanes.HOLD,
            judge=a.judge,
            test=judge_test,
            lane_test=replace(judge_test, rollback_margin=q.lane_margin,
                              pass_margin=q.lane_margin).split(mc.NUM_LANES),
        ),
        success=Thresholds(
            hit5_proxy_min=a.success.hit5_proxy_min,
            p95_latency_seconds=a.success.p95_latency_ms / 1000.0,
            empty_hit_rate_max=a.success.empty_hit_rate_max,
            error_rate_max=a.success.error_rate_max,
            lane_degradation_max=a.success.lane_degradation_max,
        ),
        rollback=Thresholds(
            hit5_proxy_min=a.rollback.hit5_proxy_min,
            p95_latency_seconds=a.rollback.p95_latency_ms / 1000.0,
            empty_hit_rate_max=a.rollback.empty_hit_rate_max,
            error_rate_max=a.rollback.error_rate_max,
            lane_failure=a.rollback.lane_failure,
        ),
        on_no_data=NoDataAction(a.on_no_data.action.value),
        max_hold_s=a.on_no_data.max_hold_seconds,
        on_inconclusive=a.on_inconclusive.action,
        max_inconclusive_s=a.on_inconclusive.max_hold_seconds,
        paused=spec.paused or paused,
        fingerprint=fingerprint(spec),
        identity=identity(spec),
        gate_required=spec.evaluation is not None and spec.evaluation.gate.enabled,
    )


# --- decision state <-> status ---------------------------------------------------------------


def state_from_status(ds: DecisionState | None) -> RolloutState:
    """The core's state from ``status.decisionState`` (empty status: not started)."""
    if ds is None:
        return RolloutState()
    data = ds.model_dump(mode="json", by_alias=False, exclude_none=True)
    data.setdefault("fingerprint", "")
    for name in ("last_guardrail_reason", "last_quality_reason"):
        data.setdefault(name, "")
    return RolloutState.from_dict(data)


#: The status schema's longest string (the CRD's maxLength for reasons and messages).
MAX_STATUS_TEXT = 1024


def bounded(text: str, limit: int = MAX_STATUS_TEXT) -> str:
    """``text`` cut to ``limit`` characters with an ellipsis: a status write must never fail
    on a long reason (it would leave traffic moved and the status unwritten)."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


def state_to_status(state: RolloutState) -> DecisionState:
    data = {k: v for k, v in state.to_dict().items() if v is not None}
    for name in ("last_guardrail_reason", "last_quality_reason"):
        if isinstance(data.get(name), str):
            data[name] = bounded(data[name])
    return DecisionState.model_validate(data)


def to_rfc3339(t: float | None) -> datetime | None:
    return None if t is None else datetime.fromtimestamp(t, UTC)


def from_rfc3339(t: datetime | None) -> float | None:
    return None if t is None else t.timestamp()


# --- what to serve ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ServedVersion:
    """A version the operator may serve: from the spec or from history (rollback --to)."""

    version: str
    checkpoint: str
    sha256: str
    family: str
    context_length: int
    node_pool: str | None
    min_replicas: int
    max_replicas: int
    context_known: bool = True  # False: a history entry that did not record its context length
    gpus: float = 0.0  # per replica

    @classmethod
    def of(cls, mv: ModelVersion) -> ServedVersion:
        return cls(mv.version, mv.checkpoint, mv.sha256, str(mv.family), mv.context_length,
                   mv.node_pool, mv.replicas.min, mv.replicas.max,
                   gpus=float(mv.replicas.gpus or 0.0))

    @classmethod
    def from_history(cls, h: HistoryEntry, bounds: tuple[int, int],
                     gpus: float = 0.0) -> ServedVersion:
        return cls(h.version, h.checkpoint, h.sha256, str(h.family or "memory_gru"),
                   h.context_length or 1, h.node_pool, bounds[0], bounds[1],
                   context_known=h.context_length is not None, gpus=gpus)

    def deployment(self, share_percent: float, *, floor: int | None = None) -> VersionSpec:
        lo = self.min_replicas if floor is None else floor
        replicas = replicas_for_share(share_percent, (lo, max(lo, self.max_replicas)),
                                      self.max_replicas)
        return VersionSpec(
            version=self.version, checkpoint=self.checkpoint, sha256=self.sha256,
            family=self.family, context_length=self.context_length, node_pool=self.node_pool,
            replicas=replicas, num_gpus=self.gpus,
        )


def known_versions(spec: LVMRolloutSpec, history: list[HistoryEntry] | None
                   ) -> dict[str, ServedVersion]:
    """Every version this rollout can serve, by name (the spec's win over history's)."""
    bounds = (spec.champion.replicas.min, spec.champion.replicas.max)
    gpus = float(spec.champion.replicas.gpus or 0.0)  # a version from history runs as the champ
    out = {h.version: ServedVersion.from_history(h, bounds, gpus) for h in history or []}
    out[spec.champion.version] = ServedVersion.of(spec.champion)
    if spec.candidate is not None:
        out[spec.candidate.version] = ServedVersion.of(spec.candidate)
    return out


def _mirrored_percent(spec: LVMRolloutSpec, state: RolloutState) -> int:
    """The current shadow step's ``shadowPercent`` (100 when unset or the step is unknown)."""
    i = state.current_step
    if i is None or not 0 <= i < len(spec.steps):
        return 100
    return spec.steps[i].mirrored_percent or 100


def app_spec_for(
    spec: LVMRolloutSpec,
    rollout: str,
    state: RolloutState,
    serving: Serving | None,
    history: list[HistoryEntry] | None = None,
    *,
    now: float | None = None,
) -> AppSpec:
    """The Serve application for the decision ``state`` (traffic) and ``serving`` (who is who).

    * rolling out: champion gets ``100 - w`` %, candidate ``w`` % (shadow: the candidate also
      answers copies of the champion's traffic, so it is sized for all of it); the champion
      keeps the replicas for 100% unless ``spec.capacity.champion`` is ``share``;
    * promoted: the new champion only, plus the old champion (no traffic, min replicas) while
      ``serving.retiringUntil`` is in the future;
    * rolled back / aborted: all traffic to the champion at once, the candidate kept deployed at
      its minimum replicas, weight 0, for forensics;
    * ``rollback --to``: ``serving.champion`` (a version from history) takes everything.
    """
    versions = known_versions(spec, history)
    champion = versions[(serving and serving.champion) or spec.champion.version]
    candidate_name = serving.candidate if serving is not None else (
        spec.candidate.version if spec.candidate is not None else None)
    candidate = versions.get(candidate_name) if candidate_name else None
    mode = RoutingMode(spec.routing.mode.value)
    deployments: list[VersionSpec] = []
    router_candidate: str | None = None
    weight = 0
    shadow = False
    mirrored = 0
    if state.phase is Phase.PROMOTED or candidate is None or candidate.version == champion.version:
        deployments.append(champion.deployment(100))
        retiring = serving.retiring if serving is not None else None
        until = from_rfc3339(serving.retiring_until) if serving is not None else None
        if (retiring and retiring in versions and retiring != champion.version
                and (until is None or now is None or now < until)):
            deployments.append(versions[retiring].deployment(0))
    elif state.phase in (Phase.ROLLED_BACK, Phase.FAILED):
        deployments.append(champion.deployment(100))
        deployments.append(candidate.deployment(0, floor=candidate.min_replicas))
    else:
        weight = state.candidate_weight
        shadow = state.shadow
        mirrored = _mirrored_percent(spec, state) if shadow else 0
        router_candidate = candidate.version
        # By default the champion stays sized for all traffic: a rollback lands on capacity.
        share = spec.capacity.champion is ChampionScale.SHARE and not shadow
        deployments.append(champion.deployment(100 - weight if share else 100))
        # Its own weight plus the mirrored part of the champion's share (rounded up).
        deployments.append(candidate.deployment(
            min(100, weight + -(-(100 - weight) * mirrored // 100))))
    routed = [champion, *([candidate] if router_candidate and candidate else [])]
    router = RouterConfig(
        rollout=rollout,
        # the longest context a routed version takes (unknown for an old history entry)
        max_context=max(v.context_length for v in routed)
        if all(v.context_known for v in routed) else None,
        champion=champion.version,
        candidate=router_candidate,
        candidate_weight=weight,
        mode=mode,
        user_key=spec.routing.user_key or "user_id",
        context_threshold=spec.routing.context_threshold,
        shadow=shadow and router_candidate is not None,
        shadow_percent=mirrored or 100,
    )
    timeout_s = spec.routing.request_timeout_seconds
    return AppSpec(
        application=spec.serve.application,
        concept_bank_uri=spec.concept_bank.uri,
        concept_bank_sha256=spec.concept_bank.sha256,
        router=router,
        versions=tuple(sorted(deployments, key=lambda v: v.version)),
        # Only when set: the router's args at the default stay as they were (no redeploy).
        extra_router_args={} if timeout_s == ROUTER_REQUEST_TIMEOUT_S else {
            "request_timeout_s": timeout_s},
    )


def staged(app: AppSpec, ready: set[str]) -> AppSpec | None:
    """``app`` with no traffic to a candidate that is not running yet, or None when nothing
    needs holding back.

    A new version's application takes a while to start (a worker process, torch, the
    checkpoint); requests routed to it meanwhile wait for a replica and time out at the client.
    So the versions are deployed first and the router's weight moves once the candidate is
    observed running (the champion keeps all traffic until then).
    """
    r = app.router
    if r.candidate is None or r.candidate in ready or (r.candidate_weight <= 0 and not r.shadow):
        return None
    return replace(app, router=replace(r, candidate=None, candidate_weight=0, shadow=False))


def config_hash(app: AppSpec) -> str:
    """Stable hash of the rendered Serve config (rendering is deterministic)."""
    text = json.dumps(render_applications(app), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def app_summary(app: AppSpec) -> dict[str, Any]:
    """A short description of an AppSpec for logs and Events."""
    return {
        "champion": app.router.champion,
        "candidate": app.router.candidate,
        "weight": app.router.candidate_weight,
        "shadow": app.router.shadow,
        "replicas": {v.version: v.replicas for v in app.versions},
    }
