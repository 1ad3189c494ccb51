"""A small Prometheus reader: *where* the queries of :mod:`.promql` are asked.

It runs one query per metric for all rollouts and splits the answer by the ``rollout`` label
into the decision core's :class:`~lvm_operator.decision.WindowObservation`. Failures are typed
(:mod:`.errors`) and quote the query; "no data" is not a failure: a rollout without series gets
an empty observation, which the decision core judges ``noData``.

Retries are off by default: the decision core already treats one failed check as ``error``
(hold) rather than a breach, so a slow retry loop would only delay the next decision.
"""

from __future__ import annotations

import ast
import json
import logging
import math
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from prometheus_api_client.exceptions import PrometheusApiClientException
from prometheus_api_client.prometheus_connect import PrometheusConnect  # no pandas import
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from lvm_serving.contracts import metrics as mc

from ..decision import latency
from ..decision.model import LaneMetrics, VersionMetrics, WindowObservation
from . import promql
from .errors import AnalysisError, PrometheusUnavailable, QueryFailed, UnexpectedResponse
from .promql import Query, ShadowFilter

log = logging.getLogger(__name__)

_STATUS = re.compile(r"HTTP Status Code (\d+) \((.*)\)\s*$", re.S)


@dataclass(frozen=True)
class Sample:
    """One element of an instant vector."""

    labels: Mapping[str, str]
    value: float
    time: float | None = None  # the evaluation time Prometheus answered for


#: Prometheus' ``errorType`` values (its HTTP API): the only part of an error answer quoted.
ERROR_TYPES = frozenset({"bad_data", "execution", "timeout", "canceled", "internal",
                         "unavailable", "not_found", "not_acceptable"})


def _prometheus_message(raw: str, url: str) -> str:
    """Our words for an error answer: Prometheus' ``errorType`` when it is one of its own, never
    its text (whatever answers at ``prometheus.url`` is not ours, and this reaches status and
    Events). The text is logged for the operator's admin."""
    log.warning("Prometheus at %s answered an error: %.2000s", url, raw)
    try:
        body = ast.literal_eval(raw)
        data = json.loads(body.decode() if isinstance(body, bytes) else body)
        kind = data.get("errorType")
    except (ValueError, SyntaxError, TypeError, AttributeError):
        kind = None
    if kind in ERROR_TYPES:
        return f"{kind} (Prometheus' message is in the operator's log)"
    return "not a Prometheus error answer (it is in the operator's log)"


def _shape(value: Any) -> str:
    """What an unexpected answer looked like, in our words (types and sizes, no content)."""
    if isinstance(value, list):
        return f"a list of {len(value)} ({', '.join(sorted({type(v).__name__ for v in value}))})"
    return f"a {type(value).__name__}"


def _parse_value(raw: Any, query: str) -> tuple[float, float]:
    """``[timestamp, "value"]`` as (time, value); "NaN", "+Inf" parse too."""
    try:
        return float(raw[0]), float(raw[1])
    except (TypeError, ValueError, IndexError) as e:
        raise UnexpectedResponse(f"a sample value is not [time, number] but {_shape(raw)}",
                                 query) from e


@dataclass(frozen=True)
class Snapshot:
    """All rollouts' observations over one window, or the error that prevented them."""

    window_s: float
    rollouts: Mapping[str, WindowObservation] = field(default_factory=dict)
    error: str | None = None

    def for_rollout(self, rollout: str) -> WindowObservation:
        """The observation for one rollout (``namespace/name``); empty means noData."""
        if self.error is not None:
            return WindowObservation(self.window_s, error=self.error)
        return self.rollouts.get(rollout, WindowObservation(self.window_s))


class PrometheusReader:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float = 5.0,
        retries: int = 0,
        client: PrometheusConnect | None = None,
        connections: int = 10,
    ) -> None:
        self.url = url.rstrip("/")
        retry = Retry(
            total=retries, connect=retries, read=retries, status=retries, backoff_factor=0.2,
            status_forcelist=(502, 503, 504), raise_on_status=False,
        )
        if client is None:
            # As many pooled connections as ticks may query at once (requests' default of 10
            # made the other tick threads wait for a connection, not for Prometheus).
            session = requests.Session()
            client = PrometheusConnect(url=self.url, retry=retry, timeout=timeout_s,
                                       session=session)
            session.mount(self.url + "/", HTTPAdapter(
                max_retries=retry, pool_connections=2, pool_maxsize=max(connections, 1)))
        self._client = client

    def close(self) -> None:
        close = getattr(self._client, "close", None)  # older prometheus-api-client lacks it
        if close is not None:
            close()

    def query(self, promql_text: str, *, at: float | None = None) -> list[Sample]:
        """Run an instant query; return its vector. Raises an :class:`AnalysisError` subclass."""
        params = {} if at is None else {"time": f"{at:.3f}"}
        try:
            result = self._client.custom_query(promql_text, params=params)
        except requests.exceptions.RequestException as e:
            raise PrometheusUnavailable(
                f"Prometheus at {self.url} is unreachable ({type(e).__name__}: {e})", promql_text
            ) from e
        except PrometheusApiClientException as e:
            m = _STATUS.match(str(e))
            code = int(m.group(1)) if m else None
            detail = _prometheus_message(m.group(2) if m else str(e), self.url)
            if code is not None and code >= 500:
                raise PrometheusUnavailable(
                    f"Prometheus at {self.url} answered HTTP {code}: {detail}", promql_text
                ) from e
            raise QueryFailed(
                f"Prometheus at {self.url} rejected the query (HTTP {code}): {detail}",
                promql_text, code,
            ) from e
        except (ValueError, KeyError, TypeError) as e:  # JSON without data.result
            log.warning("Prometheus at %s sent an unreadable answer: %.2000s", self.url, e)
            raise UnexpectedResponse(
                f"Prometheus at {self.url} sent an unreadable answer ({type(e).__name__})",
                promql_text,
            ) from e
        if not isinstance(result, list):
            raise UnexpectedResponse(f"expected an instant vector, got {_shape(result)}",
                                     promql_text)
        if len(result) == 2 and isinstance(result[0], int | float):
            # prometheus-api-client hands back data.result as is: [time, "value"] for a scalar
            raise UnexpectedResponse(
                "expected an instant vector, got a scalar or string", promql_text
            )
        samples = []
        for item in result:
            if not (isinstance(item, dict) and isinstance(item.get("metric"), dict)
                    and isinstance(item.get("value"), list)):
                raise UnexpectedResponse(
                    f"expected an instant vector, got an element that is {_shape(item)}",
                    promql_text)
            at_time, value = _parse_value(item["value"], promql_text)
            samples.append(Sample(item["metric"], value, at_time))
        return samples

    def observe(
        self,
        window_s: float,
        queries: Iterable[Query],
        *,
        shadow: ShadowFilter = ShadowFilter.INCLUDE,
        at: float | None = None,
    ) -> Snapshot:
        """Run ``queries`` over ``window_s`` for all rollouts. Never raises AnalysisError:
        a failure becomes ``Snapshot.error`` (every rollout's check then reads ``error``).

        All queries of one snapshot are evaluated at one instant: ``at``, or else the time
        Prometheus evaluated the first answer with samples for (its own clock, so a skewed
        operator clock cannot move the window). Asked each at its own "now", a short window
        slid between the feedback query and the hits query: on a busy machine the hits query's
        2 s range held one scrape (no result, so 0 hits) and a 70% candidate read "Hit@5 proxy
        0% over 360 feedback events" and was rolled back."""
        rendered = promql.render_all(queries, window_s, shadow)
        answers: dict[Query, list[Sample]] = {}
        try:
            for q, text in rendered.items():
                answers[q] = self.query(text, at=at)
                if at is None:
                    at = next((x.time for x in answers[q] if x.time is not None), None)
        except AnalysisError as e:
            log.warning("analysis query failed: %s", e)
            return Snapshot(window_s, error=str(e))
        return Snapshot(window_s, build_observations(window_s, answers))

    def observe_guardrails(self, window_s: float, **kw: Any) -> Snapshot:
        return self.observe(window_s, promql.GUARDRAIL_QUERIES, **kw)

    def observe_quality(self, window_s: float, **kw: Any) -> Snapshot:
        return self.observe(window_s, promql.QUALITY_QUERIES, **kw)


def _count(v: float) -> float:
    return v if math.isfinite(v) and v > 0 else 0.0


def _div(num: float, den: float) -> float | None:
    """A share of events that are a subset of ``den`` (hits of feedback, errors or empty hits of
    requests), or None without events. ``increase()`` extrapolates each series on its own (a
    series that appeared inside the window is stretched differently), so the subset can come
    out a little larger than the whole: it is capped at the whole, never reported as 100.3%."""
    return min(num, den) / den if den > 0 else None


def build_observations(
    window_s: float, answers: Mapping[Query, list[Sample]]
) -> dict[str, WindowObservation]:
    """Turn query answers into one observation per rollout (pure; tested without Prometheus).

    Counter series that do not exist count as 0 (a counter is exported once incremented), so a
    version with requests and no error series has an error rate of 0, not "no data". Ratios
    whose denominator is 0 are ``None``. A series whose target namespace (Prometheus' Kubernetes
    ``namespace`` label) is not the rollout's (the ``ns`` of its ``rollout="ns/name"`` label) is
    ignored: another namespace's pods cannot judge this rollout. Series without the label (a
    static scrape config, as on the local stack) count.
    """
    # counts[query][(rollout, version)][lane] = value
    counts: dict[Query, dict[tuple[str, str], dict[str, float]]] = defaultdict(
        lambda: defaultdict(lambda: defaultdict(float))
    )
    p95: dict[tuple[str, str], float] = {}
    buckets: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    keys: set[tuple[str, str]] = set()
    foreign: set[tuple[str, str]] = set()
    for q, samples in answers.items():
        for s in samples:
            rollout = s.labels.get(mc.LABEL_ROLLOUT)
            version = s.labels.get(mc.LABEL_VERSION)
            if not rollout or not version:
                continue
            target_ns = s.labels.get(promql.TARGET_NAMESPACE)
            if target_ns and target_ns != rollout.split("/", 1)[0]:
                foreign.add((rollout, target_ns))  # scraped from another namespace's pod
                continue
            key = (rollout, version)
            keys.add(key)
            if q is Query.P95_LATENCY:
                p95[key] = s.value
            elif q is Query.LATENCY_BUCKETS:
                try:
                    buckets[key].append((float(s.labels.get("le", "")), s.value))
                except ValueError:
                    continue  # a bucket without a numeric le is not ours
            else:
                counts[q][key][s.labels.get(mc.LABEL_LANE, "")] += _count(s.value)

    for rollout, target_ns in sorted(foreign):
        log.warning("ignoring series for rollout %s scraped from namespace %s: a rollout is "
                    "judged only on series from its own namespace", rollout, target_ns)

    def per_lane(q: Query, key: tuple[str, str]) -> dict[str, float]:
        return counts[q][key] if key in counts.get(q, {}) else {}

    out: dict[str, dict[str, VersionMetrics]] = defaultdict(dict)
    for key in sorted(keys):
        req, err, empty = (per_lane(q, key) for q in
                           (Query.REQUESTS, Query.SERVER_ERRORS, Query.EMPTY_HITS))
        fb, hits = per_lane(Query.FEEDBACK, key), per_lane(Query.HIT5_PROXY_HITS, key)
        n_req, n_fb = sum(req.values()), sum(fb.values())
        lanes = {
            lane: LaneMetrics(
                requests=req.get(lane, 0.0),
                feedback=fb.get(lane, 0.0),
                hit5_proxy=_div(hits.get(lane, 0.0), fb.get(lane, 0.0)),
                error_rate=_div(err.get(lane, 0.0), req.get(lane, 0.0))
                if Query.SERVER_ERRORS in answers else None,
            )
            for lane in sorted(set(req) | set(fb), key=lambda x: (len(x), x))
            if lane
        }
        p = p95.get(key)
        hist = latency.monotone(buckets.get(key, ()))
        if hist and not math.isinf(hist[-1][0]):
            hist = ()  # no +Inf bucket: not a whole histogram
        if p is None and hist:
            p = latency.quantile(hist, 0.95)
        out[key[0]][key[1]] = VersionMetrics(
            requests=n_req,
            error_rate=_div(sum(err.values()), n_req) if Query.SERVER_ERRORS in answers else None,
            p95_latency_seconds=None if p is None or math.isnan(p) else p,
            empty_hit_rate=_div(sum(empty.values()), n_req) if Query.EMPTY_HITS in answers
            else None,
            feedback=n_fb,
            hit5_proxy=_div(sum(hits.values()), n_fb),
            lanes=lanes,
            latency_buckets=hist,
        )
    return {r: WindowObservation(window_s, versions) for r, versions in out.items()}
