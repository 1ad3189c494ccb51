"""Table tests for the evaluation rules: what to run, gate, baseline, drift and lane health.

Times are POSIX seconds from T0; the eval set is pinned to digest E unless a row says otherwise.
The numeric boundaries themselves are lvm_serving.contracts.quality's
(tests/unit/test_quality_rules.py); these rows check how the operator applies them to recorded
results.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from lvm_operator.api import (
    EvalPurpose,
    EvalResult,
    Evaluation,
    EvaluationStatus,
    GateVerdict,
    LaneResult,
    LaneSource,
)
from lvm_operator.evaluation import policy
from lvm_operator.evaluation.policy import LaneEvidence, Subject, Want

T0 = 1_700_000_000.0
E, E2 = "e" * 64, "f" * 64
CHAMP = Subject("v1", "file:///m/v1.pt", "1" * 64)
CAND = Subject("v2", "file:///m/v2.pt", "2" * 64)
WEEK = 7 * 86400.0


def ev(**kw) -> Evaluation:
    base = {"evalSet": {"uri": "file:///e/eval_set.npz", "sha256": E}}
    base.update(kw)
    return Evaluation.model_validate(base)


def result(subject: Subject, t: float, hit5: float | None = 0.7, *, error: str | None = None,
           eval_sha: str = E, lanes: dict[int, float] | None = None, hit1: float = 0.6,
           hit10: float = 0.8, purpose=EvalPurpose.GATE, n_lane: int = 32) -> EvalResult:
    ok = error is None
    return EvalResult(
        purpose=purpose, version=subject.version, checkpoint_sha256=subject.sha256,
        eval_set_uri="file:///e/eval_set.npz", eval_set_sha256=eval_sha if ok else None,
        time=datetime.fromtimestamp(t, UTC), sequences=512 if ok else None,
        hit1=hit1 if ok else None, hit5=hit5 if ok else None, hit10=hit10 if ok else None,
        lanes=[LaneResult(lane=k, sequences=n_lane, hit5=v) for k, v in (lanes or {}).items()]
        or None, error=error)


def status(*history: EvalResult, **kw) -> EvaluationStatus:
    return EvaluationStatus(history=list(history) or None, **kw)


# --- what to run ------------------------------------------------------------------------------

WANT_ROWS = [
    # (id, status history, gate_open, now offset, expected wants)
    ("nothing yet: both for the gate", [], True, 0,
     [(EvalPurpose.GATE, "v2"), (EvalPurpose.GATE, "v1")]),
    ("both known: nothing", [result(CAND, T0), result(CHAMP, T0)], True, 60, []),
    ("champion known: only the candidate", [result(CHAMP, T0)], True, 60,
     [(EvalPurpose.GATE, "v2")]),
    ("failed 299 s ago: not retried before retryAfter (5m)",
     [result(CAND, T0, error="boom"), result(CHAMP, T0)], True, 299, []),
    ("failed 300 s ago: retried", [result(CAND, T0, error="boom"), result(CHAMP, T0)], True,
     300, [(EvalPurpose.GATE, "v2")]),
    ("champion on an older eval set than the candidate: again",
     [result(CHAMP, T0, eval_sha=E2), result(CAND, T0 + 1)], True, 60,
     [(EvalPurpose.GATE, "v1")]),
    ("started: no gate; drift not due 1 s before a week", [result(CHAMP, T0)], False,
     WEEK - 1, []),
    ("started: drift due after a week", [result(CHAMP, T0)], False, WEEK,
     [(EvalPurpose.DRIFT, "v1")]),
    ("started: never evaluated: drift now", [], False, 0, [(EvalPurpose.DRIFT, "v1")]),
    ("drift failed: retried after retryAfter, not a week",
     [result(CHAMP, T0, error="gone", purpose=EvalPurpose.DRIFT)], False, 300,
     [(EvalPurpose.DRIFT, "v1")]),
]


@pytest.mark.parametrize(("history", "gate_open", "offset", "expected"),
                         [r[1:] for r in WANT_ROWS], ids=[r[0] for r in WANT_ROWS])
def test_wanted(history, gate_open, offset, expected):
    wants = policy.wanted(ev(), status(*history), gate_open=gate_open, champion=CHAMP,
                          candidate=CAND, now=T0 + offset)
    assert [(w.purpose, w.subject.version) for w in wants] == expected


def test_retry_ignores_results_before_gate_since():
    s = status(result(CAND, T0), result(CHAMP, T0),
               gate_since=datetime.fromtimestamp(T0 + 10, UTC))
    wants = policy.wanted(ev(), s, gate_open=True, champion=CHAMP, candidate=CAND, now=T0 + 10)
    assert wants == [Want(EvalPurpose.GATE, CAND), Want(EvalPurpose.GATE, CHAMP)]


def test_a_result_for_another_checkpoint_or_eval_set_is_not_reused():
    other = Subject("v2", "file:///m/v2.pt", "3" * 64)  # same name, new bytes
    assert policy.latest([result(CAND, T0)], other, ev()) is None
    assert policy.latest([result(CAND, T0, eval_sha=E2)], CAND, ev()) is None
    # Unpinned eval set: any digest of the same URI counts (it may be refreshed in place).
    unpinned = ev(evalSet={"uri": "file:///e/eval_set.npz"})
    assert policy.latest([result(CAND, T0, eval_sha=E2)], CAND, unpinned) is not None


# --- the gate ---------------------------------------------------------------------------------

GATE_ROWS = [
    # (id, candidate Hit@5, champion Hit@5, verdict, reason fragment)
    ("good", 0.70, 0.68, GateVerdict.PASS, "candidate Hit@5 0.700 ≥ 0.660 (champion 0.680)"),
    ("below the minimum", 0.41, 0.68, GateVerdict.BLOCKED, "0.410 < minimum 0.660"),
    ("at the minimum exactly", 0.66, 0.66, GateVerdict.PASS, "≥ 0.660"),
    # (0.70 - 0.665) / 0.70 = 5.0% exactly: allowed; 0.664 is 5.14% worse: blocked.
    ("5% below the champion exactly", 0.665, 0.70, GateVerdict.PASS, "champion 0.700"),
    ("5.14% below the champion", 0.664, 0.70, GateVerdict.BLOCKED,
     "is 5.1% below the champion's 0.700 (allowed 5.0%)"),
]


@pytest.mark.parametrize(("cand", "champ", "verdict", "why"), [r[1:] for r in GATE_ROWS],
                         ids=[r[0] for r in GATE_ROWS])
def test_gate(cand, champ, verdict, why):
    s = status(result(CAND, T0, cand), result(CHAMP, T0, champ))
    g = policy.gate_status(ev(), s, champion=CHAMP, candidate=CAND, now=T0 + 5)
    assert g.verdict is verdict
    assert why in g.reason
    assert (g.candidate_hit5, g.champion_hit5) == (cand, champ)


@pytest.mark.parametrize(("history", "verdict", "why"), [
    ([], GateVerdict.PENDING, "evaluating v2 and v1 on the eval set"),
    ([result(CHAMP, T0)], GateVerdict.PENDING, "evaluating v2 on the eval set"),
    ([result(CAND, T0, error="ArtifactNotFoundError: checkpoint file not found: /m/v2.pt"),
      result(CHAMP, T0)], GateVerdict.ERROR, "evaluating candidate v2 failed: Artifact"),
    ([result(CAND, T0), result(CHAMP, T0, error="Timeout: timed out")], GateVerdict.ERROR,
     "evaluating champion v1 failed: Timeout"),
    ([result(CAND, T0, eval_sha=E2), result(CHAMP, T0)], GateVerdict.PENDING, "champion"),
])
def test_gate_without_two_comparable_results(history, verdict, why):
    e = ev(evalSet={"uri": "file:///e/eval_set.npz"})  # unpinned, so E2 counts as a result
    g = policy.gate_status(e, status(*history), champion=CHAMP, candidate=CAND, now=T0)
    assert g.verdict is verdict and why in g.reason


# --- baseline and drift -----------------------------------------------------------------------


def test_baseline_spec_wins_then_recorded_then_first_result():
    first, later = result(CHAMP, T0, 0.70), result(CHAMP, T0 + WEEK, 0.60)
    b = policy.baseline_for(ev(), status(first, later), CHAMP)
    assert (b.source, b.hit5, b.time.timestamp()) == ("recorded", 0.70, T0)
    spec = ev(drift={"baseline": {"hit5": 0.6652}})
    assert policy.baseline_for(spec, status(first), CHAMP).hit5 == 0.6652
    # A recorded baseline survives its result leaving the bounded history...
    kept = policy.baseline_for(ev(), status(later, baseline=b), CHAMP)
    assert kept.hit5 == 0.70
    # ...but not a change of champion (a promotion): the new one's first result counts.
    new = Subject("v2", CAND.checkpoint, CAND.sha256)
    assert policy.baseline_for(ev(), status(result(new, T0 + 5, 0.75), baseline=b),
                               new).hit5 == 0.75
    assert policy.baseline_for(ev(), status(), CHAMP) is None


DRIFT_ROWS = [
    # (id, baseline hit5, current hit5, drifted?) ; relative = (current - baseline) / baseline
    ("unchanged", 0.66, 0.66, False),
    ("-5.0% exactly: within", 0.66, 0.627, False),
    ("-5.15%: drifted", 0.66, 0.626, True),
    ("+6.1%: drifted (the seed alerts on |drift|)", 0.66, 0.70, True),
]


@pytest.mark.parametrize(("base", "current", "drifted"), [r[1:] for r in DRIFT_ROWS],
                         ids=[r[0] for r in DRIFT_ROWS])
def test_drift_overall(base, current, drifted):
    e = ev(drift={"baseline": {"hit5": base}})
    s = status(result(CHAMP, T0 + 10, current, purpose=EvalPurpose.DRIFT))
    d = policy.drift_status(e, s, CHAMP, policy.baseline_for(e, s, CHAMP), running=False)
    assert (d.verdict.value == "drifted") is drifted
    (row,) = d.rows
    assert row.relative == pytest.approx((current - base) / base)
    assert d.next_check_at.timestamp() == T0 + 10 + WEEK


def test_drift_per_lane_needs_enough_sequences():
    base = result(CHAMP, T0, 0.7, lanes={0: 0.7, 3: 0.7}, n_lane=40)
    # Lane 3 fell 50%; lane 0 held. With 40 sequences a lane (>= 30) it is judged...
    now = result(CHAMP, T0 + WEEK, 0.7, lanes={0: 0.7, 3: 0.35}, n_lane=40)
    d = policy.drift_status(ev(), status(base, now), CHAMP,
                            policy.baseline_for(ev(), status(base), CHAMP), running=False)
    assert d.verdict.value == "drifted"
    assert [(r.lane, r.drifted) for r in d.rows if r.lane is not None] == [(0, False),
                                                                           (3, True)]
    assert "lane 3 Hit@5 35.0% vs 70.0% (-50.0%)" in d.reason
    # ...with 20 it is noise and only the overall numbers count.
    few = ev(drift={"laneMinSequences": 41})
    d = policy.drift_status(few, status(base, now), CHAMP,
                            policy.baseline_for(few, status(base), CHAMP), running=False)
    assert d.verdict.value == "ok" and all(r.lane is None for r in d.rows)


@pytest.mark.parametrize(("history", "running", "verdict"), [
    ([], True, "pending"),
    ([result(CHAMP, T0, error="gone", purpose=EvalPurpose.DRIFT)], False, "error"),
])
def test_drift_without_a_result(history, running, verdict):
    d = policy.drift_status(ev(), status(*history), CHAMP, None, running=running)
    assert d.verdict.value == verdict


def test_drift_check_can_be_disabled():
    assert policy.drift_status(ev(drift={"enabled": False}), status(), CHAMP, None,
                               running=False) is None
    assert policy.wanted(ev(drift={"enabled": False}), status(), gate_open=False,
                         champion=CHAMP, candidate=None, now=T0) == []


# --- lane health ------------------------------------------------------------------------------

LANE_ROWS = [
    # (id, overall, lane 5, flagged?) ; below = (overall - lane) / overall
    ("equal", 0.80, 0.80, False),
    ("15.0% below exactly: healthy", 0.80, 0.68, False),
    ("15.125% below: flagged", 0.80, 0.679, True),
    ("failing completely", 0.80, 0.0, True),
]


@pytest.mark.parametrize(("overall", "lane", "flagged"), [r[1:] for r in LANE_ROWS],
                         ids=[r[0] for r in LANE_ROWS])
def test_production_lane_flags(overall, lane, flagged):
    evidence = {"v1": LaneEvidence(overall, {"0": (500.0, overall), "5": (500.0, lane)})}
    flags, judged = policy.production_lane_flags(evidence, ["v1"], 0.15, 100)
    assert judged == ["v1"]
    assert [(f.lane, f.source) for f in flags] == ([(5, LaneSource.PRODUCTION)] if flagged
                                                    else [])
    if flagged:
        assert flags[0].below_relative == pytest.approx((overall - lane) / overall)
        assert flags[0].samples == 500.0


def test_production_lanes_need_feedback_and_a_version_with_data():
    evidence = {"v1": LaneEvidence(0.8, {"5": (99.0, 0.0), "6": (100.0, 0.8)})}
    flags, judged = policy.production_lane_flags(evidence, ["v1", "v2"], 0.15, 100)
    assert (flags, judged) == ([], ["v1"])  # lane 5 has 99 < 100 events: not judged
    none, judged = policy.production_lane_flags(
        {"v1": LaneEvidence(None, {})}, ["v1"], 0.15, 100)
    assert (none, judged) == ([], [])


def test_eval_lane_flags():
    r = result(CHAMP, T0, 0.80, lanes={0: 0.85, 3: 0.30, 7: 0.70})
    flags = policy.eval_lane_flags(r, 0.15)
    assert [(f.lane, f.source, f.samples) for f in flags] == [(3, LaneSource.EVAL, 32)]
    assert flags[0].below_relative == pytest.approx(0.625)  # (0.80 - 0.30) / 0.80
    assert policy.eval_lane_flags(result(CHAMP, T0, error="x"), 0.15) == []


# --- results ----------------------------------------------------------------------------------


def test_result_from_output_keeps_numbers_and_errors():
    out = {"format": "lvm-eval-result", "format_version": 1, "n": 512, "hit@1": 0.5,
           "hit@5": 0.7, "hit@10": 0.8, "hit@5_proxy": 0.69, "empty_hit_rate": 0.0,
           "nan_rate": 0.0, "eval_set_sha256": E, "seconds": 1.5,
           "per_lane": {"3": {"n": 32, "hit@1": 0.4, "hit@5": 0.6, "hit@10": 0.7}}}
    r = policy.result_from_output(EvalPurpose.GATE, CAND, ev(), out, T0)
    assert (r.sequences, r.hit5, r.lanes[0].lane, r.lanes[0].hit5, r.error) == (512, 0.7, 3,
                                                                               0.6, None)
    failed = policy.result_from_output(
        EvalPurpose.DRIFT, CHAMP, ev(),
        {"format": "lvm-eval-result", "error": "sha256 mismatch", "error_type": "Checksum"}, T0)
    assert failed.error == "Checksum: sha256 mismatch" and failed.hit5 is None
    garbage = policy.result_from_output(EvalPurpose.GATE, CAND, ev(), {"hello": 1}, T0)
    assert "unexpected evaluation output" in garbage.error


@pytest.mark.parametrize(("raw", "want"), [
    # a seed checkpoint's val_results (Phase-2 500-ctx) and epoch
    ({"source": "seed", "epoch": 7, "hit@1": 0.5, "hit@5": 0.6652, "hit@10": 0.7478,
      "args": {"lr": 0.0005, "min_length": 500}},
     {"source": "seed", "epoch": 7, "hit1": 0.5, "hit5": 0.6652, "hit10": 0.7478,
      "args": {"lr": 0.0005, "min_length": 500}}),
    ({"source": "lvm-rollout-checkpoint/1", "hit@5": 0.91},
     {"source": "lvm-rollout-checkpoint/1", "hit5": 0.91}),
    # an odd record is left out; the evaluation itself still counts
    ({"source": "seed", "epoch": -3}, None),
    # argument names outside the contract's list never reach status
    ({"source": "seed", "args": {"lr": 0.01, "<script>" * 20: 1.0}},
     {"source": "seed", "args": {"lr": 0.01}}),
    ({"source": "a b c <script>"}, None),
    ("not a mapping", None),
])
def test_the_checkpoints_own_record_is_kept_when_usable(raw, want):
    out = {"format": "lvm-eval-result", "format_version": 1, "n": 512, "hit@5": 0.7,
           "provenance": raw}
    r = policy.result_from_output(EvalPurpose.GATE, CAND, ev(), out, T0)
    assert r.hit5 == 0.7 and r.error is None
    got = None if r.provenance is None else r.provenance.model_dump(exclude_none=True)
    assert got == want


def test_provenance_takes_numbers_and_the_epoch_only():
    from lvm_serving.contracts.eval_result import provenance

    seed = provenance("seed", {"hit@5": 0.6652, "hit@1": "0.5", "loss_total": 0.61},
                      {"epoch": 7, "args": {"data": "x" * 5000, "lr": 5e-4, "min_length": 500,
                                            "device": "mps", "seed": 42, "patience": True}})
    assert seed == {"source": "seed", "hit@5": 0.6652, "epoch": 7,
                    "args": {"lr": 5e-4, "min_length": 500, "seed": 42}}
    ours = provenance("lvm-rollout-checkpoint/1", {"eval": {"hit@5": 0.9, "hit@10": 1.5}}, {})
    assert ours == {"source": "lvm-rollout-checkpoint/1", "hit@5": 0.9}
