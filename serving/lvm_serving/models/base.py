"""What every LVM family shares: sizes as a config dataclass, the forward contract, fault injection.

The forward contract (every family)::

    model(context: Tensor[B, T, D], tmd: Tensor[B, 16] | None) -> Tensor[B, D]

``context`` holds the last ``T`` concept vectors (unit vectors, ``D = config.d_model``); ``tmd`` is
the request's 16-lane TMD vector (the lane of a request is its arg-max, see :func:`lanes_of_tmd`).
The result is L2-normalised: the predicted next concept vector. Families that need the TMD vector
(the mixture of experts) raise :class:`MissingTMDError` without it; the others ignore it except for
fault injection.

Fault injection (:class:`FaultInjection`) exists ONLY to test rollouts and guardrails: a checkpoint
can carry switches that make the served model misbehave on chosen lanes. They act in ``forward``
after the family's own computation, so a Serve deployment that loads such a checkpoint misbehaves
exactly as the checkpoint says, with no serving-side switch.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar, Self

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lvm_serving.contracts.metrics import NUM_LANES

TMD_DIM = NUM_LANES  # one TMD entry per lane


class ModelError(Exception):
    """Base of the errors raised by the model families."""


class UnknownFamilyError(ModelError, ValueError):
    def __init__(self, family: str, known: tuple[str, ...]) -> None:
        self.family = family
        self.known = known
        super().__init__(
            f"unknown model family {family!r}; known families: {', '.join(known)}"
        )


class ConfigError(ModelError, ValueError):
    """A family config with unknown keys or impossible sizes."""


class InputError(ModelError, ValueError):
    """The caller passed a context or TMD vector of the wrong shape or type (a client error)."""


class MissingTMDError(InputError):
    """The family routes by the request's TMD vector and none was given."""


def lanes_of_tmd(tmd: Tensor) -> Tensor:
    """The lane of each request: the arg-max of its TMD vector ([B, 16] -> int64 [B])."""
    return tmd.argmax(dim=-1)


# --------------------------------------------------------------------------------------------
# Configs


@dataclass(frozen=True)
class FamilyConfig:
    """Base of the per-family size configs. Subclasses are frozen dataclasses of plain values."""

    d_model: int = 768

    def to_dict(self) -> dict[str, Any]:
        """Plain containers only (so ``torch.load(weights_only=True)`` can read it back)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, FamilyConfig) else value
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Self:
        data = dict(data or {})
        known = {f.name: f for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - set(known))
        if unknown:
            raise ConfigError(
                f"{cls.__name__}: unknown key(s) {unknown}; known keys: {sorted(known)}"
            )
        kwargs: dict[str, Any] = {}
        for name, value in data.items():
            field = known[name]
            default = field.default
            if default is dataclasses.MISSING and field.default_factory is not dataclasses.MISSING:
                default = field.default_factory()
            if isinstance(default, FamilyConfig) and isinstance(value, Mapping):
                value = type(default).from_dict(value)
            kwargs[name] = value
        config = cls(**kwargs)
        config.validate()
        return config

    def validate(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, FamilyConfig):
                value.validate()
            elif isinstance(value, bool):
                continue
            elif isinstance(value, int) and f.name != "seed" and value <= 0:
                raise ConfigError(f"{type(self).__name__}.{f.name} must be positive, got {value}")


# --------------------------------------------------------------------------------------------
# Fault injection


def _lane_tuple(value: Any, name: str) -> tuple[int, ...]:
    lanes = tuple(sorted({int(v) for v in (value or ())}))
    for lane in lanes:
        if not 0 <= lane < NUM_LANES:
            raise ConfigError(f"fault injection: {name} lane {lane} is outside 0..{NUM_LANES - 1}")
    return lanes


@dataclass(frozen=True)
class FaultInjection:
    """FAULT INJECTION switches carried by a checkpoint, for rollout and guardrail tests only.

    They apply to requests whose lane (arg-max of the TMD vector) is listed; requests without a TMD
    vector have no lane and are never affected.

    * ``nan_lanes``: the prediction is NaN (the serving side must count an error, never serve it).
    * ``degrade_lanes``: the prediction collapses toward the last context vector (the classic
      "copy the input" failure of next-vector predictors): ``normalize((1-s)*pred + s*last)`` with
      ``s = degrade_strength`` (1.0: a pure copy). Hit@K, exact and proxy, drop on those lanes;
      retrieval still finds close concepts, so they are not empty hits.
    * ``empty_lanes``: the prediction is a fixed pseudo-random unit direction per lane, far from
      every concept (best similarity ~0.1 at D=768): empty hits and misses.
    * ``extra_latency_ms``: the predictor sleeps this long per call (latency guardrail tests).
    """

    nan_lanes: tuple[int, ...] = ()
    degrade_lanes: tuple[int, ...] = ()
    degrade_strength: float = 1.0
    empty_lanes: tuple[int, ...] = ()
    extra_latency_ms: float = 0.0

    def __post_init__(self) -> None:
        for name in ("nan_lanes", "degrade_lanes", "empty_lanes"):
            object.__setattr__(self, name, _lane_tuple(getattr(self, name), name))
        if not 0.0 <= float(self.degrade_strength) <= 1.0:
            raise ConfigError(
                f"fault injection: degrade_strength must be in [0, 1], got {self.degrade_strength}"
            )
        if float(self.extra_latency_ms) < 0:
            raise ConfigError("fault injection: extra_latency_ms must be >= 0")

    @property
    def active(self) -> bool:
        return bool(
            self.nan_lanes or self.degrade_lanes or self.empty_lanes or self.extra_latency_ms
        )

    @property
    def affects_output(self) -> bool:
        return bool(self.nan_lanes or self.degrade_lanes or self.empty_lanes)

    def to_dict(self) -> dict[str, Any]:
        return {
            "nan_lanes": list(self.nan_lanes),
            "degrade_lanes": list(self.degrade_lanes),
            "degrade_strength": float(self.degrade_strength),
            "empty_lanes": list(self.empty_lanes),
            "extra_latency_ms": float(self.extra_latency_ms),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> FaultInjection:
        data = dict(data or {})
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"fault injection: unknown switch(es) {unknown}; known: {sorted(known)}"
            )
        return cls(**data)


_EMPTY_DIRECTIONS: dict[tuple[int, int], Tensor] = {}


def _empty_direction(lane: int, dim: int) -> Tensor:
    """A fixed pseudo-random unit vector for ``lane`` (same on every machine and run)."""
    key = (lane, dim)
    if key not in _EMPTY_DIRECTIONS:
        gen = torch.Generator().manual_seed(0x5EED_0000 + lane)
        _EMPTY_DIRECTIONS[key] = F.normalize(torch.randn(dim, generator=gen), dim=0)
    return _EMPTY_DIRECTIONS[key]


def apply_faults(out: Tensor, last: Tensor, tmd: Tensor | None, faults: FaultInjection) -> Tensor:
    """Apply the output fault switches to a batch of predictions (see :class:`FaultInjection`)."""
    if tmd is None or not faults.affects_output:
        return out
    lanes = lanes_of_tmd(tmd)

    def mask_for(selected: tuple[int, ...]) -> Tensor:
        chosen = torch.tensor(selected, dtype=lanes.dtype, device=lanes.device)
        return torch.isin(lanes, chosen).unsqueeze(-1)

    if faults.degrade_lanes:
        s = float(faults.degrade_strength)
        collapsed = F.normalize((1.0 - s) * out + s * last, dim=-1)
        out = torch.where(mask_for(faults.degrade_lanes), collapsed, out)
    if faults.empty_lanes:
        table = torch.stack([_empty_direction(lane, out.shape[-1]) for lane in range(NUM_LANES)])
        table = table.to(device=out.device, dtype=out.dtype)
        out = torch.where(mask_for(faults.empty_lanes), table[lanes], out)
    if faults.nan_lanes:
        out = torch.where(mask_for(faults.nan_lanes), torch.full_like(out, math.nan), out)
    return out


# --------------------------------------------------------------------------------------------
# The model base class


class LVMModel(nn.Module):
    """Base of the families. Subclasses set ``family`` and ``config_cls`` and implement
    :meth:`_predict`; :meth:`forward` checks the inputs and applies fault injection."""

    family: ClassVar[str]
    config_cls: ClassVar[type[FamilyConfig]]
    needs_tmd: ClassVar[bool] = False

    def __init__(self, config: FamilyConfig) -> None:
        super().__init__()
        if not isinstance(config, self.config_cls):
            raise ConfigError(
                f"{type(self).__name__} needs a {self.config_cls.__name__}, got {type(config)}"
            )
        config.validate()
        self.config = config
        self.faults = FaultInjection()

    @property
    def d_model(self) -> int:
        return int(self.config.d_model)

    def check_inputs(self, context: Tensor, tmd: Tensor | None) -> None:
        if not isinstance(context, Tensor) or context.dim() != 3:
            shape = tuple(context.shape) if isinstance(context, Tensor) else type(context)
            raise InputError(
                f"context must be a tensor [batch, length, {self.d_model}], got {shape}"
            )
        batch, length, dim = context.shape
        if dim != self.d_model:
            raise InputError(
                f"context vectors have {dim} dimensions; this {self.family} model expects "
                f"{self.d_model}"
            )
        if length < 1 or batch < 1:
            raise InputError(
                f"context must hold at least one vector, got shape {tuple(context.shape)}"
            )
        if not context.is_floating_point():
            raise InputError(f"context must be floating point, got {context.dtype}")
        if tmd is None:
            if self.needs_tmd:
                raise MissingTMDError(
                    f"the {self.family} family routes by the request's {TMD_DIM}-lane TMD "
                    "vector; pass tmd"
                )
            return
        if tmd.dim() != 2 or tmd.shape[0] != batch or tmd.shape[1] != TMD_DIM:
            raise InputError(f"tmd must be [batch={batch}, {TMD_DIM}], got {tuple(tmd.shape)}")

    def forward(self, context: Tensor, tmd: Tensor | None = None) -> Tensor:
        self.check_inputs(context, tmd)
        if tmd is not None:
            tmd = tmd.to(dtype=context.dtype)
        out = self._predict(context, tmd)
        return apply_faults(out, context[:, -1], tmd, self.faults)

    def _predict(self, context: Tensor, tmd: Tensor | None) -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())


def residual_unit(last: Tensor, delta: Tensor) -> Tensor:
    """The families' common output: ``normalize(last context vector + delta)``."""
    return F.normalize(last + delta, dim=-1)
