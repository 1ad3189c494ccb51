"""The seed project's memory-augmented GRU (Phase 1/2/3: one network at 100, 500, 1000 vectors).

Module for module and key for key the seed's network (``../shared/seed-models.md``), so the
seed's ``best_val_hit5.pt`` loads as it is and predicts what the seed predicts::

    input_norm                   LayerNorm(D)
    memory.memory                buffer [slots, D]          (the memory slots; not a parameter)
    memory.query_proj            Linear(H -> D)
    memory.write_gate            Linear(H -> slots)         (the seed writes with it in training)
    gru                          GRU(2D -> H, layers, batch_first)
    fusion                       Linear(H + D -> F), GELU, Dropout, LayerNorm(F)
    output_proj                  Linear(F -> M), GELU, Dropout, Linear(M -> D)

For a context ``x: [B, T, D]`` in eval mode::

    xn    = input_norm(x)
    r0    = read(zero query)        [B, D]  (the projection is then query_proj.bias: a learned
                                             read that does not depend on the input)
    h     = last layer's final state of gru(concat(xn, r0 at every step))    [B, H]
    r1    = read(h)                 [B, D]
    raw   = output_proj(fusion(concat(h, r1)))                               [B, D]
    y     = L2( L2(x[:, -1]) + L2(raw) )   (the seed trained a delta: the module's own output
                                             is L2(raw); serving adds it to the last vector)

``read(q)``: ``p = query_proj(q)``; cosine similarity of ``p`` with every slot (both
L2-normalised), softmax over slots (no temperature), weighted sum of the *raw* slots.

Nothing here writes the memory: the seed writes it in place during its training forward, which
serving must never run; our trainer leaves it fixed (``write_gate`` is kept for the key set).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvm_serving.models.base import FamilyConfig, LVMModel


@dataclass(frozen=True)
class MemoryGRUConfig(FamilyConfig):
    """Sizes of a memory GRU; the defaults are the seed's (11,292,160 parameters)."""

    d_model: int = 768
    memory_slots: int = 2048
    hidden: int = 512
    num_layers: int = 4
    fusion_dim: int = 512
    mlp_dim: int = 1024
    dropout: float = 0.0  # the fusion and output dropouts (training only; off in eval)


class CosineMemory(nn.Module):
    """The seed's memory bank: ``memory`` (a buffer), ``query_proj`` and ``write_gate``."""

    def __init__(self, slots: int, d_model: int, hidden: int) -> None:
        super().__init__()
        self.register_buffer("memory", torch.randn(slots, d_model) / math.sqrt(d_model))
        self.query_proj = nn.Linear(hidden, d_model)
        self.write_gate = nn.Linear(hidden, slots)

        self._unit: Tensor | None = None  # the L2-normalised slots, while they do not change
        self._unit_key: tuple | None = None

    def unit_slots(self) -> Tensor:
        """``L2(memory)``. Serving reads the same slots on every request, so in eval mode the
        normalised copy is kept until the buffer changes (a load, a move, an in-place write:
        its data pointer or version counter moves); training always recomputes it."""
        m = self.memory
        if self.training or torch.is_grad_enabled():
            return F.normalize(m, dim=-1)
        key = (m.data_ptr(), m._version, m.device, m.dtype)
        if self._unit is None or self._unit_key != key:
            self._unit, self._unit_key = F.normalize(m, dim=-1), key
        return self._unit

    def read(self, query: Tensor) -> Tensor:
        """``[N, H] -> [N, D]``: cosine attention over the slots, a sum of the raw slots."""
        p = F.normalize(self.query_proj(query), dim=-1)
        scores = p @ self.unit_slots().t()
        return torch.softmax(scores, dim=-1) @ self.memory


class MemoryGRU(LVMModel):
    family = "memory_gru"
    config_cls = MemoryGRUConfig

    def __init__(self, config: MemoryGRUConfig | None = None) -> None:
        config = config or MemoryGRUConfig()
        super().__init__(config)
        d, h, f = config.d_model, config.hidden, config.fusion_dim
        self.input_norm = nn.LayerNorm(d)
        self.memory = CosineMemory(config.memory_slots, d, h)
        self.gru = nn.GRU(input_size=2 * d, hidden_size=h, num_layers=config.num_layers,
                          batch_first=True)
        self.fusion = nn.Sequential(nn.Linear(h + d, f), nn.GELU(), nn.Dropout(config.dropout),
                                    nn.LayerNorm(f))
        self.output_proj = nn.Sequential(nn.Linear(f, config.mlp_dim), nn.GELU(),
                                         nn.Dropout(config.dropout), nn.Linear(config.mlp_dim, d))

    def read_memory(self, query: Tensor) -> Tensor:
        return self.memory.read(query)

    def delta(self, context: Tensor) -> Tensor:
        """What the seed's module returns: ``L2(raw)``, the predicted delta ``[B, D]``."""
        batch, length, _ = context.shape
        xn = self.input_norm(context)
        r0 = self.read_memory(context.new_zeros(batch, self.config.hidden))
        steps = torch.cat([xn, r0.unsqueeze(1).expand(batch, length, -1)], dim=-1)
        _, h_n = self.gru(steps)
        h = h_n[-1]
        fused = self.fusion(torch.cat([h, self.read_memory(h)], dim=-1))
        return F.normalize(self.output_proj(fused), dim=-1)

    def _predict(self, context: Tensor, tmd: Tensor | None) -> Tensor:
        return F.normalize(F.normalize(context[:, -1], dim=-1) + self.delta(context), dim=-1)
