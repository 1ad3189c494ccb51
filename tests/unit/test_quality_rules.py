"""Table tests for the offline quality rules: lane health, drift and the pre-rollout gate."""

from __future__ import annotations

import pytest

from lvm_serving.contracts.quality import drift, drifted, lane_health, pre_rollout_gate


def result(hit5, lanes=None, **more):
    return {"hit@5": hit5, "hit@1": more.get("hit1", hit5 * 0.8),
            "hit@10": more.get("hit10", hit5 * 1.1), "n": 100,
            "per_lane": {str(k): {"hit@5": v} for k, v in (lanes or {}).items()}}


@pytest.mark.parametrize(("overall", "lane_value", "flagged"), [
    (0.80, 0.80, False),        # equal
    (0.80, 0.68, False),        # (0.80-0.68)/0.80 = 15.0% exactly: not more than 15%
    (0.80, 0.679, True),        # 15.125% below
    (0.80, 0.00, True),         # a lane failing completely
    (0.00, 0.00, False),        # nothing to compare against
])
def test_lane_health(overall, lane_value, flagged):
    flags = lane_health(result(overall, {0: overall, 5: lane_value}))
    assert [f.lane for f in flags] == (["5"] if flagged else [])


@pytest.mark.parametrize(("baseline", "current", "beyond"), [
    (0.66, 0.66, False),
    (0.66, 0.627, False),       # -5.0% exactly: within
    (0.66, 0.626, True),        # -5.15%
    (0.66, 0.70, True),         # +6.1%: the seed alerts on |drift|
])
def test_drift(baseline, current, beyond):
    drifts = drift(result(current, hit1=0.5, hit10=0.7), result(baseline, hit1=0.5, hit10=0.7))
    assert [d.metric for d in drifted(drifts)] == (["hit@5"] if beyond else [])


@pytest.mark.parametrize(("cand", "champ", "min_hit5", "max_deg", "passed", "why"), [
    (0.70, 0.66, 0.60, 0.05, True, "≥ 0.600"),
    (0.59, None, 0.60, 0.05, False, "< minimum 0.600"),
    (0.62, 0.66, 0.60, 0.05, False, "6.1% below the champion's 0.660"),  # (0.66-0.62)/0.66
    (0.627, 0.66, 0.60, 0.05, True, "champion 0.660"),                   # exactly 5% worse
])
def test_pre_rollout_gate(cand, champ, min_hit5, max_deg, passed, why):
    gate = pre_rollout_gate(result(cand), result(champ) if champ else None, min_hit5, max_deg)
    assert gate.passed is passed
    assert why in gate.reason
