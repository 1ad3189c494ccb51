"""A synthetic concept world whose chains a small GRU learns in seconds, and its eval sets.

**Concepts.** Each of the 16 lanes has a centre ``c_l`` (orthonormal directions). Every concept is
``v = a * c_l + b * U g`` with ``a = lane_weight`` (default 0.5), ``b = sqrt(1 - a^2)``, ``U`` a
``[D, latent_dim]`` orthonormal basis orthogonal to the centres and ``g`` a unit latent vector.
So a concept has cosine ``a`` with its lane centre; two concepts of one lane have cosine
``a^2 + b^2 <g, g'>`` (about 0.25 by default) and of different lanes ``b^2 <g, g'>``.

**Successor rule.** A fixed rotation ``R`` of the latent space (2-D rotations by angles
``2*pi*p/M`` with every ``p`` coprime with ``M = orbit_length``) has period ``M``. Each lane has
``orbits_per_lane`` seed latents; its concepts are their orbits ``g, Rg, ..., R^(M-1) g``. The
successor of a concept is the next one on its orbit: a fixed per-lane successor permutation that
is also one linear map (``c_l`` kept, ``g -> R g``), which is why a GRU learns it quickly. Its
successor is far from it (cosine about ``a^2``), so copying the last vector scores badly.

**Chains.** A chain starts at a random concept and steps to the successor; with probability
``noise`` a step jumps to a random concept of the same lane instead (the chain then continues
from there). A request is ``context`` = a chain's first T concepts and ``target`` = concept T+1;
its TMD vector is the one-hot of the chain's lane. The world is a pure function of its
:class:`WorldSpec` (NumPy's PCG64), so two runs with the same spec make the same concept bank
(byte for byte, hence the same sha256): champion and candidate trained apart share it.

**Eval set file** (``eval_set.npz``, format ``lvm-eval-set`` version 1; read with
``allow_pickle=False``), referring to concepts by id so it stays small::

    format           str scalar   "lvm-eval-set"
    format_version   int scalar   1
    context_ids      int64 [N, T] concept ids of each context, oldest first
    target_ids       int64 [N]    the concept that came next (the "click")
    lanes            int64 [N]    lane of each sequence (0..15)
    tmd              float32 [N, 16]  the TMD vector sent with the request
    bank_sha256      str scalar   sha256 of the concept bank the ids refer to ("" if unknown)

Held out means: sequences drawn from a random stream that training never uses (the concepts and
the rule are the same world's).
"""

from __future__ import annotations

import io
import math
import os
import zipfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lvm_serving.artifacts import ArtifactError, atomic_write, open_verified, write_sha256_sidecar
from lvm_serving.concept_bank import ConceptBank, write_npz_deterministic
from lvm_serving.contracts.metrics import NUM_LANES
from lvm_serving.predictor import HIT_KS, Predictor, hits

EVAL_FORMAT = "lvm-eval-set"
EVAL_FORMAT_VERSION = 1


@dataclass(frozen=True)
class WorldSpec:
    d_model: int = 768
    orbits_per_lane: int = 2
    orbit_length: int = 16
    latent_dim: int = 16  # even
    lane_weight: float = 0.5  # cosine of a concept with its lane centre
    noise: float = 0.1  # probability that a chain step jumps to a random concept of its lane
    seed: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class SyntheticWorld:
    """Concepts ``index = (lane * orbits_per_lane + orbit) * orbit_length + position``; the
    concept id equals its index."""

    def __init__(self, spec: WorldSpec | None = None) -> None:
        spec = spec or WorldSpec()
        if spec.latent_dim % 2 or spec.latent_dim < 2:
            raise ValueError(f"latent_dim must be even and >= 2, got {spec.latent_dim}")
        if spec.d_model < NUM_LANES + spec.latent_dim:
            raise ValueError(
                f"d_model {spec.d_model} is too small: the world needs {NUM_LANES} lane "
                f"directions + latent_dim {spec.latent_dim}"
            )
        if not 0 < spec.lane_weight < 1 or not 0 <= spec.noise <= 1:
            raise ValueError("lane_weight must be in (0, 1) and noise in [0, 1]")
        self.spec = spec
        rng = np.random.default_rng(spec.seed)
        d, k, m, o = spec.d_model, spec.latent_dim, spec.orbit_length, spec.orbits_per_lane
        basis, _ = np.linalg.qr(rng.standard_normal((d, NUM_LANES + k)))
        self.centres = basis[:, :NUM_LANES].T  # [L, D]
        self.latent_basis = basis[:, NUM_LANES:]  # [D, k]

        coprime = [p for p in range(1, m) if math.gcd(p, m) == 1] or [1]
        periods = rng.permutation(np.resize(coprime, k // 2))
        rotation = np.zeros((k, k))
        for block, p in enumerate(periods):
            angle = 2 * math.pi * int(p) / m
            c, s = math.cos(angle), math.sin(angle)
            rotation[2 * block : 2 * block + 2, 2 * block : 2 * block + 2] = [[c, -s], [s, c]]
        self.rotation = rotation

        seeds = rng.standard_normal((NUM_LANES, o, k))
        seeds /= np.linalg.norm(seeds, axis=-1, keepdims=True)
        latents = np.empty((NUM_LANES, o, m, k))
        latents[:, :, 0] = seeds
        for j in range(1, m):
            latents[:, :, j] = latents[:, :, j - 1] @ rotation.T
        a = spec.lane_weight
        b = math.sqrt(1 - a * a)
        vectors = (
            a * self.centres[:, None, None, :]
            + b * np.einsum("lojk,dk->lojd", latents, self.latent_basis)
        )
        self.vectors = vectors.reshape(-1, d).astype(np.float32)
        self.vectors /= np.linalg.norm(self.vectors, axis=1, keepdims=True)
        n = self.vectors.shape[0]
        self.ids = np.arange(n, dtype=np.int64)
        self.lanes = np.repeat(np.arange(NUM_LANES), o * m).astype(np.int64)
        index = np.arange(n).reshape(NUM_LANES, o, m)
        self.successor = np.roll(index, -1, axis=2).reshape(-1)  # concept -> next on its orbit
        self.texts = [
            f"lane{lane:02d}/orbit{orbit}/step{step:02d}"
            for lane in range(NUM_LANES) for orbit in range(o) for step in range(m)
        ]

    @property
    def num_concepts(self) -> int:
        return int(self.ids.shape[0])

    def bank(self, device: str | torch.device = "cpu") -> ConceptBank:
        return ConceptBank(
            self.ids, self.vectors, self.lanes, self.texts, device=device, source="<synthetic>"
        )

    def concept(self, lane: Any, orbit: Any, position: Any) -> Any:
        spec = self.spec
        return (lane * spec.orbits_per_lane + orbit) * spec.orbit_length + position

    def sample(
        self, rng: np.random.Generator, n: int, context_length: int,
        lanes: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``n`` chains: ``(context index [n, T], target index [n], lanes [n])``."""
        spec = self.spec
        lane = rng.integers(NUM_LANES, size=n) if lanes is None else np.asarray(lanes)
        orbit = rng.integers(spec.orbits_per_lane, size=n)
        pos = rng.integers(spec.orbit_length, size=n)
        seq = np.empty((n, context_length + 1), dtype=np.int64)
        for t in range(context_length + 1):
            seq[:, t] = self.concept(lane, orbit, pos)
            jump = rng.random(n) < spec.noise
            orbit = np.where(jump, rng.integers(spec.orbits_per_lane, size=n), orbit)
            pos = np.where(jump, rng.integers(spec.orbit_length, size=n),
                           (pos + 1) % spec.orbit_length)
        return seq[:, :-1], seq[:, -1], lane.astype(np.int64)


def one_hot_tmd(lanes: np.ndarray) -> np.ndarray:
    tmd = np.zeros((len(lanes), NUM_LANES), dtype=np.float32)
    tmd[np.arange(len(lanes)), lanes] = 1.0
    return tmd


# --------------------------------------------------------------------------------------------
# Eval sets


class EvalSetError(ArtifactError):
    pass


@dataclass
class EvalSet:
    context_ids: np.ndarray  # int64 [N, T]
    target_ids: np.ndarray  # int64 [N]
    lanes: np.ndarray  # int64 [N]
    tmd: np.ndarray  # float32 [N, 16]
    bank_sha256: str = ""
    sha256: str = ""  # digest of the file it was loaded from ("" when generated in memory)

    def __len__(self) -> int:
        return int(self.target_ids.shape[0])

    @property
    def context_length(self) -> int:
        return int(self.context_ids.shape[1])

    @classmethod
    def generate(
        cls, world: SyntheticWorld, n: int, context_length: int, *, seed: int,
        bank_sha256: str = "",
    ) -> EvalSet:
        """``n`` sequences, lanes balanced (round robin), from the random stream ``seed``."""
        rng = np.random.default_rng([seed, 0xE7A1])
        lanes = np.arange(n) % NUM_LANES
        ctx, target, lanes = world.sample(rng, n, context_length, lanes=lanes)
        return cls(world.ids[ctx], world.ids[target], lanes, one_hot_tmd(lanes), bank_sha256)

    def save(self, path: str | os.PathLike[str]) -> str:
        arrays = {
            "format": np.asarray(EVAL_FORMAT),
            "format_version": np.asarray(EVAL_FORMAT_VERSION, dtype=np.int64),
            "context_ids": self.context_ids.astype(np.int64),
            "target_ids": self.target_ids.astype(np.int64),
            "lanes": self.lanes.astype(np.int64),
            "tmd": self.tmd.astype(np.float32),
            "bank_sha256": np.asarray(self.bank_sha256),
        }
        atomic_write(Path(path), lambda tmp: write_npz_deterministic(tmp, arrays))
        return write_sha256_sidecar(path)

    @classmethod
    def load(cls, uri: str | os.PathLike[str], sha256: str | None = None) -> EvalSet:
        path, f, digest = open_verified(uri, sha256, what="eval set")
        with f:
            data = f.read()
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
            arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise EvalSetError(f"eval set {path}: not a readable .npz ({exc})",
                               path=str(path)) from exc
        need = ("context_ids", "target_ids", "lanes", "tmd")
        missing = [name for name in need if name not in arrays]
        if missing or str(arrays.get("format", EVAL_FORMAT)) != EVAL_FORMAT:
            raise EvalSetError(
                f"eval set {path}: missing array(s) {missing} or wrong format; see "
                "lvm_serving.synthetic for the eval set format",
                path=str(path),
            )
        n = arrays["target_ids"].shape[0]
        if (
            arrays["context_ids"].ndim != 2 or arrays["context_ids"].shape[0] != n
            or arrays["lanes"].shape != (n,) or arrays["tmd"].shape != (n, NUM_LANES)
        ):
            raise EvalSetError(f"eval set {path}: arrays disagree on shapes", path=str(path))
        return cls(
            arrays["context_ids"].astype(np.int64), arrays["target_ids"].astype(np.int64),
            arrays["lanes"].astype(np.int64), arrays["tmd"].astype(np.float32),
            str(arrays.get("bank_sha256", "")), digest,
        )


def evaluate(predictor: Predictor, eval_set: EvalSet, *, batch_size: int = 128) -> dict[str, Any]:
    """Hit@1/5/10 (exact and proxy), empty-hit and NaN rates, mean cosine; overall and per lane.

    NaN/Inf predictions count as misses (and in ``nan_rate``)."""
    bank = predictor.bank
    # Keep a batch's context tensor near 64 MiB however long the contexts are.
    batch_size = max(1, min(batch_size, (1 << 24) // (eval_set.context_length * bank.dim)))
    columns: dict[str, list[np.ndarray]] = {}
    for start in range(0, len(eval_set), batch_size):
        sl = slice(start, start + batch_size)
        ctx = bank.vectors_for(eval_set.context_ids[sl])
        p = predictor.predict(ctx, eval_set.tmd[sl], k=max(HIT_KS))
        clicked = bank.vectors_for(eval_set.target_ids[sl]).cpu().numpy()
        row = hits(p.vectors, p.ids, eval_set.target_ids[sl], clicked)
        with np.errstate(invalid="ignore"):
            row["cosine"] = (p.vectors * clicked).sum(axis=1)
        row["empty_hit"] = p.empty_hit
        row["nan"] = ~p.finite
        for name, values in row.items():
            columns.setdefault(name, []).append(np.asarray(values))
    table = {name: np.concatenate(parts) for name, parts in columns.items()}

    def summary(mask: np.ndarray) -> dict[str, Any]:
        out: dict[str, Any] = {"n": int(mask.sum())}
        for k in HIT_KS:
            out[f"hit@{k}"] = float(table[f"hit@{k}_exact"][mask].mean())
        for k in HIT_KS:
            out[f"hit@{k}_proxy"] = float(table[f"hit@{k}_proxy"][mask].mean())
        out["empty_hit_rate"] = float(table["empty_hit"][mask].mean())
        out["nan_rate"] = float(table["nan"][mask].mean())
        finite = mask & np.isfinite(table["cosine"])
        out["mean_cosine"] = float(table["cosine"][finite].mean()) if finite.any() else None
        return out

    result: dict[str, Any] = summary(np.ones(len(eval_set), dtype=bool))
    result["per_lane"] = {
        str(lane): summary(eval_set.lanes == lane)
        for lane in range(NUM_LANES) if (eval_set.lanes == lane).any()
    }
    return result
