"""The checked-in CRD is what the models generate, and it is a valid structural schema."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from lvm_operator.api import crd
from lvm_operator.api.base import Rule
from lvm_operator.api.spec import LVMRolloutSpec

REPO = Path(__file__).resolve().parents[2]
CRD_FILE = REPO / "crds" / "lvmrollout.yaml"
TYPES = {"object", "array", "string", "integer", "number", "boolean"}


def _nodes(node: dict[str, Any], path: str = "") -> list[tuple[str, dict[str, Any]]]:
    """Every schema node with its path, depth first."""
    out = [(path or ".", node)]
    for name, sub in node.get("properties", {}).items():
        out += _nodes(sub, f"{path}.{name}")
    if "items" in node:
        out += _nodes(node["items"], f"{path}[]")
    return out


@pytest.fixture(scope="module")
def schema() -> dict[str, Any]:
    return crd.build_crd()["spec"]["versions"][0]["schema"]["openAPIV3Schema"]


def test_checked_in_crd_matches_the_models():
    # Trailing newlines aside (a CLI may add one), the file is byte for byte the rendering.
    assert CRD_FILE.read_text().rstrip("\n") == crd.render_crd_yaml().rstrip("\n"), (
        "crds/lvmrollout.yaml is out of date with the pydantic models in lvm_operator.api; "
        "regenerate it with: lvm-rollout crd > crds/lvmrollout.yaml"
    )


def test_crd_names():
    body = yaml.safe_load(crd.render_crd_yaml())
    assert body["apiVersion"] == "apiextensions.k8s.io/v1"
    assert body["metadata"]["name"] == "lvmrollouts.lvm.rollout.io"
    names = body["spec"]["names"]
    assert (names["kind"], names["plural"], names["shortNames"]) == (
        "LVMRollout",
        "lvmrollouts",
        ["lvmr"],
    )
    (version,) = body["spec"]["versions"]
    assert version["name"] == "v1alpha1" and version["served"] and version["storage"]
    assert version["subresources"] == {"status": {}}


def test_printer_columns():
    columns = crd.build_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    assert [c["name"] for c in columns] == [
        "Phase", "Step", "Weight", "Verdict", "Next Step", "Reason", "Age",
    ]  # fmt: skip
    assert all(c.get("priority", 0) == 0 for c in columns)
    # A future timestamp as type date prints "<invalid>" in kubectl.
    assert {c["name"]: c["type"] for c in columns}["Next Step"] == "string"


def test_schema_is_structural(schema):
    for path, node in _nodes(schema):
        assert node.get("type") in TYPES, f"{path}: every node needs a type"
        forbidden = {"$ref", "$defs", "anyOf", "oneOf", "allOf", "not", "title", "nullable"}
        assert not forbidden & node.keys(), f"{path}: {forbidden & node.keys()}"
        assert "x-kubernetes-preserve-unknown-fields" not in node, path
        if "properties" in node:
            assert "additionalProperties" not in node, path
            assert set(node.get("required", [])) <= node["properties"].keys(), path
        if node["type"] == "array":
            assert "items" in node, f"{path}: arrays need items"
        for key in ("exclusiveMinimum", "exclusiveMaximum"):
            if key in node:
                assert node[key] is True, f"{path}: {key} must be a boolean in OpenAPI v3"


def test_cel_cost_bounds(schema):
    """Bounded arrays and strings keep the apiserver's CEL cost estimate low."""
    for path, node in [
        *_nodes(schema["properties"]["spec"], ".spec"),
        *_nodes(schema["properties"]["status"], ".status"),
    ]:
        if node["type"] == "array":
            assert "maxItems" in node, f"{path}: arrays need maxItems"
        if node["type"] == "string" and "enum" not in node and "format" not in node:
            assert "maxLength" in node, f"{path}: strings need maxLength"


def test_defaults_are_valid(schema):
    for path, node in _nodes(schema):
        if "default" not in node:
            continue
        default = node["default"]
        if node["type"] == "object":
            # Whole objects (see lvm_operator.api.spec._nested), each key a known property.
            assert isinstance(default, dict) and default, path
            assert default.keys() <= node["properties"].keys(), path
        elif "enum" in node:
            assert default in node["enum"], path
        else:
            python_type = {"string": str, "integer": int, "number": (int, float), "boolean": bool}
            assert isinstance(default, python_type[node["type"]]), path


def test_validation_rules_are_well_formed(schema):
    seen = 0
    for path, node in _nodes(schema):
        for rule in node.get("x-kubernetes-validations", []):
            seen += 1
            assert set(rule) <= {"rule", "message", "fieldPath", "reason"}, path
            assert rule["rule"] and rule["message"], path
            if "fieldPath" in rule:
                assert rule["fieldPath"].startswith("."), path
            assert rule.get("reason", "FieldValueInvalid") in {
                "FieldValueInvalid",
                "FieldValueRequired",
                "FieldValueForbidden",
                "FieldValueDuplicate",
            }, path
    assert seen >= 12


def test_every_model_rule_is_in_the_crd(schema):
    """Each Rule declared on a spec model appears as CEL at that model's place in the CRD."""
    rules_in_crd = {
        (r["rule"], r["message"])
        for _, node in _nodes(schema)
        for r in node.get("x-kubernetes-validations", [])
    }
    declared: list[Rule] = []
    stack: list[type] = [LVMRolloutSpec]
    visited: set[type] = set()
    while stack:
        model = stack.pop()
        if model in visited:
            continue
        visited.add(model)
        declared += model.cel_rules
        for field in model.model_fields.values():
            for candidate in (field.annotation, *getattr(field.annotation, "__args__", ())):
                if isinstance(candidate, type) and hasattr(candidate, "cel_rules"):
                    stack.append(candidate)
            declared += [m for m in field.metadata if isinstance(m, Rule)]
    assert declared
    for rule in declared:
        assert (rule.cel, rule.message) in rules_in_crd, rule.message


def test_conditions_are_a_map_list(schema):
    conditions = schema["properties"]["status"]["properties"]["conditions"]
    assert conditions["x-kubernetes-list-type"] == "map"
    assert conditions["x-kubernetes-list-map-keys"] == ["type"]
    assert "type" in conditions["items"]["required"]


def test_render_is_deterministic():
    assert crd.render_crd_yaml() == crd.render_crd_yaml()
    assert "&id" not in crd.render_crd_yaml()  # no YAML anchors


def test_the_crd_uses_no_schema_keyword_kubernetes_forbids():
    # a pydantic dict with a constrained key type renders patternProperties, which the
    # apiserver refuses for the whole CRD ("patternProperties is not supported")
    text = (Path(__file__).resolve().parents[2] / "crds" / "lvmrollout.yaml").read_text()
    for keyword in ("patternProperties", "$ref", "definitions", "dependencies", "uniqueItems"):
        assert keyword not in text, keyword
