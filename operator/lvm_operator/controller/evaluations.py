"""One tick's offline evaluation and lane health, pure: which runs are wanted, then judge.

The rules are in :mod:`lvm_operator.evaluation.policy`; this module applies them in two pure
steps around the runner, which the shell (:mod:`.reconcile`) drives: :func:`plan_evaluations`
says which evaluations should be running (their :class:`EvalRequest`), the shell starts or
collects them, and :func:`evaluation_tick` turns what they answered into the new
``status.evaluation`` plus the gate observation the decision core reads. Lane health reads a
production window the shell measured when :func:`lane_check_due`. Events and conditions come
later, from the status diff (:mod:`.status`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..api import (
    EvaluationStatus,
    LaneHealthStatus,
    LaneHealthVerdict,
    LaneSource,
    LVMRolloutSpec,
    RunningEvaluation,
)
from ..api.status import MAX_EVAL_HISTORY, MAX_LANE_ROWS
from ..decision import GateObservation, WindowObservation
from ..evaluation import policy
from ..evaluation.protocol import EvalRequest, Finished, Running
from .adapter import ServedVersion

#: How often a tick looks at running evaluations.
EVAL_POLL_S = 1.0
#: A production lane check that found no data or an error is retried after at most this.
LANE_RETRY_S = 60.0


@dataclass
class EvaluationTick:
    status: EvaluationStatus | None  # None: leave status.evaluation as it is
    gate: GateObservation | None
    busy: bool  # an evaluation is running: tick again soon
    next_at: float | None  # when the next drift check falls due


def subject(v: ServedVersion) -> policy.Subject:
    return policy.Subject(v.version, v.checkpoint, v.sha256)


@dataclass(frozen=True)
class EvaluationPlan:
    """What a tick wants from the evaluation runner, and what it judges the answers against."""

    now: float
    status: EvaluationStatus | None  # the previous status.evaluation, to be updated
    gate_open: bool  # not started and the gate is enabled
    champion: policy.Subject | None
    candidate: policy.Subject | None
    wants: tuple[tuple[policy.Want, EvalRequest], ...] = ()
    enabled: bool = True  # spec.evaluation is set

    @property
    def requests(self) -> list[EvalRequest]:
        """The evaluations to start (if not running) or collect (if finished), in order."""
        return [req for _, req in self.wants]


def plan_evaluations(spec: LVMRolloutSpec, rollout: str, old: EvaluationStatus | None, *,
                     not_started: bool, champion: ServedVersion,
                     candidate: ServedVersion | None, now: float,
                     reevaluate: bool = False) -> EvaluationPlan:
    ev = spec.evaluation
    if ev is None:
        return EvaluationPlan(now, old, False, None, None, enabled=False)
    champ, cand = subject(champion), subject(candidate) if candidate is not None else None
    status = (old or EvaluationStatus()).model_copy(deep=True)
    if reevaluate:
        status.gate_since = policy.to_time(now)
    gate_open = not_started and ev.gate.enabled
    wants = policy.wanted(ev, status, gate_open=gate_open, champion=champ, candidate=cand,
                          now=now)
    return EvaluationPlan(now, status, gate_open, champ, cand,
                          tuple((w, _request(spec, rollout, w)) for w in wants))


def evaluation_tick(spec: LVMRolloutSpec, plan: EvaluationPlan,
                    answers: Sequence[Running | Finished]) -> EvaluationTick:
    """``answers``: what the runner said for each of ``plan.requests`` (same order): still
    running (started now or earlier) or finished (collected by the shell)."""
    ev = spec.evaluation
    if ev is None or not plan.enabled:
        # Evaluation switched off: its verdicts (and their conditions) go; results stay.
        old = plan.status
        cleared = None if old is None else old.model_copy(
            update={"gate": None, "drift": None, "running": None})
        return EvaluationTick(cleared, None, False, None)
    assert plan.status is not None and plan.champion is not None
    status = plan.status.model_copy(deep=True)
    champ, cand, gate_open = plan.champion, plan.candidate, plan.gate_open
    history = list(status.history or [])
    running: list[RunningEvaluation] = []
    for (want, _req), polled in zip(plan.wants, answers, strict=True):
        if isinstance(polled, Finished):
            history.append(policy.result_from_output(want.purpose, want.subject, ev,
                                                     polled.output, polled.finished_at))
            continue
        running.append(RunningEvaluation(purpose=want.purpose, version=want.subject.version,
                                         started_at=policy.to_time(polled.started_at)))
    status.history = history[-MAX_EVAL_HISTORY:] or None
    status.running = running or None

    if gate_open and cand is not None:
        status.gate = policy.gate_status(ev, status, champion=champ, candidate=cand,
                                         now=plan.now)
    elif not ev.gate.enabled:
        status.gate = None
    status.baseline = policy.baseline_for(ev, status, champ)
    drift_running = any(r.version == champ.version for r in running)
    status.drift = policy.drift_status(ev, status, champ, status.baseline, drift_running)
    gate = None
    if status.gate is not None and gate_open:
        gate = GateObservation(status.gate.verdict, status.gate.reason)
    return EvaluationTick(status, gate, bool(running), policy.next_drift_at(ev, status, champ))


def _request(spec: LVMRolloutSpec, rollout: str, want: policy.Want) -> EvalRequest:
    ev = spec.evaluation
    assert ev is not None
    return EvalRequest(
        rollout=rollout, purpose=want.purpose.value, version=want.subject.version,
        checkpoint=want.subject.checkpoint, checkpoint_sha256=want.subject.sha256,
        bank_uri=spec.concept_bank.uri, bank_sha256=spec.concept_bank.sha256,
        eval_set_uri=ev.eval_set.uri, eval_set_sha256=ev.eval_set.sha256,
        timeout_s=ev.timeout_seconds,
    )


# --- lane health -----------------------------------------------------------------------------


def lane_evidence(obs: WindowObservation) -> dict[str, policy.LaneEvidence]:
    out = {}
    for version, m in obs.versions.items():
        hit5 = m.hit5_proxy if m.hit5_proxy is not None and math.isfinite(m.hit5_proxy) \
            else None
        out[version] = policy.LaneEvidence(
            overall_hit5=hit5,
            lanes={lane: (lm.feedback, lm.hit5_proxy) for lane, lm in m.lanes.items()})
    return out


def lane_check_due(old: LaneHealthStatus | None, now: float) -> bool:
    return old is None or old.next_check_at is None or now >= old.next_check_at.timestamp()


def lane_health_tick(spec: LVMRolloutSpec, old: LaneHealthStatus | None,
                     evaluation: EvaluationStatus | None, *, versions: list[str],
                     observation: WindowObservation | None, now: float) -> LaneHealthStatus:
    """``observation``: the production window when the check is due (else the previous
    production flags are kept); eval flags always come from the newest eval results."""
    cfg = spec.analysis.lane_health
    production = [f for f in (old.flagged or []) if f.source is LaneSource.PRODUCTION] \
        if old is not None else []
    prod_verdict = None
    prod_reason = old.reason if old is not None else ""
    checked_at = old.time if old is not None else None
    next_at = old.next_check_at if old is not None else None
    if observation is not None:
        checked_at = policy.to_time(now)
        if observation.error is not None:
            production, prod_verdict = [], LaneHealthVerdict.ERROR
            prod_reason = f"production lanes not checked: {observation.error}"
            next_at = policy.to_time(now + min(cfg.interval_seconds, LANE_RETRY_S))
        else:
            production, judged = policy.production_lane_flags(
                lane_evidence(observation), versions, cfg.max_below_overall, cfg.min_feedback)
            if not judged:
                prod_verdict = LaneHealthVerdict.NO_DATA
                prod_reason = (f"production lanes not judged: no version has a lane with "
                               f"{cfg.min_feedback} feedback events in the last {cfg.window}")
                # Traffic builds up over a window: look again after a quarter of it (a new
                # rollout is not left unjudged for a day), not every minute for hundreds.
                retry = max(LANE_RETRY_S, cfg.window_seconds / 4)
                next_at = policy.to_time(now + min(cfg.interval_seconds, retry))
            else:
                prod_reason = f"production lanes of {', '.join(judged)} over {cfg.window}"
                next_at = policy.to_time(now + cfg.interval_seconds)
    elif old is not None and old.verdict in (LaneHealthVerdict.ERROR, LaneHealthVerdict.NO_DATA) \
            and not old.flagged:
        prod_verdict = old.verdict
    evals = [f for version in versions for f in policy.eval_lane_flags(
        policy.newest_ok(evaluation, version), cfg.max_below_overall)]
    flagged = (production + evals)[:MAX_LANE_ROWS]
    if flagged:
        parts = [f"{f.version} lane {f.lane} ({f.source.value}) {f.value:.1%} vs "
                 f"{f.overall:.1%} overall ({f.below_relative:.0%} below)" for f in flagged]
        reason = (f"lanes more than {cfg.max_below_overall:.0%} below overall: "
                  + "; ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6
                                            else ""))
        verdict = LaneHealthVerdict.DEGRADED
    elif prod_verdict is not None:
        verdict, reason = prod_verdict, prod_reason
    else:
        verdict = LaneHealthVerdict.HEALTHY
        reason = f"no lane more than {cfg.max_below_overall:.0%} below overall" + (
            f" ({prod_reason})" if prod_reason else "")
    return LaneHealthStatus(verdict=verdict, reason=reason[:1024], time=checked_at,
                            next_check_at=next_at, flagged=flagged or None)

