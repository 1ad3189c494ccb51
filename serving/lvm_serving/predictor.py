"""One model version ready to serve: checkpoint + concept bank -> ``predict(context, tmd)``.

A Serve deployment per model version does, once per replica::

    predictor = Predictor.load(checkpoint_uri, checkpoint_sha256, bank_uri, bank_sha256)
    predictor.warmup(context_length)

and per request (or per batch of requests with the same context length)::

    p = predictor.predict(context, tmd, k=10)
    p.vectors, p.ids, p.sims      # [B, D] predictions, [B, k] concept ids and cosines
    p.finite                      # False where the model produced NaN/Inf: an error, not an answer
    p.empty_hit                   # best similarity < EMPTY_HIT_SIMILARITY
    p.lanes                       # arg-max lane of each TMD vector (-1 without one)

:func:`hits` is the one definition of Hit@K used both offline (the train command's eval) and
online (click feedback): *exact* — the clicked concept is among the first k retrieved ids;
*proxy* — cosine(prediction, clicked concept) above the seed's threshold for k
(:data:`~lvm_serving.contracts.metrics.HIT_PROXY_COSINE`).

It sits beside :mod:`lvm_serving.checkpoints` and :mod:`lvm_serving.concept_bank`, not inside
:mod:`lvm_serving.models`: it joins a model with the files it is loaded from, and the model
families below it import nothing of the rest of serving.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from lvm_serving.checkpoints import LoadedCheckpoint, load_checkpoint, resolve_device
from lvm_serving.concept_bank import ConceptBank
from lvm_serving.contracts.metrics import EMPTY_HIT_SIMILARITY, HIT_PROXY_COSINE
from lvm_serving.models.base import TMD_DIM, ConfigError, InputError, LVMModel, lanes_of_tmd

HIT_KS: tuple[int, ...] = tuple(sorted(HIT_PROXY_COSINE))  # (1, 5, 10)


@dataclass(frozen=True)
class Prediction:
    vectors: np.ndarray  # float32 [B, D]; NaN/Inf rows where the model failed
    ids: np.ndarray  # int64 [B, k], most similar first; -1 on non-finite rows
    sims: np.ndarray  # float32 [B, k] cosine similarities; NaN on non-finite rows
    finite: np.ndarray  # bool [B]
    lanes: np.ndarray  # int64 [B]; -1 when no TMD vector was given
    model_s: float = 0.0  # input checks + forward pass (on a GPU the split with retrieval is
    retrieval_s: float = 0.0  # approximate: kernels are asynchronous; the sum is exact)

    @property
    def best_similarity(self) -> np.ndarray:
        return self.sims[:, 0]

    @property
    def empty_hit(self) -> np.ndarray:
        """Finite predictions whose best concept similarity is below the empty-hit threshold."""
        return self.finite & (np.nan_to_num(self.sims[:, 0], nan=1.0) < EMPTY_HIT_SIMILARITY)


def hits(
    predictions: Any, topk_ids: Any, clicked_ids: Any, clicked_vectors: Any
) -> dict[str, np.ndarray]:
    """Hit@K for clicks: ``{"hit@{k}_exact": bool [B], "hit@{k}_proxy": bool [B]}`` for k in
    1, 5, 10. Non-finite predictions are misses. ``topk_ids`` needs at least 10 columns for an
    honest Hit@10 (fewer columns only under-count)."""
    pred = np.asarray(predictions, dtype=np.float64)
    clicked = np.asarray(clicked_vectors, dtype=np.float64)
    if pred.ndim == 1:
        pred, clicked = pred[None], clicked[None]
    topk = np.asarray(topk_ids, dtype=np.int64).reshape(pred.shape[0], -1)
    target = np.asarray(clicked_ids, dtype=np.int64).reshape(-1, 1)
    denom = np.linalg.norm(pred, axis=1) * np.linalg.norm(clicked, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        cosine = (pred * clicked).sum(axis=1) / denom
    finite = np.isfinite(cosine)
    out: dict[str, np.ndarray] = {}
    for k in HIT_KS:
        out[f"hit@{k}_exact"] = finite & (topk[:, :k] == target).any(axis=1)
        out[f"hit@{k}_proxy"] = finite & (np.nan_to_num(cosine, nan=-2.0) > HIT_PROXY_COSINE[k])
    return out


class Predictor:
    """A model (eval mode) and a concept bank on one device."""

    def __init__(
        self,
        model: LVMModel,
        bank: ConceptBank,
        *,
        device: str | torch.device | None = None,
        checkpoint: LoadedCheckpoint | None = None,
    ) -> None:
        if bank.dim != model.d_model:
            raise ConfigError(
                f"concept bank {bank.source} has {bank.dim}-d vectors but the {model.family} "
                f"model predicts {model.d_model}-d ones; use the bank the model was trained with"
            )
        self.device = resolve_device(device) if device is not None else next(
            model.parameters()
        ).device
        self.model = model.eval().to(self.device)
        self.bank = bank.to(self.device) if bank.device != self.device else bank
        self.checkpoint = checkpoint

    @classmethod
    def load(
        cls,
        checkpoint_uri: str,
        checkpoint_sha256: str | None,
        bank: ConceptBank | str,
        bank_sha256: str | None = None,
        *,
        device: str | torch.device | None = "auto",
        expected_family: str | None = None,
    ) -> Predictor:
        """Load a checkpoint and a bank (or share an already loaded bank) on ``device``."""
        dev = resolve_device(device)
        loaded = load_checkpoint(
            checkpoint_uri, checkpoint_sha256, device=dev, expected_family=expected_family
        )
        if not isinstance(bank, ConceptBank):
            bank = ConceptBank.load(bank, bank_sha256, device=dev)
        return cls(loaded.model, bank, device=dev, checkpoint=loaded)

    @property
    def family(self) -> str:
        return self.model.family

    @property
    def d_model(self) -> int:
        return self.model.d_model

    # ---- inputs ----------------------------------------------------------------------------

    def _context(self, context: Any) -> Tensor:
        try:
            if isinstance(context, np.ndarray) and not context.flags.writeable:
                with warnings.catch_warnings():
                    # A context straight from a request body is a read-only view of its bytes
                    # (no copy); the model never writes to its input.
                    warnings.filterwarnings("ignore", message="The given NumPy array is not")
                    x = torch.as_tensor(context, dtype=torch.float32, device=self.device)
            else:
                x = torch.as_tensor(context, dtype=torch.float32, device=self.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"context is not a numeric array: {exc}") from None
        if x.dim() == 2:
            x = x.unsqueeze(0)
        if x.dim() != 3 or x.shape[-1] != self.d_model or x.shape[1] < 1:
            raise InputError(
                f"context must be [length, {self.d_model}] or [batch, length, {self.d_model}] "
                f"with length >= 1, got {tuple(x.shape)}"
            )
        if not torch.isfinite(x).all():
            raise InputError("context holds NaN or Inf values")
        return x

    def _tmd(self, tmd: Any, batch: int) -> Tensor | None:
        if tmd is None:
            return None
        try:
            t = torch.as_tensor(tmd, dtype=torch.float32, device=self.device)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InputError(f"tmd is not a numeric array: {exc}") from None
        if t.dim() == 1:
            t = t.unsqueeze(0)
        if t.shape != (batch, TMD_DIM):
            raise InputError(f"tmd must be [{TMD_DIM}] or [batch={batch}, {TMD_DIM}], got "
                             f"{tuple(t.shape)}")
        if not torch.isfinite(t).all():
            raise InputError("tmd holds NaN or Inf values")
        return t

    # ---- inference -------------------------------------------------------------------------

    def predict_tensor(self, context: Any, tmd: Any = None) -> Tensor:
        """The model's predictions ``[B, D]`` on the device (no retrieval)."""
        x = self._context(context)
        t = self._tmd(tmd, x.shape[0])
        with torch.inference_mode():
            return self.model(x, t)

    def predict(self, context: Any, tmd: Any = None, k: int = 10) -> Prediction:
        """Predict the next concept vector and retrieve the top-``k`` concepts.

        ``context``: ``[T, D]`` or ``[B, T, D]`` (array-like); ``tmd``: ``[16]``, ``[B, 16]`` or
        None. Raises :class:`~lvm_serving.models.InputError` (a client error) for bad inputs.
        """
        began = time.perf_counter()
        x = self._context(context)
        t = self._tmd(tmd, x.shape[0])
        with torch.inference_mode():
            vectors = self.model(x, t)
            delay = self.model.faults.extra_latency_ms
            if delay:  # FAULT INJECTION (latency guardrail tests): counted as model time
                time.sleep(delay / 1000.0)
            modelled = time.perf_counter()
            finite = torch.isfinite(vectors).all(dim=-1)
            safe = torch.where(finite.unsqueeze(-1), vectors, torch.zeros_like(vectors))
            ids, sims = self.bank.search_tensor(safe, k)
            ids = torch.where(finite.unsqueeze(-1), ids, torch.full_like(ids, -1))
            sims = torch.where(finite.unsqueeze(-1), sims, torch.full_like(sims, float("nan")))
            lanes = (
                lanes_of_tmd(t) if t is not None
                else torch.full((x.shape[0],), -1, dtype=torch.int64, device=self.device)
            )
        arrays = (vectors.float().cpu().numpy(), ids.cpu().numpy(), sims.float().cpu().numpy(),
                  finite.cpu().numpy(), lanes.cpu().numpy())
        return Prediction(*arrays, model_s=modelled - began,
                          retrieval_s=time.perf_counter() - modelled)

    def warmup(self, context_length: int, batch: int = 1) -> None:
        """Run one prediction so the first real request does not pay for lazy initialisation."""
        x = F.normalize(torch.randn(batch, context_length, self.d_model), dim=-1)
        tmd = torch.zeros(batch, TMD_DIM)
        tmd[:, 0] = 1.0
        self.predict(x, tmd)
