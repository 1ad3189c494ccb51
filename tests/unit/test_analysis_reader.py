"""The reader's pure half (answers -> observations) and its error mapping.

Connection refused and a rejected query are tested against a real Prometheus in
tests/integration/test_prometheus_analysis.py; the faults a healthy Prometheus will not produce
on demand (HTTP 503, a timeout, a malformed body) use the ``FaultyClient`` below.
"""

from __future__ import annotations

import math

import pytest
import requests
from prometheus_api_client.exceptions import PrometheusApiClientException

from lvm_operator.analysis import (
    PrometheusUnavailable,
    Query,
    QueryFailed,
    UnexpectedResponse,
)
from lvm_operator.analysis.prometheus import PrometheusReader, Sample, build_observations


def s(rollout, version, value, lane=None):
    labels = {"rollout": rollout, "version": version}
    if lane is not None:
        labels["lane"] = lane
    return Sample(labels, value)


def test_counts_and_ratios_per_version_and_lane():
    answers = {
        Query.REQUESTS: [s("ml/a", "v2", 600.0, "0"), s("ml/a", "v2", 400.0, "3"),
                         s("ml/a", "v1", 9000.0, "0")],
        # 12 server errors in 1000 requests = 1.2%; v1 has no error series at all = 0%.
        Query.SERVER_ERRORS: [s("ml/a", "v2", 12.0, "0")],
        Query.EMPTY_HITS: [s("ml/a", "v2", 30.0, "0"), s("ml/a", "v2", 20.0, "3")],
        Query.FEEDBACK: [s("ml/a", "v2", 200.0, "0"), s("ml/a", "v2", 100.0, "3")],
        # lane 3 has feedback but not one hit: no hits series -> 0%, not "no data".
        Query.HIT5_PROXY_HITS: [s("ml/a", "v2", 150.0, "0")],
        Query.P95_LATENCY: [s("ml/a", "v2", 0.0124), s("ml/a", "v1", math.nan)],
    }
    obs = build_observations(30.0, answers)
    assert set(obs) == {"ml/a"}
    v2 = obs["ml/a"].versions["v2"]
    assert v2.requests == 1000.0
    assert v2.error_rate == pytest.approx(0.012)
    assert v2.empty_hit_rate == pytest.approx(0.05)  # 50 / 1000
    assert v2.feedback == 300.0 and v2.hit5_proxy == pytest.approx(0.5)  # 150 / 300
    assert v2.p95_latency_seconds == 0.0124
    assert v2.lanes["0"].hit5_proxy == pytest.approx(0.75)  # 150 / 200
    assert v2.lanes["3"].hit5_proxy == 0.0 and v2.lanes["3"].feedback == 100.0
    v1 = obs["ml/a"].versions["v1"]
    assert v1.error_rate == 0.0  # requests but no error series
    assert v1.p95_latency_seconds is None  # NaN = no observations
    assert v1.feedback == 0.0 and v1.hit5_proxy is None


def test_queries_not_run_leave_fields_unmeasured():
    obs = build_observations(30.0, {Query.REQUESTS: [s("ml/a", "v2", 10.0, "1")]})
    v2 = obs["ml/a"].versions["v2"]
    assert v2.error_rate is None and v2.empty_hit_rate is None and v2.p95_latency_seconds is None


def test_a_rollout_is_judged_only_on_series_from_its_own_namespace(caplog):
    def at(ns, rollout, version, value, lane="0"):
        return Sample({"rollout": rollout, "version": version, "lane": lane, "namespace": ns},
                      value)

    answers = {
        # ml/a's candidate: 1,000 requests from its own pods (namespace ml), 1 server error...
        Query.REQUESTS: [at("ml", "ml/a", "v2", 1000.0),
                         # ...and 9,000 "requests" claimed by a Ray pod in namespace evil
                         at("evil", "ml/a", "v2", 9000.0)],
        Query.SERVER_ERRORS: [at("ml", "ml/a", "v2", 1.0), at("evil", "ml/a", "v2", 9000.0)],
        Query.FEEDBACK: [at("ml", "ml/a", "v2", 100.0), at("evil", "ml/a", "v2", 900.0)],
        Query.HIT5_PROXY_HITS: [at("ml", "ml/a", "v2", 70.0)],  # evil sent misses only
        # no namespace label at all (a static scrape config): counted
        Query.EMPTY_HITS: [Sample({"rollout": "ml/a", "version": "v2", "lane": "0"}, 50.0)],
    }
    v2 = build_observations(30.0, answers)["ml/a"].versions["v2"]
    assert v2.requests == 1000.0 and v2.error_rate == pytest.approx(0.001)  # 1 / 1000
    assert v2.hit5_proxy == pytest.approx(0.7)  # 70 / 100, not 70 / 1000
    assert v2.empty_hit_rate == pytest.approx(0.05)
    assert "ignoring series for rollout ml/a scraped from namespace evil" in caplog.text
    # a rollout whose only series come from elsewhere has no data, not the attacker's data
    only_evil = {Query.REQUESTS: [at("evil", "ml/b", "v2", 500.0)]}
    assert build_observations(30.0, only_evil) == {}


def test_series_without_rollout_or_version_are_ignored():
    answers = {Query.REQUESTS: [Sample({"version": "v2"}, 5.0), Sample({"rollout": "x"}, 5.0)]}
    assert build_observations(30.0, answers) == {}


def test_snapshot_for_unknown_rollout_is_empty_not_error():
    from lvm_operator.analysis.prometheus import Snapshot

    snap = Snapshot(30.0, {})
    assert snap.for_rollout("ml/none").versions == {}
    assert snap.for_rollout("ml/none").error is None
    err = Snapshot(30.0, error="boom; query: up")
    assert err.for_rollout("ml/none").error == "boom; query: up"


class FaultyClient:
    """Stands in for PrometheusConnect to produce faults a healthy Prometheus will not."""

    def __init__(self, fault):
        self.fault = fault

    def custom_query(self, query, params=None):
        if isinstance(self.fault, Exception):
            raise self.fault
        return self.fault


@pytest.mark.parametrize(
    ("fault", "error", "message"),
    [
        (requests.exceptions.ReadTimeout("read timed out"), PrometheusUnavailable,
         r"Prometheus at http://prom:9090 is unreachable \(ReadTimeout: read timed out\)"),
        (PrometheusApiClientException(
            "HTTP Status Code 503 (b'{\"status\":\"error\",\"errorType\":\"timeout\","
            "\"error\":\"query timed out in expression evaluation\"}')"),
         PrometheusUnavailable,
         r"answered HTTP 503: timeout \(Prometheus' message is in the operator's log\)"),
        (PrometheusApiClientException(
            "HTTP Status Code 422 (b'{\"status\":\"error\",\"errorType\":\"execution\","
            "\"error\":\"many-to-many matching not allowed\"}')"),
         QueryFailed, r"rejected the query \(HTTP 422\): execution \(Prometheus'"),
        # an answer that is not Prometheus' (an SSRF target): not one word of it is quoted
        (PrometheusApiClientException(
            "HTTP Status Code 403 (b'<html>secret-instance-credentials</html>')"),
         QueryFailed, r"\(HTTP 403\): not a Prometheus error answer \(it is in the operator's "
                      r"log\); query"),
        ([1700000000.0, "1"], UnexpectedResponse,
         r"expected an instant vector, got a scalar or string; query"),
        ([{"metric": {}, "value": [1.0, "abc"]}], UnexpectedResponse,
         r"a sample value is not \[time, number\] but a list of 2 \(float, str\)"),
        (ValueError("Expecting value: line 1 column 1"), UnexpectedResponse,
         r"unreadable answer"),
    ],
)
def test_faults_become_typed_errors_that_quote_the_query(fault, error, message):
    reader = PrometheusReader("http://prom:9090", client=FaultyClient(fault))
    with pytest.raises(error, match=message) as info:
        reader.query("sum(up)")
    assert info.value.query == "sum(up)"
    assert str(info.value).endswith("; query: sum(up)")


def test_observe_turns_a_failure_into_an_error_snapshot():
    reader = PrometheusReader("http://prom:9090",
                              client=FaultyClient(requests.exceptions.ConnectionError("refused")))
    snap = reader.observe_guardrails(30.0)
    assert snap.error is not None and "unreachable" in snap.error and "query: sum by" in snap.error
    assert snap.for_rollout("ml/a").error == snap.error


def test_values_parse_nan_and_inf():
    reader = PrometheusReader("http://prom:9090", client=FaultyClient([
        {"metric": {"a": "1"}, "value": [1.0, "NaN"]},
        {"metric": {"a": "2"}, "value": [1.0, "+Inf"]},
    ]))
    values = [x.value for x in reader.query("q")]
    assert math.isnan(values[0]) and values[1] == math.inf


def test_extrapolation_never_makes_a_share_above_one():
    # The hits series appeared a scrape later than the feedback series, so increase() stretched
    # it more: 40.3 "hits" of 40 feedback events. A share is capped at 100%, never 100.75%.
    answers = {
        Query.REQUESTS: [s("ml/a", "v2", 50.0, "1")],
        Query.SERVER_ERRORS: [s("ml/a", "v2", 50.4, "1")],
        Query.FEEDBACK: [s("ml/a", "v2", 40.0, "1")],
        Query.HIT5_PROXY_HITS: [s("ml/a", "v2", 40.3, "1")],
    }
    v2 = build_observations(30.0, answers)["ml/a"].versions["v2"]
    assert (v2.hit5_proxy, v2.error_rate) == (1.0, 1.0)
    assert (v2.lanes["1"].hit5_proxy, v2.lanes["1"].error_rate) == (1.0, 1.0)


class RecordingClient:
    """Stands in for PrometheusConnect to show *when* each query is asked to be evaluated."""

    def __init__(self, answers):
        self.answers, self.params = list(answers), []

    def custom_query(self, query, params=None):
        self.params.append(dict(params or {}))
        return self.answers.pop(0) if self.answers else []


def test_every_query_of_a_snapshot_is_evaluated_at_the_first_answers_instant():
    # The first query is asked at Prometheus' "now" (1700000000.5 by its clock); the feedback
    # and hits queries that follow must read the very same range, or a short window slides
    # between them (one scrape in range: no hits series, 0% Hit@5 over 360 events).
    first = [{"metric": {"rollout": "ml/a", "version": "v2", "lane": "0"},
              "value": [1700000000.5, "10"]}]
    client = RecordingClient([[], first])
    snap = PrometheusReader("http://prom:9090", client=client).observe_quality(2.0)
    assert snap.error is None
    assert client.params[:2] == [{}, {}]  # nothing answered yet: Prometheus' own now
    assert client.params[2:] and all(p == {"time": "1700000000.500"} for p in client.params[2:])


def test_an_explicit_instant_is_used_for_every_query():
    client = RecordingClient([])
    PrometheusReader("http://prom:9090", client=client).observe_guardrails(2.0, at=1234.0)
    assert client.params and all(p == {"time": "1234.000"} for p in client.params)
