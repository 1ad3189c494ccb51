"""The synthetic world and the training command: real checkpoints, better than untrained, faults."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from lvm_serving.artifacts import sha256_file
from lvm_serving.checkpoints import load_checkpoint
from lvm_serving.concept_bank import ConceptBank
from lvm_serving.predictor import Predictor
from lvm_serving.synthetic import EvalSet, SyntheticWorld, WorldSpec, evaluate
from lvm_serving.train import parse_args, run

TINY_ARGS = [
    "--d-model", "32", "--orbit-length", "8", "--train-window", "8", "--eval-size", "256",
    "--size", "hidden=32", "--size", "memory_slots=16", "--size", "fusion_dim=32",
    "--size", "mlp_dim=64", "--threads", "1",
]


def train(out: Path, *extra: str, steps: int = 150, family: str = "memory_gru") -> dict:
    args = ["--family", family, "--context-length", "12", "--out", str(out),
            "--steps", str(steps), *TINY_ARGS, *extra]
    return run(parse_args(args))


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    return train(tmp_path_factory.mktemp("trained"), "--version", "tiny-trained")


@pytest.fixture(scope="module")
def untrained(tmp_path_factory) -> dict:
    return train(tmp_path_factory.mktemp("untrained"), steps=0)


@pytest.fixture(scope="module")
def faulty(tmp_path_factory) -> dict:
    # The empty-lane direction is fixed and random: it misses every concept only when D is well
    # above the bank's effective rank (32 here, as in the demo world at D=768).
    return train(
        tmp_path_factory.mktemp("faulty"),
        "--degrade-lanes", "3", "--nan-lanes", "5", "--empty-lanes", "9", "--d-model", "256",
    )


# ---- the synthetic world ---------------------------------------------------------------------


def test_world_is_deterministic_and_follows_its_rule(tmp_path):
    spec = WorldSpec(d_model=32, orbit_length=8, noise=0.0, seed=4)
    world = SyntheticWorld(spec)
    again = SyntheticWorld(spec)
    assert world.bank().save(tmp_path / "a.npz") == again.bank().save(tmp_path / "b.npz")
    assert sorted(world.successor.tolist()) == list(range(world.num_concepts))  # a permutation
    assert (world.lanes[world.successor] == world.lanes).all()  # successors stay in the lane
    centre_cos = np.einsum("nd,nd->n", world.vectors, world.centres[world.lanes])
    np.testing.assert_allclose(centre_cos, spec.lane_weight, atol=1e-5)
    context, target, lanes = world.sample(np.random.default_rng(0), 20, 6)
    assert context.shape == (20, 6)
    np.testing.assert_array_equal(world.successor[context[:, :-1]], context[:, 1:])
    np.testing.assert_array_equal(world.successor[context[:, -1]], target)
    np.testing.assert_array_equal(world.lanes[target], lanes)
    # The successor is far from the current concept: copying the input does not work.
    succ_cos = np.einsum("nd,nd->n", world.vectors, world.vectors[world.successor])
    assert succ_cos.mean() < 0.5


def test_eval_set_round_trip(tmp_path):
    world = SyntheticWorld(WorldSpec(d_model=32))
    eval_set = EvalSet.generate(world, 40, 5, seed=2, bank_sha256="ab" * 32)
    digest = eval_set.save(tmp_path / "eval.npz")
    loaded = EvalSet.load((tmp_path / "eval.npz").as_uri(), digest)
    np.testing.assert_array_equal(loaded.context_ids, eval_set.context_ids)
    np.testing.assert_array_equal(loaded.target_ids, eval_set.target_ids)
    np.testing.assert_array_equal(loaded.lanes, eval_set.lanes)
    assert loaded.bank_sha256 == "ab" * 32
    assert sorted(set(loaded.lanes.tolist())) == list(range(16))  # balanced lanes


# ---- the training command --------------------------------------------------------------------


def test_training_beats_untrained_on_hit5(trained, untrained):
    assert trained["eval"]["hit@5"] > untrained["eval"]["hit@5"] + 0.3
    assert trained["eval"]["hit@5"] > 0.6
    assert trained["eval"]["hit@5_proxy"] > untrained["eval"]["hit@5_proxy"]
    assert trained["train"]["steps"] == 150 and untrained["train"]["steps"] == 0


def test_outputs_are_verified_artifacts(trained):
    for key in ("checkpoint", "concept_bank", "eval_set"):
        art = trained[key]
        assert Path(art["path"]).is_file()
        assert sha256_file(art["path"]) == art["sha256"]
        assert Path(art["path"] + ".sha256").read_text().split()[0] == art["sha256"]
        assert art["uri"].startswith("file://")
    metrics_file = Path(trained["checkpoint"]["path"]).parent / "metrics.json"
    assert json.loads(metrics_file.read_text()) == json.loads(json.dumps(trained))
    assert trained["eval"]["n"] == 256
    assert set(trained["eval"]["per_lane"]) == {str(lane) for lane in range(16)}


def test_served_checkpoint_reproduces_the_reported_eval(trained):
    ckpt, bank, evalset = trained["checkpoint"], trained["concept_bank"], trained["eval_set"]
    predictor = Predictor.load(ckpt["uri"], ckpt["sha256"], bank["uri"], bank["sha256"],
                               device="cpu", expected_family="memory_gru")
    assert predictor.checkpoint is not None
    assert predictor.checkpoint.meta["version"] == "tiny-trained"
    assert predictor.checkpoint.meta["concept_bank_sha256"] == bank["sha256"]
    assert predictor.checkpoint.metrics["hit@5"] == pytest.approx(trained["eval"]["hit@5"])
    result = evaluate(predictor, EvalSet.load(evalset["uri"], evalset["sha256"]))
    for key in ("hit@1", "hit@5", "hit@10", "hit@5_proxy", "empty_hit_rate"):
        assert result[key] == pytest.approx(trained["eval"][key], abs=1e-6), key


def test_same_world_options_give_the_same_bank(trained, untrained):
    assert trained["concept_bank"]["sha256"] == untrained["concept_bank"]["sha256"]


def test_fault_switches_do_what_they_say(faulty, trained):
    lanes = faulty["eval"]["per_lane"]
    healthy = [lanes[str(lane)] for lane in range(16) if lane not in (3, 5, 9)]
    assert lanes["5"]["nan_rate"] == 1.0
    assert lanes["5"]["hit@5"] == 0.0
    assert all(lane["nan_rate"] == 0.0 for lane in healthy)
    assert lanes["9"]["empty_hit_rate"] == 1.0
    assert all(lane["empty_hit_rate"] < 0.2 for lane in healthy)
    healthy_hit5 = np.mean([lane["hit@5"] for lane in healthy])
    assert healthy_hit5 > 0.6
    assert lanes["3"]["hit@5"] < healthy_hit5 - 0.4
    assert lanes["3"]["empty_hit_rate"] == 0.0  # degraded, not empty
    assert faulty["faults"]["nan_lanes"] == [5]
    # The switches travel in the checkpoint.
    loaded = load_checkpoint(faulty["checkpoint"]["uri"], faulty["checkpoint"]["sha256"])
    assert loaded.faults.nan_lanes == (5,)
    assert loaded.faults.degrade_lanes == (3,)
    assert loaded.faults.empty_lanes == (9,)
    bank = ConceptBank.load(faulty["concept_bank"]["path"])
    p = Predictor(loaded.model, bank).predict(
        bank.vectors_for([[1, 2, 3], [4, 5, 6]]), np.eye(16)[[5, 0]]
    )
    assert p.finite.tolist() == [False, True]
    assert p.ids[0].tolist() == [-1] * 10


@pytest.mark.parametrize("family", ["hierarchical_gru", "tmd_moe", "seed_hierarchical_gru"])
def test_other_families_train_and_load(tmp_path, family):
    sizes = {
        # 3 chunks of 4: exactly the 12 context vectors below
        "seed_hierarchical_gru": ["--size", "chunks=3", "--size", "chunk_size=4",
                                  "--size", "hidden=16", "--size", "mlp_dim=32"],
        "hierarchical_gru": ["--size", "chunk_size=4", "--size", "chunk_hidden=16",
                             "--size", "summary_hidden=16", "--size", "mlp_dim=32"],
        "tmd_moe": ["--size", "num_experts=4", "--size", "gate_hidden=8",
                    "--size", "expert.hidden=8", "--size", "expert.memory_slots=4",
                    "--size", "expert.fusion_dim=8", "--size", "expert.mlp_dim=16"],
    }[family]
    args = ["--family", family, "--context-length", "12", "--out", str(tmp_path), "--steps", "5",
            "--d-model", "32", "--eval-size", "32", "--threads", "1", *sizes]
    report = run(parse_args(args))
    loaded = load_checkpoint(report["checkpoint"]["uri"], report["checkpoint"]["sha256"])
    assert loaded.family == family
    assert 0.0 <= report["eval"]["hit@5"] <= 1.0


def test_lane_lists_and_argument_errors(tmp_path):
    base = ["--family", "memory_gru", "--context-length", "4", "--out", str(tmp_path)]
    assert parse_args([*base, "--degrade-lanes", "all"]).degrade_lanes == list(range(16))
    assert parse_args([*base, "--nan-lanes", "0-2,7"]).nan_lanes == [0, 1, 2, 7]
    with pytest.raises(SystemExit):
        parse_args([*base, "--nan-lanes", "16"])
    with pytest.raises(SystemExit):
        parse_args([*base, "--family", "gpt"])


def test_module_entry_point_prints_json(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "lvm_serving.train", "--family", "memory_gru",
         "--context-length", "6", "--out", str(tmp_path), "--steps", "3", "--eval-size", "16",
         *TINY_ARGS[:6], "--safetensors"],
        capture_output=True, text=True, timeout=120, env=env, check=False,
    )
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["checkpoint"]["path"].endswith("model.safetensors")
    assert load_checkpoint(report["checkpoint"]["path"], report["checkpoint"]["sha256"])
