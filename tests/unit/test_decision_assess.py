"""Table tests for the assessment rules: one row per rule, the arithmetic in the row.

Seed thresholds (decision_fixtures): success = Hit@5 >= 60 %, P95 < 5 ms, empty < 10 %,
errors < 0.1 %, lanes <= 20 % below the champion; rollback = Hit@5 < 55 %, P95 > 10 ms,
empty > 20 %, errors > 1 %, a lane at 0 %.
"""

from __future__ import annotations

import math

import pytest
from decision_fixtures import CANDIDATE, CHAMPION, ROLLBACK, SUCCESS, lanes, plan, window

from lvm_operator.decision import (
    Check,
    LaneMetrics,
    QualityPolicy,
    Thresholds,
    Verdict,
    VersionMetrics,
    WindowObservation,
    assess_guardrails,
    assess_quality,
    combine,
    judge_lower,
    judge_upper,
)

P, B, N, E = Verdict.PASS, Verdict.BREACH, Verdict.NO_DATA, Verdict.ERROR
I = Verdict.INCONCLUSIVE  # noqa: E741 - the table reads better with one letter per verdict


@pytest.mark.parametrize(
    ("metric", "value", "expected", "why"),
    [
        # P95 latency: success "< 5 ms", rollback "> 10 ms"
        ("p95_latency_seconds", 0.0049, P, "4.9 ms < 5 ms"),
        ("p95_latency_seconds", 0.005, I, "5 ms is not < 5 ms: hold"),
        ("p95_latency_seconds", 0.0075, I, "5 ms < 7.5 ms < 10 ms: hold"),
        ("p95_latency_seconds", 0.010, I, "10 ms is not > 10 ms: no rollback, hold"),
        ("p95_latency_seconds", 0.1 * 0.1, I, "0.1*0.1 = 0.010000000000000002 ~ 10 ms: at it"),
        ("p95_latency_seconds", 0.0100001, B, "10.0001 ms > 10 ms"),
        ("p95_latency_seconds", 0.0124, B, "12.4 ms > 10 ms"),
        ("p95_latency_seconds", math.inf, E, "+Inf is impossible (a quantile of buckets is "
                                             "finite): an error, never judged"),
        ("p95_latency_seconds", math.nan, N, "NaN: histogram_quantile without observations"),
        ("p95_latency_seconds", None, N, "not measured"),
        # error rate (server errors incl. NaN/Inf outputs): success "< 0.1%", rollback "> 1%"
        ("error_rate", 0.0, P, "0 errors"),
        ("error_rate", 0.0009, P, "9 per 10k < 0.1%"),
        ("error_rate", 0.001, I, "0.1% is not < 0.1%"),
        ("error_rate", 0.01, I, "1% is not > 1%"),
        ("error_rate", 101 / 10_000, B, "101 errors / 10k requests = 1.01% > 1%"),
        # empty-hit rate: success "< 10%", rollback "> 20%"
        ("empty_hit_rate", 0.0999, P, "9.99% < 10%"),
        ("empty_hit_rate", 0.10, I, "10% is not < 10%"),
        ("empty_hit_rate", 0.20, I, "20% is not > 20%"),
        ("empty_hit_rate", 0.2001, B, "20.01% > 20%"),
    ],
)
def test_guardrail_metric_thresholds(metric, value, expected, why):
    out = assess_guardrails(plan(), window({metric: value}, {}))
    if expected is E:
        assert out.verdict is E and out.summary.startswith("impossible measurement"), why
        return
    (r,) = [r for r in out.results if r.metric == metric and r.counts]
    assert r.verdict is expected, why
    assert out.verdict is expected, why  # the other candidate metrics pass
    assert r.version == CANDIDATE


@pytest.mark.parametrize(
    ("value", "expected", "why"),
    [
        (0.66, P, "66% >= 60%"),
        (0.60, P, "exactly 60% meets 'Hit@5 proxy >= 60%'"),
        (0.6 * 1.0000000001, P, "60% plus float noise"),
        (0.5999, I, "59.99% < 60% but not < 55%: hold"),
        (0.55, I, "exactly 55% is not 'below 55%': no rollback"),
        (0.5499, B, "54.99% < 55%"),
        (0.0, B, "0%"),
        (math.nan, N, "NaN: no feedback"),
    ],
)
def test_hit5_proxy_thresholds(value, expected, why):
    out = assess_quality(plan(), window({"hit5_proxy": value}, {}))
    (r,) = [r for r in out.results if r.metric == "hit5_proxy" and r.counts]
    assert r.verdict is expected, why
    assert out.verdict is expected, why


@pytest.mark.parametrize(
    ("fn", "args", "expected"),
    [
        (judge_upper, (0.005, 0.005, 0.010), I),
        (judge_upper, (0.005, 0.005, 0.010, True), P),  # success_inclusive: "<= 20%" for lanes
        (judge_upper, (0.02, None, 0.010), B),
        (judge_upper, (0.009, None, 0.010), P),  # no success limit: anything short of rollback
        (judge_upper, (0.02, 0.005, None), I),  # no rollback limit: never a breach
        (judge_lower, (0.4, None, 0.55), B),
        (judge_lower, (0.58, None, 0.55), P),
        (judge_lower, (0.2, 0.6, None), I),
    ],
)
def test_judge_with_missing_limits(fn, args, expected):
    kw = {"success_inclusive": args[3]} if len(args) == 4 else {}
    assert fn(*args[:3], **kw) is expected


@pytest.mark.parametrize(
    ("verdicts", "expected"),
    [
        ([P, P, P], P),
        ([P, I, P], I),
        ([P, N, I], N),
        ([N, E, P], E),
        ([E, B, N], B),  # a breach in one metric outweighs another's missing data
        ([], P),
    ],
)
def test_combine_worst_wins(verdicts, expected):
    assert combine(verdicts) is expected


@pytest.mark.parametrize(
    ("requests", "expected"),
    [
        (0.0, N),  # "candidate is not receiving traffic"
        (9.0, N),  # min_requests = 10
        (10.0, P),  # exactly min_requests is enough
    ],
)
def test_guardrails_need_min_requests(requests, expected):
    out = assess_guardrails(plan(), window({"requests": requests}, {}))
    assert out.verdict is expected
    if expected is N and requests == 0:
        assert out.summary == ("candidate is not receiving traffic: 0 requests in the last 30s "
                               "(need >= 10)")
    elif expected is N:
        assert out.summary == (
            f"too few candidate requests to judge: {int(requests)} in the last 30s "
            "(need >= 10; the window grows until it has them)"
        )


def test_guardrails_without_candidate_series_is_no_data():
    out = assess_guardrails(plan(), window(None, {}))
    assert out.verdict is N
    assert "0 requests" in out.summary


def test_prometheus_error_is_error_verdict_not_no_data():
    msg = "Prometheus at http://127.0.0.1:9 is unreachable (ConnectionError); query: up"
    for assess in (assess_guardrails, assess_quality):
        out = assess(plan(), WindowObservation(30.0, error=msg))
        assert out.verdict is E
        assert out.summary == f"Prometheus error: {msg}"


def test_champion_numbers_are_reported_but_do_not_count():
    # The champion at 12 ms would breach; only the candidate is judged.
    out = assess_guardrails(plan(), window({}, {"p95_latency_seconds": 0.012}))
    assert out.verdict is P
    champ = [r for r in out.results if r.version == CHAMPION and r.metric == "p95_latency_seconds"]
    assert champ[0].verdict is B and champ[0].counts is False


def test_breach_summary_carries_the_numbers():
    out = assess_guardrails(plan(), window({"p95_latency_seconds": 0.0124,
                                            "error_rate": 0.012}, {}))
    assert out.verdict is B
    assert out.summary == "candidate error rate 1.2% > 1%; P95 12.4 ms > 10 ms"


def test_pass_summary_lists_every_metric():
    out = assess_guardrails(plan(), window({}, {}))
    assert out.summary == (
        "candidate error rate 0% < 0.1%, P95 2.5 ms < 5 ms, empty-hit rate 5% < 10%"
    )


# --- quality: evidence and lanes --------------------------------------------------------------


@pytest.mark.parametrize(
    ("feedback", "expected"),
    [(999.0, N), (1000.0, P)],  # min_requests = 1000 feedback events
)
def test_quality_needs_min_feedback(feedback, expected):
    out = assess_quality(plan(), window({"feedback": feedback}, {}, window_s=600.0))
    assert out.verdict is expected
    if expected is N:
        assert out.summary == ("not enough evidence: candidate has 999 feedback events in the "
                               "last 10m (need >= 1000)")


@pytest.mark.parametrize(
    ("champion_lane", "candidate_lane", "expected", "why"),
    [
        (0.625, 0.55, P, "drop (0.625-0.55)/0.625 = 12% <= 20%"),
        (0.625, 0.5, P, "drop 0.125/0.625 = exactly 20%: 'no lane shows >20%' holds"),
        (0.625, 0.49, I, "drop 0.135/0.625 = 21.6% > 20%: hold (no lane rollback limit set)"),
        (0.5, 0.7, P, "candidate better than champion"),
        (0.625, 0.0, B, "lane fails completely: 0% with 500 feedback events"),
    ],
)
def test_lane_vs_champion_same_lane(champion_lane, candidate_lane, expected, why):
    obs = window({"lanes": lanes(l3=candidate_lane)}, {"lanes": lanes(l3=champion_lane)})
    out = assess_quality(plan(), obs)
    (r,) = [r for r in out.results if r.lane == "3"]
    assert r.verdict is expected, why
    assert out.verdict is expected, why  # overall Hit@5 66% passes


def test_lane_regressing_while_overall_passes_holds():
    # Overall 66% >= 60% passes, lane 7 is 25% below the champion's lane 7: (0.6-0.45)/0.6.
    obs = window({"lanes": lanes(l0=0.7, l7=0.45)}, {"lanes": lanes(l0=0.6, l7=0.6)})
    out = assess_quality(plan(), obs)
    assert out.verdict is I
    assert out.summary == ("candidate lane 7 Hit@5 proxy 45% is 25% below champion's 60% "
                           "(max 20%)")
    overall = [r for r in out.results if r.metric == "hit5_proxy" and r.version == CANDIDATE]
    assert overall[0].verdict is P


def test_lane_degradation_as_rollback_trigger():
    p = plan(rollback=Thresholds(**{**ROLLBACK.__dict__, "lane_degradation_max": 0.5}))
    obs = window({"lanes": lanes(l2=0.25)}, {"lanes": lanes(l2=0.6)})  # (0.6-0.25)/0.6 = 58%
    out = assess_quality(p, obs)
    assert out.verdict is B
    assert "lane 2 Hit@5 proxy 25% is 58.3% below champion's 60% (drop > 50%" in out.summary


def test_lane_failure_only_with_enough_samples():
    thin = {"9": LaneMetrics(requests=50.0, feedback=99.0, hit5_proxy=0.0)}  # lane_min = 100
    out = assess_quality(plan(), window({"lanes": thin}, {}))
    assert out.verdict is P
    (r,) = [r for r in out.results if r.lane == "9"]
    assert r.verdict is N and r.counts is False


def test_lane_failure_needs_no_champion_baseline():
    obs = window({"lanes": lanes(l5=0.0)}, None)
    out = assess_quality(plan(), obs)
    assert out.verdict is B
    assert out.summary == ("candidate lane 5 fails completely: Hit@5 proxy 0% over 500 feedback "
                           "events")


def test_lanes_without_champion_evidence_do_not_block():
    # At 100% the champion has no traffic: its lanes cannot be compared, the check still passes.
    obs = window({"lanes": lanes(l1=0.3)}, {"feedback": 0.0, "hit5_proxy": None, "lanes": {}})
    out = assess_quality(plan(), obs)
    assert out.verdict is P
    (r,) = [r for r in out.results if r.lane == "1"]
    assert r.verdict is N and "not compared" in r.detail


@pytest.mark.parametrize(
    ("cand_lane", "champ_lane", "hold", "expected", "why"),
    [
        # lane_min = 100 feedback events on both versions (decision_fixtures)
        ((250.0, 50.0, 0.30), (2000.0, 400.0, 0.66), True, N,
         "issue 15 #11: 50 < 100 events, 55% below the champion's lane: not judged, so hold"),
        ((250.0, 50.0, 0.30), (2000.0, 400.0, 0.66), False, P,
         "unjudgedLanes: report: named in the results, the check passes on the rest"),
        ((250.0, 150.0, 0.60), (400.0, 60.0, 0.66), True, N,
         "the champion's lane has traffic but 60 < 100 events: hold until it has them"),
        ((250.0, 150.0, 0.60), (0.0, 0.0, None), True, P,
         "the champion's lane has no traffic (the 100% step): it cannot catch up, report only"),
        ((0.0, 0.0, None), (2000.0, 400.0, 0.66), True, P,
         "a lane the candidate never served is not a lane that carries its traffic"),
        ((250.0, 150.0, 0.60), (2000.0, 400.0, 0.66), True, P,
         "judged: (0.66 - 0.60) / 0.66 = 9.1% below <= 20%"),
    ],
)
def test_unjudged_lanes_hold_when_configured(cand_lane, champ_lane, hold, expected, why):
    def lane(requests, feedback, hit5):
        return LaneMetrics(requests=requests, feedback=feedback, hit5_proxy=hit5)

    p = plan(quality=QualityPolicy(interval_s=100.0, window_s=600.0, min_requests=1000,
                                   lane_min_requests=100, hold_unjudged_lanes=hold))
    out = assess_quality(p, window({"lanes": {"3": lane(*cand_lane)}},
                                   {"lanes": {"3": lane(*champ_lane)}}))
    assert out.verdict is expected, (why, out.summary)
    if expected is N:
        assert "lane 3" in out.summary and "100" in out.summary, out.summary


def test_lane_min_defaults_to_min_requests():
    assert QualityPolicy(min_requests=1000).lane_min == 1000
    assert QualityPolicy(min_requests=1000, lane_min_requests=50).lane_min == 50


def test_quality_results_record_samples_and_thresholds():
    out = assess_quality(plan(), window({"hit5_proxy": 0.58, "feedback": 1234.0}, {}))
    r = next(r for r in out.results if r.version == CANDIDATE)
    assert (r.check, r.value, r.samples, r.success, r.rollback) == (
        Check.QUALITY, 0.58, 1234.0, ">= 60%", "< 55%"
    )
    assert out.summary == "candidate Hit@5 proxy 58% over 1234 feedback events: not >= 60% " \
                          "(rollback < 55%)"


def test_unconfigured_thresholds_pass():
    p = plan(success=Thresholds(), rollback=Thresholds())
    out = assess_guardrails(p, window({"p95_latency_seconds": 9.0}, {}))
    assert out.verdict is P and out.results == ()


def test_version_metrics_defaults_are_no_data():
    vm = VersionMetrics()
    assert vm.requests == 0 and vm.p95_latency_seconds is None and vm.lanes == {}
    assert SUCCESS.hit5_proxy_min == 0.60


@pytest.mark.parametrize(
    ("requests", "error_rate", "expected", "why"),
    [
        (500.0, 1.0, B, "500 of 500 requests failed: the lane fails completely"),
        (500.0, 0.998, P, "499 of 500 failed: a guardrail matter, not a failed lane"),
        (99.0, 1.0, P, "99 requests < lane_min 100: too little evidence"),
    ],
)
def test_lane_where_every_request_fails(requests, error_rate, expected, why):
    lane = {"6": LaneMetrics(requests=requests, feedback=0.0, error_rate=error_rate)}
    out = assess_quality(plan(), window({"lanes": lane}, {}))
    assert out.verdict is expected, why
    if expected is B:
        assert out.summary == "candidate lane 6 fails completely: every one of 500 requests failed"


def test_results_carry_numeric_limits():
    out = assess_guardrails(plan(), window({}, {}))
    p95 = next(r for r in out.results if r.metric == "p95_latency_seconds" and r.counts)
    assert (p95.success_limit, p95.rollback_limit) == (0.005, 0.010)
    q = assess_quality(plan(), window({"lanes": lanes(l1=0.6)}, {"lanes": lanes(l1=0.6)}))
    lane = next(r for r in q.results if r.lane == "1")
    assert (lane.metric, lane.value, lane.success_limit, lane.rollback_limit) == (
        "lane_hit5_drop", 0.0, 0.20, None
    )


def test_passing_lanes_collapse_to_one_clause_with_the_worst():
    # lane 1: (0.6 - 0.62) / 0.6 = -3.33% (better); lane 3: (0.6 - 0.5) / 0.6 = 16.7% below.
    obs = window({"lanes": lanes(l1=0.62, l3=0.5)}, {"lanes": lanes(l1=0.6, l3=0.6)})
    out = assess_quality(plan(), obs)
    assert out.verdict is P
    assert out.summary == ("candidate Hit@5 proxy 66% over 2000 feedback events >= 60%, 2 lanes "
                           "compared (drop <= 20%; worst: lane 3 16.7% below the champion's)")


@pytest.mark.parametrize(
    ("field", "value", "check", "why"),
    [
        ("requests", -3.0, "guardrail", "a count is never negative"),
        ("requests", math.nan, "guardrail", "a NaN count"),
        ("requests", math.inf, "guardrail", "an infinite count"),
        ("error_rate", 1.2, "guardrail", "120% of requests failed"),
        ("empty_hit_rate", -0.1, "guardrail", "a negative share"),
        ("p95_latency_seconds", -0.001, "guardrail", "a negative latency"),
        ("p95_latency_seconds", -math.inf, "guardrail", "-Inf latency"),
        ("feedback", -1.0, "quality", "negative feedback"),
        ("hit5_proxy", 1.5, "quality", "Hit@5 of 150%"),
    ],
)
def test_impossible_values_are_errors_never_passes(field, value, check, why):
    # Issue #15: NaN or negative counts, a share above 1, infinite latency were judged "pass".
    obs = window({field: value}, {})
    out = (assess_guardrails if check == "guardrail" else assess_quality)(plan(), obs)
    assert out.verdict is E, why
    assert out.summary.startswith(f"impossible measurement of the candidate ({CANDIDATE}): "
                                  f"{field if field != 'p95_latency_seconds' else 'P95'}")


def test_impossible_champion_numbers_are_errors_too():
    out = assess_guardrails(plan(), window({}, {"error_rate": 2.0}))
    assert out.verdict is E and f"of the champion ({CHAMPION})" in out.summary


def test_impossible_lane_numbers_are_errors():
    out = assess_quality(plan(), window({"lanes": {"3": LaneMetrics(100.0, -5.0, 0.5)}}, {}))
    assert out.verdict is E and "lane 3" in out.summary


def test_many_failing_lanes_make_one_bounded_clause():
    # Issue #15: with 15 or more failed lanes the reason exceeded the status' 1024 characters,
    # the status write failed after traffic moved, and no RolledBack was ever recorded.
    failing = {f"l{i}": 0.0 for i in range(16)}  # every lane fails completely
    out = assess_quality(plan(), window({"lanes": lanes(**failing)},
                                        {"lanes": lanes(**{f"l{i}": 0.66 for i in range(16)})}))
    assert out.verdict is B
    assert "16 lanes breach (lanes 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15); worst: "\
        "candidate lane 0 fails completely: Hit@5 proxy 0% over 500 feedback events" \
        in out.summary
    assert len(out.summary) < 400


def test_a_long_reason_still_fits_the_status():
    from lvm_operator.api import DecisionState
    from lvm_operator.controller.adapter import state_to_status
    from lvm_operator.decision import RolloutState

    ds = state_to_status(RolloutState(last_guardrail_reason="x" * 5000))
    assert isinstance(ds, DecisionState) and len(ds.last_guardrail_reason) == 1024
    assert ds.last_guardrail_reason.endswith("...")


def test_a_candidate_that_never_answers_is_a_breach_not_no_data():
    """Issue 15 #1: the router counts attempts, so a down candidate has requests (40) and
    errors (40/40 = 100% > 1%) but no latency or empty-hit samples: the error rate breaches;
    the unmeasured latency does not turn it into noData."""
    down = window({"requests": 40.0, "error_rate": 40 / 40, "p95_latency_seconds": None,
                   "empty_hit_rate": None}, {})
    out = assess_guardrails(plan(), down)
    assert out.verdict is B
    assert "error rate" in out.summary and "100%" in out.summary, out.summary
