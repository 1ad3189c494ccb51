"""The model families: shapes, unit outputs, memory never written, per-sample routing, faults."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvm_serving.concept_bank import ConceptBank
from lvm_serving.models import (
    FAMILIES,
    ConfigError,
    FaultInjection,
    InputError,
    MemoryGRU,
    MemoryGRUConfig,
    MissingTMDError,
    TMDMoE,
    UnknownFamilyError,
    build_model,
    known_families,
    lanes_of_tmd,
    make_config,
)
from lvm_serving.predictor import Predictor, hits

D = 24
TINY_MEMORY_GRU = {"d_model": D, "memory_slots": 8, "hidden": 12, "num_layers": 2,
                   "fusion_dim": 12, "mlp_dim": 16}
TINY = {
    "memory_gru": TINY_MEMORY_GRU,
    "hierarchical_gru": {"d_model": D, "chunk_size": 4, "chunk_hidden": 8, "summary_hidden": 8,
                         "mlp_dim": 16},
    "tmd_moe": {"d_model": D, "num_experts": 16, "top_k": 2, "gate_hidden": 8,
                "expert": {**TINY_MEMORY_GRU, "num_layers": 1}},
}


def unit_context(batch: int, length: int, dim: int = D, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(batch, length, dim, generator=gen), dim=-1)


def one_hot(lanes: list[int]) -> torch.Tensor:
    return torch.eye(16)[lanes]


def tiny(family: str, seed: int = 0):
    torch.manual_seed(seed)
    return build_model(family, TINY[family]).eval()


def test_registry_lists_the_three_seed_families():
    assert set(known_families()) == {"memory_gru", "hierarchical_gru", "tmd_moe",
                                     "seed_hierarchical_gru"}
    assert set(FAMILIES) == set(known_families())


def test_the_crd_names_exactly_the_families_serving_can_build():
    from lvm_operator.api import ModelFamily

    assert {f.value for f in ModelFamily} == set(known_families())


@pytest.mark.parametrize("family", sorted(TINY))
@pytest.mark.parametrize("length", [1, 7, 12])
def test_each_family_predicts_unit_vectors(family, length):
    model = tiny(family)
    context = unit_context(5, length)
    with torch.inference_mode():
        out = model(context, one_hot([0, 3, 3, 9, 15]))
    assert out.shape == (5, D)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.norm(dim=-1), torch.ones(5), atol=1e-5, rtol=0)


def test_memory_gru_at_seed_default_sizes():
    config = MemoryGRUConfig()
    assert (config.d_model, config.memory_slots, config.hidden, config.num_layers) == (
        768, 2048, 512, 4
    )
    model = MemoryGRU().eval()
    assert model.gru.input_size == 1536
    assert tuple(model.memory.memory.shape) == (2048, 768)
    assert model.num_parameters() == 11_292_160  # the seed's count (the memory is a buffer)
    with torch.inference_mode():
        out = model(unit_context(1, 100, 768))
    assert out.shape == (1, 768)
    assert math.isclose(float(out.norm()), 1.0, abs_tol=1e-5)


def test_eval_mode_never_writes_the_memory_or_any_weight():
    model = tiny("memory_gru")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():
        for seed in range(3):
            model(unit_context(4, 6, seed=seed))
    with torch.no_grad():  # also outside inference_mode, as long as it is eval mode
        model(unit_context(2, 3))
    after = model.state_dict()
    assert before.keys() == after.keys()
    for name, tensor in before.items():
        assert torch.equal(tensor, after[name]), name


def test_zero_query_memory_read_depends_on_the_projection_bias_only():
    # a zero query projects to query_proj.bias: the first read is the same for every input,
    # a cosine-softmax mix of the raw slots
    model = tiny("memory_gru")
    bank = model.memory
    with torch.no_grad():
        read = model.read_memory(torch.zeros(1, TINY_MEMORY_GRU["hidden"]))
        weights = torch.softmax(F.normalize(bank.memory, dim=-1)
                                @ F.normalize(bank.query_proj.bias, dim=0), dim=0)
    torch.testing.assert_close(read[0], weights @ bank.memory)


def test_output_is_residual_on_the_last_context_vector():
    model = tiny("memory_gru")
    # the seed's delta: y = L2(L2(last) + L2(raw)); a raw output along the last vector keeps it
    with torch.no_grad():
        context = unit_context(3, 5)
        model.output_proj[-1].weight.zero_()
        model.output_proj[-1].bias.copy_(context[0, -1])
        out = model(context[:1])
    torch.testing.assert_close(out, context[:1, -1])


def test_hierarchical_pads_contexts_that_are_not_whole_chunks():
    model = tiny("hierarchical_gru")
    context = unit_context(2, 10)  # chunk_size 4: 2 zero vectors + 3 chunks
    with torch.no_grad():
        out = model(context)
        x = model.in_norm(context)
        x = torch.cat([torch.zeros(2, 2, D), x], dim=1)
        _, h = model.chunk_encoder(x.reshape(6, 4, D))
        _, s = model.summary_encoder(h[-1].reshape(2, 3, -1))
        manual = F.normalize(context[:, -1] + model.head(s[-1]), dim=-1)
    torch.testing.assert_close(out, manual)


def test_moe_routes_each_sample_to_its_own_top2_experts():
    model: TMDMoE = tiny("tmd_moe")  # type: ignore[assignment]
    lanes = [0, 5, 5, 11, 15, 2]
    noise = torch.rand(len(lanes), 16, generator=torch.Generator().manual_seed(1))
    tmd = one_hot(lanes) + 0.05 * noise
    context = unit_context(len(lanes), 6)
    with torch.no_grad():
        batched = model(context, tmd)
        weights, chosen = model.route(tmd)
        assert chosen.shape == (len(lanes), 2)
        torch.testing.assert_close(weights.sum(-1), torch.ones(len(lanes)))
        for i in range(len(lanes)):
            single = model(context[i : i + 1], tmd[i : i + 1])
            torch.testing.assert_close(batched[i : i + 1], single, atol=1e-5, rtol=1e-5)
            mix = sum(
                weights[i, j] * model.experts[int(chosen[i, j])](context[i : i + 1])
                for j in range(2)
            )
            torch.testing.assert_close(single, F.normalize(mix, dim=-1), atol=1e-5, rtol=1e-5)


def test_moe_gate_is_the_seed_shape():
    model: TMDMoE = tiny("tmd_moe")  # type: ignore[assignment]
    linear = [m for m in model.gate if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linear] == [(16, 8), (8, 16)]
    default = make_config("tmd_moe")
    assert (default.num_experts, default.top_k, default.gate_hidden) == (16, 2, 64)


def test_moe_needs_the_tmd_vector():
    with pytest.raises(MissingTMDError, match="TMD"):
        tiny("tmd_moe")(unit_context(1, 3))


def test_bad_inputs_are_input_errors():
    model = tiny("memory_gru")
    with pytest.raises(InputError, match="dimensions"):
        model(unit_context(1, 3, dim=D + 1))
    with pytest.raises(InputError):
        model(torch.randn(3, D))
    with pytest.raises(InputError, match="tmd"):
        model(unit_context(2, 3), torch.zeros(2, 15))


def test_unknown_family_and_bad_config():
    with pytest.raises(UnknownFamilyError, match="known families: memory_gru"):
        build_model("transformer")
    with pytest.raises(ConfigError, match="unknown key"):
        build_model("memory_gru", {"hiden": 3})
    with pytest.raises(ConfigError, match="positive"):
        build_model("memory_gru", {"hidden": 0})
    with pytest.raises(ConfigError, match=r"expert\.d_model"):
        build_model("tmd_moe", {"d_model": 8, "expert": {"d_model": 16}})


def test_config_round_trips_through_plain_dicts():
    for family in TINY:
        config = make_config(family, TINY[family])
        assert make_config(family, config.to_dict()) == config


# ---- fault injection -------------------------------------------------------------------------


def test_nan_lanes_emit_nan_only_on_those_lanes():
    model = tiny("memory_gru")
    model.faults = FaultInjection(nan_lanes=(5,))
    lanes = [0, 5, 7, 5]
    with torch.no_grad():
        out = model(unit_context(4, 3), one_hot(lanes))
        clean = model(unit_context(4, 3))  # no TMD: no lane, no fault
    bad = torch.isnan(out).all(dim=-1)
    assert bad.tolist() == [False, True, False, True]
    assert torch.isfinite(clean).all()


def test_degrade_lanes_collapse_toward_the_last_vector():
    model = tiny("hierarchical_gru")
    context = unit_context(3, 8)
    tmd = one_hot([3, 4, 7])
    with torch.no_grad():
        healthy = model(context, tmd)
        model.faults = FaultInjection(degrade_lanes=(3, 7))
        full = model(context, tmd)
        model.faults = FaultInjection(degrade_lanes=(3,), degrade_strength=0.5)
        half = model(context, tmd)
    torch.testing.assert_close(full[[0, 2]], context[[0, 2], -1])
    torch.testing.assert_close(full[1], healthy[1])
    torch.testing.assert_close(
        half[0], F.normalize(0.5 * healthy[0] + 0.5 * context[0, -1], dim=-1)
    )


def test_empty_lanes_point_to_a_fixed_direction():
    model = tiny("tmd_moe")
    model.faults = FaultInjection(empty_lanes=(9,))
    with torch.no_grad():
        a = model(unit_context(2, 3, seed=1), one_hot([9, 9]))
        b = model(unit_context(1, 3, seed=2), one_hot([9]))
    torch.testing.assert_close(a[0], a[1])
    torch.testing.assert_close(a[0], b[0])
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))


def test_fault_switches_validate_and_round_trip():
    faults = FaultInjection(nan_lanes=[5, 5, 1], degrade_lanes=(3,), degrade_strength=0.7)
    assert faults.nan_lanes == (1, 5)
    assert FaultInjection.from_dict(faults.to_dict()) == faults
    assert not FaultInjection().active
    with pytest.raises(ConfigError):
        FaultInjection(nan_lanes=(16,))
    with pytest.raises(ConfigError):
        FaultInjection(degrade_strength=1.5)
    with pytest.raises(ConfigError, match="unknown switch"):
        FaultInjection.from_dict({"nan_lane": [1]})


def test_lane_of_a_tmd_vector_is_its_argmax():
    tmd = torch.zeros(2, 16)
    tmd[0, 4] = 0.9
    tmd[0, 2] = 0.1
    tmd[1, 15] = 1.0
    assert lanes_of_tmd(tmd).tolist() == [4, 15]


# ---- the predictor (model + bank) ------------------------------------------------------------


def _predictor(faults: FaultInjection | None = None):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((64, D)).astype(np.float32)
    bank = ConceptBank(np.arange(64) + 100, vectors, np.arange(64) % 16)
    model = tiny("memory_gru")
    if faults is not None:
        model.faults = faults
    return Predictor(model, bank, device="cpu")


def test_predictor_returns_vectors_topk_ids_and_similarities():
    predictor = _predictor()
    p = predictor.predict(unit_context(1, 5)[0].numpy(), one_hot([4])[0].numpy(), k=10)
    assert p.vectors.shape == (1, D) and p.ids.shape == (1, 10) and p.sims.shape == (1, 10)
    assert p.finite.tolist() == [True] and p.lanes.tolist() == [4]
    ids, _ = predictor.bank.search(p.vectors, k=10)
    assert p.ids.tolist() == ids.tolist()
    assert p.empty_hit.tolist() == [bool(p.sims[0, 0] < 0.4)]
    batch = predictor.predict(unit_context(3, 5), None, k=5)
    assert batch.lanes.tolist() == [-1, -1, -1]
    predictor.warmup(context_length=4)


def test_predictor_rejects_bad_inputs():
    predictor = _predictor()
    with pytest.raises(InputError):
        predictor.predict(torch.zeros(2, 3, D + 1))
    with pytest.raises(InputError, match="NaN"):
        predictor.predict(torch.full((1, 3, D), float("nan")))
    with pytest.raises(InputError, match="tmd"):
        predictor.predict(unit_context(2, 3), torch.zeros(3, 16))
    with pytest.raises(InputError, match="numeric"):
        predictor.predict("hello")


def test_predictor_marks_nan_rows_and_sleeps_for_latency_faults():
    predictor = _predictor(FaultInjection(nan_lanes=(2,), extra_latency_ms=30))
    started = time.perf_counter()
    p = predictor.predict(unit_context(2, 3), one_hot([2, 3]))
    assert time.perf_counter() - started >= 0.03
    assert p.finite.tolist() == [False, True]
    assert p.ids[0].tolist() == [-1] * 10
    assert not p.empty_hit[0]  # an error, not an empty hit


def test_hits_exact_and_proxy_use_the_seed_thresholds():
    clicked = np.array([[1.0, 0.0]] * 4)
    angle = np.arccos([0.9, 0.7, 0.5, 0.3])  # cosines with the clicked concept
    pred = np.stack([np.cos(angle), np.sin(angle)], axis=1)
    topk = np.array([[7] + [0] * 9, [0, 0, 7] + [0] * 7, [0] * 9 + [7], [0] * 10])
    h = hits(pred, topk, [7, 7, 7, 7], clicked)
    assert h["hit@1_proxy"].tolist() == [True, False, False, False]  # cos > 0.8
    assert h["hit@5_proxy"].tolist() == [True, True, False, False]  # cos > 0.6
    assert h["hit@10_proxy"].tolist() == [True, True, True, False]  # cos > 0.4
    assert h["hit@1_exact"].tolist() == [True, False, False, False]
    assert h["hit@5_exact"].tolist() == [True, True, False, False]
    assert h["hit@10_exact"].tolist() == [True, True, True, False]
    nan = hits(np.full(2, np.nan), [7] * 10, 7, [1.0, 0.0])
    assert not any(v.any() for v in nan.values())


def test_the_normalised_memory_is_reused_only_while_the_slots_stay_the_same():
    model = tiny("memory_gru")
    bank = model.memory
    with torch.inference_mode():
        first = bank.unit_slots()
        assert bank.unit_slots() is first  # serving: computed once
    with torch.no_grad():
        bank.memory.mul_(2.0).add_(1.0)  # an in-place write (a load_state_dict does the same)
        again = bank.unit_slots()
    assert again is not first
    torch.testing.assert_close(again, F.normalize(bank.memory, dim=-1))
    model.train()
    assert bank.unit_slots() is not again  # training never reuses it
