"""The metric contract between the serving side and the operator: defined once, here.

The router records these through Ray's metric API (``ray.util.metrics``); the operator's PromQL and
the alert rules are rendered from the same constants, so a rename cannot silently break analysis.

Two facts about how Ray exports custom metrics shape this module:

* every name gets a ``ray_`` prefix in the Prometheus exposition;
* counters are exported as ``<name>_total`` and, by Ray's legacy exporter unless
  ``RAY_EXPORT_COUNTER_AS_GAUGE=0`` (pinned wherever this project starts Ray), *also* as a
  deprecated gauge named ``<name>``.

So the names below are *base* names (no ``ray_`` prefix, no ``_total``); :func:`exported_series`
gives the one series name queries select (by ``__name__=~``), ``..._total`` for a counter, never
both spellings: a query matching both would count every event twice.

This module imports nothing beyond the standard library so the operator can use it without
pulling in Ray or torch.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

RAY_PREFIX = "ray_"

# Label keys, shared by every LVM metric.
LABEL_ROLLOUT = "rollout"  # the LVMRollout (namespace/name) the serving app belongs to
LABEL_VERSION = "version"  # model version name, e.g. "phase2-500ctx"
LABEL_LANE = "lane"  # TMD lane 0..15 as a decimal string
LABEL_SHADOW = "shadow"  # "true" when the request was a shadow copy the client never saw
# "true" when the client pinned the request to a version (the x-lvm-version header, for QA):
# such traffic is chosen by a person, not by the rollout's weight, so the judge never counts it.
LABEL_PINNED = "pinned"
LABEL_REASON = "reason"  # error reason, see ErrorReason
LABEL_K = "k"  # hit@k: "1", "5" or "10"
LABEL_HIT_KIND = "kind"  # "proxy" (cosine threshold) or "exact" (clicked concept in top-k)
LABEL_STAGE = "stage"  # a hop of a request's path, see Stage

COMMON_LABELS: tuple[str, ...] = (LABEL_ROLLOUT, LABEL_VERSION, LABEL_LANE, LABEL_SHADOW,
                                  LABEL_PINNED)

NUM_LANES = 16

# The seed plan's Hit@K proxies: cosine(predicted, clicked concept) above these counts as a hit.
HIT_PROXY_COSINE: dict[int, float] = {1: 0.8, 5: 0.6, 10: 0.4}
# Best retrieved similarity below this makes the request an "empty hit".
EMPTY_HIT_SIMILARITY = 0.4

# Fine enough around 1-15 ms to resolve a 5 ms (success) and 10 ms (rollback) P95.
LATENCY_BUCKETS_SECONDS: tuple[float, ...] = (
    0.0005, 0.001, 0.0015, 0.002, 0.0025, 0.003, 0.004, 0.005, 0.006, 0.0075,
    0.01, 0.0125, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


# Stages span 50 us (parsing a header) to seconds (an exact top-k over a very large bank).
STAGE_BUCKETS_SECONDS: tuple[float, ...] = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025,
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
)  # fmt: skip


class Stage(StrEnum):
    """Where a request's time goes (the ``stage`` label of ``lvm_stage_latency_seconds``).

    Router stages: ``read`` (receive the body from the Serve proxy), ``parse`` (validate it),
    ``call`` (the version's answer, as the router waits for it), ``hop`` (``call`` minus the
    version's own ``version``: Ray's transport both ways and the replica's scheduling),
    ``encode`` (concepts, feedback token, JSON), ``router`` (all of the router). Version stages:
    ``queue`` (waiting for the replica's inference slot), ``model`` (input checks and the forward
    pass), ``retrieval`` (top-k over the concept bank), ``version`` (all of the version)."""

    READ = "read"
    PARSE = "parse"
    CALL = "call"
    HOP = "hop"
    ENCODE = "encode"
    ROUTER = "router"
    QUEUE = "queue"
    MODEL = "model"
    RETRIEVAL = "retrieval"
    VERSION = "version"


class ErrorReason(StrEnum):
    """Why a request counted as an error (the ``reason`` label)."""

    NAN_OUTPUT = "nan_output"  # the model produced NaN/Inf: counted, answered with a 5xx
    EXCEPTION = "exception"  # the model or retrieval raised
    BAD_INPUT = "bad_input"  # the client sent something invalid: a 4xx, not the model's fault
    TIMEOUT = "timeout"


class FeedbackRejection(StrEnum):
    """Why feedback was refused and not counted (the ``reason`` label of FEEDBACK_REJECTED)."""

    REPLAY = "replay"  # the token was already used: 409
    UNVOUCHED = "unvouched"  # issued before the replay guard's record began (a Ray restart): 409
    INVALID = "invalid"  # malformed, forged or tampered with: 400/403
    EXPIRED = "expired"  # past its lifetime: 403
    NO_KEY = "no_key"  # the router has no signing key: 503
    USER_CAP = "user_cap"  # the user's feedback for this version this hour is at its cap: 429


# Errors that count against a version in the error-rate guardrail (bad input is the client's).
SERVER_ERROR_REASONS: tuple[ErrorReason, ...] = (
    ErrorReason.NAN_OUTPUT,
    ErrorReason.EXCEPTION,
    ErrorReason.TIMEOUT,
)


class MetricKind(StrEnum):
    COUNTER = "counter"
    HISTOGRAM = "histogram"


@dataclass(frozen=True)
class MetricDef:
    name: str  # base name: no "ray_" prefix, no "_total"
    kind: MetricKind
    description: str  # ASCII only: Ray's metric recorder refuses anything else at start-up
    labels: tuple[str, ...]

    def __post_init__(self) -> None:
        if not self.description.isascii():
            raise ValueError(f"metric {self.name}: description must be ASCII (Ray refuses "
                             f"other help texts): {self.description!r}")


REQUESTS = MetricDef(
    "lvm_requests", MetricKind.COUNTER,
    "Predictions the router sent to a model version (attempts, including those that failed "
    "before the version answered), by version and TMD lane.",
    COMMON_LABELS,
)
ERRORS = MetricDef(
    "lvm_request_errors", MetricKind.COUNTER,
    "Failed predictions by reason (nan_output, exception, bad_input, timeout).",
    (*COMMON_LABELS, LABEL_REASON),
)
LATENCY = MetricDef(
    "lvm_request_latency_seconds", MetricKind.HISTOGRAM,
    "Model + retrieval latency of one prediction, in seconds.", COMMON_LABELS,
)
EMPTY_HITS = MetricDef(
    "lvm_empty_hits", MetricKind.COUNTER,
    f"Predictions whose best concept similarity was below {EMPTY_HIT_SIMILARITY}.", COMMON_LABELS,
)
FEEDBACK = MetricDef(
    "lvm_feedback", MetricKind.COUNTER, "Accepted click feedback events.", COMMON_LABELS,
)
FEEDBACK_HITS = MetricDef(
    "lvm_feedback_hits", MetricKind.COUNTER,
    "Feedback events that were a hit at k (kind=proxy: cosine threshold; kind=exact: in top-k).",
    (*COMMON_LABELS, LABEL_K, LABEL_HIT_KIND),
)
FEEDBACK_REJECTED = MetricDef(
    "lvm_feedback_rejected", MetricKind.COUNTER,
    "Feedback refused and not counted, by reason (replay: the token was already used; "
    "unvouched: issued before the replay guard began; invalid; expired; no_key). version is "
    "the token's for a replay, 'unknown' when the token could not be read.",
    (LABEL_ROLLOUT, LABEL_VERSION, LABEL_REASON),
)
SHADOW_COMPARISONS = MetricDef(
    "lvm_shadow_comparisons", MetricKind.COUNTER,
    "Shadowed requests answered by both versions.", (LABEL_ROLLOUT, LABEL_VERSION, LABEL_LANE),
)
SHADOW_TOP5_OVERLAP = MetricDef(
    "lvm_shadow_top5_overlap", MetricKind.COUNTER,
    "Sum over shadowed requests of |top5(champion) & top5(candidate)| / 5.",
    (LABEL_ROLLOUT, LABEL_VERSION, LABEL_LANE),
)
SHADOW_COSINE = MetricDef(
    "lvm_shadow_cosine", MetricKind.COUNTER,
    "Sum over shadowed requests of cosine(champion prediction, candidate prediction).",
    (LABEL_ROLLOUT, LABEL_VERSION, LABEL_LANE),
)

STAGE_LATENCY = MetricDef(
    "lvm_stage_latency_seconds", MetricKind.HISTOGRAM,
    "Seconds a prediction spent in one stage of its path (router read/parse/call/hop/encode, "
    "version queue/model/retrieval), by stage.",
    (LABEL_ROLLOUT, LABEL_VERSION, LABEL_STAGE),
)

ALL_METRICS: tuple[MetricDef, ...] = (
    REQUESTS, ERRORS, LATENCY, EMPTY_HITS, FEEDBACK, FEEDBACK_HITS, FEEDBACK_REJECTED,
    SHADOW_COMPARISONS, SHADOW_TOP5_OVERLAP, SHADOW_COSINE, STAGE_LATENCY,
)  # fmt: skip


def buckets_for(metric: MetricDef) -> tuple[float, ...]:
    """Histogram boundaries (seconds) of a histogram metric."""
    return STAGE_BUCKETS_SECONDS if metric is STAGE_LATENCY else LATENCY_BUCKETS_SECONDS


def exported_series(metric: MetricDef, suffix: str = "") -> str:
    """Regex for ``__name__`` matching the metric as Ray exports it.

    Counters: exactly ``<name>_total``, one name. Ray's legacy exporter also emits each
    counter as a deprecated same-named gauge without ``_total`` unless
    ``RAY_EXPORT_COUNTER_AS_GAUGE=0``; a selector matching both names would count every event
    twice (``tests/integration/test_exporter_modes.py``). For histograms pass ``suffix``
    (``_bucket``, ``_sum``, ``_count``).
    """
    base = f"{RAY_PREFIX}{metric.name}"
    if metric.kind is MetricKind.COUNTER:
        return f"{base}_total"
    return f"{base}{suffix}"
