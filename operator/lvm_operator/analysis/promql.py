"""PromQL rendered by pure functions from the metric contract: *what* to ask Prometheus.

Where it is asked (the HTTP client, errors) lives in :mod:`.prometheus`; the alert rules in
:mod:`lvm_operator.alerts` reuse these builders, so the operator, the alerts and the exporter can
only disagree if the contract itself changes.

Shapes, and why:

* One query per metric for **all** rollouts, grouped ``by (rollout, version, lane)``: the
  operator runs a fixed number of queries per window however many rollouts it manages, then
  splits the result by the ``rollout`` label.
* Counters are selected by one name, ``ray_lvm_requests_total``. Ray prefixes
  custom metrics with ``ray_``, and its legacy exporter may also emit a same-named gauge without
  ``_total`` that a looser selector would add to every sum (see ``exported_series``).
* Counts are ``increase()`` over the window; ratios (error rate, empty-hit rate, Hit@5 proxy)
  are computed by the reader from the counts, so a counter that has never been incremented
  (no series at all) reads as 0 instead of making the ratio vanish.
* Latency is read as bucket counts, ``sum by (le, rollout, version) (increase(..._bucket[w]))``:
  the reader computes the P95 from them (as ``histogram_quantile`` does) and the decision core
  compares the versions' shares of slow requests (:mod:`lvm_operator.decision.latency`).
* Shadow traffic (``shadow="true"``: copies the client never saw) is *included* by default: in a
  shadow step it is the only evidence about the candidate. Alerts and served-traffic shares
  exclude it (:attr:`ShadowFilter.EXCLUDE`): they are about what clients got.
* Pinned traffic (``pinned="true"``: QA sent it to a named version with ``x-lvm-version``) is
  *always* excluded: a person chose its version and often its inputs, so it is evidence about
  neither the weight's users nor the candidate's quality. ``!="true"`` also matches series
  without the label (an older router).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from enum import StrEnum

from lvm_serving.contracts import metrics as mc

BY_LANE: tuple[str, ...] = (mc.LABEL_ROLLOUT, mc.LABEL_VERSION, mc.LABEL_LANE)
BY_VERSION: tuple[str, ...] = (mc.LABEL_ROLLOUT, mc.LABEL_VERSION)
#: The label Prometheus' Kubernetes discovery puts on every target (a PodMonitor's pod's
#: namespace). The judge's queries keep it, and the reader counts a series for rollout
#: ``ns/name`` only from targets in ``ns`` (:func:`~.prometheus.build_observations`): a Ray pod
#: in another namespace cannot emit series that judge this namespace's rollout.
TARGET_NAMESPACE = "namespace"
JUDGE_BY_LANE: tuple[str, ...] = (*BY_LANE, TARGET_NAMESPACE)
JUDGE_BY_VERSION: tuple[str, ...] = (*BY_VERSION, TARGET_NAMESPACE)

_SAFE_VALUE = re.compile(r"^[A-Za-z0-9_.:/-]*$")
_LABEL_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ShadowFilter(StrEnum):
    INCLUDE = "include"  # everything the version answered (rollout analysis)
    EXCLUDE = "exclude"  # only answers clients received (alerts, traffic shares)
    ONLY = "only"  # only shadow copies


class Query(StrEnum):
    """The per-window queries the reader runs; each yields one vector for all rollouts."""

    REQUESTS = "requests"
    SERVER_ERRORS = "server_errors"
    EMPTY_HITS = "empty_hits"
    FEEDBACK = "feedback"
    HIT5_PROXY_HITS = "hit5_proxy_hits"
    P95_LATENCY = "p95_latency"
    LATENCY_BUCKETS = "latency_buckets"  # cumulative counts per bucket: P95 and exceedances


GUARDRAIL_QUERIES: tuple[Query, ...] = (
    Query.REQUESTS, Query.SERVER_ERRORS, Query.EMPTY_HITS, Query.LATENCY_BUCKETS,
)
# Server errors too: a lane whose every request fails "fails completely".
QUALITY_QUERIES: tuple[Query, ...] = (
    Query.REQUESTS, Query.SERVER_ERRORS, Query.FEEDBACK, Query.HIT5_PROXY_HITS,
)


def duration(window_s: float) -> str:
    """Seconds -> a PromQL duration: 30 -> '30s', 3600 -> '1h', 1.5 -> '1500ms'."""
    if not (math.isfinite(window_s) and window_s > 0):
        raise ValueError(f"window_s={window_s!r} is invalid: must be a finite number > 0")
    ms = round(window_s * 1000)
    if ms == 0:
        raise ValueError(f"window_s={window_s!r} is invalid: must be at least 1 ms")
    if ms % 1000:
        return f"{ms}ms"
    s = ms // 1000
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


def _quote(value: str) -> str:
    if not _SAFE_VALUE.match(value):
        raise ValueError(
            f"label value {value!r} is invalid here: use letters, digits and _ . : / - only"
        )
    return f'"{value}"'


def _by(labels: Sequence[str]) -> str:
    for name in labels:
        if not _LABEL_NAME.match(name):
            raise ValueError(f"label name {name!r} is invalid: must match {_LABEL_NAME.pattern}")
    return ", ".join(labels)


def _shadow_matchers(shadow: ShadowFilter) -> list[str]:
    if shadow is ShadowFilter.EXCLUDE:
        return [f'{mc.LABEL_SHADOW}!="true"']
    if shadow is ShadowFilter.ONLY:
        return [f'{mc.LABEL_SHADOW}="true"']
    return []


def selector(
    metric: mc.MetricDef,
    *,
    suffix: str = "",
    shadow: ShadowFilter = ShadowFilter.INCLUDE,
    equal: Mapping[str, str] | None = None,
    one_of: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """A series selector for a contract metric as Ray exports it.

    ``equal`` adds ``label="value"`` matchers; ``one_of`` adds ``label=~"a|b"``.
    Counters by their one ``_total`` name, histogram parts by theirs (``ray_..._bucket``).
    """
    if metric.kind is mc.MetricKind.COUNTER and suffix:
        raise ValueError(f"suffix={suffix!r} is invalid for counter {metric.name}: use ''")
    if metric.kind is mc.MetricKind.HISTOGRAM and suffix not in ("_bucket", "_sum", "_count"):
        raise ValueError(
            f"suffix={suffix!r} is invalid for histogram {metric.name}: "
            "use '_bucket', '_sum' or '_count'"
        )
    allowed = set(metric.labels) | ({"le"} if suffix == "_bucket" else set())
    matchers: list[str] = []
    for label, value in (equal or {}).items():
        if label not in allowed:
            raise ValueError(f"label {label!r} is not on {metric.name}: {sorted(allowed)}")
        matchers.append(f"{label}={_quote(value)}")
    for label, values in (one_of or {}).items():
        if label not in allowed:
            raise ValueError(f"label {label!r} is not on {metric.name}: {sorted(allowed)}")
        vals = sorted(set(values))
        if not vals:
            raise ValueError(f"one_of[{label!r}] is empty")
        for v in vals:
            _quote(v)
        matchers.append(f'{label}=~"{"|".join(vals)}"')
    if mc.LABEL_SHADOW in metric.labels:
        matchers += _shadow_matchers(shadow)
    if mc.LABEL_PINNED in metric.labels:  # QA's pinned requests are never judged
        matchers.append(f'{mc.LABEL_PINNED}!="true"')
    name = mc.exported_series(metric, suffix)
    if re.fullmatch(r"[A-Za-z_:][A-Za-z0-9_:]*", name):
        return f"{name}{{{', '.join(matchers)}}}" if matchers else name
    return "{" + ", ".join([f'__name__=~"{name}"', *matchers]) + "}"


def increase(
    metric: mc.MetricDef,
    window_s: float,
    *,
    by: Sequence[str] = BY_LANE,
    shadow: ShadowFilter = ShadowFilter.INCLUDE,
    equal: Mapping[str, str] | None = None,
    one_of: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """``sum by (...) (increase(<counter>[w]))``: how many events in the window."""
    sel = selector(metric, shadow=shadow, equal=equal, one_of=one_of)
    return f"sum by ({_by(by)}) (increase({sel}[{duration(window_s)}]))"


def latency_quantile(
    q: float,
    window_s: float,
    *,
    by: Sequence[str] = BY_VERSION,
    shadow: ShadowFilter = ShadowFilter.INCLUDE,
) -> str:
    """``histogram_quantile(q, sum by (le, ...) (rate(<latency>_bucket[w])))`` in seconds."""
    if not 0.0 < q < 1.0:
        raise ValueError(f"q={q!r} is invalid: must be in (0, 1)")
    sel = selector(mc.LATENCY, suffix="_bucket", shadow=shadow)
    return (
        f"histogram_quantile({q:g}, sum by (le, {_by(by)}) "
        f"(rate({sel}[{duration(window_s)}])))"
    )


def latency_buckets(
    window_s: float,
    *,
    by: Sequence[str] = BY_VERSION,
    shadow: ShadowFilter = ShadowFilter.INCLUDE,
) -> str:
    """``sum by (le, ...) (increase(<latency>_bucket[w]))``: each bucket's count in the window,
    from which the reader computes quantiles and the shares of requests above a latency."""
    sel = selector(mc.LATENCY, suffix="_bucket", shadow=shadow)
    return f"sum by (le, {_by(by)}) (increase({sel}[{duration(window_s)}]))"


def ratio(numerator: str, denominator: str) -> str:
    """``numerator / denominator`` where a missing numerator series counts as 0.

    PromQL drops a label set from a division when either side lacks it; a counter that never
    incremented has no series, so ``errors / requests`` would *hide* a version with no errors
    (harmless) and ``hits / feedback`` would hide a version with no hits at all (the worst
    case). ``(num or den * 0) / den`` fills the gap with zeros from the denominator's labels.
    """
    return f"(({numerator}) or (({denominator}) * 0)) / ({denominator})"


def server_error_increase(
    window_s: float, *, by: Sequence[str] = BY_LANE, shadow: ShadowFilter = ShadowFilter.INCLUDE
) -> str:
    """Errors that count against the version: ``SERVER_ERROR_REASONS`` (NaN/Inf included)."""
    return increase(
        mc.ERRORS, window_s, by=by, shadow=shadow,
        one_of={mc.LABEL_REASON: [r.value for r in mc.SERVER_ERROR_REASONS]},
    )


def hit5_proxy_increase(
    window_s: float, *, by: Sequence[str] = BY_LANE, shadow: ShadowFilter = ShadowFilter.INCLUDE
) -> str:
    """Feedback events that were a Hit@5 by the seed's proxy (cosine > 0.6)."""
    return increase(
        mc.FEEDBACK_HITS, window_s, by=by, shadow=shadow,
        equal={mc.LABEL_K: "5", mc.LABEL_HIT_KIND: "proxy"},
    )


def render(query: Query, window_s: float, shadow: ShadowFilter = ShadowFilter.INCLUDE) -> str:
    """The PromQL for one of the reader's per-window queries."""
    lane, version = JUDGE_BY_LANE, JUDGE_BY_VERSION
    if query is Query.REQUESTS:
        return increase(mc.REQUESTS, window_s, by=lane, shadow=shadow)
    if query is Query.SERVER_ERRORS:
        return server_error_increase(window_s, by=lane, shadow=shadow)
    if query is Query.EMPTY_HITS:
        return increase(mc.EMPTY_HITS, window_s, by=lane, shadow=shadow)
    if query is Query.FEEDBACK:
        return increase(mc.FEEDBACK, window_s, by=lane, shadow=shadow)
    if query is Query.HIT5_PROXY_HITS:
        return hit5_proxy_increase(window_s, by=lane, shadow=shadow)
    if query is Query.P95_LATENCY:
        return latency_quantile(0.95, window_s, by=version, shadow=shadow)
    if query is Query.LATENCY_BUCKETS:
        return latency_buckets(window_s, by=version, shadow=shadow)
    raise ValueError(f"query={query!r} is invalid: choose one of {[q.value for q in Query]}")


def render_all(
    queries: Iterable[Query], window_s: float, shadow: ShadowFilter = ShadowFilter.INCLUDE
) -> dict[Query, str]:
    return {q: render(q, window_s, shadow) for q in dict.fromkeys(queries)}
