"""The corpus of invalid LVMRollouts shared by the unit and the integration tests.

``cases.yaml`` lists mutations of ``base.yaml``; ``minimal.yaml`` is a valid manifest with only
the required fields, for the defaulting tests.

Loaded by path (see ``load``) so the unit and integration tests can both use it whatever pytest's
import mode is.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Any, NamedTuple

import yaml

HERE = Path(__file__).resolve().parent
_TOKEN = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


class Case(NamedTuple):
    name: str
    field: str  # the field path every rejection must name
    manifest: dict[str, Any]


def base_manifest() -> dict[str, Any]:
    """The valid manifest every case mutates."""
    return yaml.safe_load((HERE / "base.yaml").read_text())


def minimal_manifest() -> dict[str, Any]:
    """The smallest valid manifest: only required fields, for the defaulting tests."""
    return yaml.safe_load((HERE / "minimal.yaml").read_text())


def _tokens(path: str) -> list[str | int]:
    return [name if name else int(index) for name, index in _TOKEN.findall(path)]


def _parent(root: Any, path: str, create: bool) -> tuple[Any, str | int]:
    *parents, last = _tokens(path)
    node = root
    for token in parents:
        if isinstance(token, str) and token not in node:
            if not create:
                raise KeyError(path)
            node[token] = {}
        node = node[token]
    return node, last


def mutate(manifest: dict[str, Any], set_: dict[str, Any], delete: list[str]) -> dict[str, Any]:
    out = copy.deepcopy(manifest)
    for path in delete:
        node, last = _parent(out, path, create=False)
        del node[last]
    for path, value in set_.items():
        node, last = _parent(out, path, create=True)
        node[last] = value
    return out


def load_cases() -> list[Case]:
    base = base_manifest()
    cases = []
    for raw in yaml.safe_load((HERE / "cases.yaml").read_text()):
        manifest = mutate(base, raw.get("set", {}), raw.get("delete", []))
        manifest["metadata"]["name"] = f"invalid-{raw['name']}"
        cases.append(Case(raw["name"], raw["field"], manifest))
    return cases
