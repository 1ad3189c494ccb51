"""The seed's memory-augmented GRU (Phase 1/2/3: the same architecture at 100, 500, 1000 vectors).

Data flow for a context ``x: [B, T, D]`` (defaults: D=768, 2048 slots, 4x512 GRU)::

    x_n   = LayerNorm(x)                                   [B, T, D]
    m0    = read(query = 0)                                [D]   (uniform attention: a learned
                                                                  global summary of the memory)
    h_seq = GRU(concat(x_n, m0 broadcast to every step))   [B, T, H]   (input 2D = 1536)
    h     = h_seq[:, -1]                                   [B, H]
    m1    = read(query = W_q h)                            [B, D]
    z     = GELU(Linear(concat(h, m1)))                    [B, F]   (fusion)
    delta = MLP(z)                                         [B, D]
    out   = normalize(x[:, -1] + delta)                    [B, D]

``read(q) = softmax(q M^T / sqrt(D)) M`` over the memory ``M: [slots, D]``, an ``nn.Parameter``:
reads are attention over slots and nothing in ``forward`` writes to it, so serving (eval mode,
``torch.inference_mode``) never changes the memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lvm_serving.models.base import FamilyConfig, LVMModel, residual_unit


@dataclass(frozen=True)
class MemoryGRUConfig(FamilyConfig):
    """Sizes of a memory GRU; the defaults are the seed's production model."""

    d_model: int = 768
    memory_slots: int = 2048
    hidden: int = 512
    num_layers: int = 4
    fusion_dim: int = 512
    mlp_dim: int = 1024
    dropout: float = 0.0  # between GRU layers, training only


class MemoryGRU(LVMModel):
    family = "memory_gru"
    config_cls = MemoryGRUConfig

    def __init__(self, config: MemoryGRUConfig | None = None) -> None:
        config = config or MemoryGRUConfig()
        super().__init__(config)
        d, h = config.d_model, config.hidden
        self.in_norm = nn.LayerNorm(d)
        self.memory = nn.Parameter(torch.randn(config.memory_slots, d) / math.sqrt(d))
        self.mem_query = nn.Linear(h, d)
        self.gru = nn.GRU(
            input_size=2 * d,
            hidden_size=h,
            num_layers=config.num_layers,
            batch_first=True,
            dropout=config.dropout if config.num_layers > 1 else 0.0,
        )
        self.fusion = nn.Sequential(nn.Linear(h + d, config.fusion_dim), nn.GELU())
        self.head = nn.Sequential(
            nn.Linear(config.fusion_dim, config.mlp_dim),
            nn.GELU(),
            nn.Linear(config.mlp_dim, d),
        )

    def read_memory(self, query: Tensor) -> Tensor:
        """Attention read over the memory slots: ``[N, D] -> [N, D]``. Never writes."""
        scores = query @ self.memory.t() / math.sqrt(self.d_model)
        return torch.softmax(scores, dim=-1) @ self.memory

    def _predict(self, context: Tensor, tmd: Tensor | None) -> Tensor:
        batch, length, dim = context.shape
        x = self.in_norm(context)
        m0 = self.read_memory(context.new_zeros(1, dim))  # the zero-query read, once
        steps = torch.cat([x, m0.expand(batch, length, dim)], dim=-1)
        h_seq, _ = self.gru(steps)
        h = h_seq[:, -1]
        m1 = self.read_memory(self.mem_query(h))
        z = self.fusion(torch.cat([h, m1], dim=-1))
        return residual_unit(context[:, -1], self.head(z))
