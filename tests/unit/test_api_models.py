"""The pydantic models: defaults, camelCase round trips, durations, status and error messages."""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from lvm_operator.api import (
    InvalidRolloutError,
    LVMRolloutSpec,
    LVMRolloutStatus,
    Phase,
    Verdict,
    format_duration,
    parse_duration,
    parse_rollout,
    parse_spec,
    parse_status,
)

SHA_A = "932538c4c4227d0c5828bb62367a14ba910424d2ed2692b590ebc71dc0bac4e5"
T0 = "2025-01-01T00:00:00Z"
SHA_B = "4f0f7a044165958cccfec7f94336bfe70c638d1addcb3904f268e218be75586a"


def _load_corpus():
    name = "lvm_invalid_manifests"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "invalid_manifests" / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


MINIMAL = _load_corpus().minimal_manifest()

# What the minimal spec becomes once defaulted - by pydantic here, by the apiserver in
# tests/integration/test_crd_admission.py. The seed's thresholds are the defaults.
MINIMAL_DEFAULTED_SPEC = {
    "champion": {**MINIMAL["spec"]["champion"], "replicas": {"min": 1, "max": 4}},
    "candidate": {**MINIMAL["spec"]["candidate"], "replicas": {"min": 1, "max": 4}},
    "conceptBank": {"uri": "/concepts/bank.npz",
                    "sha256": "4c45fcfc791833d1d7b20496bf33754b2154b9404a8ea488ca48f5b8a0e86c33"},
    "routing": {"mode": "weighted", "requestTimeout": "30s"},
    "steps": [{"weight": 100, "duration": "1m", "shadow": False}],
    "analysis": {
        "judge": "threshold",
        "sequential": {"rollbackMargin": 0.01, "rollbackAlpha": 0.01, "passMargin": 0.01,
                       "passAlpha": 0.05, "laneMargin": 0.02, "rollbackTau": 0.02,
                       "passTau": 0.01, "minEvents": 100},
        "guardrails": {"interval": "30s", "consecutiveBreaches": 2, "minSamples": 100,
                       "latencyVsChampion": True, "latencyMargin": 0.10},
        "quality": {"interval": "5m", "window": "1h", "minRequests": 1000,
                    "unjudgedLanes": "hold"},
        "success": {
            "hit5ProxyMin": 0.60,
            "p95LatencyMs": 5,
            "emptyHitRateMax": 0.10,
            "errorRateMax": 0.001,
            "laneDegradationMax": 0.20,
        },
        "rollback": {
            "hit5ProxyMin": 0.55,
            "p95LatencyMs": 10,
            "emptyHitRateMax": 0.20,
            "errorRateMax": 0.01,
            "laneFailure": True,
        },
        "onNoData": {"action": "hold", "maxHold": "1h"},
        "onInconclusive": {"action": "pause", "maxHold": "1h"},
        "laneHealth": {"interval": "24h", "window": "24h", "maxBelowOverall": 0.15,
                       "minFeedback": 100},
    },
    "prometheus": {"url": "http://127.0.0.1:9090"},
    "serve": {"backend": "rayDashboard", "url": "http://127.0.0.1:8265", "application": "lvm"},
    "paused": False,
    "progressDeadline": "10m",
    "promotion": {"keepChampionWarmFor": "1h"},
    "capacity": {"champion": "full"},
}


def dump(model) -> dict:
    return model.to_k8s()


def test_minimal_manifest_gets_the_seed_defaults():
    rollout = parse_rollout(MINIMAL)
    assert dump(rollout.spec) == MINIMAL_DEFAULTED_SPEC
    assert rollout.status is None
    assert rollout.name == "minimal"


def test_defaulted_spec_round_trips():
    spec = parse_spec(MINIMAL["spec"])
    assert parse_spec(dump(spec)) == spec
    assert LVMRolloutSpec.model_validate_json(spec.model_dump_json(by_alias=True)) == spec


def test_python_names_also_accepted():
    spec = parse_spec(MINIMAL["spec"])
    again = LVMRolloutSpec(**{k: getattr(spec, k) for k in LVMRolloutSpec.model_fields})
    assert again == spec
    assert spec.analysis.success.hit5_proxy_min == 0.60
    assert spec.analysis.guardrails.interval_seconds == 30


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30s", 30),
        ("168h", 7 * 24 * 3600),
        ("1h30m", 5400),
        ("1.5s", 1.5),
        ("250ms", 0.25),
        ("2h45m30s", 2 * 3600 + 45 * 60 + 30),
        ("0s", 0),
    ],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "10", "1d", "-5s", "1 h", "h", "1.s", "5S", "1h 30m"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


@pytest.mark.parametrize(("seconds", "text"), [(5400, "1h30m"), (0, "0s"), (1.5, "1s500ms")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text
    assert parse_duration(text).total_seconds() == seconds


def test_error_lists_every_problem_with_its_path():
    bad = {**MINIMAL, "spec": {**MINIMAL["spec"], "steps": [{"weight": 0, "duration": "1w"}]}}
    with pytest.raises(InvalidRolloutError) as info:
        parse_rollout(bad)
    text = str(info.value)
    assert text.startswith("invalid LVMRollout minimal:")
    assert "spec.steps[0].weight: Input should be greater than 0 (got 0)" in text
    assert "spec.steps[0].duration: invalid value '1w': expected a Go-style duration" in text


def test_several_rule_failures_in_one_model_are_all_reported():
    spec = {
        **MINIMAL["spec"],
        "analysis": {
            "rollback": {"hit5ProxyMin": 0.9, "errorRateMax": 0.0001},
        },
    }
    with pytest.raises(InvalidRolloutError) as info:
        parse_spec(spec)
    text = str(info.value)
    assert "rollback.hit5ProxyMin must be <= success.hit5ProxyMin" in text
    assert "rollback.errorRateMax must be >= success.errorRateMax" in text


def test_thresholds_equal_to_success_are_allowed():
    spec = {
        **MINIMAL["spec"],
        "analysis": {
            "success": {"hit5ProxyMin": 0.6, "p95LatencyMs": 5},
            "rollback": {"hit5ProxyMin": 0.6, "p95LatencyMs": 5, "emptyHitRateMax": 0.1,
                         "errorRateMax": 0.001},
        },
    }  # fmt: skip
    parse_spec(spec)


def test_strict_types_like_the_apiserver():
    for path, value in [("paused", "true"), ("steps", [{"weight": "100", "duration": "1m"}])]:
        with pytest.raises(InvalidRolloutError):
            parse_spec({**MINIMAL["spec"], path: value})


def test_not_a_mapping():
    with pytest.raises(InvalidRolloutError, match="expected a mapping"):
        parse_rollout(["not", "a", "mapping"])  # type: ignore[arg-type]


def test_wrong_kind_or_api_version():
    with pytest.raises(InvalidRolloutError, match="kind"):
        parse_rollout({**MINIMAL, "kind": "Rollout"})
    with pytest.raises(InvalidRolloutError, match="apiVersion"):
        parse_rollout({**MINIMAL, "apiVersion": "lvm.rollout.io/v1"})


def test_status_parts_are_optional_and_round_trip():
    assert parse_status(None) == LVMRolloutStatus()
    assert dump(parse_status({"phase": "Paused"})) == {"phase": "Paused"}
    now = datetime(2025, 10, 19, 12, 0, tzinfo=UTC)
    status = {
        "phase": "Progressing",
        "observedGeneration": 3,
        "currentStep": 1,
        "candidateWeight": 20,
        "stepStartedAt": "2025-10-19T12:00:00Z",
        "nextStepAt": "2025-10-26T12:00:00Z",
        "consecutiveBreaches": 0,
        "lastAnalysis": {
            "time": "2025-10-19T12:05:00Z",
            "check": "quality",
            "verdict": "noData",
            "reason": "candidate has 12 requests in 1h, needs 1000",
            "measurements": [
                {"version": "v2", "metric": "hit5Proxy", "verdict": "noData", "samples": 12},
                {"version": "v2", "lane": 3, "metric": "hit5Proxy", "value": 0.61,
                 "threshold": 0.6, "samples": 400, "verdict": "pass"},
            ],
        },
        "history": [
            {"version": "v0", "checkpoint": "/models/v0.pt", "sha256": SHA_A,
             "family": "memory_gru", "contextLength": 100, "outcome": "superseded",
             "time": "2025-10-01T00:00:00Z"},
        ],
        "conditions": [
            {"type": "Progressing", "status": "True", "reason": "StepAdvanced",
             "message": "step 1 (20%)", "lastTransitionTime": "2025-10-19T12:00:00Z",
             "observedGeneration": 3},
        ],
    }  # fmt: skip
    parsed = parse_status(status)
    assert parsed.phase == Phase.PROGRESSING
    assert parsed.step_started_at == now
    assert parsed.last_analysis.verdict == Verdict.NO_DATA
    assert dump(parsed) == status


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"phase": "Running"}, "status.phase"),
        ({"candidateWeight": 101}, "status.candidateWeight"),
        ({"lastAnalysis": {"verdict": "fail"}}, "status.lastAnalysis.verdict"),
        ({"history": [{"version": "v0"}]}, "status.history[0].checkpoint"),
        (
            {"conditions": [
                {"type": "A", "status": "True", "reason": "R", "lastTransitionTime": T0},
                {"type": "A", "status": "False", "reason": "R", "lastTransitionTime": T0},
            ]},
            "status.conditions",
        ),
        ({"lastAnalysis": {"measurements": [{"version": "v", "metric": "m", "verdict": "pass",
                                             "value": float("nan")}]}},
         "status.lastAnalysis.measurements[0].value"),
    ],
)  # fmt: skip
def test_status_rejects(status, field):
    with pytest.raises(InvalidRolloutError) as info:
        parse_status(status)
    assert field in str(info.value)
