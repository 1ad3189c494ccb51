"""The observed state of an LVMRollout, written by the operator through the status subresource.

Every field is optional so the operator can patch the parts it changed. The timers that drive the
rollout (``stepStartedAt``, ``nextStepAt``) and the breach counter live here, not in the
operator's memory, so a restarted operator resumes exactly where it was.

Why one module of some 400 lines: it is the CRD's status schema, read top to bottom like the
``status`` a user sees; the models are small and only data.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints

from lvm_serving.contracts.eval_result import PROVENANCE_ARGS
from lvm_serving.contracts.metrics import NUM_LANES

from ..decision.model import GateVerdict, Phase, Verdict
from .base import ApiModel, Bool, Float, Int, Rule
from .spec import MAX_STEPS, ModelFamily, ModelVersion, Name, Sha256, Uri, VersionName

#: How many history entries are kept (the oldest are dropped first).
MAX_HISTORY = 20
MAX_CONDITIONS = 16
#: Enough for 2 versions x (all lanes + 1 overall) x a handful of metrics.
MAX_MEASUREMENTS = 512
#: Evaluation results kept in status.evaluation.history (the oldest are dropped first).
MAX_EVAL_HISTORY = 20
#: Lane rows: 2 versions x 16 lanes x 2 sources, or 3 Hit@K overall + 16 lanes of drift.
MAX_LANE_ROWS = 64


class Outcome(StrEnum):
    PROMOTED = "promoted"
    ROLLED_BACK = "rolledBack"
    ABORTED = "aborted"
    SUPERSEDED = "superseded"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


Text = Annotated[str, StringConstraints(max_length=1024)]
#: A checkpoint format name ("seed", "lvm-rollout-checkpoint/1", "safetensors/1").
FormatName = Annotated[str, StringConstraints(min_length=1, max_length=63,
                                              pattern=r"^[A-Za-z0-9._/-]+$")]


class Measurement(ApiModel):
    """One metric of one version (and optionally one lane) against its threshold."""

    version: VersionName = Field(description="Model version measured.")
    lane: Int | None = Field(
        None, ge=0, le=NUM_LANES - 1, description="TMD lane; unset for all lanes together."
    )
    metric: Name = Field(description="Metric name, e.g. hit5Proxy, p95LatencyMs, errorRate.")
    value: Float | None = Field(
        None, allow_inf_nan=False, description="Observed value; unset without data."
    )
    threshold: Float | None = Field(
        None, allow_inf_nan=False, description="Threshold it was compared with."
    )
    samples: Int | None = Field(None, ge=0, description="Requests behind the value.")
    verdict: Verdict = Field(description="pass, inconclusive, breach, noData or error.")
    ci_low: Float | None = Field(
        None, allow_inf_nan=False,
        description="judge sequential: the anytime-valid confidence interval's low end.")
    ci_high: Float | None = Field(
        None, allow_inf_nan=False, description="judge sequential: the interval's high end.")
    evidence_rollback: Float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="judge sequential: the e-value for rollback (it rolls back at 1/alpha).")
    evidence_pass: Float | None = Field(
        None, ge=0, allow_inf_nan=False,
        description="judge sequential: the e-value for pass (it passes at 1/alpha).")
    events_to_decide: Int | None = Field(
        None, ge=0,
        description="judge sequential: about how many more candidate events a decision needs "
                    "if the difference stays where it is; unset when none is in sight.")


class LastAnalysis(ApiModel):
    """The latest analysis: an overall verdict, one reason line and the numbers behind it."""

    time: datetime | None = Field(None, description="When the analysis ran (RFC3339).")
    check: Annotated[str, StringConstraints(max_length=63)] | None = Field(
        None, description="Which clock produced it: guardrails or quality."
    )
    verdict: Verdict | None = Field(
        None, description="Overall verdict: pass, inconclusive, breach, noData or error."
    )
    reason: Text | None = Field(None, description="One human-readable line explaining the verdict.")
    measurements: list[Measurement] | None = Field(
        None,
        max_length=MAX_MEASUREMENTS,
        description="Per version and per lane: metric, value, threshold, samples, verdict.",
    )


class HistoryEntry(ApiModel):
    """A version this rollout has finished with, and its checkpoint for later rollbacks."""

    version: VersionName
    checkpoint: Uri
    sha256: Sha256
    family: ModelFamily | None = None
    context_length: Int | None = Field(None, ge=1, le=100_000)
    node_pool: Name | None = None
    outcome: Outcome = Field(description="promoted, rolledBack, aborted or superseded.")
    time: datetime = Field(description="When the outcome happened (RFC3339).")
    reason: Text | None = None


class Condition(ApiModel):
    """A Kubernetes-style condition (the shape of metav1.Condition)."""

    type: Annotated[
        str,
        StringConstraints(
            min_length=1,
            max_length=316,
            pattern=r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
            r"(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$",
        ),
    ]
    status: ConditionStatus
    reason: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=1024, pattern=r"^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"
        ),
    ]
    message: Annotated[str, StringConstraints(max_length=32768)] = ""
    last_transition_time: datetime
    observed_generation: Int | None = Field(None, ge=0)


def _unique_types(conditions: list[Condition]) -> bool:
    types = [c.type for c in conditions]
    return len(types) == len(set(types))


Conditions = Annotated[
    list[Condition],
    Field(
        max_length=MAX_CONDITIONS,
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]},
    ),
    # The CRD marks the list x-kubernetes-list-type=map keyed by type, which the apiserver
    # enforces itself; this rule is the pydantic twin of that and always true there.
    Rule(
        cel="self.all(c, self.exists_one(d, d.type == c.type))",
        message="conditions[].type must be unique",
        check=_unique_types,
    ),
]


class CommandResult(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"


class LastCommand(ApiModel):
    """The last manual command (``kubectl lvm ...`` annotations) the operator consumed."""

    verb: Annotated[str, StringConstraints(max_length=63)] = Field(
        description="promote, abort, retry, pause, resume or rollback."
    )
    id: Annotated[str, StringConstraints(max_length=253)] = Field(
        description="The command id; a command with this id is never carried out twice."
    )
    target_version: VersionName | None = Field(None, description="rollback: the version.")
    time: datetime = Field(description="When it was consumed (RFC3339).")
    result: CommandResult = Field(description="accepted or rejected.")
    message: Text | None = Field(None, description="What it did, or why it was rejected.")
    requested_by: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="Who asked, as the client said (kubectl lvm: the kubeconfig user).")
    field_manager: Annotated[str, StringConstraints(max_length=128)] | None = Field(
        None, description="The field manager the apiserver recorded for the write that set "
                          "the command (kubectl-lvm for the plugin).")


class AppliedTraffic(ApiModel):
    """What the Serve config last in effect gave the candidate. A step's dwell and its checks
    count only while this is the step's own traffic (not while its config is held back for a
    candidate that is not running, nor while applying it fails)."""

    candidate: VersionName | None = Field(None, description="The candidate the router had.")
    weight: Int = Field(0, ge=0, le=100, description="Its share of client traffic, percent.")
    shadow: Bool = Field(False, description="Whether it also answered shadow copies.")


class Serving(ApiModel):
    """What the operator serves now, beyond the spec's champion/candidate pair.

    After a promotion the candidate is the champion; the old one may stay warm (deployed, no
    traffic) until ``retiringUntil``. After ``rollback --to`` an earlier version from history is
    the champion. ``configHash`` is the hash of the Serve config last applied, so an unchanged
    config is not sent again (also after an operator restart).
    """

    champion: VersionName | None = Field(None, description="Version that gets the stable traffic.")
    candidate: VersionName | None = Field(None, description="Version being judged, if any.")
    candidate_model: ModelVersion | None = Field(
        None, description="The candidate as the spec gave it, kept for history if superseded."
    )
    retiring: VersionName | None = Field(
        None, description="Old champion kept warm after a promotion (no traffic)."
    )
    retiring_until: datetime | None = Field(None, description="When the old champion is removed.")
    manual_pause: Bool | None = Field(
        None, description="Paused by a command (kubectl lvm pause) or by the operator for a "
        "person (checks inconclusive past analysis.onInconclusive.maxHold); kubectl lvm resume "
        "continues.")
    pause_reason: Text | None = Field(
        None, description="Why the operator paused the rollout for a person (unset when paused "
        "by a command).")
    candidate_waiting_since: datetime | None = Field(
        None, description="Since when the candidate's application is deployed but not running "
        "(it gets no traffic); rolled back after spec.progressDeadline.")
    config_hash: Annotated[str, StringConstraints(max_length=64)] | None = Field(
        None, description="Hash of the Serve config last applied."
    )
    applied_at: datetime | None = Field(None, description="When that config was applied.")
    applied_traffic: AppliedTraffic | None = Field(
        None, description="The candidate's traffic in that config (the step's clock runs only "
        "while it is the step's).")


class DecisionState(ApiModel):
    """The decision core's state (``RolloutState``), so a restarted operator resumes exactly.

    Times are POSIX seconds. Most of it is also shown in friendlier fields above (phase,
    currentStep, stepStartedAt...); this copy is what the operator reads back.
    """

    phase: Phase | None = None
    fingerprint: Annotated[str, StringConstraints(max_length=128)] | None = None
    current_step: Int | None = Field(None, ge=0, le=MAX_STEPS - 1)
    candidate_weight: Int | None = Field(None, ge=0, le=100)
    shadow: Bool | None = None
    step_started_at: Float | None = None
    paused_at: Float | None = None
    consecutive_breaches: Int | None = Field(None, ge=0)
    last_guardrail_at: Float | None = None
    last_guardrail_verdict: Verdict | None = None
    last_guardrail_reason: Text | None = None
    last_quality_at: Float | None = None
    last_quality_verdict: Verdict | None = None
    last_quality_reason: Text | None = None
    no_data_since: Float | None = None
    no_data_raised: Bool | None = None
    guardrail_since: Float | None = None
    quality_since: Float | None = None
    inconclusive_since: Float | None = None
    identity: Annotated[str, StringConstraints(max_length=128)] | None = None
    attempt_started_at: Float | None = None


# --- offline evaluation and lane health ------------------------------------------------------


class EvalPurpose(StrEnum):
    GATE = "gate"  # the pre-rollout gate
    DRIFT = "drift"  # the scheduled drift check of the champion


class DriftVerdict(StrEnum):
    PENDING = "pending"
    OK = "ok"
    DRIFTED = "drifted"
    ERROR = "error"


class LaneHealthVerdict(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"  # some lane is flagged
    NO_DATA = "noData"
    ERROR = "error"


class LaneSource(StrEnum):
    PRODUCTION = "production"  # Hit@5 proxy from Prometheus over the lane-health window
    EVAL = "eval"  # exact Hit@5 on the eval set


Ratio = Annotated[Float, Field(ge=0, le=1, allow_inf_nan=False)]


class LaneResult(ApiModel):
    lane: Int = Field(ge=0, le=NUM_LANES - 1)
    # Not "n": YAML 1.1 parsers (the apiserver's included) read a bare n key as a boolean.
    sequences: Int = Field(ge=0, description="Eval sequences of this lane.")
    hit1: Ratio | None = None
    hit5: Ratio | None = None
    hit10: Ratio | None = None


class Provenance(ApiModel):
    """What the checkpoint itself records about its training (a seed checkpoint's
    ``val_results`` and ``epoch``): not measured here, shown beside what is."""

    source: FormatName = Field(
        description="The checkpoint's format: seed, lvm-rollout-checkpoint/1, safetensors/1.")
    epoch: Int | None = Field(None, ge=0, description="The training epoch it was saved at.")
    hit1: Ratio | None = Field(None, description="Recorded validation Hit@1.")
    hit5: Ratio | None = Field(None, description="Recorded validation Hit@5.")
    hit10: Ratio | None = Field(None, description="Recorded validation Hit@10.")
    args: dict[str, Float] | None = Field(
        None, max_length=len(PROVENANCE_ARGS),
        description="Numeric training arguments it records (epochs, lr, min_length, seed...).")


class EvalResult(ApiModel):
    """One evaluation of one version on the eval set (Hit@K exact, fractions)."""

    purpose: EvalPurpose = Field(description="gate or drift.")
    version: VersionName
    checkpoint_sha256: Sha256 | None = None
    eval_set_uri: Uri | None = None
    eval_set_sha256: Sha256 | None = Field(None, description="Digest of the eval set used.")
    time: datetime = Field(description="When it finished (RFC3339).")
    seconds: Float | None = Field(None, ge=0, description="How long it took.")
    sequences: Int | None = Field(None, ge=0, description="Eval sequences.")
    hit1: Ratio | None = None
    hit5: Ratio | None = None
    hit10: Ratio | None = None
    hit5_proxy: Ratio | None = None
    empty_hit_rate: Ratio | None = None
    nan_rate: Ratio | None = None
    lanes: list[LaneResult] | None = Field(None, max_length=NUM_LANES)
    provenance: Provenance | None = Field(
        None, description="The checkpoint's own training record (recorded, not measured).")
    error: Text | None = Field(None, description="Why the evaluation failed; unset on success.")


class GateStatus(ApiModel):
    """The pre-rollout gate for the current candidate."""

    candidate: VersionName
    verdict: GateVerdict
    reason: Text = ""
    candidate_hit5: Ratio | None = None
    champion_hit5: Ratio | None = None
    time: datetime | None = Field(None, description="When the verdict was reached.")


class Baseline(ApiModel):
    """What the champion's drift is measured against."""

    version: VersionName
    source: Annotated[str, StringConstraints(max_length=16)] = Field(
        description="spec (spec.evaluation.drift.baseline) or recorded (first evaluation)."
    )
    time: datetime | None = None
    eval_set_sha256: Sha256 | None = None
    hit1: Ratio | None = None
    hit5: Ratio
    hit10: Ratio | None = None
    lanes: list[LaneResult] | None = Field(None, max_length=NUM_LANES)


class DriftRow(ApiModel):
    metric: Annotated[str, StringConstraints(max_length=16)] = Field(
        description="hit1, hit5 or hit10.")
    lane: Int | None = Field(None, ge=0, le=NUM_LANES - 1, description="Unset: overall.")
    baseline: Ratio
    current: Ratio
    relative: Float = Field(allow_inf_nan=False, description="(current - baseline) / baseline.")
    drifted: Bool


class DriftStatus(ApiModel):
    """The latest drift check of the serving champion."""

    version: VersionName
    verdict: DriftVerdict
    reason: Text = ""
    time: datetime | None = Field(None, description="When the last check finished.")
    next_check_at: datetime | None = None
    rows: list[DriftRow] | None = Field(None, max_length=MAX_LANE_ROWS)


class RunningEvaluation(ApiModel):
    purpose: EvalPurpose
    version: VersionName
    started_at: datetime


class EvaluationStatus(ApiModel):
    """Offline evaluation: gate, drift, baseline, what is running, and recent results."""

    gate: GateStatus | None = None
    gate_since: datetime | None = Field(
        None, description="Results older than this are not used by the gate (set by retry)."
    )
    drift: DriftStatus | None = None
    baseline: Baseline | None = None
    running: list[RunningEvaluation] | None = Field(None, max_length=8)
    history: list[EvalResult] | None = Field(
        None, max_length=MAX_EVAL_HISTORY,
        description=f"Recent evaluations, newest last; at most {MAX_EVAL_HISTORY}.",
    )


class LaneFlag(ApiModel):
    """A lane more than laneHealth.maxBelowOverall below its version's overall."""

    version: VersionName
    lane: Int = Field(ge=0, le=NUM_LANES - 1)
    source: LaneSource
    value: Ratio
    overall: Ratio
    below_relative: Float = Field(allow_inf_nan=False, description="(overall - value) / overall.")
    samples: Float | None = Field(None, ge=0, allow_inf_nan=False,
                                  description="Feedback events (production) or sequences (eval).")


class LaneHealthStatus(ApiModel):
    """Per-lane health: the latest production check and the latest eval results."""

    verdict: LaneHealthVerdict
    reason: Text = ""
    time: datetime | None = Field(None, description="When production lanes were last checked.")
    next_check_at: datetime | None = None
    flagged: list[LaneFlag] | None = Field(None, max_length=MAX_LANE_ROWS)


class GitSpec(ApiModel):
    """What to write in Git so that the spec describes what serves. The operator never edits
    the spec (a GitOps tool would put its copy back); it says what the spec should become."""

    in_sync: Bool = Field(description="The spec already describes what serves.")
    champion: ModelVersion | None = Field(
        None, description="What spec.champion should say: the version serving all traffic.")
    remove_candidate: Bool = Field(
        False, description="spec.candidate names a version that is done with (promoted or "
        "rolled back): remove it, or name the next candidate.")
    message: Text = Field(description="What to change in Git, in one line.")


class LVMRolloutStatus(ApiModel):
    """Where the rollout is, why, and what it has done."""

    phase: Phase | None = Field(
        None,
        description=(
            "Pending, Progressing, Paused, Promoted, RolledBack, Failed, or Steady (the spec "
            "names no candidate: the champion serves all traffic)."
        ),
    )
    observed_generation: Int | None = Field(
        None, ge=0, description="The metadata.generation this status was computed for."
    )
    current_step: Int | None = Field(
        None,
        ge=0,
        le=MAX_STEPS - 1,
        description="Index (from 0) of the current step in spec.steps.",
    )
    candidate_weight: Int | None = Field(
        None, ge=0, le=100, description="Percent of traffic the candidate receives now."
    )
    step_started_at: datetime | None = Field(
        None, description="When the current step began (RFC3339)."
    )
    next_step_at: datetime | None = Field(
        None, description="When the current step's dwell time ends (RFC3339)."
    )
    last_analysis: LastAnalysis | None = Field(None, description="The latest analysis.")
    consecutive_breaches: Int | None = Field(
        None, ge=0, description="Guardrail breaches in a row (resets on a pass)."
    )
    history: list[HistoryEntry] | None = Field(
        None,
        max_length=MAX_HISTORY,
        description=f"Versions finished with, newest last; at most {MAX_HISTORY}.",
    )
    conditions: Conditions | None = Field(None, description="Kubernetes-style conditions.")
    message: Text | None = Field(None, description="The latest decision, in one line.")
    last_command: LastCommand | None = Field(None, description="The last manual command.")
    serving: Serving | None = Field(None, description="What is served now.")
    decision_state: DecisionState | None = Field(
        None, description="The decision core's state, read back by the operator."
    )
    evaluation: EvaluationStatus | None = Field(
        None, description="Offline evaluation: pre-rollout gate, drift check, results."
    )
    lane_health: LaneHealthStatus | None = Field(
        None, description="Per-lane health (production metrics and eval results)."
    )
    git_spec: GitSpec | None = Field(
        None, description="After a rollout ends: what to write in Git so that the spec "
        "describes what serves (unset while a rollout runs)."
    )
