"""The LVM model families, found by family name.

>>> model = build_model("memory_gru", {"d_model": 32, "hidden": 16, "num_layers": 1,
...                                    "memory_slots": 8, "fusion_dim": 16, "mlp_dim": 16})
>>> model(torch.randn(2, 5, 32)).shape
torch.Size([2, 32])

Every family takes ``forward(context [B, T, D], tmd [B, 16] | None) -> [B, D]`` (unit vectors);
see :mod:`lvm_serving.models.base`. Sizes are a per-family config dataclass whose defaults are the
seed's; :func:`build_model` accepts it as a plain dict, as a checkpoint stores it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch  # noqa: F401  (doctest above)

from lvm_serving.models.base import (
    TMD_DIM,
    ConfigError,
    FamilyConfig,
    FaultInjection,
    InputError,
    LVMModel,
    MissingTMDError,
    ModelError,
    UnknownFamilyError,
    lanes_of_tmd,
)
from lvm_serving.models.hierarchical_gru import HierarchicalGRU, HierarchicalGRUConfig
from lvm_serving.models.memory_gru import MemoryGRU, MemoryGRUConfig
from lvm_serving.models.seed_hierarchical_gru import (
    SeedHierarchicalGRU,
    SeedHierarchicalGRUConfig,
)
from lvm_serving.models.tmd_moe import TMDMoE, TMDMoEConfig

FAMILIES: dict[str, type[LVMModel]] = {
    MemoryGRU.family: MemoryGRU,
    HierarchicalGRU.family: HierarchicalGRU,
    TMDMoE.family: TMDMoE,
    SeedHierarchicalGRU.family: SeedHierarchicalGRU,
}


def known_families() -> tuple[str, ...]:
    return tuple(FAMILIES)


def family_class(family: str) -> type[LVMModel]:
    try:
        return FAMILIES[family]
    except KeyError:
        raise UnknownFamilyError(str(family), known_families()) from None


def make_config(
    family: str, config: Mapping[str, Any] | FamilyConfig | None = None
) -> FamilyConfig:
    """The family's config from a dict (missing keys take the seed's defaults) or as given."""
    cls = family_class(family)
    if isinstance(config, FamilyConfig):
        if not isinstance(config, cls.config_cls):
            raise ConfigError(f"{family} needs a {cls.config_cls.__name__}, got {type(config)}")
        config.validate()
        return config
    return cls.config_cls.from_dict(config)


def build_model(
    family: str,
    config: Mapping[str, Any] | FamilyConfig | None = None,
    *,
    faults: FaultInjection | Mapping[str, Any] | None = None,
) -> LVMModel:
    """A freshly initialised model of ``family`` (train mode, as torch builds it)."""
    model = family_class(family)(make_config(family, config))
    if faults is not None:
        model.faults = (
            faults if isinstance(faults, FaultInjection) else FaultInjection.from_dict(faults)
        )
    return model


__all__ = [
    "FAMILIES",
    "TMD_DIM",
    "ConfigError",
    "FamilyConfig",
    "FaultInjection",
    "HierarchicalGRU",
    "HierarchicalGRUConfig",
    "InputError",
    "LVMModel",
    "MemoryGRU",
    "MemoryGRUConfig",
    "MissingTMDError",
    "ModelError",
    "SeedHierarchicalGRU",
    "SeedHierarchicalGRUConfig",
    "TMDMoE",
    "TMDMoEConfig",
    "UnknownFamilyError",
    "build_model",
    "family_class",
    "known_families",
    "lanes_of_tmd",
    "make_config",
]
