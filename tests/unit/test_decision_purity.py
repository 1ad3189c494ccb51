"""The decision core stays pure: it imports only the standard library, numpy/scipy (numerics
for the sequential judge: no I/O, no state) and itself.

A cheap stand-in for an import-linter contract, so the rule holds even where lint-imports does
not run: no Kopf, Kubernetes, Ray, HTTP or Prometheus clients, pydantic API types, or clock.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lvm_operator.decision as decision

ALLOWED_STDLIB = {"__future__", "collections", "dataclasses", "enum", "math", "typing",
                  "numpy", "scipy"}


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_decision_core_imports_only_allowed_stdlib():
    files = sorted(Path(decision.__file__).parent.glob("*.py"))
    assert files
    for path in files:
        extra = _imports(path) - ALLOWED_STDLIB
        assert not extra, f"{path.name} imports {sorted(extra)}"


def test_decision_core_never_reads_the_clock():
    for path in Path(decision.__file__).parent.glob("*.py"):
        text = path.read_text()
        for banned in ("time.time", "datetime.now", "monotonic", "import time", "import datetime"):
            assert banned not in text, f"{path.name} uses {banned}: take `now` as an argument"
