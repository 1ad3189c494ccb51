"""The seed project's own checkpoint files load and predict what the seed's networks predict.

The reference networks below are written in this test from ``../shared/seed-models.md`` (module
tree, state-dict keys, the memory read, the delta step), independently of
``lvm_serving.models``: a checkpoint is built the way the seed's ``train_final.py`` writes it
(``model_type``, ``model_state_dict``, ``val_results``, ``args``, ``epoch``), loaded through the
product (``weights_only=True``, sha256 verified) and both predict on random inputs.
"""

from __future__ import annotations

import hashlib

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lvm_serving.checkpoints import (
    MAX_MODEL_ELEMENTS,
    CheckpointConfigError,
    StateDictMismatchError,
    load_checkpoint,
    save_checkpoint,
)
from lvm_serving.models import InputError, build_model

SEED_ARGS = {"model_type": "memory_gru", "data": "artifacts/lvm/train_500ctx.npz", "epochs": 20,
             "batch_size": 32, "accumulation_steps": 4, "lr": 5e-4, "weight_decay": 0.01,
             "device": "mps", "patience": 3, "alpha_infonce": 0.1, "temperature": 0.07,
             "min_coherence": 0.0, "min_length": 500, "output_dir": "artifacts/lvm/models",
             "seed": 42}
SEED_VAL = {"loss_total": 0.61, "loss_mse": 0.0011, "loss_cosine": 0.42, "loss_infonce": 1.9,
            "cosine_sim": 0.58, "hit@1": 0.50, "hit@5": 0.6652, "hit@10": 0.7478, "cosine": 0.58}


# --- the reference networks, from the written description -----------------------------------


class RefMemoryBank(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("memory", torch.randn(2048, 768))
        self.query_proj = nn.Linear(512, 768)
        self.write_gate = nn.Linear(512, 2048)

    def read(self, q):
        p = self.query_proj(q)
        sim = torch.einsum("bd,sd->bs", p / p.norm(dim=-1, keepdim=True),
                           self.memory / self.memory.norm(dim=-1, keepdim=True))
        return torch.einsum("bs,sd->bd", sim.softmax(dim=-1), self.memory)


class RefMemoryGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.input_norm = nn.LayerNorm(768)
        self.memory = RefMemoryBank()
        self.gru = nn.GRU(1536, 512, num_layers=4, batch_first=True)
        self.fusion = nn.Sequential(nn.Linear(1280, 512), nn.GELU(), nn.Dropout(0.1),
                                    nn.LayerNorm(512))
        self.output_proj = nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Dropout(0.1),
                                         nn.Linear(1024, 768))

    def forward(self, x, tmd=None):
        b, t, _ = x.shape
        xn = self.input_norm(x)
        first = self.memory.read(torch.zeros(b, 512))
        out, _ = self.gru(torch.cat([xn, first[:, None, :].repeat(1, t, 1)], dim=2))
        h = out[:, -1, :]  # unidirectional: the last layer's final hidden state
        raw = self.output_proj(self.fusion(torch.cat([h, self.memory.read(h)], dim=1)))
        return raw / raw.norm(dim=1, keepdim=True)


def seed_served(module, x):
    """What the seed serves: the delta added to the normalised last vector, normalised."""
    last = x[:, -1, :] / x[:, -1, :].norm(dim=1, keepdim=True)
    y = last + module(x)
    return y / y.norm(dim=1, keepdim=True)


class RefEncoder(nn.Module):
    def __init__(self, size_in):
        super().__init__()
        self.gru = nn.GRU(size_in, 512, num_layers=2, batch_first=True)
        self.norm = nn.LayerNorm(512)


class RefHierarchicalGRU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.local_encoder = RefEncoder(768)
        self.global_encoder = RefEncoder(512)
        self.output_proj = nn.Sequential(nn.Linear(512, 1024), nn.GELU(), nn.Dropout(0.1),
                                         nn.Linear(1024, 768))
        self.residual_proj = nn.Linear(768, 768)

    def forward(self, x, tmd=None):
        b = x.shape[0]
        summaries = []
        for c in range(10):
            _, h = self.local_encoder.gru(x[:, c * 10:(c + 1) * 10, :])
            summaries.append(self.local_encoder.norm(h[-1]))
        _, g = self.global_encoder.gru(torch.stack(summaries, dim=1))
        y = self.output_proj(self.global_encoder.norm(g[-1])) + self.residual_proj(x[:, -1, :])
        assert y.shape == (b, 768)
        return F.normalize(y, dim=1)


def write_seed_checkpoint(path, module, model_type="memory_gru"):
    torch.save({"epoch": 7, "model_type": model_type, "model_state_dict": module.state_dict(),
                "val_results": SEED_VAL, "args": {**SEED_ARGS, "model_type": model_type}}, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def randomise(module, seed):
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in module.state_dict().values():
            t.copy_(torch.randn(t.shape, generator=gen) * 0.05 + (1.0 if t.dim() == 1 else 0))


# --- tests -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def seed_memory_gru(tmp_path_factory):
    torch.manual_seed(0)
    ref = RefMemoryGRU()
    randomise(ref, 1)
    path = tmp_path_factory.mktemp("seed") / "best_val_hit5.pt"
    return ref.eval(), path, write_seed_checkpoint(path, ref)


def test_the_reference_has_the_seeds_parameter_count(seed_memory_gru):
    ref, _, _ = seed_memory_gru
    assert sum(p.numel() for p in ref.parameters()) == 11_292_160
    assert sum(p.numel() for p in RefHierarchicalGRU().parameters()) == 8_602_112
    product = build_model("memory_gru")
    assert sum(p.numel() for p in product.parameters()) == 11_292_160
    assert set(product.state_dict()) == set(ref.state_dict())  # key for key, buffer included
    assert "memory.memory" not in dict(product.named_parameters())


@pytest.mark.parametrize("length", [100, 500])
def test_a_seed_memory_gru_checkpoint_predicts_what_the_seed_predicts(seed_memory_gru, length):
    ref, path, digest = seed_memory_gru
    loaded = load_checkpoint(path, digest)
    assert (loaded.family, loaded.source_format) == ("memory_gru", "seed")
    x = torch.randn(3, length, 768, generator=torch.Generator().manual_seed(length))
    with torch.inference_mode():
        want = seed_served(ref, x)
        got = loaded.model(x)
    assert (got - want).abs().max().item() <= 1e-5
    # the delta step matters: without it the outputs are far from the seed's
    with torch.inference_mode():
        assert (ref(x) - want).abs().max().item() > 1e-2


def test_the_seed_checkpoint_keeps_its_provenance(seed_memory_gru):
    _, path, digest = seed_memory_gru
    loaded = load_checkpoint(path, digest)
    assert loaded.metrics["hit@5"] == pytest.approx(0.6652)
    assert loaded.meta["args"]["min_length"] == 500 and loaded.meta["epoch"] == 7


def test_serving_never_writes_the_seed_memory(seed_memory_gru):
    ref, path, digest = seed_memory_gru
    loaded = load_checkpoint(path, digest)
    before = loaded.model.memory.memory.clone()
    with torch.inference_mode():
        loaded.model(torch.randn(2, 100, 768))
    assert torch.equal(before, loaded.model.memory.memory)
    assert torch.equal(before, ref.memory.memory)


def test_our_trained_checkpoints_load_in_the_seeds_network(tmp_path):
    # interchangeable: what our trainer saves is the seed's network with the seed's keys
    torch.manual_seed(3)
    ours = build_model("memory_gru").eval()
    path = tmp_path / "ours.pt"
    save_checkpoint(path, ours)
    state = torch.load(path, weights_only=True)["state_dict"]
    ref = RefMemoryGRU()
    ref.load_state_dict(state, strict=True)
    x = torch.randn(2, 100, 768)
    with torch.inference_mode():
        assert (seed_served(ref.eval(), x) - ours(x)).abs().max().item() <= 1e-5


def test_a_seed_hierarchical_gru_checkpoint_predicts_what_the_seed_predicts(tmp_path):
    torch.manual_seed(0)
    ref = RefHierarchicalGRU()
    randomise(ref, 2)
    digest = write_seed_checkpoint(tmp_path / "h.pt", ref.eval(), "hierarchical_gru")
    loaded = load_checkpoint(tmp_path / "h.pt", digest)
    assert loaded.family == "seed_hierarchical_gru"
    x = torch.randn(4, 100, 768)
    with torch.inference_mode():
        assert (loaded.model(x) - ref(x)).abs().max().item() <= 1e-5
        with pytest.raises(InputError, match="exactly 100 context vectors"):
            loaded.model(torch.randn(1, 99, 768))


def test_a_checkpoint_from_another_network_is_refused_by_name(tmp_path):
    ref = RefMemoryGRU()
    state = {k.replace("input_norm", "in_norm"): v for k, v in ref.state_dict().items()}
    torch.save({"model_type": "memory_gru", "model_state_dict": state}, tmp_path / "x.pt")
    with pytest.raises(StateDictMismatchError, match=r"missing 2 tensor\(s\) \['input_norm"):
        load_checkpoint(tmp_path / "x.pt")


def test_integer_weights_are_refused(tmp_path):
    state = RefMemoryGRU().state_dict()
    state["fusion.0.bias"] = torch.zeros(512, dtype=torch.int64)
    torch.save({"model_type": "memory_gru", "model_state_dict": state}, tmp_path / "i.pt")
    with pytest.raises(CheckpointConfigError, match=r"'fusion\.0\.bias' is torch\.int64"):
        load_checkpoint(tmp_path / "i.pt")


def test_declared_sizes_are_bounded_before_anything_is_allocated(tmp_path):
    # 2^20 memory slots x 2^13 dimensions = 8.6 G numbers (34 GiB): refused from the config,
    # built on the meta device only (this test would not fit in memory otherwise)
    model = build_model("memory_gru", {"d_model": 8, "hidden": 4, "memory_slots": 2,
                                       "fusion_dim": 4, "mlp_dim": 4, "num_layers": 1})
    path = tmp_path / "big.pt"
    save_checkpoint(path, model)
    payload = torch.load(path, weights_only=True)
    payload["config"].update(memory_slots=1 << 20, d_model=1 << 13)
    torch.save(payload, path)
    with pytest.raises(CheckpointConfigError, match=f"more than the {MAX_MODEL_ELEMENTS:,}"):
        load_checkpoint(path)
