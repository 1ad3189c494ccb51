"""The seed project's hierarchical GRU: 10 chunks of 10 vectors (exactly 100), 8,602,112 parameters.

Key for key the seed's network (``../shared/seed-models.md``), beside :mod:`.hierarchical_gru`
(the plan's 5 x 200 design for 1000 vectors, which the seed never wrote)::

    local_encoder.gru    GRU(D -> H, local_layers)    each chunk's final state (last layer),
    local_encoder.norm   LayerNorm(H)                 normalised: the chunk's summary [B, n, H]
    global_encoder.gru   GRU(H -> H, global_layers)   the final state over the summaries,
    global_encoder.norm  LayerNorm(H)                 normalised                        [B, H]
    output_proj          Linear(H -> M), GELU, Dropout, Linear(M -> D)
    residual_proj        Linear(D -> D) of the last input vector

    y = L2( output_proj(g) + residual_proj(x[:, -1]) )

The context must be exactly ``chunks * chunk_size`` vectors (the seed reshapes it).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch.nn.functional as F
from torch import Tensor, nn

from lvm_serving.models.base import ConfigError, FamilyConfig, InputError, LVMModel


@dataclass(frozen=True)
class SeedHierarchicalGRUConfig(FamilyConfig):
    d_model: int = 768
    chunks: int = 10
    chunk_size: int = 10
    hidden: int = 512
    local_layers: int = 2
    global_layers: int = 2
    mlp_dim: int = 1024
    dropout: float = 0.0  # output_proj's dropout (training only)

    @property
    def context_length(self) -> int:
        return self.chunks * self.chunk_size

    def validate(self) -> None:
        super().validate()
        if not 0.0 <= float(self.dropout) < 1.0:
            raise ConfigError(f"SeedHierarchicalGRUConfig.dropout must be in [0, 1), got "
                              f"{self.dropout}")


class _Encoder(nn.Module):
    def __init__(self, size_in: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.gru = nn.GRU(size_in, hidden, num_layers=layers, batch_first=True)
        self.norm = nn.LayerNorm(hidden)

    def forward(self, x: Tensor) -> Tensor:
        _, h_n = self.gru(x)
        return self.norm(h_n[-1])


class SeedHierarchicalGRU(LVMModel):
    family = "seed_hierarchical_gru"
    config_cls = SeedHierarchicalGRUConfig

    def __init__(self, config: SeedHierarchicalGRUConfig | None = None) -> None:
        config = config or SeedHierarchicalGRUConfig()
        super().__init__(config)
        d, h = config.d_model, config.hidden
        self.local_encoder = _Encoder(d, h, config.local_layers)
        self.global_encoder = _Encoder(h, h, config.global_layers)
        self.output_proj = nn.Sequential(nn.Linear(h, config.mlp_dim), nn.GELU(),
                                         nn.Dropout(config.dropout), nn.Linear(config.mlp_dim, d))
        self.residual_proj = nn.Linear(d, d)

    def check_inputs(self, context: Tensor, tmd: Tensor | None) -> None:
        super().check_inputs(context, tmd)
        need = self.config.context_length
        if context.shape[1] != need:
            raise InputError(
                f"the {self.family} family reads exactly {need} context vectors "
                f"({self.config.chunks} chunks of {self.config.chunk_size}), got "
                f"{context.shape[1]}")

    def _predict(self, context: Tensor, tmd: Tensor | None) -> Tensor:
        batch, _, dim = context.shape
        c = self.config
        chunks = context.reshape(batch * c.chunks, c.chunk_size, dim)
        summaries = self.local_encoder(chunks).reshape(batch, c.chunks, -1)
        g = self.global_encoder(summaries)
        return F.normalize(self.output_proj(g) + self.residual_proj(context[:, -1]), dim=-1)
