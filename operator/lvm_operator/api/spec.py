"""The desired state of an LVMRollout: what to roll out, how fast, and what counts as healthy.

Every constraint here is enforced twice from one declaration: pydantic validates it in Python and
:mod:`lvm_operator.api.crd` turns the same field constraints and :class:`~.base.Rule` objects into
the CRD's OpenAPI schema and CEL rules. Defaults live only here too; the CRD carries them as
structural-schema ``default`` values, so the apiserver fills them in and ``kubectl get -o yaml``
shows them.

Why one module of some 700 lines: it is the CRD's spec schema top to bottom, in the order
``kubectl explain`` shows it; each section is a few small models whose cross-field rules need
the others beside them, and the generator (:mod:`.crd`) walks them from :class:`LVMRolloutSpec`.
"""

from __future__ import annotations

from enum import StrEnum
from itertools import pairwise
from typing import Annotated, Any

from pydantic import Field, StringConstraints

from lvm_serving.contracts.serve_config import REMOTE_URI_SCHEMES

from ..decision.model import InconclusiveAction, Judge
from .base import ApiModel, Bool, Float, Int, Rule
from .durations import (
    DURATION_MAX_LENGTH,
    DURATION_PATTERN,
    duration_seconds,
    is_positive_duration,
)

# ---------------------------------------------------------------------------------------------
# Scalar types
# ---------------------------------------------------------------------------------------------

#: A DNS-1123 label: lower-case alphanumerics and '-', at most 63 characters.
DNS_LABEL_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
#: file:///abs/path, an absolute path on a mounted volume, or object storage (REMOTE_URI_SCHEMES).
URI_PATTERN = (r"^(file:///|s3://[a-z0-9][-a-z0-9.]*[a-z0-9]/|gs://[a-z0-9][-a-z0-9._]*[a-z0-9]/"
               r"|https://[^\s/@]+/|/)[^\s]+$")
#: The prefixes of artifacts fetched from object storage (serving's contract), and the same test
#: in CEL: such an artifact's sha256 is required.
_REMOTE_PREFIXES = tuple(f"{scheme}://" for scheme in REMOTE_URI_SCHEMES)
_REMOTE_CEL = " || ".join(f"self.uri.startsWith('{p}')" for p in _REMOTE_PREFIXES)


def _is_remote(uri: str) -> bool:
    return uri.startswith(_REMOTE_PREFIXES)


def _remote_needs_sha256(what: str) -> Rule:
    return Rule(
        cel=f"!({_REMOTE_CEL}) || has(self.sha256)",
        message=f"{what}.sha256 is required when {what}.uri is in object storage (s3://, gs://, "
                "https://): the node cache is keyed by it; put the digest sha256sum prints",
        check=lambda v: not _is_remote(v.uri) or v.sha256 is not None,
        field_path=".sha256", reason="FieldValueRequired")
#: http(s)://host[:port][/path]; no userinfo (user:password@), which would end up in logs.
HTTP_URL_PATTERN = r"^https?://[^\s/@]+(/[^\s]*)?$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
#: A Kubernetes label value / Ray resource name that is safe everywhere we use it.
NAME_PATTERN = r"^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$"
#: A request field name, e.g. user_id.
KEY_PATTERN = r"^[A-Za-z_][-A-Za-z0-9_.]*$"

MAX_STEPS = 20

VersionName = Annotated[
    str, StringConstraints(min_length=1, max_length=63, pattern=DNS_LABEL_PATTERN)
]
Uri = Annotated[str, StringConstraints(min_length=2, max_length=1024, pattern=URI_PATTERN)]
HttpUrl = Annotated[str, StringConstraints(min_length=8, max_length=2048, pattern=HTTP_URL_PATTERN)]
Sha256 = Annotated[str, StringConstraints(min_length=64, max_length=64, pattern=SHA256_PATTERN)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=NAME_PATTERN)]

#: A Go-style duration, zero allowed.
Duration = Annotated[
    str,
    StringConstraints(min_length=2, max_length=DURATION_MAX_LENGTH, pattern=DURATION_PATTERN),
]
#: A Go-style duration above zero (intervals, windows, deadlines).
PositiveDuration = Annotated[
    Duration,
    Rule(
        cel="self.matches('[1-9]')",
        message="must be a positive duration such as 30s, 5m or 1h30m, not zero",
        check=is_positive_duration,
    ),
]
Fraction = Annotated[Float, Field(ge=0, le=1, allow_inf_nan=False)]
Milliseconds = Annotated[Float, Field(gt=0, le=3_600_000, allow_inf_nan=False)]

_DURATION_HELP = (
    "A Go-style duration: numbers with units ns, us, ms, s, m, h, e.g. 30s, 168h, 1h30m."
)


def _nested(model: type[ApiModel], description: str) -> Any:
    """A nested object that defaults to its own defaults, in pydantic and in the CRD.

    The CRD's default is the whole defaulted object rather than ``{}``: the apiserver checks a
    default against the CEL rules as written, without applying the nested defaults first.
    Explicitly given parts of the object still get their own fields' defaults.
    """
    default = model().model_dump(mode="json", by_alias=True, exclude_none=True)
    return Field(
        default_factory=model, description=description, json_schema_extra={"default": default}
    )


# ---------------------------------------------------------------------------------------------
# Model versions
# ---------------------------------------------------------------------------------------------


class ModelFamily(StrEnum):
    """The LVM architectures the serving side can load (see the seed plan)."""

    MEMORY_GRU = "memory_gru"
    HIERARCHICAL_GRU = "hierarchical_gru"
    TMD_MOE = "tmd_moe"
    SEED_HIERARCHICAL_GRU = "seed_hierarchical_gru"  # the seed's 10 x 10 chunks: exactly 100


#: Families that read a fixed number of context vectors (the seed's hierarchical GRU reshapes
#: its context into 10 chunks of 10).
FIXED_CONTEXT_LENGTH = {ModelFamily.SEED_HIERARCHICAL_GRU: 100}


class ReplicaBounds(ApiModel):
    """Replica bounds of one model version's Serve deployment; replicas follow its traffic share."""

    min: Int = Field(
        1, ge=0, le=1000, description="Fewest replicas (0 lets an idle version scale to zero)."
    )
    max: Int = Field(4, ge=1, le=1000, description="Most replicas.")
    gpus: Float | None = Field(
        None, ge=0, le=8,
        description=(
            "GPUs per replica (Ray's num_gpus; a fraction shares a GPU, e.g. 0.125 puts 8 "
            "replicas on one). Unset or 0: the replica gets no GPU and the model runs on CPU "
            "(Ray hides the node's GPUs from a replica that did not ask for one)."
        ),
    )

    cel_rules = (
        Rule(
            cel="self.min <= self.max",
            message="replicas.min must be <= replicas.max",
            check=lambda r: r.min <= r.max,
            field_path=".min",
        ),
    )


class ModelVersion(ApiModel):
    """One model version: a checkpoint and how to serve it. Becomes one Ray Serve deployment."""

    version: VersionName = Field(
        description=(
            "Version name, a DNS-1123 label (lower-case letters, digits, '-'; at most 63). "
            "It names the Ray Serve deployment and the `version` label on every metric."
        )
    )
    checkpoint: Uri = Field(
        description=(
            "Where the weights are: file:///path or an absolute path on a volume mounted on the "
            "serving nodes, or s3://bucket/key (AWS_ENDPOINT_URL for S3-compatible stores), "
            "gs://bucket/key, https://host/path, fetched once per node into a cache keyed by "
            "sha256."
        )
    )
    sha256: Sha256 = Field(
        description="SHA-256 of the checkpoint file (64 lower-case hex digits); verified on load."
    )
    family: ModelFamily = Field(
        description=(
            "Model architecture: memory_gru, hierarchical_gru (the plan's 5 x 200 chunks), "
            "tmd_moe or seed_hierarchical_gru (the seed's 10 x 10 chunks, contextLength 100)."
        )
    )
    context_length: Int = Field(
        ge=1,
        le=100_000,
        description="Number of context vectors the model reads per request (100, 500, 1000, ...).",
    )
    node_pool: Name | None = Field(
        None,
        description=(
            "Node pool (GPU class) to place the deployment on, e.g. a10 or a100: a Ray custom "
            "resource / node label. Unset: anywhere."
        ),
    )
    replicas: ReplicaBounds = _nested(ReplicaBounds, "Replica bounds {min, max}.")

    cel_rules = (
        Rule(
            cel="self.family != 'seed_hierarchical_gru' || self.contextLength == 100",
            message="family seed_hierarchical_gru reads exactly 100 context vectors (10 chunks "
                    "of 10): set contextLength to 100, or use hierarchical_gru for longer "
                    "contexts",
            check=lambda v: FIXED_CONTEXT_LENGTH.get(v.family, v.context_length)
            == v.context_length,
            field_path=".contextLength",
        ),
    )


class ConceptBank(ApiModel):
    """The concept vectors (ids, lanes) retrieval searches; shared by both versions."""

    uri: Uri = Field(
        description=(
            "Location of the concept bank: file:///path, an absolute path, s3://bucket/key, "
            "gs://bucket/key or https://host/path."
        )
    )
    sha256: Sha256 = Field(
        description="SHA-256 of the concept bank file, verified on load by every replica (an "
                    "unpinned bank could differ between replicas and between versions)."
    )


# ---------------------------------------------------------------------------------------------
# Routing and steps
# ---------------------------------------------------------------------------------------------


class RoutingMode(StrEnum):
    """How the router picks a version per request."""

    WEIGHTED = "weighted"
    USER_HASH = "userHash"
    CONTEXT_LENGTH = "contextLength"


class Routing(ApiModel):
    """How requests are split between champion and candidate."""

    mode: RoutingMode = Field(
        RoutingMode.WEIGHTED,
        description=(
            "weighted: each request goes to the candidate with probability weight/100. "
            "userHash: sticky per user; a hash of the request's userKey field puts a stable "
            "weight% of users on the candidate, and users stay there as the weight grows. "
            "contextLength: by context size, see contextThreshold."
        ),
    )
    user_key: (
        Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=KEY_PATTERN)] | None
    ) = Field(
        None,
        description="Request field that identifies the user (e.g. user_id). Required for userHash.",
    )
    context_threshold: Int | None = Field(
        None,
        ge=1,
        le=1_000_000,
        description=(
            "Required for contextLength. Measured in context vectors, not tokens (the seed's "
            "2000 effective tokens are 100 vectors at about 20 tokens each): requests with at "
            "most this many context vectors stay on the champion; longer ones are eligible for "
            "the candidate, which receives the step's weight% of them."
        ),
    )
    request_timeout: PositiveDuration = Field(
        "30s",
        description=(
            "How long the router waits for a version's answer: past it the request fails with "
            "504 and counts as that version's error (so a candidate whose replicas died is "
            "judged on its errors). Changing it redeploys the router. " + _DURATION_HELP
        ),
    )

    @property
    def request_timeout_seconds(self) -> float:
        return duration_seconds(self.request_timeout)

    cel_rules = (
        Rule(
            cel="self.mode != 'userHash' || has(self.userKey)",
            message="routing.userKey is required when routing.mode is userHash",
            check=lambda r: r.mode != RoutingMode.USER_HASH or r.user_key is not None,
            field_path=".userKey",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="self.mode != 'contextLength' || has(self.contextThreshold)",
            message="routing.contextThreshold is required when routing.mode is contextLength",
            check=lambda r: r.mode != RoutingMode.CONTEXT_LENGTH or r.context_threshold is not None,
            field_path=".contextThreshold",
            reason="FieldValueRequired",
        ),
    )


class Step(ApiModel):
    """One step of the rollout: a candidate weight held for a dwell time."""

    weight: Int = Field(
        gt=0,
        le=100,
        description="Percent of traffic for the candidate during this step, in (0, 100].",
    )
    duration: Duration = Field(
        description=(
            "Dwell time before the next step (or promotion after the last), independent of how "
            "often analysis runs. " + _DURATION_HELP
        )
    )
    shadow: Bool = Field(
        False,
        description=(
            "Shadow traffic: the candidate also answers the champion's requests; clients get "
            "the champion's answer and both are measured."
        ),
    )
    shadow_percent: Int | None = Field(
        None,
        ge=1,
        le=100,
        description=(
            "With shadow: the percent of the champion's requests mirrored to the candidate "
            "(default 100). 25 sizes the candidate for a quarter of the champion's traffic "
            "(plus its own weight) instead of all of it."
        ),
    )

    cel_rules = (
        Rule(
            cel="!has(self.shadowPercent) || (has(self.shadow) && self.shadow)",
            message="steps[].shadowPercent needs shadow: true on the same step (it is the share "
                    "of the champion's traffic mirrored to the candidate)",
            check=lambda s: s.shadow_percent is None or s.shadow,
            field_path=".shadowPercent",
        ),
    )

    @property
    def mirrored_percent(self) -> int:
        """Percent of the champion's requests the candidate also answers (0 without shadow)."""
        return (self.shadow_percent or 100) if self.shadow else 0

    @property
    def duration_seconds(self) -> float:
        return duration_seconds(self.duration)


def _strictly_increasing(steps: list[Step]) -> bool:
    return all(a.weight < b.weight for a, b in pairwise(steps))


Steps = Annotated[
    list[Step],
    Field(min_length=1, max_length=MAX_STEPS),
    Rule(
        cel=(
            "!self.all(s, has(s.weight)) || (self.map(s, s.weight).isSorted() && "
            "self.all(s, self.exists_one(t, t.weight == s.weight)))"
        ),
        message="steps[].weight must be strictly increasing from one step to the next",
        check=_strictly_increasing,
    ),
    Rule(
        cel=(
            "self.size() == 0 || !has(self[self.size() - 1].weight) || "
            "self[self.size() - 1].weight == 100"
        ),
        message="the last step's weight must be 100 (the candidate ends with all the traffic)",
        check=lambda steps: not steps or steps[-1].weight == 100,
    ),
]


# ---------------------------------------------------------------------------------------------
# Analysis
# ---------------------------------------------------------------------------------------------


class Guardrails(ApiModel):
    """Fast checks (error rate incl. NaN/Inf, P95 latency, empty hits): the circuit breaker."""

    interval: PositiveDuration = Field("30s", description="How often to check. " + _DURATION_HELP)
    consecutive_breaches: Int = Field(
        2, ge=1, le=100,
        description=(
            "Rollback after this many breaching checks in a row. Each check judges the "
            "candidate's requests since the previous judged check, so the breaches are separate "
            "windows of evidence."
        ),
    )
    min_samples: Int = Field(
        100, ge=1, le=1_000_000,
        description=(
            "Fewest candidate requests a check judges. With fewer, the check is noData (never a "
            "breach) and the next check's window reaches back to the same start until it holds "
            "this many."
        ),
    )
    latency_vs_champion: Bool = Field(
        True,
        description=(
            "Roll back for latency only when the candidate is also slower than the champion "
            "in the same window (a larger share of its requests above the champion's median or "
            "P95, by latencyMargin, one-sided z >= 2.33). A P95 limit both versions miss is "
            "the environment's: it is reported, not rolled back. false: the P95 limits alone "
            "decide."
        ),
    )
    latency_margin: Annotated[Float, Field(ge=0, lt=1, allow_inf_nan=False)] = Field(
        0.10,
        description=(
            "How much larger the candidate's share of requests above the champion's median "
            "or P95 must be before it counts as slower (0.10 = 10 points, e.g. 60% vs 50%)."
        ),
    )

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)


class UnjudgedLanes(StrEnum):
    HOLD = "hold"
    REPORT = "report"


class Quality(ApiModel):
    """Slow checks on accumulated evidence: Hit@5 proxy and per-lane deltas vs the champion."""

    interval: PositiveDuration = Field("5m", description="How often to judge. " + _DURATION_HELP)
    window: PositiveDuration = Field(
        "1h", description="How far back each judgement looks. " + _DURATION_HELP
    )
    min_requests: Int = Field(
        1000,
        ge=0,
        le=1_000_000_000,
        description="Fewest requests per version in the window before a verdict; fewer is noData.",
    )
    unjudged_lanes: UnjudgedLanes = Field(
        UnjudgedLanes.HOLD,
        description=(
            "A lane that carries candidate traffic but has too little feedback (on either "
            "version) to be compared with the champion's same lane. hold: the quality check is "
            "noData and names the lanes, so the step does not advance until every such lane is "
            "judged (onNoData applies). report: name them, and judge the rest."
        ),
    )

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)

    @property
    def window_seconds(self) -> float:
        return duration_seconds(self.window)


class SuccessCriteria(ApiModel):
    """What the candidate must meet to advance a step and to be promoted (the seed's values)."""

    hit5_proxy_min: Fraction = Field(0.60, description="Lowest acceptable Hit@5 proxy (0..1).")
    p95_latency_ms: Milliseconds = Field(5, description="P95 latency must stay below this, in ms.")
    empty_hit_rate_max: Fraction = Field(
        0.10, description="Highest acceptable share of requests whose best similarity is < 0.4."
    )
    error_rate_max: Fraction = Field(
        0.001, description="Highest acceptable error share (exceptions, NaN/Inf outputs)."
    )
    lane_degradation_max: Fraction = Field(
        0.20,
        description=(
            "Largest relative drop of any lane's Hit@5 proxy versus the champion's same lane "
            "(0.20 = 20% worse)."
        ),
    )


class RollbackTriggers(ApiModel):
    """Any of these rolls the candidate back at once (the seed's values)."""

    hit5_proxy_min: Fraction = Field(0.55, description="Roll back below this Hit@5 proxy (0..1).")
    p95_latency_ms: Milliseconds = Field(10, description="Roll back above this P95 latency, in ms.")
    empty_hit_rate_max: Fraction = Field(0.20, description="Roll back above this empty-hit rate.")
    error_rate_max: Fraction = Field(0.01, description="Roll back above this error rate.")
    lane_failure: Bool = Field(
        True, description="Roll back when any lane fails completely (no hits, or only errors)."
    )


class NoDataAction(StrEnum):
    HOLD = "hold"
    ROLLBACK = "rollback"


class OnNoData(ApiModel):
    """What to do while analysis has no data or errors (never counted as a pass)."""

    action: NoDataAction = Field(
        NoDataAction.HOLD,
        description=(
            "hold: stay on the current step. rollback: like hold, but roll back once maxHold "
            "has passed."
        ),
    )
    max_hold: PositiveDuration = Field(
        "1h",
        description=(
            "Deadline: after this long without data a condition and an Event are raised (and, "
            "with action rollback, the candidate is rolled back). " + _DURATION_HELP
        ),
    )

    @property
    def max_hold_seconds(self) -> float:
        return duration_seconds(self.max_hold)


class OnInconclusive(ApiModel):
    """What to do when, after a step's dwell, checks keep landing between the success criteria
    and the rollback triggers (neither pass nor breach)."""

    action: InconclusiveAction = Field(
        InconclusiveAction.PAUSE,
        description=(
            "pause: pause the rollout for a person (phase Paused, the Progressing condition "
            "and a Warning Event say which checks and by how much; kubectl lvm resume, promote "
            "or abort). rollback: serve the champion (the candidate was not proven good in "
            "time)."
        ),
    )
    max_hold: PositiveDuration = Field(
        "1h",
        description="How long a step may stay inconclusive after its dwell. " + _DURATION_HELP,
    )

    @property
    def max_hold_seconds(self) -> float:
        return duration_seconds(self.max_hold)


class LaneHealth(ApiModel):
    """The seed's daily lane check on production metrics: each lane's Hit@5 proxy against its
    version's overall. Flags go to ``status.laneHealth``, the LanesDegraded condition and the
    operator's metrics. It runs in every phase, also after the rollout finished (the champion
    keeps being watched)."""

    interval: PositiveDuration = Field("24h", description="How often to check. " + _DURATION_HELP)
    window: PositiveDuration = Field(
        "24h", description="How far back each check looks. " + _DURATION_HELP
    )
    max_below_overall: Fraction = Field(
        0.15,
        description=(
            "Flag a lane whose Hit@5 proxy is more than this far (relative) below its version's "
            "overall (0.15 = 15%, the seed's daily check). Also applied to eval-set results."
        ),
    )
    min_feedback: Int = Field(
        100, ge=1, le=1_000_000_000,
        description="Fewest feedback events a lane needs in the window before it is judged.",
    )

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)

    @property
    def window_seconds(self) -> float:
        return duration_seconds(self.window)


_NOT_STRICTER = "rollback thresholds must not be stricter than success thresholds"


Alpha = Annotated[Float, Field(gt=0, le=0.5, allow_inf_nan=False)]
Margin = Annotated[Float, Field(ge=0, le=0.5, allow_inf_nan=False)]
Tau = Annotated[Float, Field(gt=0, le=1, allow_inf_nan=False)]


class SequentialJudge(ApiModel):
    """The sequential judge's margins and error rates (``judge: sequential``): Hit@5 of the
    candidate against the champion's, from feedback counted since the step started, with
    anytime-valid tests that may be read at every check without raising their error rates."""

    rollback_margin: Margin = Field(
        0.01, description="Roll back on evidence that the candidate's Hit@5 is more than this "
                          "below the champion's (0.01 = 1 point).")
    rollback_alpha: Alpha = Field(
        0.01, description="Chance of rolling back a candidate that is within rollbackMargin "
                          "of the champion, per rollout.")
    pass_margin: Margin = Field(
        0.01, description="Pass on evidence that the candidate is no more than this below "
                          "the champion.")
    pass_alpha: Alpha = Field(
        0.05, description="Chance of passing a candidate that is more than passMargin worse.")
    lane_margin: Margin = Field(
        0.02, description="The same rollback test per lane against the champion's same "
                          "lane, with this margin and rollbackAlpha split over 16 lanes. A "
                          "lane can roll back, never hold a step.")
    rollback_tau: Tau = Field(
        0.02, description="The rollback test's mixture scale: the regression beyond the "
                          "margin it detects fastest.")
    pass_tau: Tau = Field(
        0.01, description="The pass test's mixture scale.")
    min_events: Int = Field(
        100, ge=1, le=1_000_000_000,
        description="Feedback events per version before anything is judged; fewer is noData.")


class Analysis(ApiModel):
    """How the candidate is judged: two clocks, success criteria and rollback triggers."""

    judge: Judge = Field(
        Judge.THRESHOLD,
        description=(
            "How quality is judged. threshold: the candidate's Hit@5 proxy against "
            "success/rollback hit5ProxyMin over quality.window. sequential: against the "
            "champion's, from the step's counts, with anytime-valid error rates (see "
            "sequential)."
        ),
    )
    sequential: SequentialJudge = _nested(SequentialJudge, "The sequential judge's settings.")
    guardrails: Guardrails = _nested(Guardrails, "Fast checks: the circuit breaker.")
    quality: Quality = _nested(Quality, "Slow checks on accumulated evidence.")
    success: SuccessCriteria = _nested(SuccessCriteria, "Criteria to advance and promote.")
    rollback: RollbackTriggers = _nested(RollbackTriggers, "Triggers that roll back at once.")
    on_no_data: OnNoData = _nested(OnNoData, "Behaviour without data.")
    on_inconclusive: OnInconclusive = _nested(
        OnInconclusive, "Behaviour when checks stay inconclusive after a step's dwell.")
    lane_health: LaneHealth = _nested(LaneHealth, "Daily per-lane health check.")

    cel_rules = (
        Rule(
            cel="self.rollback.hit5ProxyMin <= self.success.hit5ProxyMin",
            message=f"rollback.hit5ProxyMin must be <= success.hit5ProxyMin: {_NOT_STRICTER}",
            check=lambda a: a.rollback.hit5_proxy_min <= a.success.hit5_proxy_min,
            field_path=".rollback.hit5ProxyMin",
        ),
        Rule(
            cel="self.rollback.p95LatencyMs >= self.success.p95LatencyMs",
            message=f"rollback.p95LatencyMs must be >= success.p95LatencyMs: {_NOT_STRICTER}",
            check=lambda a: a.rollback.p95_latency_ms >= a.success.p95_latency_ms,
            field_path=".rollback.p95LatencyMs",
        ),
        Rule(
            cel="self.rollback.emptyHitRateMax >= self.success.emptyHitRateMax",
            message=f"rollback.emptyHitRateMax must be >= success.emptyHitRateMax: {_NOT_STRICTER}",
            check=lambda a: a.rollback.empty_hit_rate_max >= a.success.empty_hit_rate_max,
            field_path=".rollback.emptyHitRateMax",
        ),
        Rule(
            cel="self.rollback.errorRateMax >= self.success.errorRateMax",
            message=f"rollback.errorRateMax must be >= success.errorRateMax: {_NOT_STRICTER}",
            check=lambda a: a.rollback.error_rate_max >= a.success.error_rate_max,
            field_path=".rollback.errorRateMax",
        ),
    )


# ---------------------------------------------------------------------------------------------
# Offline evaluation: the pre-rollout gate and the scheduled drift check
# ---------------------------------------------------------------------------------------------


class EvalSetRef(ApiModel):
    """A held-out eval set (format: ``lvm_serving.synthetic``, written by the train command)."""

    uri: Uri = Field(description="Location of eval_set.npz: file:///path, an absolute path, "
                     "s3://bucket/key, gs://bucket/key or https://host/path.")
    sha256: Sha256 | None = Field(
        None,
        description=(
            "SHA-256 of the eval set, verified on load; required for object storage. Leave it "
            "unset for a local eval set that is refreshed in place (each result records the "
            "digest it was computed on)."
        ),
    )

    cel_rules = (_remote_needs_sha256("evaluation.evalSet"),)


class PreRolloutGate(ApiModel):
    """Before the candidate gets any traffic it is evaluated on the eval set (so is the champion,
    for the comparison); a candidate that fails does not start."""

    enabled: Bool = Field(True, description="Evaluate the candidate before step 1.")
    min_hit5: Fraction = Field(
        0.66, description="Lowest eval-set Hit@5 the candidate must reach (the seed's 66%)."
    )
    max_degradation: Fraction = Field(
        0.05,
        description=(
            "Largest relative shortfall of the candidate's eval-set Hit@5 below the champion's "
            "(0.05 = 5% worse)."
        ),
    )


class DriftBaseline(ApiModel):
    """Reference numbers of the champion on the eval set (fractions)."""

    hit1: Fraction | None = Field(None, description="Hit@1.")
    hit5: Fraction = Field(description="Hit@5 (the seed's baseline: 0.6652).")
    hit10: Fraction | None = Field(None, description="Hit@10.")


class DriftCheck(ApiModel):
    """The seed's weekly drift check: the serving champion re-evaluated on the eval set and
    compared with its baseline; relative drift beyond the limit raises the Drifted condition,
    an Event, a metric and the LVMModelDrift alert."""

    enabled: Bool = Field(True, description="Run the scheduled drift check.")
    interval: PositiveDuration = Field(
        "168h", description="How often (default weekly). " + _DURATION_HELP
    )
    max_relative_drift: Fraction = Field(
        0.05,
        description=(
            "Largest |current - baseline| / baseline of Hit@1/5/10 overall and Hit@5 per lane "
            "(0.05 = 5%, the seed's limit)."
        ),
    )
    lane_min_sequences: Int = Field(
        30, ge=1, le=1_000_000,
        description="Fewest eval sequences a lane needs before its drift is judged.",
    )
    baseline: DriftBaseline | None = Field(
        None,
        description=(
            "Explicit baseline. Unset: the champion's first evaluation is recorded as its "
            "baseline (status.evaluation.baseline); a promoted candidate's gate result becomes "
            "the new champion's baseline."
        ),
    )

    @property
    def interval_seconds(self) -> float:
        return duration_seconds(self.interval)


class Evaluation(ApiModel):
    """Offline evaluation on a held-out eval set, run by the operator in a child process."""

    eval_set: EvalSetRef = Field(description="The held-out eval set.")
    gate: PreRolloutGate = _nested(PreRolloutGate, "The pre-rollout gate.")
    drift: DriftCheck = _nested(DriftCheck, "The scheduled drift check of the champion.")
    timeout: PositiveDuration = Field(
        "30m", description="Longest one evaluation may take. " + _DURATION_HELP
    )
    retry_after: PositiveDuration = Field(
        "5m",
        description=(
            "A failed evaluation (missing file, checksum mismatch, timeout) is retried after "
            "this long (or at once with `kubectl lvm retry`). " + _DURATION_HELP
        ),
    )

    @property
    def timeout_seconds(self) -> float:
        return duration_seconds(self.timeout)

    @property
    def retry_after_seconds(self) -> float:
        return duration_seconds(self.retry_after)


# ---------------------------------------------------------------------------------------------
# Where things run
# ---------------------------------------------------------------------------------------------


class Prometheus(ApiModel):
    """The Prometheus that scrapes the Serve metrics."""

    url: HttpUrl = Field(description="Base URL, e.g. http://prometheus.monitoring:9090.")


class ServeBackend(StrEnum):
    RAY_SERVICE = "rayService"
    RAY_DASHBOARD = "rayDashboard"


class Serve(ApiModel):
    """Where the Serve application is applied."""

    backend: ServeBackend = Field(
        description=(
            "rayService: patch a KubeRay RayService's serveConfigV2 (in a cluster). "
            "rayDashboard: PUT the Serve config to the Ray dashboard REST API (local, VMs)."
        )
    )
    ray_service: VersionName | None = Field(
        None,
        description=(
            "Name of the KubeRay RayService in the rollout's namespace. Required for rayService."
        ),
    )
    url: HttpUrl | None = Field(
        None,
        description="Ray dashboard URL, e.g. http://127.0.0.1:8265. Required for rayDashboard.",
    )
    application: Name = Field("lvm", description="Ray Serve application name.")

    cel_rules = (
        Rule(
            cel="!has(self.backend) || self.backend != 'rayService' || has(self.rayService)",
            message="serve.rayService is required when serve.backend is rayService",
            check=lambda s: s.backend != ServeBackend.RAY_SERVICE or s.ray_service is not None,
            field_path=".rayService",
            reason="FieldValueRequired",
        ),
        Rule(
            cel="!has(self.backend) || self.backend != 'rayDashboard' || has(self.url)",
            message="serve.url is required when serve.backend is rayDashboard",
            check=lambda s: s.backend != ServeBackend.RAY_DASHBOARD or s.url is not None,
            field_path=".url",
            reason="FieldValueRequired",
        ),
    )


class Promotion(ApiModel):
    """What happens at promotion."""

    keep_champion_warm_for: Duration = Field(
        "1h",
        description=(
            "Keep the old champion deployed (with no traffic) this long after promotion, for a "
            "fast rollback; 0s removes it at once. " + _DURATION_HELP
        ),
    )

    @property
    def keep_champion_warm_for_seconds(self) -> float:
        return duration_seconds(self.keep_champion_warm_for)


class ChampionScale(StrEnum):
    FULL = "full"
    SHARE = "share"


class Capacity(ApiModel):
    """How many replicas the champion keeps while the candidate takes a share."""

    champion: ChampionScale = Field(
        ChampionScale.FULL,
        description=(
            "full: the champion keeps the replicas it needs for all traffic during the whole "
            "rollout, so a rollback from any step lands on full capacity (Argo Rollouts keeps "
            "the stable version at full scale by default). share: the champion is sized to its "
            "(100 - weight)% share (cheaper; Argo's dynamicStableScale); a rollback then moves "
            "all traffic to it while it scales back up."
        ),
    )


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


class LVMRolloutSpec(ApiModel):
    """Roll a candidate model version out against the champion, step by step, judged by metrics."""

    champion: ModelVersion = Field(description="The version serving today.")
    candidate: ModelVersion | None = Field(
        None,
        description=(
            "The version being rolled out. Unset: the champion alone serves all traffic, the "
            "steady state Git can describe after a promotion (status.gitSpec says what to "
            "write); the champion must then be the version that serves. Removing it "
            "mid-rollout aborts the rollout (all traffic to the champion at once)."
        ),
    )
    concept_bank: ConceptBank = Field(description="The concept bank retrieval searches.")
    routing: Routing = _nested(Routing, "How requests are split between the versions.")
    steps: Steps = Field(
        description=(
            f"The plan: 1 to {MAX_STEPS} steps with strictly increasing weights, the last at 100. "
            "After the last step's duration, with all checks passing, the candidate is promoted."
        )
    )
    analysis: Analysis = _nested(Analysis, "How the candidate is judged.")
    prometheus: Prometheus = Field(description="Where the metrics are.")
    serve: Serve = Field(description="Where the Serve application is applied.")
    paused: Bool = Field(
        False, description="Hold the rollout at its current step until this is false again."
    )
    progress_deadline: PositiveDuration = Field(
        "10m",
        description=(
            "How long the candidate's application may take to run before it gets traffic "
            "(Flagger's progressDeadlineSeconds). It gets no traffic until Serve reports it "
            "RUNNING; past this deadline the rollout is rolled back with Serve's reason. "
            + _DURATION_HELP
        ),
    )
    promotion: Promotion = _nested(Promotion, "What happens at promotion.")
    capacity: Capacity = _nested(Capacity, "The champion's replicas during the rollout.")
    evaluation: Evaluation | None = Field(
        None,
        description=(
            "Offline evaluation on a held-out eval set: the pre-rollout gate and the scheduled "
            "drift check. Unset: neither runs."
        ),
    )

    cel_rules = (
        Rule(
            cel=(
                "!has(self.champion) || !has(self.candidate) || !has(self.champion.version) || "
                "!has(self.candidate.version) || self.champion.version != self.candidate.version"
            ),
            message="candidate.version must differ from champion.version",
            check=lambda s: s.candidate is None or s.champion.version != s.candidate.version,
            field_path=".candidate.version",
            # Not FieldValueDuplicate: the apiserver drops the message for that reason.
        ),
    )
