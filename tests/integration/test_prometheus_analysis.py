"""The analysis queries against a real Prometheus scraping real exporters.

Two in-process ``prometheus_client`` exporters stand in for two Ray nodes: one exports counters
as Ray's OpenTelemetry exporter does (``ray_<name>_total``), the other as its legacy exporter does
with ``RAY_EXPORT_COUNTER_AS_GAUGE=1`` (each counter twice: ``ray_<name>_total`` and a deprecated
same-named gauge ``ray_<name>``, which the queries must not count again); both use Ray's
``ray_`` prefix and the contract's labels. Prometheus (Debian's binary, our own config) scrapes
them every second.

Exact arithmetic: every series is scraped at 0 before the known values are set, and queries run
at the timestamp of a target's last scrape. ``increase()`` then has nothing to extrapolate (a
counter whose first sample is 0 extrapolates no further back; the window ends on a sample), so
counts, ratios and the P95 are exactly what the exporter holds.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from helpers import eventually, wait_for_series
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from lvm_operator.analysis import (
    GUARDRAIL_QUERIES,
    QUALITY_QUERIES,
    PrometheusUnavailable,
    QueryFailed,
    ShadowFilter,
    UnexpectedResponse,
)
from lvm_operator.analysis.prometheus import PrometheusReader, Snapshot
from lvm_operator.decision import (
    Action,
    GuardrailPolicy,
    Observations,
    Plan,
    QualityPolicy,
    RolloutState,
    Step,
    Thresholds,
    Verdict,
    assess_guardrails,
    assess_quality,
    decide,
)
from lvm_operator.devstack.procs import free_port
from lvm_operator.devstack.prometheus import PrometheusServer
from lvm_serving.contracts import metrics as mc

# Longer than the fixture can take, even on a loaded machine where a scrape of these in-process
# exporters may time out for a while (120 s once lost the zero samples in CI): every series'
# first (zero) sample must be inside it, and a longer window adds nothing before that sample.
WINDOW_S = 3600.0

PLAN = dict(
    champion="v1", candidate="v2", steps=(Step(10, 60.0, shadow=True), Step(100, 60.0)),
    # window_s is the shortest window a check reads; the test hands in its own WINDOW_S windows
    guardrails=GuardrailPolicy(interval_s=1.0, consecutive_breaches=1, window_s=1.0,
                               min_requests=10),
    quality=QualityPolicy(interval_s=1.0, window_s=WINDOW_S, min_requests=100,
                          lane_min_requests=50),
    success=Thresholds(hit5_proxy_min=0.60, p95_latency_seconds=0.005, empty_hit_rate_max=0.10,
                       error_rate_max=0.001, lane_degradation_max=0.20),
    rollback=Thresholds(hit5_proxy_min=0.55, p95_latency_seconds=0.010, empty_hit_rate_max=0.20,
                        error_rate_max=0.01, lane_failure=True),
    fingerprint="it",
)


def labels(rollout: str, version: str, lane: str, shadow: bool = False,
           pinned: bool = False) -> dict[str, str]:
    return {mc.LABEL_ROLLOUT: rollout, mc.LABEL_VERSION: version, mc.LABEL_LANE: lane,
            mc.LABEL_SHADOW: "true" if shadow else "false",
            mc.LABEL_PINNED: "true" if pinned else "false"}


class RayWithTotal:
    """Recent Ray: counters exported as ``ray_<name>_total`` (prometheus_client's own types)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(m: mc.MetricDef) -> Counter:
            return Counter(mc.RAY_PREFIX + m.name, m.description, m.labels, registry=self.registry)

        self.requests, self.errors = counter(mc.REQUESTS), counter(mc.ERRORS)
        self.empty, self.feedback = counter(mc.EMPTY_HITS), counter(mc.FEEDBACK)
        self.hits = counter(mc.FEEDBACK_HITS)
        self.latency = Histogram(mc.RAY_PREFIX + mc.LATENCY.name, mc.LATENCY.description,
                                 mc.LATENCY.labels, buckets=mc.LATENCY_BUCKETS_SECONDS,
                                 registry=self.registry)


class LegacyExporter:
    """Ray's legacy exporter with ``RAY_EXPORT_COUNTER_AS_GAUGE=1``: every counter as a counter
    (``ray_lvm_requests_total{...} 1000``) and again as a gauge (``ray_lvm_requests{...} 1000``),
    the families built as Ray's metrics agent builds them."""

    def __init__(self) -> None:
        self.values: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}

    def set(self, metric: mc.MetricDef, value: float, **label_values: str) -> None:
        self.values[(mc.RAY_PREFIX + metric.name, tuple(sorted(label_values.items())))] = value

    def collect(self):
        families: dict[str, tuple[CounterMetricFamily, GaugeMetricFamily]] = {}
        for (name, lbls), value in sorted(self.values.items()):
            keys = [k for k, _ in lbls]
            counter, gauge = families.setdefault(name, (
                CounterMetricFamily(name, "test counter", labels=keys),
                GaugeMetricFamily(name, "(DEPRECATED) test counter", labels=keys)))
            counter.add_metric([v for _, v in lbls], value)
            gauge.add_metric([v for _, v in lbls], value)
        for counter, gauge in families.values():
            yield counter
            yield gauge


class ForeignPod:
    """A Ray pod in namespace ``evil`` that emits series claiming rollout ``ml/good``: 5,000
    requests of v2, every one an exception. Prometheus' Kubernetes discovery would put
    ``namespace="evil"`` on them; with this static config the pod exposes the label itself."""

    def __init__(self) -> None:
        self.value = 0.0

    def collect(self):
        keys = [*labels("ml/good", "v2", "0"), "namespace"]
        values = [*labels("ml/good", "v2", "0").values(), "evil"]
        requests = CounterMetricFamily(mc.RAY_PREFIX + mc.REQUESTS.name, "test", labels=keys)
        requests.add_metric(values, self.value)
        errors = CounterMetricFamily(mc.RAY_PREFIX + mc.ERRORS.name, "test",
                                     labels=[*keys, "reason"])
        errors.add_metric([*values, "exception"], self.value)
        yield requests
        yield errors


@dataclass
class Loaded:
    prometheus: PrometheusServer
    reader: PrometheusReader
    at_total: float  # last scrape of the `_total` exporter
    at_raw: float  # last scrape of the legacy exporter

    def guardrails(self, at: float, **kw) -> Snapshot:
        return self.reader.observe(WINDOW_S, GUARDRAIL_QUERIES, at=at, **kw)

    def quality(self, at: float, **kw) -> Snapshot:
        return self.reader.observe(WINDOW_S, QUALITY_QUERIES, at=at, **kw)


def _zero_series(a: RayWithTotal, b: LegacyExporter, b_hist: Histogram) -> None:
    """Create every series at 0, as Ray does on first use, so Prometheus sees them start."""
    good_v1, good_v2 = labels("ml/good", "v1", "0"), labels("ml/good", "v2", "0")
    good_v2_shadow = labels("ml/good", "v2", "3", shadow=True)
    good_v2_pinned = labels("ml/good", "v2", "0", pinned=True)
    for lbl in (good_v1, good_v2, good_v2_shadow, good_v2_pinned):
        a.requests.labels(**lbl)
        a.empty.labels(**lbl)
        a.feedback.labels(**lbl)
        a.hits.labels(**lbl, k="5", kind="proxy")
        a.hits.labels(**lbl, k="5", kind="exact")
        a.errors.labels(**lbl, reason="bad_input")
        a.errors.labels(**lbl, reason="exception")
        a.latency.labels(**lbl)
    bad_v1, bad_v2 = labels("ml/bad", "v1", "1"), labels("ml/bad", "v2", "1")
    quiet_v2 = labels("ml/quiet", "v2", "2")
    for lbl in (bad_v1, bad_v2, quiet_v2):
        b.set(mc.REQUESTS, 0, **lbl)
        b.set(mc.EMPTY_HITS, 0, **lbl)
        b.set(mc.FEEDBACK, 0, **lbl)
        b_hist.labels(**lbl)
    b.set(mc.ERRORS, 0, **bad_v2, reason="nan_output")
    b.set(mc.ERRORS, 0, **bad_v2, reason="bad_input")
    # ml/bad v2 never records a Hit@5: its hits series does not exist at all.


def _known_values(a: RayWithTotal, b: LegacyExporter, b_hist: Histogram) -> None:
    # ml/good (with _total): the candidate passes everything.
    v1, v2 = labels("ml/good", "v1", "0"), labels("ml/good", "v2", "0")
    v2s = labels("ml/good", "v2", "3", shadow=True)  # shadow copies: included in analysis
    a.requests.labels(**v1).inc(900)
    a.errors.labels(**v1, reason="bad_input").inc(5)
    a.empty.labels(**v1).inc(54)  # 6%
    a.feedback.labels(**v1).inc(300)
    a.hits.labels(**v1, k="5", kind="proxy").inc(177)  # 59%
    for _ in range(900):
        a.latency.labels(**v1).observe(0.0004)
    a.requests.labels(**v2).inc(600)
    a.requests.labels(**v2s).inc(400)
    a.errors.labels(**v2, reason="bad_input").inc(20)  # the client's fault: not counted
    a.empty.labels(**v2).inc(30)
    a.empty.labels(**v2s).inc(20)  # 50 / 1000 = 5%
    a.feedback.labels(**v2).inc(200)
    a.feedback.labels(**v2s).inc(100)
    a.hits.labels(**v2, k="5", kind="proxy").inc(150)  # lane 0: 75%
    a.hits.labels(**v2s, k="5", kind="proxy").inc(60)  # lane 3: 60%; overall 210/300 = 70%
    a.hits.labels(**v2, k="5", kind="exact").inc(10)  # exact hits are not the proxy
    # QA pinned 500 requests to v2 (x-lvm-version) and sent it broken inputs: every one an
    # exception, an empty hit and half a second; 100 clicks, no hit. Never judged.
    v2p = labels("ml/good", "v2", "0", pinned=True)
    a.requests.labels(**v2p).inc(500)
    a.errors.labels(**v2p, reason="exception").inc(500)
    a.empty.labels(**v2p).inc(500)
    a.feedback.labels(**v2p).inc(100)
    for _ in range(500):
        a.latency.labels(**v2p).observe(0.5)
    for lbl, n in ((v2, 600), (v2s, 400)):
        for _ in range(n):
            a.latency.labels(**lbl).observe(0.002)  # all in (1.5 ms, 2 ms]
    # ml/bad (legacy exporter, each counter also as a gauge): the candidate breaches everything.
    bv1, bv2 = labels("ml/bad", "v1", "1"), labels("ml/bad", "v2", "1")
    b.set(mc.REQUESTS, 1000, **bv1)
    for _ in range(1000):
        b_hist.labels(**bv1).observe(0.0004)
    b.set(mc.REQUESTS, 1000, **bv2)
    b.set(mc.ERRORS, 30, **bv2, reason="nan_output")  # 3% NaN/Inf outputs
    b.set(mc.ERRORS, 100, **bv2, reason="bad_input")
    b.set(mc.EMPTY_HITS, 250, **bv2)  # 25%
    b.set(mc.FEEDBACK, 200, **bv2)  # and not one hit
    for _ in range(900):
        b_hist.labels(**bv2).observe(0.004)
    for _ in range(100):
        b_hist.labels(**bv2).observe(0.011)  # in (10 ms, 12.5 ms]
    # ml/quiet: 3 requests, fewer than min_requests = 10.
    b.set(mc.REQUESTS, 3, **labels("ml/quiet", "v2", "2"))


def _last_scrape(server: PrometheusServer, selector: str, value: float) -> float:
    """Wait until the scraped value is ``value``; return the timestamp of the latest scrape."""
    wait_for_series(server, f"{selector} == {value}", timeout_s=30)
    (sample,) = server.query(f"timestamp({selector})")
    return float(sample["value"][1])


@pytest.fixture(scope="module")
def loaded(tools, tmp_path_factory) -> Iterator[Loaded]:
    a, b = RayWithTotal(), LegacyExporter()
    reg_b = CollectorRegistry()
    reg_b.register(b)
    b_hist = Histogram(mc.RAY_PREFIX + mc.LATENCY.name, mc.LATENCY.description, mc.LATENCY.labels,
                       buckets=mc.LATENCY_BUCKETS_SECONDS, registry=reg_b)
    _zero_series(a, b, b_hist)
    foreign, reg_c = ForeignPod(), CollectorRegistry()
    reg_c.register(foreign)
    port_a, port_b, port_c = free_port(), free_port(), free_port()
    servers = [start_http_server(port_a, addr="127.0.0.1", registry=a.registry)[0],
               start_http_server(port_b, addr="127.0.0.1", registry=reg_b)[0],
               start_http_server(port_c, addr="127.0.0.1", registry=reg_c)[0]]
    prom = PrometheusServer(tools, tmp_path_factory.mktemp("analysis-prom"),
                            jobs={"ray": [f"127.0.0.1:{port_a}", f"127.0.0.1:{port_b}",
                                          f"127.0.0.1:{port_c}"]},
                            scrape_interval_s=1.0)
    reader = None
    try:
        prom.start()
        # Both exporters scraped at zero...
        # (namespace="": the foreign pod also says rollout="ml/good", and on a loaded machine
        # its zero alone once satisfied this wait before ml/good's own target was scraped)
        wait_for_series(prom, 'ray_lvm_requests_total{rollout="ml/good",namespace=""} == 0',
                        timeout_s=30)
        (first,) = prom.query(
            'min(timestamp(ray_lvm_requests_total{rollout="ml/good",namespace=""}))')
        at_zero = float(first["value"][1])
        wait_for_series(prom, 'ray_lvm_requests{rollout="ml/bad"} == 0', timeout_s=30)
        wait_for_series(prom, 'ray_lvm_requests_total{namespace="evil"} == 0', timeout_s=30)
        # ...then the known values, and the timestamp of a scrape that has all of them.
        _known_values(a, b, b_hist)
        foreign.value = 5000.0
        at_raw = _last_scrape(prom, 'ray_lvm_requests{rollout="ml/bad",version="v2"}', 1000)
        at_evil = _last_scrape(prom, 'ray_lvm_requests_total{namespace="evil"}', 5000)
        good = ('ray_lvm_requests_total{rollout="ml/good",version="v2",lane="0",'
                'pinned="false",namespace=""}')
        # a scrape of ml/good's own target after the foreign pod's 5,000 was scraped, so the
        # judge's windows (ending there) hold the foreign series too
        at_total = eventually(lambda: (t := _last_scrape(prom, good, 600)) > at_evil and t,
                              timeout_s=30, what="a scrape after the foreign pod's")
        assert at_total - at_zero < WINDOW_S, "the zero samples left the judge's window"
        reader = PrometheusReader(prom.url, timeout_s=5.0)
        yield Loaded(prom, reader, at_total, at_raw)
    finally:
        if reader is not None:
            reader.close()
        prom.stop()
        for httpd in servers:
            httpd.shutdown()
            httpd.server_close()


def test_passing_candidate_counters_with_total(loaded):
    plan = Plan(**PLAN)
    g = loaded.guardrails(loaded.at_total)
    q = loaded.quality(loaded.at_total)
    assert g.error is None and q.error is None
    v2 = g.for_rollout("ml/good").versions["v2"]
    # 600 live + 400 shadow requests, exactly: no extrapolation (see module docstring).
    assert v2.requests == pytest.approx(1000.0, rel=1e-9)
    assert v2.error_rate == 0.0  # 20 bad_input errors are the client's, not counted
    assert v2.empty_hit_rate == pytest.approx(0.05, rel=1e-9)
    assert assess_guardrails(plan, g.for_rollout("ml/good")).verdict is Verdict.PASS
    qv2 = q.for_rollout("ml/good").versions["v2"]
    assert qv2.hit5_proxy == pytest.approx(210 / 300, rel=1e-9)  # proxy hits only, not exact
    assert qv2.lanes["0"].hit5_proxy == pytest.approx(0.75, rel=1e-9)
    assert qv2.lanes["3"].hit5_proxy == pytest.approx(0.60, rel=1e-9)
    out = assess_quality(plan, q.for_rollout("ml/good"))
    assert out.verdict is Verdict.PASS, out.summary


def test_a_pod_in_another_namespace_cannot_judge_this_rollout(loaded):
    # Its 5,000 failing "requests" are in Prometheus, next to ml/good's own...
    (sample,) = loaded.prometheus.query(
        f'sum(ray_lvm_requests_total{{rollout="ml/good", namespace="evil"}} @ {loaded.at_total})')
    assert float(sample["value"][1]) == 5000
    # ...and the judge does not count them: ml/good's candidate still has exactly its 1,000
    # requests and no server error (test_passing_candidate_counters_with_total).
    v2 = loaded.guardrails(loaded.at_total).for_rollout("ml/good").versions["v2"]
    assert v2.requests == pytest.approx(1000.0, rel=1e-9) and v2.error_rate == 0.0


def test_pinned_requests_reach_prometheus_but_not_the_judge(loaded):
    # They are there (QA can see them)...
    (sample,) = loaded.prometheus.query(
        f'sum(ray_lvm_requests_total{{rollout="ml/good", pinned="true"}} @ {loaded.at_total})')
    assert float(sample["value"][1]) == 500
    # ...and test_passing_candidate_counters_with_total's exact numbers hold without them: had
    # they counted, v2 would have 1,500 requests, a 33% error rate and a P95 of half a second.
    for shadow in ShadowFilter:
        g = loaded.guardrails(loaded.at_total, shadow=shadow).for_rollout("ml/good")
        v2 = g.versions.get("v2")
        if shadow is ShadowFilter.ONLY:
            assert v2.requests == pytest.approx(400.0, rel=1e-9)
            continue
        assert v2.error_rate == 0.0 and v2.p95_latency_seconds < 0.0025


def test_breaching_candidate_from_the_legacy_exporter_is_counted_once(loaded):
    plan = Plan(**PLAN)
    g = loaded.guardrails(loaded.at_raw).for_rollout("ml/bad")
    v2 = g.versions["v2"]
    # both names are scraped; the queries read the counter alone (not 2000, not an error)
    names = {x["metric"]["__name__"] for x in loaded.prometheus.query(
        '{__name__=~"ray_lvm_requests.*",rollout="ml/bad",version="v2"}')}
    assert names == {"ray_lvm_requests", "ray_lvm_requests_total"}
    assert v2.requests == pytest.approx(1000.0, rel=1e-9)
    assert v2.error_rate == pytest.approx(0.03, rel=1e-9)  # 30 NaN outputs / 1000
    assert v2.empty_hit_rate == pytest.approx(0.25, rel=1e-9)
    out = assess_guardrails(plan, g)
    assert out.verdict is Verdict.BREACH
    # The P95 breach names the champion it was compared with (same window, real buckets).
    assert out.summary == ("candidate error rate 3% > 1%; P95 11.2 ms > 10 ms, slower than the "
                           "champion (P95 0.475 ms in the same window); 100% of its requests "
                           "were slower than the champion's median (≤ 0.5 ms; champion 0%); "
                           "empty-hit rate 25% > 20%")
    q = loaded.quality(loaded.at_raw).for_rollout("ml/bad")
    assert q.versions["v2"].feedback == pytest.approx(200.0, rel=1e-9)
    assert q.versions["v2"].hit5_proxy == 0.0  # no hits series at all reads as 0%, not noData
    qout = assess_quality(plan, q)
    assert qout.verdict is Verdict.BREACH
    assert "candidate Hit@5 proxy 0% over 200 feedback events < 55%" in qout.summary
    assert "; lane 1 fails completely: Hit@5 proxy 0% over 200 feedback events" in qout.summary


def test_p95_from_histogram_buckets_matches_the_distribution(loaded):
    # ml/bad v2: 900 at 4 ms, 100 at 11 ms. Rank 0.95 * 1000 = 950 lies 50 of 100 into the
    # bucket (10 ms, 12.5 ms]: 0.010 + 0.0025 * 50/100 = 11.25 ms.
    bad = loaded.guardrails(loaded.at_raw).for_rollout("ml/bad").versions
    assert bad["v2"].p95_latency_seconds == pytest.approx(0.01125, rel=1e-9)
    # ml/bad v1: all 1000 at 0.4 ms, in (0, 0.5 ms]: 0.0005 * 0.95 = 0.475 ms.
    assert bad["v1"].p95_latency_seconds == pytest.approx(0.000475, rel=1e-9)
    # ml/good v2: all 1000 at 2 ms, in (1.5 ms, 2 ms]: 0.0015 + 0.0005 * 0.95 = 1.975 ms.
    good = loaded.guardrails(loaded.at_total).for_rollout("ml/good").versions
    assert good["v2"].p95_latency_seconds == pytest.approx(0.001975, rel=1e-9)


def test_no_data(loaded):
    plan = Plan(**PLAN)
    for rollout in ("ml/quiet", "ml/absent"):
        g = loaded.guardrails(loaded.at_raw).for_rollout(rollout)
        q = loaded.quality(loaded.at_raw).for_rollout(rollout)
        assert g.error is None
        assert assess_guardrails(plan, g).verdict is Verdict.NO_DATA
        assert assess_quality(plan, q).verdict is Verdict.NO_DATA
    out = assess_guardrails(plan, loaded.guardrails(loaded.at_raw).for_rollout("ml/quiet"))
    assert out.summary == ("too few candidate requests to judge: 3 in the last 1h "
                           "(need >= 10; the window grows until it has them)")


def test_shadow_filter_excludes_shadow_copies(loaded):
    snap = loaded.guardrails(loaded.at_total, shadow=ShadowFilter.EXCLUDE)
    v2 = snap.for_rollout("ml/good").versions["v2"]
    assert v2.requests == pytest.approx(600.0, rel=1e-9)
    assert set(v2.lanes) == {"0"}


def test_decide_rolls_back_on_real_numbers(loaded):
    plan = Plan(**PLAN)
    state = decide(plan, RolloutState(), Observations(), 0.0).state
    obs = Observations(loaded.guardrails(loaded.at_raw).for_rollout("ml/bad"),
                       loaded.quality(loaded.at_raw).for_rollout("ml/bad"))
    d = decide(plan, state, obs, 1.0)
    assert d.action is Action.ROLLBACK
    assert d.reason.startswith("rolled back: candidate error rate 3% > 1%; P95 11.2 ms > 10 ms")


def test_rejected_and_unexpected_queries_are_typed(loaded):
    with pytest.raises(QueryFailed, match=r"rejected the query \(HTTP 400\): bad_data") as info:
        loaded.reader.query("sum(ray_lvm_requests_total")
    assert info.value.status_code == 400
    assert info.value.query == "sum(ray_lvm_requests_total"
    scalar = r"expected an instant vector, got a scalar or string; query: 1$"
    with pytest.raises(UnexpectedResponse, match=scalar):
        loaded.reader.query("1")  # a scalar, not a vector


def test_prometheus_stopped_gives_error_verdict_then_recovers(loaded):
    plan = Plan(**PLAN)
    loaded.prometheus.stop()
    try:
        with pytest.raises(PrometheusUnavailable, match=r"is unreachable .*; query: up"):
            loaded.reader.query("up")
        snap = loaded.guardrails(loaded.at_raw)
        assert snap.error is not None
        out = assess_guardrails(plan, snap.for_rollout("ml/bad"))
        assert out.verdict is Verdict.ERROR
        assert out.summary.startswith(f"Prometheus error: Prometheus at {loaded.prometheus.url} "
                                      "is unreachable")
    finally:
        loaded.prometheus.start()
    # Same port and data: the next check reads the same numbers again.
    again = loaded.guardrails(loaded.at_raw).for_rollout("ml/bad")
    assert again.error is None
    assert assess_guardrails(plan, again).verdict is Verdict.BREACH
