"""Saving and safely loading LVM checkpoints, verified by sha256.

Formats read by :func:`load_checkpoint`:

1. **lvm-rollout checkpoint, format_version 1** (written by :func:`save_checkpoint`): a
   ``torch.save`` of plain containers only::

       {"format": "lvm-rollout-checkpoint", "format_version": 1,
        "family": "memory_gru",                  # a name in lvm_serving.models.FAMILIES
        "config": {...},                         # the family's sizes (FamilyConfig.to_dict())
        "faults": {...},                         # FAULT INJECTION switches (tests only), see
                                                 #   lvm_serving.models.FaultInjection
        "state_dict": {name: Tensor},
        "metrics": {...},                        # training/eval metrics (numbers, strings, dicts)
        "meta": {...}}                           # provenance: version, context_length, seed, ...

2. The same content as **safetensors** (file name ending in ``.safetensors``): the tensors are the
   state dict; the header's ``__metadata__`` holds ``format``, ``format_version`` (as a string),
   ``family`` and ``payload``: the JSON of ``{"config", "faults", "metrics", "meta"}``.

3. **The seed project's checkpoints** (``best_val_hit5.pt``): a dict with ``model_state_dict``,
   ``args``, ``val_results``, ``epoch`` and ``model_type`` (``"memory_gru"``), without sizes: the
   model is rebuilt with the family's default (seed) sizes. ``args`` may be an
   ``argparse.Namespace``, which is allowlisted for the safe unpickler (it only carries attributes).

Loading is always ``torch.load(weights_only=True, map_location="cpu")`` (then moved to the
device): a pickle that needs arbitrary code is refused with :class:`UnsafeCheckpointError`. The
sha256 is computed streaming, from the same open file that is then loaded.

Finding the file (URIs), verifying its sha256 and writing it atomically are
:mod:`lvm_serving.artifacts`' job, shared with the concept bank and the eval sets; so are the
errors about the *file* (not found, bad URI, wrong digest). The errors about its *content* are
here (all :class:`CheckpointError`, an :class:`~lvm_serving.artifacts.ArtifactError`; each
message names the file and what to do)::

    CheckpointError
    ├── UnsafeCheckpointError          weights_only refused the pickle
    ├── CorruptCheckpointError         not a readable torch/safetensors file
    ├── UnknownFormatError             neither format above
    ├── CheckpointConfigError          sizes/faults the family does not accept
    ├── UnknownCheckpointFamilyError   family not registered (also a models.UnknownFamilyError)
    ├── StateDictMismatchError         missing / unexpected tensors
    └── ShapeMismatchError             .tensor, .expected, .got

(A little over 400 lines: the three readers, the payload normalisation and the state-dict checks
are one path from file to model and are read together.)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import torch

from lvm_serving.artifacts import ArtifactError, atomic_write, open_verified, write_sha256_sidecar
from lvm_serving.contracts.serve_config import ALLOW_FAULT_INJECTION_ENV
from lvm_serving.models import (
    FamilyConfig,
    FaultInjection,
    LVMModel,
    ModelError,
    UnknownFamilyError,
    build_model,
    family_class,
    known_families,
    make_config,
)

FORMAT = "lvm-rollout-checkpoint"
FORMAT_VERSION = 1
SEED_FORMAT = "seed"
SAFETENSORS_SUFFIX = ".safetensors"
#: The seed's ``model_type`` -> our family: the seed's hierarchical_gru is its 10 x 10 network,
#: not the plan's 5 x 200 design that our ``hierarchical_gru`` implements.
SEED_MODEL_TYPES = {"memory_gru": "memory_gru", "hierarchical_gru": "seed_hierarchical_gru"}
#: The most numbers (parameters and buffers) a checkpoint's config may declare: ~4 GiB of
#: float32, 350x the seed's 11.3 M. Checked on the meta device, before anything is allocated.
MAX_MODEL_ELEMENTS = 1 << 30
ALLOW_FAULTS_ENV = ALLOW_FAULT_INJECTION_ENV  # honoured only where set: tests and the demo


def faults_allowed() -> bool:
    return os.environ.get(ALLOW_FAULTS_ENV, "").strip().lower() in {"1", "true", "yes"}

# --------------------------------------------------------------------------------------------
# Errors


class CheckpointError(ArtifactError):
    pass


class UnsafeCheckpointError(CheckpointError):
    pass


class CorruptCheckpointError(CheckpointError):
    pass


class UnknownFormatError(CheckpointError):
    pass


class CheckpointConfigError(CheckpointError, ValueError):
    pass


class UnknownCheckpointFamilyError(CheckpointError, UnknownFamilyError):
    def __init__(self, family: str, *, path: str) -> None:
        UnknownFamilyError.__init__(self, family, known_families())
        known = ", ".join(known_families())
        self.args = (
            f"checkpoint {path}: unknown model family {family!r}; known families: {known}. "
            "Fix the family in the checkpoint (or the rollout spec), or register the family in "
            "lvm_serving.models.FAMILIES.",
        )
        self.path = path


class StateDictMismatchError(CheckpointError):
    def __init__(self, message: str, *, path: str, missing: list[str], unexpected: list[str]):
        super().__init__(message, path=path)
        self.missing = missing
        self.unexpected = unexpected


class ShapeMismatchError(CheckpointError):
    def __init__(
        self, message: str, *, path: str, tensor: str, expected: tuple[int, ...],
        got: tuple[int, ...],
    ) -> None:
        super().__init__(message, path=path)
        self.tensor = tensor
        self.expected = expected
        self.got = got


# --------------------------------------------------------------------------------------------
# Saving


def _plain(value: Any) -> Any:
    """Plain containers of plain values (safe for weights_only and for JSON)."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):
        return _plain(value.tolist())  # numpy arrays and scalars
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def save_checkpoint(
    path: str | os.PathLike[str],
    model: LVMModel,
    *,
    metrics: Mapping[str, Any] | None = None,
    meta: Mapping[str, Any] | None = None,
) -> str:
    """Write ``model`` (family, sizes, fault switches, weights) and ``<path>.sha256``.

    A path ending in ``.safetensors`` writes the safetensors variant. Returns the sha256 hex.
    """
    path = Path(path)
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    head = {
        "config": model.config.to_dict(),
        "faults": model.faults.to_dict(),
        "metrics": _plain(dict(metrics or {})),
        "meta": _plain(dict(meta or {})),
    }
    if path.name.endswith(SAFETENSORS_SUFFIX):
        from safetensors.torch import save_file

        metadata = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "family": model.family,
            "payload": json.dumps(head, sort_keys=True),
        }
        atomic_write(path, lambda tmp: save_file(state, tmp, metadata=metadata))
    else:
        payload = {"format": FORMAT, "format_version": FORMAT_VERSION, "family": model.family,
                   **head, "state_dict": state}
        atomic_write(path, lambda tmp: torch.save(payload, tmp))
    return write_sha256_sidecar(path)


# --------------------------------------------------------------------------------------------
# Loading


@dataclass
class LoadedCheckpoint:
    model: LVMModel  # eval mode, on the requested device
    family: str
    config: FamilyConfig
    faults: FaultInjection
    metrics: dict[str, Any]
    meta: dict[str, Any]
    source_format: str  # "lvm-rollout-checkpoint/1", "safetensors/1" or "seed"
    path: Path
    sha256: str
    extra: dict[str, Any] = field(default_factory=dict)


def _safe_globals() -> list[Any]:
    """Harmless classes the seed's checkpoints may hold, allowed for the weights-only unpickler:
    ``argparse.Namespace`` (its ``args``) and NumPy scalars (its metrics). Neither runs code."""
    import numpy as np

    try:
        from numpy._core.multiarray import scalar
    except ImportError:  # NumPy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    dtypes = [getattr(np.dtypes, n) for n in dir(np.dtypes) if n.endswith("DType")]
    return [
        argparse.Namespace, np.dtype, *dtypes, scalar,
        (scalar, "numpy.core.multiarray.scalar"), (scalar, "numpy._core.multiarray.scalar"),
    ]


#: ``weights_only=True`` is a security boundary only from torch 2.6 (CVE-2025-32434).
MIN_TORCH = (2, 6)


def _torch_version(text: str) -> tuple[int, int]:
    major, minor = [*text.split("+")[0].split("."), "0"][:2]
    return int(major), int("".join(c for c in minor if c.isdigit()) or 0)


def _torch_load(f: BinaryIO, path: Path) -> Any:
    if _torch_version(torch.__version__) < MIN_TORCH:
        raise UnsafeCheckpointError(
            f"checkpoint {path}: torch {torch.__version__} cannot load pickles safely "
            f"(weights_only=True is bypassable before {'.'.join(map(str, MIN_TORCH))}, "
            "CVE-2025-32434); upgrade torch", path=str(path))
    # A zip archive is a real torch checkpoint, so a pickle error there is a refusal; outside a
    # zip (legacy format or junk) only a refused global is, anything else is garbage.
    is_zip = zipfile.is_zipfile(f)
    f.seek(0)
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            return torch.load(f, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if not is_zip and "unsupported global" not in str(exc).lower():
            raise CorruptCheckpointError(
                f"checkpoint {path}: not a readable torch checkpoint ({exc}). The file may be "
                "truncated or not a checkpoint; re-copy it and check its sha256.",
                path=str(path),
            ) from exc
        detail = [
            line.strip().split(" Please ")[0]
            for line in str(exc).splitlines() if "Unsupported" in line
        ]
        raise UnsafeCheckpointError(
            f"checkpoint {path}: refused by torch.load(weights_only=True), which does not run "
            "arbitrary code from a pickle. Re-save it from a trusted environment as plain "
            "containers (lvm_serving.checkpoints.save_checkpoint) or as safetensors."
            + (f" Detail: {detail[0]}" if detail else ""),
            path=str(path),
        ) from exc
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, IndexError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path}: not a readable torch checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). The file may be truncated or "
            "not a checkpoint; re-copy it and check its sha256.",
            path=str(path),
        ) from exc


def _read_safetensors(f: BinaryIO, path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError
    from safetensors.torch import load as st_load

    data = f.read()
    try:
        tensors = st_load(data)
        header_len = int.from_bytes(data[:8], "little")
        header = json.loads(data[8 : 8 + header_len])
    except (SafetensorError, ValueError, json.JSONDecodeError) as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path}: not a readable safetensors file ({exc}). Re-copy it and check "
            "its sha256.",
            path=str(path),
        ) from exc
    metadata = header.get("__metadata__") or {}
    if metadata.get("format") != FORMAT:
        raise UnknownFormatError(
            f"checkpoint {path}: safetensors file without lvm-rollout metadata (format="
            f"{metadata.get('format')!r}); save it with lvm_serving.checkpoints.save_checkpoint",
            path=str(path),
        )
    try:
        payload = json.loads(metadata.get("payload", "{}"))
    except json.JSONDecodeError as exc:
        raise CorruptCheckpointError(
            f"checkpoint {path}: unreadable metadata payload ({exc})", path=str(path)
        ) from exc
    return {
        "format": FORMAT,
        "format_version": int(metadata.get("format_version", "0") or 0),
        "family": metadata.get("family"),
        **payload,
        "state_dict": tensors,
        "_source": f"safetensors/{metadata.get('format_version')}",
    }


def _normalise_payload(obj: Any, path: Path) -> dict[str, Any]:
    if isinstance(obj, Mapping) and obj.get("format") == FORMAT:
        version = obj.get("format_version")
        if version != FORMAT_VERSION:
            raise UnknownFormatError(
                f"checkpoint {path}: format_version {version!r} is not supported (this code "
                f"reads version {FORMAT_VERSION}); re-save it with this version's save_checkpoint",
                path=str(path),
            )
        out = dict(obj)
        out.setdefault("_source", f"{FORMAT}/{version}")
        return out
    if isinstance(obj, Mapping) and "model_state_dict" in obj:
        args = obj.get("args")
        if isinstance(args, argparse.Namespace):
            args = vars(args)
        model_type = str(obj.get("model_type", "memory_gru"))
        return {
            "family": SEED_MODEL_TYPES.get(model_type, model_type),
            "config": {},  # the seed stored no sizes: rebuild with the seed defaults
            "faults": {},
            "state_dict": obj["model_state_dict"],
            "metrics": _plain(obj.get("val_results") or {}),
            "meta": _plain({"epoch": obj.get("epoch"), "args": args or {}}),
            "_source": SEED_FORMAT,
        }
    keys = sorted(map(str, obj)) if isinstance(obj, Mapping) else type(obj).__name__
    raise UnknownFormatError(
        f"checkpoint {path}: unrecognised content {keys}; expected an lvm-rollout checkpoint "
        f"(format={FORMAT!r}) or a seed checkpoint (model_state_dict, model_type, ...)",
        path=str(path),
    )


def _check_state_dict(model: LVMModel, state: Mapping[str, Any], path: Path) -> None:
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise CorruptCheckpointError(
            f"checkpoint {path}: the state dict is not a mapping of tensor names to tensors",
            path=str(path),
        )
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise StateDictMismatchError(
            f"checkpoint {path}: weights do not match the {model.family} model built from its "
            f"config: missing {len(missing)} tensor(s) {missing[:5]}, unexpected "
            f"{len(unexpected)} {unexpected[:5]}. Check the family (and, for seed checkpoints, "
            "that it was trained with the seed's memory_gru).",
            path=str(path), missing=missing, unexpected=unexpected,
        )
    for name, tensor in expected.items():
        if not state[name].is_floating_point():
            raise CheckpointConfigError(
                f"checkpoint {path}: tensor {name!r} is {state[name].dtype}, the {model.family} "
                "model holds floating-point weights only; the file is not a model checkpoint "
                "of this family (re-save it with save_checkpoint)",
                path=str(path),
            )
        got = tuple(state[name].shape)
        if got != tuple(tensor.shape):
            raise ShapeMismatchError(
                f"checkpoint {path}: tensor {name!r} has shape {list(got)}, the {model.family} "
                f"model built from the checkpoint's config expects {list(tensor.shape)}. The "
                "config (sizes) does not match the weights; fix the config or the family.",
                path=str(path), tensor=name, expected=tuple(tensor.shape), got=got,
            )


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None``/``"auto"``: CUDA when available, else CPU."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def load_checkpoint(
    uri: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    device: str | torch.device | None = "cpu",
    expected_family: str | None = None,
    allow_faults: bool | None = None,
) -> LoadedCheckpoint:
    """Load, verify and build a checkpoint; the model comes back in eval mode on ``device``.

    ``sha256`` (hex, optionally ``sha256:``-prefixed) is compared with the file's digest when
    given; serving should always give it. ``expected_family`` (e.g. from the rollout spec) must
    match the checkpoint's family when given. A checkpoint with FAULT INJECTION switches is
    refused unless ``allow_faults`` (default: ``$LVM_ALLOW_FAULT_INJECTION`` is 1/true/yes).
    """
    path, f, actual = open_verified(uri, sha256, what="checkpoint", hint="spec ... checkpoint")
    with f:
        if path.name.endswith(SAFETENSORS_SUFFIX):
            raw = _read_safetensors(f, path)
        else:
            raw = _torch_load(f, path)
    payload = _normalise_payload(raw, path)
    family = str(payload.get("family"))
    try:
        family_class(family)
    except UnknownFamilyError:
        raise UnknownCheckpointFamilyError(family, path=str(path)) from None
    if expected_family is not None and expected_family != family:
        raise CheckpointConfigError(
            f"checkpoint {path} holds a {family!r} model but the spec says {expected_family!r}; "
            "fix the family in the spec or point it at the right checkpoint",
            path=str(path),
        )
    try:
        config = make_config(family, payload.get("config") or {})
        faults = FaultInjection.from_dict(payload.get("faults") or {})
        if faults.active and not (faults_allowed() if allow_faults is None else allow_faults):
            switches = sorted(k for k, v in faults.to_dict().items() if v and k !=
                              "degrade_strength")
            raise CheckpointConfigError(
                f"checkpoint {path} carries FAULT INJECTION switches {switches}, which make the "
                f"model misbehave on purpose (tests only); set {ALLOW_FAULTS_ENV}=1 on the "
                "serving processes to allow them, or serve a checkpoint without them",
                path=str(path))
        with torch.device("meta"):  # sizes first: a config can declare more than memory holds
            probe = build_model(family, config, faults=faults)
    except (ModelError, TypeError) as exc:
        raise CheckpointConfigError(
            f"checkpoint {path}: its {family} config is not usable: {exc}. Re-save it with "
            "save_checkpoint from a model built by lvm_serving.models.build_model.",
            path=str(path),
        ) from exc
    elements = sum(t.numel() for t in probe.state_dict().values())
    if elements > MAX_MODEL_ELEMENTS:
        raise CheckpointConfigError(
            f"checkpoint {path}: its {family} config declares {elements:,} parameters and "
            f"buffers, more than the {MAX_MODEL_ELEMENTS:,} this loader accepts; check the "
            "config's sizes",
            path=str(path),
        )
    state = payload.get("state_dict")
    _check_state_dict(probe, state, path)
    model = build_model(family, config, faults=faults)
    model.load_state_dict(state, strict=True)
    model.eval()
    model.to(resolve_device(device))
    return LoadedCheckpoint(
        model=model,
        family=family,
        config=config,
        faults=faults,
        metrics=dict(payload.get("metrics") or {}),
        meta=dict(payload.get("meta") or {}),
        source_format=str(payload["_source"]),
        path=path,
        sha256=actual,
    )

