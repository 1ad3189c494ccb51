"""Every manifest in the invalid corpus is rejected by the pydantic models, naming the field.

The same corpus runs against the real kube-apiserver in
tests/integration/test_crd_admission.py, so the CEL rules and their pydantic twins cannot drift.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from lvm_operator.api import InvalidRolloutError, parse_rollout


def _load_corpus():
    name = "lvm_invalid_manifests"
    if name not in sys.modules:
        path = Path(__file__).resolve().parent / "invalid_manifests" / "__init__.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


corpus = _load_corpus()
CASES = corpus.load_cases()


def test_base_manifest_is_valid():
    parse_rollout(corpus.base_manifest())


def test_corpus_is_large_and_distinct():
    assert len(CASES) >= 20
    assert len({c.name for c in CASES}) == len(CASES)
    base = corpus.base_manifest()
    for case in CASES:
        assert case.manifest["spec"] != base["spec"], f"{case.name} does not change the spec"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_pydantic_rejects(case):
    with pytest.raises(InvalidRolloutError) as info:
        parse_rollout(case.manifest)
    error = info.value
    assert any(case.field == path or path.startswith(case.field) for path, _ in error.problems), (
        f"expected an error at {case.field}, got:\n{error}"
    )
    assert case.field in str(error)


def test_mutations():
    base = {"a": {"b": [{"c": 1}, {"c": 2}]}}
    assert corpus.mutate(base, {"a.b[1].c": 5, "a.x.y": 1}, []) == {
        "a": {"b": [{"c": 1}, {"c": 5}], "x": {"y": 1}}
    }
    assert corpus.mutate(base, {}, ["a.b[0].c"]) == {"a": {"b": [{}, {"c": 2}]}}
    assert base == {"a": {"b": [{"c": 1}, {"c": 2}]}}
