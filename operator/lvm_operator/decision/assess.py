"""Assessment: one window of observations -> one verdict per metric and per check.

Argo Rollouts' measure -> assess -> act, with the assess step pure. Each rule here has a table
test in ``tests/unit/test_decision_assess.py``. The comparisons and the treatment of values
exactly at a threshold are documented on :class:`~lvm_operator.decision.model.Thresholds`.

Why one module of some 450 lines: one small function per rule, guardrails then quality, each
beside the text it writes; the histogram arithmetic is in :mod:`.latency`.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from . import fmt, latency
from .compare import sequential_quality
from .model import (
    Check,
    CheckOutcome,
    Judge,
    LaneMetrics,
    MetricResult,
    Plan,
    Verdict,
    VersionMetrics,
    WindowObservation,
    lane_order,
)

# Values this close to a threshold count as exactly at it (PromQL float noise must not flip a
# verdict: 0.1 / 0.5 * 0.5 is not 0.1 in binary floating point).
REL_TOL = 1e-9
ABS_TOL = 1e-12

#: Lanes named one by one in a summary; more become "N lanes breach (lanes ...); worst: ...".
MAX_LANES_NAMED = 3

# Worst first: a breach seen in one metric outweighs another metric's missing data.
_PRECEDENCE = (Verdict.BREACH, Verdict.ERROR, Verdict.NO_DATA, Verdict.INCONCLUSIVE, Verdict.PASS)


def at_threshold(value: float, limit: float) -> bool:
    return math.isclose(value, limit, rel_tol=REL_TOL, abs_tol=ABS_TOL)


def judge_upper(
    value: float, success: float | None, rollback: float | None, *, success_inclusive: bool = False
) -> Verdict:
    """Judge a lower-is-better value (latency, error rate, empty-hit rate, lane drop).

    Rollback when ``value > rollback`` (not at it). Success when ``value < success`` or, with
    ``success_inclusive``, ``value <= success``. Anything between is inconclusive.
    """
    if rollback is not None and value > rollback and not at_threshold(value, rollback):
        return Verdict.BREACH
    if success is None:
        return Verdict.PASS
    if at_threshold(value, success):
        return Verdict.PASS if success_inclusive else Verdict.INCONCLUSIVE
    return Verdict.PASS if value < success else Verdict.INCONCLUSIVE


def judge_lower(value: float, success: float | None, rollback: float | None) -> Verdict:
    """Judge a higher-is-better value (Hit@5 proxy).

    Pass at ``value >= success`` (at it counts), breach at ``value < rollback`` (not at it).
    """
    if rollback is not None and value < rollback and not at_threshold(value, rollback):
        return Verdict.BREACH
    if success is None or value >= success or at_threshold(value, success):
        return Verdict.PASS
    return Verdict.INCONCLUSIVE


def combine(verdicts: Iterable[Verdict]) -> Verdict:
    """Worst verdict wins (breach > error > noData > inconclusive > pass); none at all = pass."""
    seen = set(verdicts)
    for v in _PRECEDENCE:
        if v in seen:
            return v
    return Verdict.PASS


def _missing(value: float | None) -> bool:
    return value is None or math.isnan(value)


@dataclass(frozen=True)
class _Spec:
    metric: str
    label: str
    attr: str
    unit: Callable[[float], str]
    higher_is_better: bool

    def limits(self, plan: Plan) -> tuple[float | None, float | None]:
        return getattr(plan.success, self.attr), getattr(plan.rollback, self.attr)


_ERROR_RATE = _Spec("error_rate", "error rate", "error_rate_max", fmt.pct, False)
_P95 = _Spec("p95_latency_seconds", "P95", "p95_latency_seconds", fmt.ms, False)
_EMPTY = _Spec("empty_hit_rate", "empty-hit rate", "empty_hit_rate_max", fmt.pct, False)
_HIT5 = _Spec("hit5_proxy", "Hit@5 proxy", "hit5_proxy_min", fmt.pct, True)
GUARDRAIL_SPECS = (_ERROR_RATE, _P95, _EMPTY)


def _criteria_text(spec: _Spec, success: float | None, rollback: float | None) -> tuple[str, str]:
    s = "" if success is None else (">= " if spec.higher_is_better else "< ") + spec.unit(success)
    r = "" if rollback is None else ("< " if spec.higher_is_better else "> ") + spec.unit(rollback)
    return s, r


def _judge_version(
    check: Check, spec: _Spec, plan: Plan, role: str, version: str, vm: VersionMetrics,
    samples: float, sample_noun: str, counts: bool,
) -> MetricResult | None:
    success, rollback = spec.limits(plan)
    if success is None and rollback is None:
        return None
    s_txt, r_txt = _criteria_text(spec, success, rollback)
    value = getattr(vm, spec.metric)
    if _missing(value):
        return MetricResult(
            check, spec.metric, version, None, None, samples, Verdict.NO_DATA, s_txt, r_txt,
            f"{role} {spec.label}: no data ({fmt.count(samples)} {sample_noun})", counts,
            success, rollback,
        )
    judge = judge_lower if spec.higher_is_better else judge_upper
    verdict = judge(value, success, rollback)
    shown = f"{role} {spec.label} {spec.unit(value)}"
    if check is Check.QUALITY:
        shown += f" over {fmt.count(samples)} {sample_noun}"
    if verdict is Verdict.BREACH:
        detail = f"{shown} {r_txt}"
    elif verdict is Verdict.PASS:
        detail = f"{shown} {s_txt}" if s_txt else f"{shown} (rollback {r_txt})"
    else:
        detail = f"{shown}: not {s_txt}" + (f" (rollback {r_txt})" if r_txt else "")
    return MetricResult(
        check, spec.metric, version, None, value, samples, verdict, s_txt, r_txt, detail, counts,
        success, rollback,
    )


def _outcome(check: Check, results: list[MetricResult], nothing: str) -> CheckOutcome:
    counted = [r for r in results if r.counts]
    verdict = combine(r.verdict for r in counted)
    if not counted:
        return CheckOutcome(check, Verdict.PASS, nothing, tuple(results))
    chosen = [r.detail for r in counted if r.verdict is verdict and r.lane is None]
    lanes = [r for r in counted if r.verdict is verdict and r.lane is not None]
    if verdict is Verdict.PASS and lanes:
        # 16 passing lanes would drown the line: one clause with the worst of them.
        worst = max(lanes, key=lambda r: r.value if r.value is not None else -math.inf)
        drop = worst.value or 0.0
        how = f"{fmt.pct(drop)} below" if drop >= 0 else f"{fmt.pct(-drop)} above"
        chosen.append(
            f"{len(lanes)} lane{'s' if len(lanes) > 1 else ''} compared ({worst.success}; worst: "
            f"lane {worst.lane} {how} the champion's)"
        )
    elif len(lanes) > MAX_LANES_NAMED:
        # 15 failing lanes would overflow status (1024 characters): one clause, the worst named.
        worst = max(lanes, key=lambda r: r.value if r.value is not None else math.inf)
        names = ", ".join(str(r.lane) for r in lanes)
        chosen.append(f"{len(lanes)} lanes {verdict.value} (lanes {names}); worst: "
                      f"{worst.detail}")
    else:
        chosen += [r.detail for r in lanes]
    # "candidate P95 2 ms < 5 ms, error rate 0% < 0.1%": name the version once.
    shown = chosen[:1] + [d.removeprefix("candidate ") for d in chosen[1:]]
    summary = (", " if verdict is Verdict.PASS else "; ").join(shown)
    return CheckOutcome(check, verdict, summary, tuple(results))


def _error_outcome(check: Check, obs: WindowObservation) -> CheckOutcome:
    return CheckOutcome(check, Verdict.ERROR, f"Prometheus error: {obs.error}")


def _bad_count(v: float) -> bool:
    return not math.isfinite(v) or v < 0


def _bad_share(v: float | None) -> bool:
    return v is not None and not math.isnan(v) and not (0.0 <= v <= 1.0)


def impossible(vm: VersionMetrics) -> str | None:
    """What makes ``vm`` impossible (a negative or non-finite count, a share outside [0, 1], an
    infinite or negative latency), or None. Such numbers come from a broken exporter or query,
    never from traffic: judging them could pass or roll back on nothing."""
    for name in ("requests", "feedback"):
        v = getattr(vm, name)
        if _bad_count(v):
            return f"{name} = {v!r} (a count is finite and >= 0)"
    for name in ("error_rate", "empty_hit_rate", "hit5_proxy"):
        v = getattr(vm, name)
        if _bad_share(v):
            return f"{name} = {v!r} (a share is in [0, 1])"
    p = vm.p95_latency_seconds
    if p is not None and not math.isnan(p) and (math.isinf(p) or p < 0):
        return f"P95 = {p!r} s (a latency is finite and >= 0)"
    if any(_bad_count(c) for _, c in vm.latency_buckets):
        return "a latency bucket count is negative or not finite"
    for lane, lm in vm.lanes.items():
        if _bad_count(lm.requests) or _bad_count(lm.feedback):
            return f"lane {lane}: a negative or non-finite count"
        if _bad_share(lm.hit5_proxy) or _bad_share(lm.error_rate):
            return f"lane {lane}: a share outside [0, 1]"
    return None


def _impossible_outcome(check: Check, plan: Plan, obs: WindowObservation) -> CheckOutcome | None:
    for role, version in (("candidate", plan.candidate), ("champion", plan.champion)):
        vm = obs.versions.get(version)
        why = None if vm is None else impossible(vm)
        if why is not None:
            return CheckOutcome(check, Verdict.ERROR,
                                f"impossible measurement of the {role} ({version}): {why}; "
                                "not judged")
    return None


def _champion_latency(plan: Plan, obs: WindowObservation, reference: WindowObservation | None
                      ) -> tuple[VersionMetrics | None, str]:
    """The champion's latency to compare with, and where it comes from: the same window when it
    has enough requests there, else the longer look-back (e.g. the candidate at 100%)."""
    need = max(plan.guardrails.min_requests, 1)
    champ = obs.versions.get(plan.champion)
    if champ is not None and _latency_samples(champ) >= need:
        return champ, "in the same window"
    ref = None if reference is None or reference.error is not None else \
        reference.versions.get(plan.champion)
    if ref is not None and ref.latency_buckets and latency.total(ref.latency_buckets) >= need:
        assert reference is not None
        return ref, f"over the last {fmt.duration(reference.window_s)}"
    return None, ""


def _latency_samples(vm: VersionMetrics) -> float:
    """Requests behind a version's P95: its histogram's count, else (no histogram read) its
    request count."""
    return latency.total(vm.latency_buckets) if vm.latency_buckets else vm.requests


def _judge_p95(plan: Plan, cand: VersionMetrics, obs: WindowObservation,
               reference: WindowObservation | None) -> MetricResult | None:
    """The candidate's P95 against the seed's limits and, above a limit, against the champion.

    Above a limit the candidate is judged by the limit only if it is also slower than the
    champion (:func:`.latency.compare`); when the champion misses the same limit and the
    candidate is no slower, the miss is the machine's: pass, and say so. Without a champion to
    compare with, the limits alone decide (the seed's rule).
    """
    check = Check.GUARDRAIL
    base = _judge_version(check, _P95, plan, "candidate", plan.candidate, cand, cand.requests,
                          "requests", True)
    g = plan.guardrails
    if base is None or base.verdict in (Verdict.PASS, Verdict.NO_DATA) or \
            not g.latency_vs_champion:
        return base
    need = max(g.min_requests, 1)
    n = _latency_samples(cand)
    if n < need:
        return replace(base, verdict=Verdict.NO_DATA, counts=True, detail=(
            f"candidate P95 {fmt.ms(base.value or 0.0)} over only {fmt.count(n)} timed "
            f"requests (need >= {need}): not judged"))
    champ, where = _champion_latency(plan, obs, reference)
    if champ is None:
        return base
    success, rollback = _P95.limits(plan)
    limit = rollback if base.verdict is Verdict.BREACH else success
    assert limit is not None and base.value is not None
    champ_p95 = (latency.quantile(champ.latency_buckets, 0.95) if champ.latency_buckets
                 else champ.p95_latency_seconds)
    champ_over = champ_p95 is not None and champ_p95 > limit and not at_threshold(champ_p95,
                                                                                  limit)
    cmp = (latency.compare(cand.latency_buckets, champ.latency_buckets, margin=g.latency_margin,
                           z=g.latency_z)
           if cand.latency_buckets and champ.latency_buckets else None)
    if cmp is None and not champ_over:
        return base  # no histograms to compare, and the champion meets the limit: the seed's rule
    slower = cmp is not None and cmp.slower
    champ_txt = "n/a" if champ_p95 is None else fmt.ms(champ_p95)
    evidence = f"; {cmp.text()}" if cmp is not None else ""
    if slower:
        return replace(base, detail=(f"{base.detail}, slower than the champion (P95 "
                                     f"{champ_txt} {where}){evidence}"))
    if champ_over:
        return replace(base, verdict=Verdict.PASS, detail=(
            f"candidate P95 {fmt.ms(base.value)} and champion P95 {champ_txt} {where} both "
            f"exceed {fmt.ms(limit)}: the machine, not the candidate{evidence}"))
    return replace(base, verdict=Verdict.INCONCLUSIVE, detail=(
        f"candidate P95 {fmt.ms(base.value)} is above {fmt.ms(limit)} but not significantly "
        f"slower than the champion (P95 {champ_txt} {where}){evidence}: more evidence needed"))


def assess_guardrails(plan: Plan, obs: WindowObservation,
                      reference: WindowObservation | None = None) -> CheckOutcome:
    """Error rate (server errors incl. NaN/Inf outputs), P95 latency and empty-hit rate.

    Judged on the candidate; the champion's numbers are reported alongside (``counts=False``).
    Fewer than ``guardrails.min_requests`` candidate requests in the window is noData: a
    handful of requests is never a breach. The P95 is judged against the champion too
    (:func:`_judge_p95`); ``reference`` is the champion's longer look-back for that.
    """
    check = Check.GUARDRAIL
    if obs.error is not None:
        return _error_outcome(check, obs)
    bad = _impossible_outcome(check, plan, obs)
    if bad is not None:
        return bad
    cand = obs.versions.get(plan.candidate)
    need = plan.guardrails.min_requests
    window = fmt.duration(obs.window_s)
    if cand is None or cand.requests < need or cand.requests <= 0:
        got = 0.0 if cand is None else cand.requests
        if round(got) <= 0:
            why = (f"candidate is not receiving traffic: {fmt.count(got)} requests in the last "
                   f"{window} (need >= {max(need, 1)})")
        else:
            why = (f"too few candidate requests to judge: {fmt.count(got)} in the last {window} "
                   f"(need >= {need}; the window grows until it has them)")
        return CheckOutcome(check, Verdict.NO_DATA, why)
    results: list[MetricResult] = []
    for role, version, counts in (("candidate", plan.candidate, True),
                                  ("champion", plan.champion, False)):
        vm = obs.versions.get(version)
        if vm is None:
            continue
        for spec in GUARDRAIL_SPECS:
            if spec is _P95 and counts:
                r = _judge_p95(plan, vm, obs, reference)
            else:
                r = _judge_version(check, spec, plan, role, version, vm, vm.requests,
                                   "requests", counts)
            if r is not None:
                results.append(r)
    return _outcome(check, results, "no guardrail thresholds configured")


def _judge_lane(
    plan: Plan, lane: str, cand: LaneMetrics, champ: LaneMetrics | None
) -> MetricResult | None:
    check = Check.QUALITY
    q = plan.quality
    need = q.lane_min
    s_max, r_max = plan.success.lane_degradation_max, plan.rollback.lane_degradation_max
    fail_on = plan.rollback.lane_failure
    if s_max is None and r_max is None and not fail_on:
        return None
    s_txt = "" if s_max is None else f"drop <= {fmt.pct(s_max)}"
    r_txt = "; ".join(
        t for t in (
            "" if r_max is None else f"drop > {fmt.pct(r_max)}",
            "Hit@5 proxy = 0 or every request failed" if fail_on else "",
        ) if t
    )

    def result(metric: str, value: float | None, samples: float, verdict: Verdict, detail: str,
               counts: bool = True) -> MetricResult:
        return MetricResult(check, metric, plan.candidate, lane, value, samples, verdict, s_txt,
                            r_txt, detail, counts, s_max, r_max)

    err = cand.error_rate
    if fail_on and cand.requests >= need and cand.requests > 0 and not _missing(err):
        assert err is not None
        if err >= 1.0 or at_threshold(err, 1.0):
            return result("lane_failure", err, cand.requests, Verdict.BREACH,
                          f"candidate lane {lane} fails completely: every one of "
                          f"{fmt.count(cand.requests)} requests failed")
    # A lane with candidate traffic that cannot be compared holds the check when configured.
    hold = q.hold_unjudged_lanes and (cand.requests > 0 or cand.feedback > 0)
    v = cand.hit5_proxy
    if cand.feedback < need or _missing(v):
        return result("lane_hit5_drop", None, cand.feedback, Verdict.NO_DATA,
                      f"candidate lane {lane} not judged: {fmt.count(cand.feedback)} feedback "
                      f"events (need >= {need})", counts=hold)
    assert v is not None
    if fail_on and v <= 0.0:
        return result("lane_failure", v, cand.feedback, Verdict.BREACH,
                      f"candidate lane {lane} fails completely: Hit@5 proxy {fmt.pct(v)} over "
                      f"{fmt.count(cand.feedback)} feedback events")
    if s_max is None and r_max is None:
        return None
    if champ is None or champ.feedback < need or _missing(champ.hit5_proxy):
        got = 0.0 if champ is None else champ.feedback
        return result("lane_hit5_drop", None, cand.feedback, Verdict.NO_DATA,
                      f"lane {lane}: champion has {fmt.count(got)} feedback events "
                      f"(need >= {need}); not compared",
                      # a champion lane with no traffic (the 100% step) cannot catch up: report
                      counts=hold and champ is not None and champ.requests > 0)
    base = champ.hit5_proxy
    assert base is not None
    if base <= 0.0:
        return result("lane_hit5_drop", None, cand.feedback, Verdict.NO_DATA,
                      f"lane {lane}: champion Hit@5 proxy is 0%; no relative drop",
                      counts=False)
    drop = (base - v) / base
    verdict = judge_upper(drop, s_max, r_max, success_inclusive=True)
    how = f"{fmt.pct(drop)} below" if drop >= 0 else f"{fmt.pct(-drop)} above"
    shown = (f"candidate lane {lane} Hit@5 proxy {fmt.pct(v)} is {how} champion's "
             f"{fmt.pct(base)}")
    if verdict is Verdict.BREACH:
        detail = f"{shown} ({r_txt})"
    elif verdict is Verdict.PASS:
        detail = f"{shown}" + (f" ({s_txt})" if s_txt else "")
    else:
        detail = f"{shown} (max {fmt.pct(s_max)})" if s_max is not None else shown
    return result("lane_hit5_drop", drop, cand.feedback, verdict, detail)


def assess_quality(plan: Plan, obs: WindowObservation, *, candidate_weight: int = 0
                   ) -> CheckOutcome:
    """Hit@5 proxy of the candidate, and each lane against the champion's same lane.

    With ``quality.judge`` sequential: the anytime-valid tests of :mod:`.compare` instead.

    Judged only with at least ``quality.min_requests`` candidate feedback events in the window;
    otherwise noData. Lanes need ``quality.lane_min`` events on both versions to be compared.
    A lane regressing fails the check even when the overall proxy passes.
    """
    check = Check.QUALITY
    if obs.error is not None:
        return _error_outcome(check, obs)
    bad = _impossible_outcome(check, plan, obs)
    if bad is not None:
        return bad
    cand = obs.versions.get(plan.candidate)
    if plan.quality.judge is Judge.SEQUENTIAL:
        results = sequential_quality(plan, cand or VersionMetrics(),
                                     obs.versions.get(plan.champion), candidate_weight)
        return _outcome(check, results, "no quality test")
    need = plan.quality.min_requests
    got = 0.0 if cand is None else cand.feedback
    if cand is None or got < need:
        return CheckOutcome(
            check, Verdict.NO_DATA,
            f"not enough evidence: candidate has {fmt.count(got)} feedback events in the last "
            f"{fmt.duration(obs.window_s)} (need >= {need})",
        )
    results: list[MetricResult] = []
    r = _judge_version(check, _HIT5, plan, "candidate", plan.candidate, cand, cand.feedback,
                       "feedback events", True)
    if r is not None:
        results.append(r)
    champ = obs.versions.get(plan.champion)
    if champ is not None:
        r = _judge_version(check, _HIT5, plan, "champion", plan.champion, champ, champ.feedback,
                           "feedback events", False)
        if r is not None:
            results.append(r)
    champ_lanes = {} if champ is None else champ.lanes
    for lane in sorted(cand.lanes, key=lane_order):
        lr = _judge_lane(plan, lane, cand.lanes[lane], champ_lanes.get(lane))
        if lr is not None:
            results.append(lr)
    return _outcome(check, results, "no quality thresholds configured")
