"""Plain data for the decision core: the plan, the rollout state, observations and decisions.

Everything here is a frozen dataclass or an enum over standard types, so the core can be tested
with literals and the operator can map its pydantic spec/status onto it without the core knowing
about pydantic, Kopf or Prometheus. Times are POSIX seconds (floats); durations end in ``_s``.

Threshold semantics (the seed's wording, made exact; see :class:`Thresholds`):

* **success** criteria must be met before a step advances and before promotion:
  ``hit5_proxy >= 0.60``, ``p95 < 5 ms``, ``empty-hit rate < 10 %``, ``error rate < 0.1 %``,
  no lane more than 20 % below the champion's same lane;
* **rollback** triggers: ``hit5_proxy < 0.55``, ``p95 > 10 ms``, ``empty-hit rate > 20 %``,
  ``error rate > 1 %``, a lane that fails completely (Hit@5 proxy of 0 with enough samples);
* a value between the two is ``inconclusive``: the step holds, nothing rolls back.

A value *exactly at* a threshold (within a relative 1e-9, so float noise from PromQL does not
flip a verdict) is on the lenient side of it: ``p95 == 10 ms`` is not a rollback,
``hit5 == 0.55`` is not a rollback, ``hit5 == 0.60`` meets success, a lane exactly 20 % below the
champion meets success. The strict comparisons are the ones the seed wrote: ``p95 == 5 ms`` does
*not* meet "p95 < 5 ms", ``empty-hit rate == 10 %`` does not meet "< 10 %".

Why one module of some 470 lines: it is every type the core speaks and nothing else (no
logic); the policies' docstrings carry the rules they parameterise.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from .sequential import DifferenceTest

#: Lanes the seed serves; the sequential judge splits a lane's error budget this many ways.
LANE_COUNT = 16


class Verdict(StrEnum):
    """The outcome of one check (or of one metric inside it).

    More than two values on purpose: missing evidence must never read as a pass.
    """

    PASS = "pass"  # meets the success criteria
    INCONCLUSIVE = "inconclusive"  # between success and rollback: hold, do not roll back
    BREACH = "breach"  # beyond a rollback trigger
    NO_DATA = "noData"  # too few samples, or no series at all
    ERROR = "error"  # Prometheus unreachable or a query failed

    @property
    def lacks_evidence(self) -> bool:
        return self in (Verdict.NO_DATA, Verdict.ERROR)


class Phase(StrEnum):
    PENDING = "Pending"
    PROGRESSING = "Progressing"
    PAUSED = "Paused"
    PROMOTED = "Promoted"
    ROLLED_BACK = "RolledBack"
    FAILED = "Failed"
    # The spec names a champion and no candidate: it serves all traffic, nothing is rolled out
    # (set by the operator, never by the core: there is nothing to decide)
    STEADY = "Steady"

    @property
    def finished(self) -> bool:
        """The decision core has nothing left to decide (the operator may still be applying)."""
        return self in _FINISHED


_FINISHED = frozenset({Phase.PROMOTED, Phase.ROLLED_BACK, Phase.FAILED, Phase.STEADY})


class Action(StrEnum):
    """What the operator must do now. Traffic always comes from ``Decision.state``."""

    HOLD = "hold"  # keep traffic as it is
    ADVANCE = "advance"  # set traffic to ``plan.steps[state.current_step]`` (also the first step)
    RESTART = "restart"  # the spec changed: back to step 0 (or to no traffic while paused)
    PROMOTE = "promote"  # the candidate takes all traffic and becomes champion
    ROLLBACK = "rollback"  # all traffic to the champion at once
    NO_DATA_TIMEOUT = "noDataTimeout"  # hold, and raise the NoData condition (once)
    PAUSE = "pause"  # inconclusive past its limit: pause for a person (kubectl lvm resume)


class NoDataAction(StrEnum):
    HOLD = "hold"
    ROLLBACK = "rollback"


class InconclusiveAction(StrEnum):
    """After a step's dwell, checks that neither pass nor breach for ``max_inconclusive_s``."""

    PAUSE = "pause"  # pause for a person (Argo Rollouts pauses on an inconclusive analysis)
    ROLLBACK = "rollback"  # not proven good in time: serve the champion


def lane_order(lane: str) -> tuple[int, str]:
    """Lanes in numeric order ("2" before "10"), any non-numeric lane last."""
    return (int(lane), lane) if lane.isdigit() else (1 << 30, lane)


class Judge(StrEnum):
    """How quality is judged (``analysis.judge``)."""

    SEQUENTIAL = "sequential"  # anytime-valid candidate-vs-champion tests (decision.sequential)
    THRESHOLD = "threshold"  # absolute limits over a sliding window (the first version's rule)


class Check(StrEnum):
    GUARDRAIL = "guardrail"
    QUALITY = "quality"


def _require(ok: bool, field_name: str, value: object, allowed: str) -> None:
    if not ok:
        raise ValueError(f"{field_name}={value!r} is invalid: must be {allowed}")


@dataclass(frozen=True)
class Step:
    weight: int  # candidate's share of traffic, percent, in (0, 100]
    duration_s: float  # dwell time at this weight (a week in the seed)
    shadow: bool = False  # the candidate answers copies; clients get the champion's answer
    shadow_percent: int = 100  # with shadow: percent of the champion's requests mirrored


@dataclass(frozen=True)
class GuardrailPolicy:
    """Fast checks (error rate, P95 latency, empty-hit rate) against the candidate.

    Each check judges the candidate's requests since the previous *judged* check (or since the
    step started): windows never overlap, so K consecutive breaches are K separate pieces of
    evidence, not one blip seen K times. A window with fewer than ``min_requests`` candidate
    requests (or latency samples) is not judged: it is noData and the next check's window
    extends back to the same start, until it holds enough. ``window_s`` is the shortest window
    a check reads (``increase()`` needs a few scrapes inside it). ``increase()`` counts the
    change between the samples inside a window, so the change between two windows' samples
    (at most one scrape interval) is in neither: a blip shorter than a scrape may go unseen, and
    nothing is ever counted twice.

    ``latency_vs_champion``: the P95 limits are the seed's, but a candidate is rolled back for
    latency only when it is also slower than the champion in the same window
    (:func:`~lvm_operator.decision.latency.compare`, ``latency_margin`` and ``latency_z``); a
    limit both versions miss is the machine's, not the candidate's.
    """

    interval_s: float = 30.0
    consecutive_breaches: int = 2  # the seed's circuit breaker: K breaches in a row roll back
    window_s: float = 4.0  # the shortest window a check reads
    min_requests: int = 100  # fewer candidate requests in the window: not judged (noData)
    latency_vs_champion: bool = True
    latency_margin: float = 0.10  # share of requests, e.g. 60% vs 50% above the champion median
    latency_z: float = 2.33  # one-sided, about 1% per comparison

    def __post_init__(self) -> None:
        _require(self.interval_s > 0, "guardrails.interval_s", self.interval_s, "> 0")
        _require(self.window_s > 0, "guardrails.window_s", self.window_s, "> 0")
        _require(
            self.consecutive_breaches >= 1,
            "guardrails.consecutive_breaches", self.consecutive_breaches, ">= 1",
        )
        _require(self.min_requests >= 0, "guardrails.min_requests", self.min_requests, ">= 0")
        _require(0.0 <= self.latency_margin < 1.0, "guardrails.latency_margin",
                 self.latency_margin, "a share in [0, 1)")
        _require(math.isfinite(self.latency_z), "guardrails.latency_z", self.latency_z,
                 "a finite number")


@dataclass(frozen=True)
class QualityPolicy:
    """Slow checks on accumulated evidence: Hit@5 proxy overall and per lane.

    Samples behind the Hit@5 proxy are *feedback events* (clicks), not requests: the proxy is
    hits / feedback, and ``min_requests`` counts feedback events (a lane's "every request
    failed" counts requests). ``lane_min_requests`` is the evidence a lane needs on both
    versions before it is compared; ``None`` means the same as ``min_requests``. Lanes with less
    are reported as noData; they hold the step only with ``hold_unjudged_lanes`` (the spec's
    default; a rare lane may otherwise never let a rollout finish).
    """

    interval_s: float = 300.0
    window_s: float = 3600.0
    min_requests: int = 1000
    lane_min_requests: int | None = None
    # A lane with candidate traffic that could not be compared makes the check noData (hold)
    # instead of being left out: otherwise a 55%-worse lane below its minimum advances.
    hold_unjudged_lanes: bool = False
    # The sequential judge: counts since the step started, Δ vs the champion overall and per
    # lane (each lane's test has α/LANE_COUNT and a wider margin); min_requests is not used.
    judge: Judge = Judge.THRESHOLD
    test: DifferenceTest = field(default_factory=DifferenceTest)
    lane_test: DifferenceTest = field(default_factory=lambda: DifferenceTest(
        rollback_margin=0.02, pass_margin=0.02).split(LANE_COUNT))

    def __post_init__(self) -> None:
        _require(self.interval_s > 0, "quality.interval_s", self.interval_s, "> 0")
        _require(self.window_s > 0, "quality.window_s", self.window_s, "> 0")
        _require(self.min_requests >= 0, "quality.min_requests", self.min_requests, ">= 0")
        _require(
            self.lane_min_requests is None or self.lane_min_requests >= 0,
            "quality.lane_min_requests", self.lane_min_requests, ">= 0 or None",
        )

    @property
    def lane_min(self) -> int:
        return self.min_requests if self.lane_min_requests is None else self.lane_min_requests


@dataclass(frozen=True)
class Thresholds:
    """One set of limits; a plan has one for success and one for rollback. ``None`` = not checked.

    Comparisons (``≈`` is equality within a relative 1e-9):

    ============================  ==========================  ==============================
    field                         success met when            rollback triggered when
    ============================  ==========================  ==============================
    ``hit5_proxy_min``            value >= min (or ≈)         value < min (and not ≈)
    ``p95_latency_seconds``       value < limit (and not ≈)   value > limit (and not ≈)
    ``empty_hit_rate_max``        value < max (and not ≈)     value > max (and not ≈)
    ``error_rate_max``            value < max (and not ≈)     value > max (and not ≈)
    ``lane_degradation_max``      drop <= max (or ≈)          drop > max (and not ≈)
    ``lane_failure``              --                          a lane fails completely
    ============================  ==========================  ==============================

    ``lane_degradation_max`` is relative to the champion's same lane:
    ``drop = (champion_lane - candidate_lane) / champion_lane``; 0.20 means "no lane more than
    20 % worse". ``lane_failure`` only applies to the rollback set (the seed's "any critical lane
    fails completely"): a lane with enough evidence whose Hit@5 proxy is 0 (no feedback event
    was a hit), or whose every request failed (server errors); a failed lane also fails the
    success criteria through its 100 % drop.
    Error rate counts server-side errors only (NaN/Inf outputs, exceptions, timeouts).
    """

    hit5_proxy_min: float | None = None
    p95_latency_seconds: float | None = None
    empty_hit_rate_max: float | None = None
    error_rate_max: float | None = None
    lane_degradation_max: float | None = None
    lane_failure: bool = False

    def _validate(self, which: str) -> None:
        for name in (
            "hit5_proxy_min", "empty_hit_rate_max", "error_rate_max", "lane_degradation_max",
        ):
            v = getattr(self, name)
            _require(
                v is None or (math.isfinite(v) and 0.0 <= v <= 1.0),
                f"{which}.{name}", v, "a fraction in [0, 1] or None",
            )
        v = self.p95_latency_seconds
        _require(
            v is None or (math.isfinite(v) and v > 0),
            f"{which}.p95_latency_seconds", v, "> 0 seconds or None",
        )


@dataclass(frozen=True)
class Plan:
    """What the spec asks for, in the core's own terms (the operator maps the CR onto this).

    ``fingerprint`` identifies the spec parts that define the experiment (candidate, champion,
    steps, thresholds...). When it differs from ``RolloutState.fingerprint`` the rollout starts
    over at step 0. ``paused`` freezes progression (see :func:`decide`).
    """

    champion: str
    candidate: str
    steps: tuple[Step, ...]
    guardrails: GuardrailPolicy = field(default_factory=GuardrailPolicy)
    quality: QualityPolicy = field(default_factory=QualityPolicy)
    success: Thresholds = field(default_factory=Thresholds)
    rollback: Thresholds = field(default_factory=Thresholds)
    on_no_data: NoDataAction = NoDataAction.HOLD
    max_hold_s: float | None = None  # None: noData holds forever without raising a condition
    on_inconclusive: InconclusiveAction = InconclusiveAction.PAUSE
    max_inconclusive_s: float | None = None  # None: an inconclusive step holds forever
    paused: bool = False
    fingerprint: str = ""
    gate_required: bool = False  # the pre-rollout gate must pass before step 1
    # What is rolled out (champion and candidate, not the plan): a finished rollout restarts
    # only when this changes; "" (unknown) keeps the fingerprint rule
    identity: str = ""

    def __post_init__(self) -> None:
        _require(bool(self.champion), "champion", self.champion, "a version name")
        _require(bool(self.candidate), "candidate", self.candidate, "a version name")
        _require(
            self.champion != self.candidate, "candidate", self.candidate,
            f"different from champion {self.champion!r}",
        )
        _require(len(self.steps) >= 1, "steps", self.steps, "at least one step")
        previous = 0
        for i, step in enumerate(self.steps):
            _require(
                previous < step.weight <= 100, f"steps[{i}].weight", step.weight,
                f"in ({previous}, 100] (weights strictly increase)",
            )
            _require(step.duration_s >= 0, f"steps[{i}].duration_s", step.duration_s, ">= 0")
            previous = step.weight
        _require(
            self.max_hold_s is None or self.max_hold_s >= 0, "max_hold_s", self.max_hold_s,
            ">= 0 or None",
        )
        _require(
            self.max_inconclusive_s is None or self.max_inconclusive_s >= 0,
            "max_inconclusive_s", self.max_inconclusive_s, ">= 0 or None",
        )
        self.success._validate("success")
        self.rollback._validate("rollback")
        _require(
            not self.success.lane_failure, "success.lane_failure", True,
            "False (lane failure is a rollback trigger; success uses lane_degradation_max)",
        )
        # Rollback triggers must be no stricter than success criteria, or a value could both
        # pass and roll back.
        s, r = self.success, self.rollback
        for name, higher_is_worse in (
            ("p95_latency_seconds", True), ("empty_hit_rate_max", True),
            ("error_rate_max", True), ("lane_degradation_max", True), ("hit5_proxy_min", False),
        ):
            sv, rv = getattr(s, name), getattr(r, name)
            if sv is None or rv is None:
                continue
            ok = rv >= sv if higher_is_worse else rv <= sv
            _require(
                ok, f"rollback.{name}", rv,
                f"{'>=' if higher_is_worse else '<='} success.{name}={sv!r}",
            )


# --- observations ---------------------------------------------------------------------------


@dataclass(frozen=True)
class LaneMetrics:
    requests: float = 0.0
    feedback: float = 0.0
    hit5_proxy: float | None = None  # hits / feedback; None (or NaN) when no feedback
    error_rate: float | None = None  # server errors / requests; None when not measured


@dataclass(frozen=True)
class VersionMetrics:
    """One version's numbers over one window (all lanes together, plus each lane).

    ``None`` or NaN means "not measured"; ``+inf`` is a value (e.g. a P95 beyond the last
    histogram bucket) and is judged like any other.
    """

    requests: float = 0.0
    error_rate: float | None = None  # server errors / requests
    p95_latency_seconds: float | None = None
    empty_hit_rate: float | None = None  # empty hits / requests
    feedback: float = 0.0
    hit5_proxy: float | None = None  # proxy hits at k=5 / feedback
    lanes: Mapping[str, LaneMetrics] = field(default_factory=dict)
    # (upper bound in seconds, cumulative count) per latency bucket, +inf last; empty when the
    # histogram was not read (see :mod:`.latency`)
    latency_buckets: tuple[tuple[float, float], ...] = ()


@dataclass(frozen=True)
class WindowObservation:
    """What Prometheus said about one rollout over one window, or why it could not say."""

    window_s: float
    versions: Mapping[str, VersionMetrics] = field(default_factory=dict)
    error: str | None = None  # set when Prometheus was unreachable or a query failed


class GateVerdict(StrEnum):
    """The pre-rollout gate (an offline evaluation of the candidate on the eval set)."""

    PENDING = "pending"  # still being evaluated
    PASS = "pass"
    BLOCKED = "blocked"  # the candidate is not good enough: it gets no traffic
    ERROR = "error"  # the evaluation failed; like blocked until it succeeds


@dataclass(frozen=True)
class GateObservation:
    verdict: GateVerdict
    reason: str  # one line with the numbers, e.g. "candidate Hit@5 0.41 < minimum 0.66"


@dataclass(frozen=True)
class Observations:
    """Inputs for the checks that are due (see :func:`checks_due`). A due check needs its part.

    ``gate`` is read only before the first step, when ``plan.gate_required``; without it the
    rollout waits (the gate is pending).
    """

    guardrail: WindowObservation | None = None
    quality: WindowObservation | None = None
    gate: GateObservation | None = None
    # The champion's latency over a longer look-back, for steps where it has too little traffic
    # in the guardrail window to compare with (at 100% it has none)
    guardrail_reference: WindowObservation | None = None


# --- state and decisions --------------------------------------------------------------------


@dataclass(frozen=True)
class RolloutState:
    """Everything the core needs to resume exactly; it lives in the CR's status.

    Timers are absolute times, so a restarted operator with the same state, observations and
    clock reaches the same decision.
    """

    phase: Phase = Phase.PENDING
    fingerprint: str = ""
    current_step: int | None = None  # index into plan.steps; None before the first step
    candidate_weight: int = 0
    shadow: bool = False
    step_started_at: float | None = None  # shifted forward by time spent paused
    paused_at: float | None = None
    consecutive_breaches: int = 0  # Flagger's failedChecks, for guardrails
    last_guardrail_at: float | None = None
    last_guardrail_verdict: Verdict | None = None
    last_guardrail_reason: str = ""
    last_quality_at: float | None = None
    last_quality_verdict: Verdict | None = None
    last_quality_reason: str = ""
    no_data_since: float | None = None  # start of the current run of noData/error verdicts
    no_data_raised: bool = False  # the NoData condition is up (raised once per run)
    guardrail_since: float | None = None  # start of the next guardrail window (last judged)
    identity: str = ""  # Plan.identity when this attempt started
    attempt_started_at: float | None = None  # step 1 of this attempt: evidence starts here
    quality_since: float | None = None  # last quality error (Prometheus down): evidence after it
    inconclusive_since: float | None = None  # dwell done, checks neither pass nor breach since

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (enums as their values)."""
        out: dict[str, Any] = {}
        for name in self.__dataclass_fields__:
            v = getattr(self, name)
            out[name] = v.value if isinstance(v, StrEnum) else v
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RolloutState:
        """Inverse of :meth:`to_dict`; unknown keys are rejected loudly."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(
                f"unknown rollout state fields {sorted(unknown)}; "
                f"allowed: {sorted(cls.__dataclass_fields__)}"
            )
        kw = dict(data)
        if "phase" in kw:
            kw["phase"] = Phase(kw["phase"])
        for name in ("last_guardrail_verdict", "last_quality_verdict"):
            if kw.get(name) is not None:
                kw[name] = Verdict(kw[name])
        return cls(**kw)


@dataclass(frozen=True)
class MetricResult:
    """One judged number, for the status's lastAnalysis and for reason lines."""

    check: Check
    metric: str  # "error_rate", "p95_latency_seconds", "empty_hit_rate", "hit5_proxy", ...
    version: str
    lane: str | None
    value: float | None
    samples: float
    verdict: Verdict
    success: str  # the success criterion as text, e.g. "< 5 ms"
    rollback: str  # the rollback trigger as text, e.g. "> 10 ms"
    detail: str  # e.g. "candidate P95 12.4 ms > 10 ms"
    counts: bool = True  # False: reported only (champion values, lanes lacking samples)
    success_limit: float | None = None  # the numbers behind ``success`` / ``rollback``
    rollback_limit: float | None = None
    # the sequential judge: the anytime-valid interval, the e-values against each boundary
    # (rollback at 1/α_R, pass at 1/α_P) and about how many more events a decision needs
    interval: tuple[float, float] | None = None
    evidence: tuple[float, float] | None = None
    events_to_decide: float | None = None


@dataclass(frozen=True)
class CheckOutcome:
    check: Check
    verdict: Verdict
    summary: str  # one line, the numbers that decided the verdict
    results: tuple[MetricResult, ...] = ()


@dataclass(frozen=True)
class Condition:
    type: str  # "NoData"
    status: bool
    reason: str  # CamelCase, e.g. "NoDataTimeout"
    message: str


@dataclass(frozen=True)
class Decision:
    action: Action
    reason: str  # ONE human line with the numbers behind it
    state: RolloutState  # the new state; traffic = state.candidate_weight / state.shadow
    guardrail: CheckOutcome | None = None  # checks evaluated in this call
    quality: CheckOutcome | None = None
    conditions: tuple[Condition, ...] = ()  # conditions raised or cleared in this call

    @property
    def step(self) -> int | None:
        return self.state.current_step

    @property
    def changes_traffic(self) -> bool:
        return self.action in (
            Action.ADVANCE, Action.RESTART, Action.PROMOTE, Action.ROLLBACK,
        )
