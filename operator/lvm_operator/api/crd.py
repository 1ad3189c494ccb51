"""Generate the LVMRollout CustomResourceDefinition from the pydantic models.

The models are the single source of truth; ``crds/lvmrollout.yaml`` is this module's output,
checked in so that ``kubectl apply -f crds/`` works without Python, and a unit test fails when the
two drift apart. Regenerate with ``lvm-rollout crd > crds/lvmrollout.yaml``.

pydantic emits JSON Schema 2020-12; a CRD wants a *structural* OpenAPI v3 schema. The translation
is mechanical:

* ``$ref`` / ``$defs`` are inlined (a CRD cannot reference);
* ``Optional[X]`` (``anyOf: [X, null]``) becomes ``X`` - an absent field, not a null one;
* numeric ``exclusiveMinimum: n`` becomes ``minimum: n`` + ``exclusiveMinimum: true``;
* ``title`` and ``additionalProperties: false`` are dropped (unknown fields are pruned by the
  apiserver and rejected by kubectl's strict field validation);
* ``default: null`` is dropped; nested objects with defaults carry their whole defaulted value
  (not ``{}``: the apiserver checks defaults against the CEL rules without nested defaulting).
"""

from __future__ import annotations

from typing import Any

import yaml
from pydantic import BaseModel

from .rollout import (
    API_VERSION,
    CRD_NAME,
    GROUP,
    KIND,
    LIST_KIND,
    PLURAL,
    SHORT_NAMES,
    SINGULAR,
    VERSION,
)
from .spec import LVMRolloutSpec
from .status import LVMRolloutStatus

HEADER = (
    "# Generated from the pydantic models in lvm_operator.api - do not edit.\n"
    "# Regenerate with: lvm-rollout crd > crds/lvmrollout.yaml\n"
)

_KEY_ORDER = (
    "description",
    "type",
    "format",
    "enum",
    "default",
    "minimum",
    "exclusiveMinimum",
    "maximum",
    "exclusiveMaximum",
    "minLength",
    "maxLength",
    "pattern",
    "minItems",
    "maxItems",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "items",
    "properties",
    "required",
    "x-kubernetes-validations",
)
_RULE_KEY_ORDER = ("rule", "message", "messageExpression", "fieldPath", "reason")
_DROP = {"title", "additionalProperties"}

PRINTER_COLUMNS: list[dict[str, Any]] = [
    {"name": "Phase", "type": "string", "jsonPath": ".status.phase",
     "description": "Where the rollout is."},
    {"name": "Step", "type": "integer", "jsonPath": ".status.currentStep",
     "description": "Index of the current step (from 0)."},
    {"name": "Weight", "type": "integer", "jsonPath": ".status.candidateWeight",
     "description": "Percent of traffic on the candidate."},
    {"name": "Verdict", "type": "string", "jsonPath": ".status.lastAnalysis.verdict",
     "description": "Latest analysis verdict."},
    # A future time as type "date" would print "<invalid>"; show the timestamp instead.
    {"name": "Next Step", "type": "string", "jsonPath": ".status.nextStepAt",
     "description": "When the current step's dwell time ends."},
    {"name": "Reason", "type": "string", "jsonPath": ".status.lastAnalysis.reason",
     "description": "Why the latest verdict is what it is."},
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]  # fmt: skip


def _inline(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Resolve ``$ref``/``allOf``/nullable ``anyOf`` wrappers into one schema node."""
    node = dict(node)
    if "$ref" in node:
        target = defs[node.pop("$ref").rsplit("/", 1)[-1]]
        node = {**_inline(target, defs), **node}
    if "allOf" in node and len(node["allOf"]) == 1:
        inner = node.pop("allOf")[0]
        node = {**_inline(inner, defs), **node}
    if "anyOf" in node:
        branches = [b for b in node.pop("anyOf") if b != {"type": "null"}]
        if len(branches) != 1:
            raise ValueError(f"cannot express a union in a structural schema: {branches}")
        node = {**_inline(branches[0], defs), **node}
    return node


def _structural(node: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    node = _inline(node, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP or (key == "default" and value is None):
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        elif key == "items":
            out[key] = _structural(value, defs)
        elif key in ("exclusiveMinimum", "exclusiveMaximum") and not isinstance(value, bool):
            out["minimum" if key == "exclusiveMinimum" else "maximum"] = value
            out[key] = True
        elif key == "required":
            out[key] = list(value)
        elif key == "x-kubernetes-validations":
            out[key] = [_ordered(rule, _RULE_KEY_ORDER) for rule in value]
        else:
            out[key] = value
    if "type" not in out:
        raise ValueError(f"schema node without a type: {node}")
    return _ordered(out, _KEY_ORDER)


def _ordered(mapping: dict[str, Any], order: tuple[str, ...]) -> dict[str, Any]:
    rank = {key: i for i, key in enumerate(order)}
    return dict(sorted(mapping.items(), key=lambda kv: rank.get(kv[0], len(rank))))


def openapi_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural OpenAPI v3 schema of one model, as used inside a CRD."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    defs = raw.pop("$defs", {})
    return _structural(raw, defs)


def build_crd() -> dict[str, Any]:
    """The CustomResourceDefinition (apiextensions.k8s.io/v1) of LVMRollout, as a dict."""
    root = {
        "description": (
            "LVMRollout rolls a new latent-vector-model version out on Ray Serve step by step, "
            "judged by Prometheus metrics, and promotes or rolls it back."
        ),
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": openapi_schema(LVMRolloutSpec),
            "status": openapi_schema(LVMRolloutStatus),
        },
        "required": ["spec"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME},
        "spec": {
            "group": GROUP,
            "names": {
                "kind": KIND,
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": list(SHORT_NAMES),
            },
            "scope": "Namespaced",
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [dict(c) for c in PRINTER_COLUMNS],
                    "schema": {"openAPIV3Schema": root},
                }
            ],
        },
    }


class _Dumper(yaml.SafeDumper):
    """Block style, multi-line strings as ``|`` blocks, no anchors."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str)


def render_crd_yaml() -> str:
    """The CRD as YAML text: exactly what ``crds/lvmrollout.yaml`` must contain."""
    body = yaml.dump(
        build_crd(), Dumper=_Dumper, sort_keys=False, default_flow_style=False, width=100,
        allow_unicode=True,
    )  # fmt: skip
    return HEADER + body


__all__ = ["API_VERSION", "PRINTER_COLUMNS", "build_crd", "openapi_schema", "render_crd_yaml"]
