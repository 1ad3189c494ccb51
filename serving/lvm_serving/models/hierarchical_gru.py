"""The seed's hierarchical GRU for long contexts (Phase 3: 1000 vectors = 5 chunks of 200).

For ``x: [B, T, D]``::

    x_n      = LayerNorm(x), left-padded with zero vectors to a multiple of chunk_size
    chunks   = x_n viewed as [B * n, chunk_size, D]          (n = ceil(T / chunk_size))
    summary  = last hidden state of chunk GRU per chunk      [B, n, chunk_hidden]
    s        = last hidden state of summary GRU over chunks  [B, summary_hidden]
    out      = normalize(x[:, -1] + MLP(s))                  [B, D]

All chunks of a batch go through the chunk GRU in one call. A context shorter than one chunk is a
single, left-padded chunk.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lvm_serving.models.base import FamilyConfig, LVMModel, residual_unit


@dataclass(frozen=True)
class HierarchicalGRUConfig(FamilyConfig):
    d_model: int = 768
    chunk_size: int = 200
    chunk_hidden: int = 256
    summary_hidden: int = 256
    chunk_layers: int = 1
    summary_layers: int = 1
    mlp_dim: int = 512


class HierarchicalGRU(LVMModel):
    family = "hierarchical_gru"
    config_cls = HierarchicalGRUConfig

    def __init__(self, config: HierarchicalGRUConfig | None = None) -> None:
        config = config or HierarchicalGRUConfig()
        super().__init__(config)
        d = config.d_model
        self.in_norm = nn.LayerNorm(d)
        self.chunk_encoder = nn.GRU(
            d, config.chunk_hidden, num_layers=config.chunk_layers, batch_first=True
        )
        self.summary_encoder = nn.GRU(
            config.chunk_hidden, config.summary_hidden, num_layers=config.summary_layers,
            batch_first=True,
        )
        self.head = nn.Sequential(
            nn.Linear(config.summary_hidden, config.mlp_dim),
            nn.GELU(),
            nn.Linear(config.mlp_dim, d),
        )

    def _predict(self, context: Tensor, tmd: Tensor | None) -> Tensor:
        batch, length, dim = context.shape
        size = self.config.chunk_size
        n_chunks = -(-length // size)
        x = self.in_norm(context)
        pad = n_chunks * size - length
        if pad:
            x = torch.cat([x.new_zeros(batch, pad, dim), x], dim=1)
        _, h_chunks = self.chunk_encoder(x.reshape(batch * n_chunks, size, dim))
        summaries = h_chunks[-1].reshape(batch, n_chunks, -1)
        _, h_summary = self.summary_encoder(summaries)
        return residual_unit(context[:, -1], self.head(h_summary[-1]))
