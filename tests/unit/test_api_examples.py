"""Every manifest in examples/ is a valid LVMRollout, and says what its comments promise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from lvm_operator.api import (
    ModelFamily,
    RoutingMode,
    ServeBackend,
    duration_seconds,
    parse_rollout,
)

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def _load(name: str):
    return parse_rollout(yaml.safe_load((EXAMPLES[0].parent / name).read_text()))


def test_there_are_examples():
    names = {p.name for p in EXAMPLES}
    assert {"phase2-canary.yaml", "context-routing.yaml", "local-fast.yaml"} <= names


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_parses(path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert docs
    for doc in docs:
        rollout = parse_rollout(doc)
        assert rollout.name
        assert "namespace" not in rollout.metadata  # apply them to any namespace with -n


def test_phase2_canary_is_the_seed_plan():
    spec = _load("phase2-canary.yaml").spec
    assert [(s.weight, s.duration, s.shadow) for s in spec.steps] == [
        (10, "168h", True),
        (20, "168h", False),
        (50, "168h", False),
        (100, "168h", False),
    ]
    assert (spec.champion.version, spec.champion.family, spec.champion.context_length) == (
        "phase1-baseline",
        ModelFamily.MEMORY_GRU,
        100,
    )
    assert (spec.champion.node_pool, spec.candidate.node_pool) == ("a10", "a100")
    assert (spec.candidate.version, spec.candidate.context_length) == ("phase2-500ctx", 500)
    assert (spec.routing.mode, spec.routing.user_key) == (RoutingMode.USER_HASH, "user_id")
    success, rollback = spec.analysis.success, spec.analysis.rollback
    assert (success.hit5_proxy_min, success.p95_latency_ms, success.empty_hit_rate_max) == (
        0.60,
        5,
        0.10,
    )
    assert (success.error_rate_max, success.lane_degradation_max) == (0.001, 0.20)
    assert (rollback.hit5_proxy_min, rollback.p95_latency_ms, rollback.empty_hit_rate_max) == (
        0.55,
        10,
        0.20,
    )
    assert (rollback.error_rate_max, rollback.lane_failure) == (0.01, True)


def test_context_routing_example():
    spec = _load("context-routing.yaml").spec
    assert spec.routing.mode == RoutingMode.CONTEXT_LENGTH
    assert spec.routing.context_threshold == 100  # context vectors: the seed's 2000 tokens


def test_local_example_is_fast():
    spec = _load("local-fast.yaml").spec
    assert spec.serve.backend == ServeBackend.RAY_DASHBOARD
    assert spec.serve.url == "http://127.0.0.1:8265"
    assert all(s.duration_seconds <= 30 for s in spec.steps)
    assert duration_seconds(spec.analysis.guardrails.interval) <= 5


def test_evaluation_example_is_the_seeds_step_6():
    spec = _load("evaluation-gate.yaml").spec
    ev = spec.evaluation
    assert ev is not None and ev.eval_set.sha256 is None  # refreshed in place weekly
    assert (ev.gate.enabled, ev.gate.min_hit5, ev.gate.max_degradation) == (True, 0.66, 0.05)
    assert (duration_seconds(ev.drift.interval), ev.drift.max_relative_drift) == (7 * 86400, 0.05)
    assert ev.drift.baseline is not None and ev.drift.baseline.hit5 == 0.6652
    lanes = spec.analysis.lane_health
    assert (duration_seconds(lanes.interval), lanes.max_below_overall) == (86400, 0.15)
    # The operator reads these files itself: plain paths on a mounted volume, not s3://.
    for uri in (spec.champion.checkpoint, spec.candidate.checkpoint, ev.eval_set.uri):
        assert uri.startswith("/models/")


def test_the_rayservice_example_pins_the_exporter_and_the_feedback_key():
    """Every Ray container of the KubeRay example exports counters once
    (RAY_EXPORT_COUNTER_AS_GAUGE=0, as the local stack does) and reads the signing key from a
    Secret; each worker group offers its pool's custom resource."""
    import json

    from lvm_operator.devstack.ray_cluster import ray_env

    doc = yaml.safe_load((EXAMPLES[0].parent / "kuberay" / "rayservice.yaml").read_text())
    cluster = doc["spec"]["rayClusterConfig"]
    groups = [cluster["headGroupSpec"], *cluster["workerGroupSpecs"]]
    for group in groups:
        for container in group["template"]["spec"]["containers"]:
            env = {e["name"]: e for e in container["env"]}
            assert env["RAY_EXPORT_COUNTER_AS_GAUGE"]["value"] == \
                ray_env()["RAY_EXPORT_COUNTER_AS_GAUGE"] == "0"
            assert "secretKeyRef" in env["LVM_FEEDBACK_KEY"]["valueFrom"]
    pools = {g["groupName"]: json.loads(json.loads(g["rayStartParams"]["resources"]))
             for g in cluster["workerGroupSpecs"]}
    assert pools == {"pool-a10": {"a10": 8}, "pool-a100": {"a100": 8}}
    for group in groups:  # object-store credentials from a Secret, a cache volume per pod
        for container in group["template"]["spec"]["containers"]:
            assert {"secretRef": {"name": "lvm-object-store"}} in container["envFrom"]
            env = {e["name"]: e for e in container["env"]}
            assert env["LVM_ARTIFACT_CACHE"]["value"] == container["volumeMounts"][0]["mountPath"]
            assert "LVM_ALLOW_FAULT_INJECTION" not in env


def test_the_rayservice_example_holds_what_the_operator_writes_for_the_phase2_canary():
    """Its serveConfigV2 is exactly the operator's rendering of examples/phase2-canary.yaml at
    step 1 (10%, shadow), Ray Serve's own schema accepts it, and every version's nodePool is a
    custom resource one worker group offers (a version asking for a pool nobody offers would
    never be scheduled)."""
    import json

    from ray.serve.schema import ServeDeploySchema

    from lvm_operator.controller import adapter
    from lvm_operator.decision import Phase, RolloutState
    from lvm_serving.contracts.serve_config import render_applications

    doc = yaml.safe_load((EXAMPLES[0].parent / "kuberay" / "rayservice.yaml").read_text())
    canary = yaml.safe_load((EXAMPLES[0].parent / "phase2-canary.yaml").read_text())
    canary["metadata"]["namespace"] = doc["metadata"]["namespace"]
    spec = parse_rollout(canary).spec
    state = RolloutState(phase=Phase.PROGRESSING, current_step=0, candidate_weight=10,
                         shadow=True)
    want = render_applications(adapter.app_spec_for(spec, "ml/lvm", state, None, None, now=0.0))
    config = yaml.safe_load(doc["spec"]["serveConfigV2"])
    assert config == {"applications": want}
    ServeDeploySchema.model_validate(config)
    offered = set()
    for g in doc["spec"]["rayClusterConfig"]["workerGroupSpecs"]:
        offered |= set(json.loads(json.loads(g["rayStartParams"]["resources"])))
    assert {spec.champion.node_pool, spec.candidate.node_pool} <= offered
