"""Pure rules of offline evaluation and lane health: what to evaluate, and what the numbers mean.

No I/O: the reconciler hands in the spec, the previous status, the serving versions and the
clock, and writes back what these functions return. The numeric rules themselves (gate, drift,
lane health, their boundaries) are :mod:`lvm_serving.contracts.quality`'s, shared with the daily
regression suite; this module applies them to the status' records. Table tests:
``tests/unit/test_evaluation_policy.py``.

* **What to evaluate** (:func:`wanted`): before the first step, the candidate and the serving
  champion for the gate (a usable earlier result is reused: same version, same checkpoint
  digest, same eval set); the serving champion again whenever the drift interval has passed
  since its last evaluation. A failed evaluation is retried after ``retryAfter``.
* **Gate** (:func:`gate_status`): the candidate's eval-set Hit@5 against the minimum and
  against the champion's on the *same* eval-set bytes.
* **Baseline** (:func:`baseline_for`): the spec's numbers, else the champion's first recorded
  evaluation (a promoted candidate's gate result is its first evaluation).
* **Drift** (:func:`drift_status`): relative change of Hit@1/5/10 overall and Hit@5 per lane
  (lanes with enough sequences) against the baseline.
* **Lane health** (:func:`eval_lane_flags`, :func:`production_lane_flags`): a lane more than
  ``maxBelowOverall`` below its version's overall Hit@5 (exact on the eval set, proxy in
  production).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lvm_serving.contracts import eval_result, quality

from ..api import (
    Baseline,
    DriftRow,
    DriftStatus,
    DriftVerdict,
    EvalPurpose,
    EvalResult,
    Evaluation,
    EvaluationStatus,
    GateStatus,
    GateVerdict,
    LaneFlag,
    LaneResult,
    LaneSource,
    Provenance,
)
from ..decision.fmt import fraction as _pct

HIT_FIELDS = (("hit1", "hit@1"), ("hit5", "hit@5"), ("hit10", "hit@10"))


@dataclass(frozen=True)
class Subject:
    """A model version that can be evaluated (from the spec or from the rollout's history)."""

    version: str
    checkpoint: str
    sha256: str


@dataclass(frozen=True)
class Want:
    """One evaluation the rollout needs now."""

    purpose: EvalPurpose
    subject: Subject


def _t(when: datetime | None) -> float | None:
    return None if when is None else when.timestamp()


def to_time(t: float) -> datetime:
    return datetime.fromtimestamp(t, UTC)


# --- results ---------------------------------------------------------------------------------


def _ratio(x: Any) -> float | None:
    if x is None:
        return None
    v = float(x)
    return min(1.0, max(0.0, v)) if math.isfinite(v) else None


def result_from_output(purpose: EvalPurpose, subject: Subject, ev: Evaluation,
                       output: Mapping[str, Any], finished_at: float) -> EvalResult:
    """An :class:`EvalResult` from ``python -m lvm_serving.evaluate``'s JSON (or its error)."""
    common = dict(purpose=purpose, version=subject.version, checkpoint_sha256=subject.sha256,
                  eval_set_uri=ev.eval_set.uri, time=to_time(finished_at))
    error = eval_result.error_of(output)
    if error is not None:
        return EvalResult(**common, error=error[:1024])
    lanes = [
        LaneResult(lane=int(lane), sequences=int(r.get("n", 0)), hit1=_ratio(r.get("hit@1")),
                   hit5=_ratio(r.get("hit@5")), hit10=_ratio(r.get("hit@10")))
        for lane, r in sorted(output.get("per_lane", {}).items(), key=lambda x: int(x[0]))
    ]
    sha = output.get("eval_set_sha256") or None
    return EvalResult(
        provenance=_provenance(output.get("provenance")),
        **common, eval_set_sha256=sha, seconds=output.get("seconds"),
        sequences=int(output["n"]),
        hit1=_ratio(output.get("hit@1")), hit5=_ratio(output.get("hit@5")),
        hit10=_ratio(output.get("hit@10")), hit5_proxy=_ratio(output.get("hit@5_proxy")),
        empty_hit_rate=_ratio(output.get("empty_hit_rate")),
        nan_rate=_ratio(output.get("nan_rate")), lanes=lanes or None,
    )


def _known_args(raw: Any) -> dict[str, float] | None:
    """The contract's training arguments only (keys from a fixed list: bounded by construction)."""
    if not isinstance(raw, Mapping):
        return None
    out = {k: float(raw[k]) for k in eval_result.PROVENANCE_ARGS
           if isinstance(raw.get(k), int | float) and not isinstance(raw.get(k), bool)
           and math.isfinite(raw[k])}
    return out or None


def _provenance(raw: Any) -> Provenance | None:
    """The checkpoint's recorded training numbers, when the evaluator reported usable ones."""
    if not isinstance(raw, Mapping):
        return None
    try:
        return Provenance(source=raw.get("source") or "unknown",
                          epoch=raw.get("epoch"), hit1=_ratio(raw.get("hit@1")),
                          hit5=_ratio(raw.get("hit@5")), hit10=_ratio(raw.get("hit@10")),
                          args=_known_args(raw.get("args")))
    except (ValueError, TypeError):  # an odd record is left out, never a failed evaluation
        return None


def same_subject(r: EvalResult, subject: Subject, ev: Evaluation) -> bool:
    """``r`` was computed for this checkpoint on this eval set (by URI, and digest if pinned)."""
    return (r.version == subject.version and r.checkpoint_sha256 == subject.sha256
            and r.eval_set_uri == ev.eval_set.uri
            and (ev.eval_set.sha256 is None or r.error is not None
                 or r.eval_set_sha256 == ev.eval_set.sha256))


def latest(history: Sequence[EvalResult] | None, subject: Subject, ev: Evaluation,
           since: float | None = None) -> EvalResult | None:
    """The newest result for ``subject`` (finished at or after ``since``)."""
    for r in reversed(history or []):
        if same_subject(r, subject, ev) and (since is None or r.time.timestamp() >= since):
            return r
    return None


def as_quality_dict(r: EvalResult) -> dict[str, Any]:
    """The shape :mod:`lvm_serving.contracts.quality` reads (``hit@5``, ``n``, ``per_lane``)."""
    out: dict[str, Any] = {"n": r.sequences}
    for name, key in HIT_FIELDS:
        if getattr(r, name) is not None:
            out[key] = getattr(r, name)
    out["per_lane"] = {str(x.lane): {key: getattr(x, name) for name, key in HIT_FIELDS
                                     if getattr(x, name) is not None} | {"n": x.sequences}
                       for x in r.lanes or []}
    return out


# --- what to evaluate ------------------------------------------------------------------------


def _needs_run(r: EvalResult | None, ev: Evaluation, now: float) -> bool:
    """No usable result: none yet, or a failure older than ``retryAfter``."""
    if r is None:
        return True
    return r.error is not None and now - r.time.timestamp() >= ev.retry_after_seconds


def last_champion_evaluation(history: Sequence[EvalResult] | None, champion: Subject,
                             ev: Evaluation) -> EvalResult | None:
    """Drift is scheduled from the champion's newest evaluation, whatever its purpose (its
    evaluation for a gate is also a fresh look at the champion)."""
    return latest(history, champion, ev)


def wanted(ev: Evaluation, status: EvaluationStatus | None, *, gate_open: bool,
           champion: Subject, candidate: Subject | None, now: float) -> list[Want]:
    """The evaluations to have running now (each is started once; see the module docstring).

    ``gate_open``: the rollout has not started and the gate is enabled.
    """
    history = status.history if status is not None else None
    since = _t(status.gate_since) if status is not None else None
    out: list[Want] = []
    if gate_open and candidate is not None:
        cand = latest(history, candidate, ev, since)
        if _needs_run(cand, ev, now):
            out.append(Want(EvalPurpose.GATE, candidate))
        champ = latest(history, champion, ev, since)
        # Compare on the same eval-set bytes: an eval set refreshed in place since the
        # champion's result means the champion is evaluated again.
        stale = (champ is not None and cand is not None and champ.error is None
                 and cand.error is None and champ.eval_set_sha256 != cand.eval_set_sha256
                 and champ.time < cand.time)
        if _needs_run(champ, ev, now) or stale:
            out.append(Want(EvalPurpose.GATE, champion))
    if ev.drift.enabled and not any(w.subject == champion for w in out):
        last = last_champion_evaluation(history, champion, ev)
        if last is None:
            due = True
        elif last.error is not None:
            due = now - last.time.timestamp() >= min(ev.retry_after_seconds,
                                                     ev.drift.interval_seconds)
        else:
            due = now - last.time.timestamp() >= ev.drift.interval_seconds
        if due:
            out.append(Want(EvalPurpose.DRIFT, champion))
    return out


def next_drift_at(ev: Evaluation, status: EvaluationStatus | None, champion: Subject
                  ) -> float | None:
    last = last_champion_evaluation(status.history if status else None, champion, ev)
    if not ev.drift.enabled or last is None:
        return None
    wait = ev.drift.interval_seconds
    if last.error is not None:
        wait = min(wait, ev.retry_after_seconds)
    return last.time.timestamp() + wait


# --- the gate --------------------------------------------------------------------------------


def gate_status(ev: Evaluation, status: EvaluationStatus | None, *, champion: Subject,
                candidate: Subject, now: float) -> GateStatus:
    """The gate verdict for ``candidate`` from the results in ``status`` (pending without them)."""
    history = status.history if status is not None else None
    since = _t(status.gate_since) if status is not None else None
    cand = latest(history, candidate, ev, since)
    champ = latest(history, champion, ev, since)
    g = ev.gate

    def out(verdict: GateVerdict, reason: str) -> GateStatus:
        return GateStatus(candidate=candidate.version, verdict=verdict, reason=reason[:1024],
                          candidate_hit5=cand.hit5 if cand is not None else None,
                          champion_hit5=champ.hit5 if champ is not None else None,
                          time=None if verdict is GateVerdict.PENDING else to_time(now))

    if cand is not None and cand.error is not None:
        return out(GateVerdict.ERROR, f"evaluating candidate {candidate.version} failed: "
                                      f"{cand.error}")
    if champ is not None and champ.error is not None:
        return out(GateVerdict.ERROR, f"evaluating champion {champion.version} failed: "
                                      f"{champ.error}")
    if cand is None or champ is None or cand.eval_set_sha256 != champ.eval_set_sha256:
        waiting = [v.version for v, r in ((candidate, cand), (champion, champ)) if r is None]
        return out(GateVerdict.PENDING, f"evaluating {' and '.join(waiting) or 'the champion'}"
                                        " on the eval set before any candidate traffic")
    verdict = quality.pre_rollout_gate(as_quality_dict(cand), as_quality_dict(champ),
                                       g.min_hit5, g.max_degradation)
    text = (f"{verdict.reason}; Hit@1/5/10 {candidate.version} "
            f"{_pct(cand.hit1)}/{_pct(cand.hit5)}/{_pct(cand.hit10)} vs {champion.version} "
            f"{_pct(champ.hit1)}/{_pct(champ.hit5)}/{_pct(champ.hit10)}")
    return out(GateVerdict.PASS if verdict.passed else GateVerdict.BLOCKED, text)


# --- baseline and drift ----------------------------------------------------------------------


def baseline_for(ev: Evaluation, status: EvaluationStatus | None, champion: Subject
                 ) -> Baseline | None:
    """The champion's drift baseline: the spec's, else the recorded one, else its first result."""
    spec = ev.drift.baseline
    if spec is not None:
        return Baseline(version=champion.version, source="spec", hit1=spec.hit1, hit5=spec.hit5,
                        hit10=spec.hit10)
    recorded = status.baseline if status is not None else None
    if recorded is not None and recorded.version == champion.version \
            and recorded.source == "recorded":
        return recorded
    for r in (status.history if status is not None else None) or []:
        if same_subject(r, champion, ev) and r.error is None and r.hit5 is not None:
            return Baseline(version=champion.version, source="recorded", time=r.time,
                            eval_set_sha256=r.eval_set_sha256, hit1=r.hit1, hit5=r.hit5,
                            hit10=r.hit10, lanes=r.lanes)
    return None


def drift_rows(baseline: Baseline, current: EvalResult, max_relative: float,
               lane_min_sequences: int) -> list[DriftRow]:
    rows = []
    for name, _ in HIT_FIELDS:
        base, cur = getattr(baseline, name), getattr(current, name)
        if base is None or cur is None or base <= 0:
            continue
        d = quality.Drift(name, base, cur)
        rows.append(DriftRow(metric=name, baseline=base, current=cur, relative=d.relative,
                             drifted=bool(quality.drifted([d], max_relative))))
    base_lanes = {x.lane: x for x in baseline.lanes or []}
    for lane in current.lanes or []:
        base = base_lanes.get(lane.lane)
        if (base is None or base.hit5 is None or lane.hit5 is None or base.hit5 <= 0
                or lane.sequences < lane_min_sequences or base.sequences < lane_min_sequences):
            continue
        d = quality.Drift("hit5", base.hit5, lane.hit5)
        rows.append(DriftRow(metric="hit5", lane=lane.lane, baseline=base.hit5,
                             current=lane.hit5, relative=d.relative,
                             drifted=bool(quality.drifted([d], max_relative))))
    return rows


def drift_status(ev: Evaluation, status: EvaluationStatus | None, champion: Subject,
                 baseline: Baseline | None, running: bool) -> DriftStatus | None:
    """The drift verdict of the serving champion from its newest evaluation."""
    if not ev.drift.enabled:
        return None
    last = last_champion_evaluation(status.history if status else None, champion, ev)
    nxt = next_drift_at(ev, status, champion)
    common = dict(version=champion.version,
                  next_check_at=None if nxt is None else to_time(nxt))
    if last is None:
        return DriftStatus(**common, verdict=DriftVerdict.PENDING,
                           reason=f"evaluating champion {champion.version} on the eval set"
                           if running else "no evaluation yet")
    if last.error is not None:
        return DriftStatus(**common, verdict=DriftVerdict.ERROR, time=last.time,
                           reason=f"evaluating champion {champion.version} failed: "
                                  f"{last.error}"[:1024])
    if baseline is None:
        return DriftStatus(**common, verdict=DriftVerdict.PENDING, time=last.time,
                           reason="no baseline recorded yet")
    limit = ev.drift.max_relative_drift
    rows = drift_rows(baseline, last, limit, ev.drift.lane_min_sequences)
    bad = [r for r in rows if r.drifted]
    where = f"champion {champion.version} vs its {baseline.source} baseline"
    if bad:
        parts = [f"{_label(r)} {_pct(r.current)} vs {_pct(r.baseline)} ({r.relative:+.1%})"
                 for r in sorted(bad, key=lambda r: -abs(r.relative))]
        reason = (f"drift beyond ±{limit:.0%}: {where}: {', '.join(parts[:6])}"
                  + (f" and {len(parts) - 6} more" if len(parts) > 6 else ""))
        verdict = DriftVerdict.DRIFTED
    else:
        hit5 = next((r for r in rows if r.metric == "hit5" and r.lane is None), None)
        shown = (f"Hit@5 {_pct(hit5.current)} vs {_pct(hit5.baseline)} ({hit5.relative:+.1%})"
                 if hit5 is not None else "no comparable metric")
        reason = f"no drift beyond ±{limit:.0%}: {where}: {shown}"
        verdict = DriftVerdict.OK
    return DriftStatus(**common, verdict=verdict, time=last.time, reason=reason[:1024],
                       rows=rows or None)


def _label(r: DriftRow) -> str:
    name = {"hit1": "Hit@1", "hit5": "Hit@5", "hit10": "Hit@10"}.get(r.metric, r.metric)
    return name if r.lane is None else f"lane {r.lane} {name}"


# --- lane health -----------------------------------------------------------------------------


def newest_ok(status: EvaluationStatus | None, version: str) -> EvalResult | None:
    """The newest successful evaluation of ``version`` (any purpose)."""
    for r in reversed((status.history if status else None) or []):
        if r.version == version and r.error is None:
            return r
    return None


def eval_lane_flags(result: EvalResult | None, max_below: float) -> list[LaneFlag]:
    """Lanes of one eval result more than ``max_below`` under its overall Hit@5 (exact)."""
    if result is None or result.error is not None or result.hit5 is None:
        return []
    sizes = {x.lane: x.sequences for x in result.lanes or []}
    return [
        LaneFlag(version=result.version, lane=int(f.lane), source=LaneSource.EVAL,
                 value=f.value, overall=f.overall, below_relative=f.below_relative,
                 samples=sizes.get(int(f.lane)))
        for f in quality.lane_health(as_quality_dict(result), "hit@5", max_below)
    ]


@dataclass(frozen=True)
class LaneEvidence:
    """One version's production numbers over the lane-health window (plain data)."""

    overall_hit5: float | None
    lanes: Mapping[str, tuple[float, float | None]]  # lane -> (feedback, hit5 proxy)


def production_lane_flags(evidence: Mapping[str, LaneEvidence], versions: Iterable[str],
                          max_below: float, min_feedback: int
                          ) -> tuple[list[LaneFlag], list[str]]:
    """Flagged lanes of ``versions`` and the versions that had enough evidence to judge.

    A lane is judged with ``min_feedback`` feedback events; a version needs at least one such
    lane and a finite overall Hit@5 proxy.
    """
    flags: list[LaneFlag] = []
    judged: list[str] = []
    for version in versions:
        e = evidence.get(version)
        if e is None or e.overall_hit5 is None or not math.isfinite(e.overall_hit5):
            continue
        lanes = {lane: {"hit5": v} for lane, (n, v) in e.lanes.items()
                 if n >= min_feedback and v is not None and math.isfinite(v)
                 and str(lane).isdigit()}
        if not lanes:
            continue
        judged.append(version)
        samples = {lane: n for lane, (n, _) in e.lanes.items()}
        for f in quality.lane_health({"hit5": e.overall_hit5, "per_lane": lanes}, "hit5",
                                     max_below):
            flags.append(LaneFlag(version=version, lane=int(f.lane),
                                  source=LaneSource.PRODUCTION, value=_ratio(f.value) or 0.0,
                                  overall=_ratio(f.overall) or 0.0,
                                  below_relative=f.below_relative, samples=samples[f.lane]))
    return flags, judged
