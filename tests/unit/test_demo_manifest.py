"""The demo's rollouts: what must stay the same from one to the next so that Serve keeps the
serving replicas (a rebuilt router or champion with one replica makes clients wait)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from lvm_operator.api.spec import LVMRolloutSpec
from lvm_operator.demo import artifacts
from lvm_operator.demo.manifest import DemoOptions, rollout_manifest


def artifact(recipe: artifacts.Recipe) -> artifacts.Artifact:
    d = f"/cache/{recipe.version}"  # each version's own directory, as ensure() makes them
    return artifacts.Artifact(
        version=recipe.version, family="memory_gru", checkpoint_uri=f"file://{d}/model.pt",
        checkpoint_sha256="a" * 64, bank_uri=f"file://{d}/concept_bank.npz",
        bank_sha256="b" * 64, eval_uri=f"file://{d}/eval_set.npz", eval_sha256="c" * 64,
        hit5_proxy=0.9, directory=Path(d))


STACK = SimpleNamespace(prometheus=SimpleNamespace(url="http://127.0.0.1:9090"),
                        ray=SimpleNamespace(dashboard_url="http://127.0.0.1:8265"))


def test_second_rollout_keeps_the_bank_the_eval_set_and_the_pools():
    v1, v2, v3 = (artifact(r) for r in (artifacts.CHAMPION, artifacts.GOOD_CANDIDATE,
                                        artifacts.SLOW_CANDIDATE))
    first = rollout_manifest(STACK, v1, v2, DemoOptions())["spec"]
    second = rollout_manifest(STACK, v2, v3, DemoOptions(), shared=v1)["spec"]
    assert first["conceptBank"] == second["conceptBank"]
    assert first["conceptBank"]["uri"] == v1.bank_uri
    assert first["evaluation"]["evalSet"] == second["evaluation"]["evalSet"]
    # the promoted candidate keeps its pool as the next champion: no new placement
    assert first["candidate"]["nodePool"] == second["champion"]["nodePool"]
    for spec in (first, second):
        LVMRolloutSpec.model_validate(spec)
