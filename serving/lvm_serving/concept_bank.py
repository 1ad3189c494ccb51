"""The concept bank: concept ids, unit vectors and TMD lanes, with top-K cosine search (torch).

File format (``format_version`` 1): one NumPy ``.npz`` archive, read with ``allow_pickle=False``
(so it cannot carry code), holding these named arrays:

===============  ================  ==========================================================
name             dtype, shape      meaning
===============  ================  ==========================================================
format           str, scalar       ``"lvm-concept-bank"``
format_version   int, scalar       ``1``
ids              int64, [N]        concept ids, unique (what clients get back and click)
vectors          float32, [N, D]   concept vectors (float16/float64 accepted and cast)
lanes            int, [N]          TMD lane of each concept, 0..15
texts            str, [N]          optional: a label per concept
===============  ================  ==========================================================

Vectors are **normalised on load**: search is by cosine, so only directions matter, and the
proxies compare unit vectors. A row that cannot be normalised (zero, NaN or Inf) is rejected
with :class:`ConceptBankError` naming the first bad row; ``renormalised`` counts the rows whose
norm was off by more than 1e-3 (a hint that the producer did not normalise).

:meth:`ConceptBank.save` writes the archive byte-for-byte deterministically (fixed zip
timestamps), so the same bank always has the same sha256, and a ``<file>.sha256`` sidecar.
:meth:`ConceptBank.load` takes a ``file://`` URI or a path and an optional expected sha256
(verified streaming, as for checkpoints); its errors are
:class:`~lvm_serving.artifacts.ArtifactError` subclasses naming the file and what to do.

Search is a matrix product of unit vectors on the bank's device (CPU or GPU) followed by
``topk``: ``search(queries [B, D], k) -> (ids [B, k], sims [B, k])``, most similar first.
"""

from __future__ import annotations

import io
import os
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from lvm_serving.artifacts import ArtifactError, atomic_write, open_verified, write_sha256_sidecar
from lvm_serving.contracts.metrics import NUM_LANES

FORMAT = "lvm-concept-bank"
FORMAT_VERSION = 1
UNIT_TOLERANCE = 1e-3


class ConceptBankError(ArtifactError):
    """The bank file is not a valid concept bank (missing arrays, wrong shapes, bad values)."""


class UnknownConceptError(KeyError):
    """A concept id that is not in the bank (e.g. a feedback click on a foreign id)."""

    def __init__(self, ids: Sequence[int]) -> None:
        self.ids = list(ids)
        super().__init__(f"unknown concept id(s): {self.ids[:10]}")


def _as_tensor_2d(queries: Any, dim: int, device: torch.device) -> Tensor:
    q = torch.as_tensor(queries, dtype=torch.float32, device=device)
    if q.dim() == 1:
        q = q.unsqueeze(0)
    if q.dim() != 2 or q.shape[1] != dim:
        raise ValueError(f"queries must be [batch, {dim}], got {tuple(q.shape)}")
    return q


class ConceptBank:
    """Concepts held in memory: ``ids`` and ``lanes`` as NumPy, ``vectors`` as a torch tensor on
    ``device`` (unit rows, float32)."""

    def __init__(
        self,
        ids: Any,
        vectors: Any,
        lanes: Any,
        texts: Sequence[str] | None = None,
        *,
        device: str | torch.device = "cpu",
        source: str = "<memory>",
    ) -> None:
        self.source = source
        self.sha256: str | None = None  # the file's digest when loaded from one
        ids = np.asarray(ids)
        lanes = np.asarray(lanes)
        vectors = np.asarray(vectors)
        if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
            raise self._error(f"'ids' must be a 1-D integer array, got {ids.dtype} {ids.shape}")
        n = ids.shape[0]
        if n == 0:
            raise self._error("the bank holds no concepts")
        if vectors.ndim != 2 or vectors.shape[0] != n:
            raise self._error(f"'vectors' must be [N={n}, D], got {vectors.shape}")
        if not np.issubdtype(vectors.dtype, np.floating):
            raise self._error(f"'vectors' must be floating point, got {vectors.dtype}")
        if lanes.shape != (n,) or not np.issubdtype(lanes.dtype, np.integer):
            raise self._error(f"'lanes' must be an integer array [N={n}], got {lanes.dtype} "
                              f"{lanes.shape}")
        bad_lane = np.flatnonzero((lanes < 0) | (lanes >= NUM_LANES))
        if bad_lane.size:
            i = int(bad_lane[0])
            raise self._error(f"lane {int(lanes[i])} of row {i} is outside 0..{NUM_LANES - 1}")
        uniq, counts = np.unique(ids, return_counts=True)
        if uniq.size != n:
            raise self._error(f"ids are not unique, e.g. {uniq[counts > 1][:5].tolist()}")
        if texts is not None and len(texts) != n:
            raise self._error(f"'texts' has {len(texts)} entries for {n} concepts")

        vecs = vectors.astype(np.float32, copy=False)
        norms = np.linalg.norm(vecs.astype(np.float64), axis=1)
        bad = np.flatnonzero(~np.isfinite(norms) | (norms < 1e-12))
        if bad.size:
            raise self._error(
                f"row {int(bad[0])} (id {int(ids[bad[0]])}) has a zero or non-finite vector; "
                f"{bad.size} such row(s) in all. Remove or fix them before building the bank."
            )
        self.renormalised = int(np.count_nonzero(np.abs(norms - 1.0) > UNIT_TOLERANCE))
        vecs = (vecs / norms[:, None]).astype(np.float32)

        self.ids = ids.astype(np.int64)
        self.lanes = lanes.astype(np.int64)
        self.texts = None if texts is None else [str(t) for t in texts]
        self._order = np.argsort(self.ids, kind="stable")
        self._sorted_ids = self.ids[self._order]
        self.device = torch.device(device)
        self.vectors = torch.from_numpy(vecs).to(self.device)
        self._ids_t = torch.from_numpy(self.ids).to(self.device)

    def _error(self, message: str) -> ConceptBankError:
        return ConceptBankError(
            f"concept bank {self.source}: {message}. See lvm_serving.concept_bank for the format.",
            path=self.source,
        )

    # ---- properties ------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.ids.shape[0])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    def to(self, device: str | torch.device) -> ConceptBank:
        """Move the vectors (in place) to ``device``; returns self."""
        self.device = torch.device(device)
        self.vectors = self.vectors.to(self.device)
        self._ids_t = self._ids_t.to(self.device)
        return self

    # ---- lookup ----------------------------------------------------------------------------

    def index_of(self, ids: Any) -> np.ndarray:
        """Row indices of concept ids (any shape); raises :class:`UnknownConceptError`."""
        ids = np.asarray(ids, dtype=np.int64)
        pos = np.clip(np.searchsorted(self._sorted_ids, ids), 0, len(self) - 1)
        found = np.asarray(self._sorted_ids[pos] == ids)
        if not found.all():
            raise UnknownConceptError(np.unique(ids[~found]).tolist())
        return np.asarray(self._order[pos])

    def contains(self, concept_id: int) -> bool:
        try:
            self.index_of([concept_id])
        except UnknownConceptError:
            return False
        return True

    def vectors_for(self, ids: Any) -> Tensor:
        """Unit vectors of concept ids: ``[..., D]`` on the bank's device."""
        index = torch.from_numpy(self.index_of(ids)).to(self.device)
        return self.vectors[index]

    def lanes_for(self, ids: Any) -> np.ndarray:
        return self.lanes[self.index_of(ids)]

    def text_for(self, concept_id: int) -> str | None:
        if self.texts is None:
            return None
        return self.texts[int(self.index_of([concept_id])[0])]

    # ---- search ----------------------------------------------------------------------------

    def search_tensor(self, queries: Tensor, k: int = 10) -> tuple[Tensor, Tensor]:
        """Top-``k`` by cosine on the bank's device: ``(ids int64 [B, k], sims float32 [B, k])``,
        most similar first. Queries are normalised here; a query with NaN/Inf gives NaN sims
        (callers should drop non-finite predictions first). ``k`` is capped at the bank size."""
        q = _as_tensor_2d(queries, self.dim, self.device)
        q = torch.nn.functional.normalize(q, dim=-1)
        sims = q @ self.vectors.t()
        k = max(1, min(int(k), len(self)))
        top_sims, top_index = torch.topk(sims, k, dim=-1)
        return self._ids_t[top_index], top_sims

    def search(self, queries: Any, k: int = 10) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search_tensor` with NumPy results on the CPU."""
        ids, sims = self.search_tensor(queries, k)
        return ids.cpu().numpy(), sims.cpu().numpy()

    # ---- files -----------------------------------------------------------------------------

    def save(self, path: str | os.PathLike[str]) -> str:
        """Write the bank (deterministic bytes) and ``<path>.sha256``; return the sha256."""
        path = Path(path)
        arrays: dict[str, np.ndarray] = {
            "format": np.asarray(FORMAT),
            "format_version": np.asarray(FORMAT_VERSION, dtype=np.int64),
            "ids": self.ids,
            "vectors": self.vectors.cpu().numpy().astype(np.float32),
            "lanes": self.lanes,
        }
        if self.texts is not None:
            arrays["texts"] = np.asarray(self.texts, dtype=str)
        atomic_write(path, lambda tmp: write_npz_deterministic(tmp, arrays))
        return write_sha256_sidecar(path)

    @classmethod
    def load(
        cls,
        uri: str | os.PathLike[str],
        sha256: str | None = None,
        *,
        device: str | torch.device = "cpu",
    ) -> ConceptBank:
        """Load and verify a bank file (see the module docstring for the format)."""
        path, f, digest = open_verified(uri, sha256, what="concept bank",
                                        hint="spec.conceptBank.uri")
        with f:
            data = f.read()
        try:
            npz = np.load(io.BytesIO(data), allow_pickle=False)
            arrays = {name: npz[name] for name in npz.files}
        except (ValueError, OSError, zipfile.BadZipFile, EOFError) as exc:
            raise ConceptBankError(
                f"concept bank {path}: not a readable .npz archive without pickles ({exc}). "
                "Re-copy it, check its sha256, or rebuild it with ConceptBank.save.",
                path=str(path),
            ) from exc
        fmt = str(arrays["format"]) if "format" in arrays else None
        if fmt is not None and fmt != FORMAT:
            raise ConceptBankError(
                f"concept bank {path}: format {fmt!r} is not {FORMAT!r}", path=str(path)
            )
        version = int(arrays["format_version"]) if "format_version" in arrays else FORMAT_VERSION
        if version != FORMAT_VERSION:
            raise ConceptBankError(
                f"concept bank {path}: format_version {version} is not supported (this code "
                f"reads {FORMAT_VERSION}); rebuild it with this version's ConceptBank.save",
                path=str(path),
            )
        missing = [name for name in ("ids", "vectors", "lanes") if name not in arrays]
        if missing:
            raise ConceptBankError(
                f"concept bank {path}: missing array(s) {missing} (has {sorted(arrays)}). A bank "
                "needs ids [N], vectors [N, D] and lanes [N]; see lvm_serving.concept_bank.",
                path=str(path),
            )
        texts = arrays.get("texts")
        bank = cls(
            arrays["ids"], arrays["vectors"], arrays["lanes"],
            None if texts is None else texts.tolist(),
            device=device, source=str(path),
        )
        bank.sha256 = digest  # what was loaded, so eval sets can be checked against it
        return bank


def write_npz_deterministic(path: str | os.PathLike[str], arrays: dict[str, np.ndarray]) -> None:
    """Like ``np.savez`` but with fixed zip timestamps and member order: same arrays, same bytes."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in sorted(arrays):
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o644 << 16
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.asarray(arrays[name]), allow_pickle=False)
            archive.writestr(info, buffer.getvalue())
