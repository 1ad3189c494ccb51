"""The seed's TMD-routed mixture of 16 specialist experts (top-2 gate over the TMD lane vector).

::

    p        = softmax(Linear(64->16)(ReLU(Linear(16->64)(tmd))))   [B, 16]   the gate
    w, e     = top_k(p, 2); w = w / sum(w)                          per-sample choice and weights
    out[b]   = normalize(sum_i w[b, i] * expert[e[b, i]](context[b]))

Each expert is a :class:`~lvm_serving.models.memory_gru.MemoryGRU` (sizes in ``config.expert``).
Routing is per sample: every expert runs once per batch on exactly the rows that chose it, and the
results are scattered back with ``index_add``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch.nn.functional as F
from torch import Tensor, nn

from lvm_serving.models.base import TMD_DIM, ConfigError, FamilyConfig, LVMModel
from lvm_serving.models.memory_gru import MemoryGRU, MemoryGRUConfig


@dataclass(frozen=True)
class TMDMoEConfig(FamilyConfig):
    d_model: int = 768  # must equal expert.d_model
    num_experts: int = 16
    top_k: int = 2
    tmd_dim: int = TMD_DIM
    gate_hidden: int = 64
    expert: MemoryGRUConfig = field(default_factory=MemoryGRUConfig)

    def validate(self) -> None:
        super().validate()
        if self.expert.d_model != self.d_model:
            raise ConfigError(
                f"TMDMoEConfig: d_model {self.d_model} != expert.d_model {self.expert.d_model}"
            )
        if self.top_k > self.num_experts:
            raise ConfigError(
                f"TMDMoEConfig: top_k {self.top_k} > num_experts {self.num_experts}"
            )
        if self.tmd_dim != TMD_DIM:
            raise ConfigError(f"TMDMoEConfig: tmd_dim must be {TMD_DIM}, got {self.tmd_dim}")


class TMDMoE(LVMModel):
    family = "tmd_moe"
    config_cls = TMDMoEConfig
    needs_tmd = True

    def __init__(self, config: TMDMoEConfig | None = None) -> None:
        config = config or TMDMoEConfig()
        super().__init__(config)
        self.gate = nn.Sequential(
            nn.Linear(config.tmd_dim, config.gate_hidden),
            nn.ReLU(),
            nn.Linear(config.gate_hidden, config.num_experts),
            nn.Softmax(dim=-1),
        )
        self.experts = nn.ModuleList(MemoryGRU(config.expert) for _ in range(config.num_experts))

    def route(self, tmd: Tensor) -> tuple[Tensor, Tensor]:
        """Per-sample top-k experts and their renormalised weights: ``([B, k], [B, k])``."""
        probs = self.gate(tmd)
        weights, experts = probs.topk(self.config.top_k, dim=-1)
        return weights / weights.sum(dim=-1, keepdim=True), experts

    def _predict(self, context: Tensor, tmd: Tensor | None) -> Tensor:
        assert tmd is not None  # check_inputs enforces it (needs_tmd)
        weights, chosen = self.route(tmd)
        out = context.new_zeros(context.shape[0], context.shape[-1])
        for index, expert in enumerate(self.experts):
            hit = chosen == index  # [B, k]
            rows = hit.any(dim=-1).nonzero(as_tuple=True)[0]
            if rows.numel() == 0:
                continue
            weight = (weights * hit).sum(dim=-1)[rows]
            out = out.index_add(0, rows, expert(context[rows]) * weight.unsqueeze(-1))
        return F.normalize(out, dim=-1)
