"""Spec → Plan numbers, decision state ↔ status, and spec + state → Serve config (table tests)."""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from lvm_operator.api import HistoryEntry, Outcome, Serving, parse_rollout
from lvm_operator.controller import adapter
from lvm_operator.decision import NoDataAction, Phase, RolloutState, Verdict

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "local-fast.yaml"
RAW = yaml.safe_load(EXAMPLE.read_text())


def spec(**changes):
    raw = copy.deepcopy(RAW)
    for dotted, value in changes.items():
        node = raw["spec"]
        *path, last = dotted.split("__")
        for part in path:
            node = node.setdefault(part, {})
        node[last] = value
    return parse_rollout(raw).spec


# --- spec -> plan ----------------------------------------------------------------------------


def test_plan_numbers_from_the_example():
    p = adapter.plan_for(spec())
    assert (p.champion, p.candidate) == ("phase1-baseline", "phase2-500ctx")
    assert [(s.weight, s.duration_s, s.shadow) for s in p.steps] == [
        (25, 10.0, False), (50, 10.0, False), (100, 10.0, False)]
    assert p.guardrails.interval_s == 2.0
    assert p.guardrails.consecutive_breaches == 2
    assert p.guardrails.window_s == 2.0  # the shortest window; checks read since the last one
    assert p.quality.interval_s == 5.0 and p.quality.window_s == 30.0
    assert p.quality.min_requests == 20
    assert p.quality.lane_min_requests == 20  # max(floor 20, ceil(20 / 16 lanes) = 2)
    # milliseconds -> seconds; the seed's defaults filled by the API
    assert p.success.p95_latency_seconds == pytest.approx(0.005)
    assert p.rollback.p95_latency_seconds == pytest.approx(0.010)
    assert (p.success.hit5_proxy_min, p.rollback.hit5_proxy_min) == (0.60, 0.55)
    assert (p.success.error_rate_max, p.rollback.error_rate_max) == (0.001, 0.01)
    assert (p.success.empty_hit_rate_max, p.rollback.empty_hit_rate_max) == (0.10, 0.20)
    assert p.success.lane_degradation_max == 0.20 and p.rollback.lane_failure is True
    assert p.on_no_data is NoDataAction.HOLD and p.max_hold_s == 60.0
    assert p.paused is False


def test_the_sequential_judge_from_the_spec():
    from lvm_operator.decision import Judge
    assert adapter.plan_for(spec()).quality.judge is Judge.THRESHOLD  # the default, for now
    p = adapter.plan_for(spec(analysis__judge="sequential", analysis__sequential={
        "rollbackMargin": 0.02, "rollbackAlpha": 0.02, "laneMargin": 0.05, "minEvents": 50}))
    t, lane = p.quality.test, p.quality.lane_test
    assert p.quality.judge is Judge.SEQUENTIAL
    assert (t.rollback_margin, t.rollback_alpha, t.pass_margin, t.pass_alpha) == (
        0.02, 0.02, 0.01, 0.05)
    assert (t.rollback_tau, t.pass_tau, t.min_events) == (0.02, 0.01, 50)
    # each of the 16 lanes: the lane margin both ways and 1/16 of each error budget
    assert (lane.rollback_margin, lane.pass_margin) == (0.05, 0.05)
    assert (lane.rollback_alpha, lane.pass_alpha) == (0.02 / 16, 0.05 / 16)


@pytest.mark.parametrize(("interval", "min_samples"), [
    ("1s", 100),     # the default: a check judges at least 100 candidate requests
    ("30s", 100),
])
def test_guardrail_policy_from_the_spec(interval, min_samples):
    # Windows are "since the last judged check" (decision.core.guardrail_window_s); the policy
    # only carries the shortest window increase() can read (two 1 s scrapes).
    p = adapter.plan_for(spec(analysis__guardrails={"interval": interval}))
    assert p.guardrails.window_s == adapter.MIN_GUARDRAIL_WINDOW_S == 2.0
    assert p.guardrails.min_requests == min_samples
    assert p.guardrails.latency_vs_champion is True and p.guardrails.latency_margin == 0.10


@pytest.mark.parametrize(("min_requests", "lane_min"), [
    (0, 20), (16, 20),          # below the floor: a lane needs 20 feedback events to be judged
    (320, 20), (321, 21),       # ceil(320 / 16) = 20; ceil(321 / 16) = 21
    (1000, 63),                 # ceil(1000 / 16)
])
def test_lane_minimum_is_an_even_share_with_a_floor(min_requests, lane_min):
    p = adapter.plan_for(spec(analysis__quality={"minRequests": min_requests}))
    assert p.quality.lane_min_requests == lane_min


def test_paused_by_spec_or_by_command():
    assert adapter.plan_for(spec(paused=True)).paused
    assert adapter.plan_for(spec(), paused=True).paused
    assert not adapter.plan_for(spec()).paused


@pytest.mark.parametrize(("change", "restarts"), [
    ({"candidate__checkpoint": "file:///tmp/other.safetensors"}, True),
    ({"candidate__version": "phase3"}, True),
    ({"champion__replicas": {"min": 1, "max": 3}}, False),  # scaling is not a new experiment
    ({"steps": [{"weight": 50, "duration": "10s"}, {"weight": 100, "duration": "10s"}]}, True),
    ({"analysis__guardrails": {"interval": "5s"}}, False),  # thresholds/intervals: no restart
    ({"paused": True}, False),
    ({"promotion": {"keepChampionWarmFor": "0s"}}, False),
])
def test_fingerprint_changes_only_with_the_experiment(change, restarts):
    before = adapter.fingerprint(spec())
    assert adapter.fingerprint(spec()) == before  # stable
    assert (adapter.fingerprint(spec(**change)) != before) is restarts


# --- decision state <-> status ---------------------------------------------------------------


def test_state_round_trips_through_the_status():
    state = RolloutState(
        phase=Phase.PROGRESSING, fingerprint="abc", current_step=2, candidate_weight=50,
        shadow=False, step_started_at=1_700_000_000.25, consecutive_breaches=1,
        last_guardrail_at=1_700_000_001.5, last_guardrail_verdict=Verdict.BREACH,
        last_guardrail_reason="p95 12 ms > 10 ms", last_quality_verdict=Verdict.INCONCLUSIVE,
        no_data_since=None,
    )
    ds = adapter.state_to_status(state)
    assert ds.to_k8s()["currentStep"] == 2
    # the apiserver hands whole-number floats back as integers
    raw = ds.to_k8s()
    raw["stepStartedAt"] = 1_700_000_000
    back = adapter.state_from_status(type(ds).model_validate(raw))
    assert back.step_started_at == 1_700_000_000
    assert adapter.state_from_status(ds) == state
    assert adapter.state_from_status(None) == RolloutState()


# --- what to serve ---------------------------------------------------------------------------


def served(state, serving=None, history=None, now=1000.0, **changes):
    return adapter.app_spec_for(spec(**changes), "ml/lvm", state, serving, history, now=now)


def replicas(app):
    return {v.version: v.replicas for v in app.versions}


@pytest.mark.parametrize(("scale", "weight", "shadow", "champ", "cand"), [
    # bounds {1, 2}, peak = max = 2 replicas; ceil(2 x share / 100) clamped to [1, 2]
    ("share", 0, False, 2, 1),
    ("share", 25, False, 2, 1),   # champion 75% -> ceil(1.5) = 2; candidate 25% -> ceil(0.5) = 1
    ("share", 50, False, 1, 1),   # 50% each -> 1 and 1
    ("share", 100, False, 1, 2),  # champion keeps its minimum of 1
    ("share", 10, True, 2, 2),    # shadow: the candidate answers copies of all traffic
    # the default: the champion stays sized for 100% (2), a rollback lands on full capacity
    ("full", 50, False, 2, 1),
    ("full", 100, False, 2, 2),
])
def test_weights_and_replicas_while_rolling_out(scale, weight, shadow, champ, cand):
    app = served(RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=weight,
                              shadow=shadow), capacity={"champion": scale})
    assert app.router.rollout == "ml/lvm"
    assert (app.router.champion, app.router.candidate) == ("phase1-baseline", "phase2-500ctx")
    assert (app.router.candidate_weight, app.router.shadow) == (weight, shadow)
    assert replicas(app) == {"phase1-baseline": champ, "phase2-500ctx": cand}
    pools = {v.version: v.node_pool for v in app.versions}
    assert pools == {"phase1-baseline": "pool_a10", "phase2-500ctx": "pool_a100"}  # the example


@pytest.mark.parametrize(("weight", "percent", "cand_replicas", "router_percent"), [
    # bounds {1, 4}; the candidate's share = weight + ceil((100 - weight) x percent / 100),
    # replicas = ceil(4 x share / 100)
    (10, None, 4, 100),  # 10 + 90 = 100% -> 4 (the default mirrors everything)
    (10, 25, 2, 25),     # 10 + ceil(22.5) = 33% -> ceil(1.32) = 2
    (10, 10, 1, 10),     # 10 + 9 = 19% -> ceil(0.76) = 1
    (50, 50, 3, 50),     # 50 + 25 = 75% -> 3
])
def test_a_partial_shadow_sizes_the_candidate_for_what_it_answers(weight, percent, cand_replicas,
                                                                  router_percent):
    step = {"weight": weight, "duration": "1h", "shadow": True}
    if percent is not None:
        step["shadowPercent"] = percent
    app = served(RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=weight,
                              shadow=True),
                 steps=[step, {"weight": 100, "duration": "1h"}],
                 candidate__replicas={"min": 1, "max": 4})
    assert (app.router.shadow, app.router.shadow_percent) == (True, router_percent)
    assert replicas(app)["phase2-500ctx"] == cand_replicas


def test_rollback_sends_everything_to_the_champion_and_keeps_the_candidate_small():
    app = served(RolloutState(phase=Phase.ROLLED_BACK, current_step=2, candidate_weight=0),
                 candidate__replicas={"min": 1, "max": 4})
    assert app.router.candidate is None and app.router.candidate_weight == 0
    assert replicas(app) == {"phase1-baseline": 2, "phase2-500ctx": 1}


def test_promotion_keeps_the_old_champion_warm_until_its_deadline():
    until = datetime.fromtimestamp(1030.0, UTC)
    serving = Serving(champion="phase2-500ctx", retiring="phase1-baseline", retiring_until=until)
    state = RolloutState(phase=Phase.PROMOTED, current_step=2, candidate_weight=100)
    warm = served(state, serving, now=1029.0)
    assert (warm.router.champion, warm.router.candidate) == ("phase2-500ctx", None)
    assert replicas(warm) == {"phase1-baseline": 1, "phase2-500ctx": 2}
    gone = served(state, serving, now=1030.0)
    assert replicas(gone) == {"phase2-500ctx": 2}


def test_rollback_to_a_version_from_history():
    h = HistoryEntry(version="phase0", checkpoint="file:///tmp/p0.safetensors", sha256="a" * 64,
                     family="memory_gru", context_length=100, node_pool="a10",
                     outcome=Outcome.SUPERSEDED, time=datetime.now(UTC))
    app = served(RolloutState(phase=Phase.ROLLED_BACK), Serving(champion="phase0"), [h])
    assert app.router.champion == "phase0"
    assert [v.version for v in app.versions] == ["phase0"]
    assert app.versions[0].checkpoint == "file:///tmp/p0.safetensors"


def test_config_hash_is_stable_and_follows_the_weight():
    s = RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=25)
    assert adapter.config_hash(served(s)) == adapter.config_hash(served(s))
    s2 = RolloutState(phase=Phase.PROGRESSING, current_step=1, candidate_weight=50)
    assert adapter.config_hash(served(s)) != adapter.config_hash(served(s2))


@pytest.mark.parametrize(
    ("candidate", "weight", "shadow", "ready", "held_back", "why"),
    [
        ("v2", 10, False, set(), True, "new candidate not running: deploy it, no traffic yet"),
        ("v2", 10, False, {"v2"}, False, "running: its weight applies"),
        ("v2", 0, True, set(), True, "a shadow copy waits for a replica too"),
        ("v2", 0, False, set(), False, "no traffic asked for: nothing to hold back"),
        (None, 0, False, set(), False, "champion only (promoted, rolled back)"),
    ],
)
def test_traffic_waits_for_a_running_candidate(candidate, weight, shadow, ready, held_back, why):
    from lvm_serving.contracts.serve_config import AppSpec, RouterConfig

    app = AppSpec("lvm", "file:///bank.npz", RouterConfig("ml/lvm", "v1", candidate, weight,
                                                          shadow=shadow), ())
    out = adapter.staged(app, ready)
    assert (out is not None) is held_back, why
    if out is not None:
        assert (out.router.candidate, out.router.candidate_weight, out.router.shadow) == (
            None, 0, False)
        assert out.versions == app.versions  # the versions are deployed all the same


def test_the_router_refuses_contexts_no_routed_version_takes():
    s = spec()
    champ, cand = s.champion.context_length, s.candidate.context_length
    rolling = served(RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=25))
    assert rolling.router.max_context == max(champ, cand)
    rolled_back = served(RolloutState(phase=Phase.ROLLED_BACK, current_step=1))
    assert rolled_back.router.max_context == champ  # only the champion is routed
    bigger = served(RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=25),
                    candidate__contextLength=champ * 4)
    assert bigger.router.max_context == champ * 4


def test_a_version_gets_the_gpus_its_replicas_ask_for_and_none_otherwise():
    from lvm_serving.contracts.serve_config import render_applications

    state = RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=25)
    app = served(state, candidate__replicas={"min": 1, "max": 4, "gpus": 0.25})
    options = {a["deployments"][0]["name"]: a["deployments"][0].get("ray_actor_options")
               for a in render_applications(app)[1:]}
    assert options["phase2-500ctx"]["num_gpus"] == 0.25  # 4 replicas share one GPU
    assert "num_gpus" not in options["phase1-baseline"]  # unset: Ray gives it none
    # resources, not identity: asking for GPUs does not restart a finished rollout
    assert adapter.identity(spec(candidate__replicas={"min": 1, "max": 4, "gpus": 0.25})) == \
        adapter.identity(spec())
