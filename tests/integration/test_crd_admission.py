"""The generated CRD in a real kube-apiserver: admission alone (no operator running) accepts the
examples, rejects every invalid manifest naming the field, fills in the same defaults as the
pydantic models, prints the documented columns, and round-trips through the models."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest
import yaml

from lvm_operator.api import (
    InvalidRolloutError,
    LVMRolloutStatus,
    parse_rollout,
    parse_status,
)
from lvm_operator.api.crd import build_crd

pytestmark = pytest.mark.stack

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((REPO / "examples").glob("*.yaml"))


def _load_corpus():
    name = "lvm_invalid_manifests"
    if name not in sys.modules:
        path = REPO / "tests" / "unit" / "invalid_manifests" / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


corpus = _load_corpus()
CASES = corpus.load_cases()


def _rule_messages(node) -> set[str]:
    """Every CEL rule message in the CRD."""
    found: set[str] = set()
    if isinstance(node, dict):
        for rule in node.get("x-kubernetes-validations", []):
            found.add(rule["message"])
        for value in node.values():
            found |= _rule_messages(value)
    elif isinstance(node, list):
        for value in node:
            found |= _rule_messages(value)
    return found


RULE_MESSAGES = _rule_messages(build_crd())


def dump(model) -> dict:
    return model.to_k8s()


@pytest.fixture(scope="module")
def ns(kube, crd_installed) -> str:
    return kube.new_namespace("lvmr")


def _apply(kube, ns: str, manifest: dict | str, check: bool = True):
    text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest, sort_keys=False)
    return kube.kubectl("apply", "-n", ns, "-f", "-", input=text, check=check)


def _get(kube, ns: str, name: str) -> dict:
    return json.loads(kube.kubectl("get", "lvmrollout", name, "-n", ns, "-o", "json").stdout)


def _delete(kube, ns: str, name: str) -> None:
    kube.kubectl("delete", "lvmrollout", name, "-n", ns, "--ignore-not-found", "--wait=false")


def test_crd_is_established_with_short_name(kube, crd_installed):
    crd = json.loads(kube.kubectl("get", "crd", "lvmrollouts.lvm.rollout.io", "-o", "json").stdout)
    conditions = {c["type"]: c["status"] for c in crd["status"]["conditions"]}
    assert conditions.get("Established") == "True"
    assert conditions.get("NamesAccepted") == "True"
    resources = kube.kubectl("api-resources", "--api-group=lvm.rollout.io", "--no-headers").stdout
    assert "lvmr" in resources.split()


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_applies_and_round_trips(kube, ns, path):
    """Apply the example, read it back, and parse it: spec equals the applied spec + defaults."""
    applied = yaml.safe_load(path.read_text())
    name = applied["metadata"]["name"]
    _apply(kube, ns, path.read_text())
    try:
        stored = _get(kube, ns, name)
        assert stored["metadata"]["generation"] == 1
        expected = parse_rollout(applied).spec
        actual = parse_rollout(stored).spec
        assert actual == expected
        assert stored["spec"] == dump(expected)  # nothing more, nothing less
    finally:
        _delete(kube, ns, name)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_apiserver_rejects(kube, ns, case):
    result = _apply(kube, ns, case.manifest, check=False)
    name = case.manifest["metadata"]["name"]
    if result.returncode == 0:
        _delete(kube, ns, name)
        pytest.fail(f"{case.name}: the apiserver accepted it:\n{result.stdout}")
    error = result.stderr
    assert case.field in error, f"{case.name}: expected {case.field} in:\n{error}"
    # Where pydantic names a CEL rule's message, the apiserver gives the same message.
    with pytest.raises(InvalidRolloutError) as info:
        parse_rollout(case.manifest)
    for _, message in info.value.problems:
        for part in message.split("; "):
            if part in RULE_MESSAGES:
                assert part in error, f"{case.name}: CEL message {part!r} missing in:\n{error}"
    missing = kube.kubectl("get", "lvmrollout", name, "-n", ns, check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr


def test_defaults_are_filled_by_the_apiserver(kube, ns):
    minimal = corpus.minimal_manifest()
    minimal["metadata"]["name"] = "defaults"
    _apply(kube, ns, minimal)
    try:
        stored = yaml.safe_load(
            kube.kubectl("get", "lvmrollout", "defaults", "-n", ns, "-o", "yaml").stdout
        )
        spec = stored["spec"]
        # Spot checks against the seed's values, then the whole spec against pydantic's defaults.
        assert spec["analysis"]["success"]["hit5ProxyMin"] == 0.6
        assert spec["analysis"]["rollback"]["laneFailure"] is True
        assert spec["analysis"]["onNoData"] == {"action": "hold", "maxHold": "1h"}
        assert spec["routing"] == {"mode": "weighted", "requestTimeout": "30s"}
        assert spec["champion"]["replicas"] == {"min": 1, "max": 4}
        assert spec["steps"] == [{"weight": 100, "duration": "1m", "shadow": False}]
        assert spec["serve"]["application"] == "lvm"
        assert spec["paused"] is False
        assert spec == dump(parse_rollout(minimal).spec)
    finally:
        _delete(kube, ns, "defaults")


def test_status_subresource_and_printer_columns(kube, ns):
    minimal = corpus.minimal_manifest()
    minimal["metadata"]["name"] = "columns"
    _apply(kube, ns, minimal)
    try:
        status = LVMRolloutStatus.model_validate(
            {
                "phase": "Progressing",
                "observedGeneration": 1,
                "currentStep": 1,
                "candidateWeight": 20,
                "stepStartedAt": "2025-10-19T12:00:00Z",
                "nextStepAt": "2025-10-26T12:00:00Z",
                "consecutiveBreaches": 0,
                "lastAnalysis": {
                    "time": "2025-10-19T12:05:00Z",
                    "check": "quality",
                    "verdict": "noData",
                    "reason": "candidate has 12 of 1000 requests",
                    "measurements": [
                        {"version": "v2", "metric": "hit5Proxy", "samples": 12,
                         "verdict": "noData"},
                        {"version": "v2", "lane": 3, "metric": "hit5Proxy", "value": 0.61,
                         "threshold": 0.6, "samples": 400, "verdict": "pass"},
                    ],
                },
                "history": [
                    {"version": "v0", "checkpoint": "/models/v0.pt",
                     "sha256": minimal["spec"]["champion"]["sha256"], "outcome": "superseded",
                     "time": "2025-10-01T00:00:00Z"},
                ],
                "conditions": [
                    {"type": "Progressing", "status": "True", "reason": "StepAdvanced",
                     "message": "step 1: 20%", "lastTransitionTime": "2025-10-19T12:00:00Z",
                     "observedGeneration": 1},
                ],
            }
        )  # fmt: skip
        kube.kubectl(
            "patch", "lvmrollout", "columns", "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": dump(status)}),
        )  # fmt: skip
        stored = _get(kube, ns, "columns")
        assert parse_status(stored["status"]) == status
        assert stored["spec"] == dump(parse_rollout(minimal).spec)  # status patch leaves spec

        table = kube.kubectl("get", "lvmr", "-n", ns).stdout.splitlines()
        header = [h.strip() for h in table[0].split("  ") if h.strip()]
        assert header == [
            "NAME", "PHASE", "STEP", "WEIGHT", "VERDICT", "NEXT STEP", "REASON", "AGE",
        ]  # fmt: skip
        (row,) = [line for line in table[1:] if line.startswith("columns ")]
        for value in ("Progressing", " 1 ", " 20 ", "noData", "2025-10-26T12:00:00Z",
                      "candidate has 12 of 1000 requests"):  # fmt: skip
            assert value in row, f"{value!r} not in {row!r}"
    finally:
        _delete(kube, ns, "columns")


@pytest.mark.parametrize(
    ("status", "field"),
    [
        ({"phase": "Running"}, "status.phase"),
        ({"candidateWeight": 150}, "status.candidateWeight"),
        ({"lastAnalysis": {"verdict": "fail"}}, "status.lastAnalysis.verdict"),
        ({"nextStepAt": "next tuesday"}, "status.nextStepAt"),
    ],
)
def test_status_schema_rejects(kube, ns, status, field):
    minimal = corpus.minimal_manifest()
    name = f"bad-status-{field.rsplit('.', 1)[-1].lower()}"
    minimal["metadata"]["name"] = name
    _apply(kube, ns, minimal)
    try:
        result = kube.kubectl(
            "patch", "lvmrollout", name, "-n", ns, "--subresource=status", "--type=merge",
            "-p", json.dumps({"status": status}), check=False,
        )  # fmt: skip
        assert result.returncode != 0 and field in result.stderr, result.stderr
        with pytest.raises(InvalidRolloutError, match=field.replace(".", r"\.")):
            parse_status(status)
    finally:
        _delete(kube, ns, name)
