"""Checkpoints: round trips, the seed's format, sha256 verification and every typed error."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from lvm_serving.artifacts import (
    ArtifactError,
    ArtifactNotFoundError,
    ChecksumMismatchError,
    InvalidChecksumError,
    UnsupportedURIError,
    read_sha256_sidecar,
    resolve_local_path,
    sha256_file,
)
from lvm_serving.checkpoints import (
    CheckpointConfigError,
    CheckpointError,
    CorruptCheckpointError,
    ShapeMismatchError,
    StateDictMismatchError,
    UnknownCheckpointFamilyError,
    UnknownFormatError,
    UnsafeCheckpointError,
    load_checkpoint,
    save_checkpoint,
)
from lvm_serving.models import FaultInjection, MemoryGRU, UnknownFamilyError, build_model

D = 24
TINY_MEMORY_GRU = {"d_model": D, "memory_slots": 8, "hidden": 12, "num_layers": 2,
                   "fusion_dim": 12, "mlp_dim": 16}
TINY = {
    "memory_gru": TINY_MEMORY_GRU,
    "hierarchical_gru": {"d_model": D, "chunk_size": 4, "chunk_hidden": 8, "summary_hidden": 8,
                         "mlp_dim": 16},
    "tmd_moe": {"d_model": D, "num_experts": 4, "top_k": 2, "gate_hidden": 8,
                "expert": {**TINY_MEMORY_GRU, "num_layers": 1}},
}


def context(batch: int = 3, length: int = 6, dim: int = D) -> torch.Tensor:
    gen = torch.Generator().manual_seed(7)
    return F.normalize(torch.randn(batch, length, dim, generator=gen), dim=-1)


TMD = torch.eye(16)[[1, 6, 14]]


def predict(model, x=None):
    with torch.inference_mode():
        return model.eval()(context() if x is None else x, TMD[: (3 if x is None else x.shape[0])])


@pytest.fixture
def tiny_ckpt(tmp_path: Path) -> tuple[Path, str, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("memory_gru", TINY["memory_gru"])
    path = tmp_path / "model.pt"
    digest = save_checkpoint(path, model, metrics={"hit@5": 0.5}, meta={"version": "v1"})
    return path, digest, model


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
@pytest.mark.parametrize("family", sorted(TINY))
def test_round_trip_each_family(tmp_path, family, suffix):
    torch.manual_seed(1)
    model = build_model(family, TINY[family], faults={"degrade_lanes": [6]})
    path = tmp_path / f"model{suffix}"
    digest = save_checkpoint(path, model, metrics={"hit@5": np.float64(0.61)},
                             meta={"version": "phase2", "context_length": 6})
    assert digest == sha256_file(path) == read_sha256_sidecar(path)
    loaded = load_checkpoint(path, digest)
    assert loaded.family == family
    assert loaded.config == model.config
    assert loaded.faults == FaultInjection(degrade_lanes=(6,))
    assert loaded.model.faults == loaded.faults
    assert loaded.metrics == {"hit@5": pytest.approx(0.61)}
    assert loaded.meta["version"] == "phase2"
    assert loaded.sha256 == digest
    assert not loaded.model.training
    torch.testing.assert_close(predict(loaded.model), predict(model))


def test_file_uri_plain_path_and_prefixed_digest(tiny_ckpt):
    path, digest, _ = tiny_ckpt
    for uri in (path, str(path), path.as_uri(), f"file://localhost{path}"):
        assert load_checkpoint(uri, digest).sha256 == digest
    assert load_checkpoint(path, "sha256:" + digest.upper()).sha256 == digest
    assert load_checkpoint(path).sha256 == digest  # no expected digest: still loads


@pytest.mark.parametrize("uri", ["ftp://host/model.pt", "hdfs://nn/m.pt", "http://x/m.pt"])
def test_other_uri_schemes_are_not_supported(uri):
    with pytest.raises(UnsupportedURIError, match="is not supported; use file:///path") as info:
        load_checkpoint(uri)
    assert isinstance(info.value, ArtifactError)


@pytest.mark.parametrize("uri", ["s3://bucket/model.pt", "gs://b/m.pt", "https://x/m.pt"])
def test_an_object_store_artifact_needs_its_sha256(uri):
    # checked before anything is fetched: the node cache is keyed by the digest
    with pytest.raises(ArtifactError, match="a sha256 is required for an artifact from object"):
        load_checkpoint(uri)


def test_remote_file_uri_is_rejected():
    with pytest.raises(UnsupportedURIError, match="host"):
        resolve_local_path("file://otherhost/model.pt")


def test_missing_file(tmp_path):
    path = tmp_path / "nope.pt"
    with pytest.raises(ArtifactNotFoundError, match="not found") as info:
        load_checkpoint(path.as_uri(), "0" * 64)
    assert str(path) in str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert "lvm_serving.train" in str(info.value)


def test_bad_checksum_names_expected_and_actual(tiny_ckpt):
    path, digest, _ = tiny_ckpt
    wrong = "ab" * 32
    with pytest.raises(ChecksumMismatchError) as info:
        load_checkpoint(path, wrong)
    err = info.value
    assert (err.expected, err.actual) == (wrong, digest)
    assert wrong in str(err) and digest in str(err) and str(path) in str(err)


def test_malformed_expected_checksum(tiny_ckpt):
    path, _, _ = tiny_ckpt
    with pytest.raises(InvalidChecksumError, match="64 hex"):
        load_checkpoint(path, "deadbeef")


def _save_raw(path: Path, payload) -> str:
    torch.save(payload, path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _our_payload(model, **overrides):
    payload = {"format": "lvm-rollout-checkpoint", "format_version": 1, "family": model.family,
               "config": model.config.to_dict(), "faults": {}, "state_dict": model.state_dict(),
               "metrics": {}, "meta": {}}
    payload.update(overrides)
    return payload


def test_unknown_family_lists_the_known_ones(tmp_path, tiny_ckpt):
    _, _, model = tiny_ckpt
    path = tmp_path / "x.pt"
    digest = _save_raw(path, _our_payload(model, family="transformer_xl"))
    with pytest.raises(UnknownCheckpointFamilyError) as info:
        load_checkpoint(path, digest)
    message = str(info.value)
    assert "transformer_xl" in message and str(path) in message
    assert "memory_gru, hierarchical_gru, tmd_moe" in message
    assert isinstance(info.value, UnknownFamilyError) and isinstance(info.value, CheckpointError)


def test_shape_mismatch_names_the_tensor(tmp_path, tiny_ckpt):
    _, _, model = tiny_ckpt
    config = {**model.config.to_dict(), "memory_slots": 9}  # the weights have 8 slots
    path = tmp_path / "x.pt"
    digest = _save_raw(path, _our_payload(model, config=config))
    with pytest.raises(ShapeMismatchError) as info:
        load_checkpoint(path, digest)
    err = info.value
    assert err.tensor == "memory.memory"
    assert (err.expected, err.got) == ((9, D), (8, D))
    assert "'memory.memory'" in str(err) and "[8, 24]" in str(err) and "[9, 24]" in str(err)


def test_missing_and_unexpected_tensors(tmp_path, tiny_ckpt):
    _, _, model = tiny_ckpt
    state = dict(model.state_dict())
    del state["memory.memory"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "x.pt"
    digest = _save_raw(path, _our_payload(model, state_dict=state))
    with pytest.raises(StateDictMismatchError) as info:
        load_checkpoint(path, digest)
    assert info.value.missing == ["memory.memory"]
    assert info.value.unexpected == ["extra.weight"]


def test_bad_config_is_a_config_error(tmp_path, tiny_ckpt):
    _, _, model = tiny_ckpt
    path = tmp_path / "x.pt"
    config = {**model.config.to_dict(), "n_heads": 4}
    digest = _save_raw(path, _our_payload(model, config=config))
    with pytest.raises(CheckpointConfigError, match="unknown key"):
        load_checkpoint(path, digest)


def test_expected_family_must_match(tiny_ckpt):
    path, digest, _ = tiny_ckpt
    with pytest.raises(CheckpointConfigError, match="tmd_moe"):
        load_checkpoint(path, digest, expected_family="tmd_moe")


class _Exploit:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (Path(self.marker),))


def test_pickle_needing_code_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pt"
    digest = _save_raw(path, {"model_state_dict": {}, "model_type": "memory_gru",
                              "args": _Exploit(str(marker))})
    with pytest.raises(UnsafeCheckpointError, match="arbitrary code") as info:
        load_checkpoint(path, digest)
    assert str(path) in str(info.value)
    assert not marker.exists()


def test_corrupt_and_truncated_files(tmp_path, tiny_ckpt):
    good, _, _ = tiny_ckpt
    for name, data in [("junk.pt", b"definitely not a checkpoint"),
                       ("half.pt", good.read_bytes()[: good.stat().st_size // 2]),
                       ("junk.safetensors", b"\x08\x00\x00\x00\x00\x00\x00\x00{}garbage")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(CorruptCheckpointError) as info:
            load_checkpoint(path, hashlib.sha256(data).hexdigest())
        assert str(path) in str(info.value)


def test_unrecognised_content(tmp_path):
    path = tmp_path / "x.pt"
    digest = _save_raw(path, {"weights": torch.zeros(2)})
    with pytest.raises(UnknownFormatError, match="unrecognised"):
        load_checkpoint(path, digest)
    digest = _save_raw(path, {"format": "lvm-rollout-checkpoint", "format_version": 99})
    with pytest.raises(UnknownFormatError, match="format_version"):
        load_checkpoint(path, digest)


def test_seed_checkpoint_rebuilds_with_the_seed_default_sizes(tmp_path):
    torch.manual_seed(3)
    model = MemoryGRU().eval()  # the seed's sizes: 768-d, 2048 slots, 4x512 GRU
    path = tmp_path / "best_val_hit5.pt"
    seed_payload = {
        "model_state_dict": model.state_dict(),
        "args": argparse.Namespace(model_type="memory_gru", lr=1e-4, batch_size=16),
        "val_results": {"hit@5": np.float64(0.6652), "hit@10": 0.7478, "hit@1": 0.5},
        "epoch": 12,
        "model_type": "memory_gru",
    }
    digest = _save_raw(path, seed_payload)
    loaded = load_checkpoint(path.as_uri(), digest)
    assert loaded.source_format == "seed"
    assert loaded.family == "memory_gru"
    assert loaded.config == model.config
    assert loaded.metrics["hit@5"] == pytest.approx(0.6652)
    assert loaded.meta["epoch"] == 12
    assert loaded.meta["args"]["batch_size"] == 16
    x = context(1, 10, 768)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), model(x))


def test_the_bytes_hashed_are_the_bytes_loaded(tmp_path):
    # a writer that rewrites the file in place after the check cannot change what is loaded
    from lvm_serving.artifacts import open_verified

    path = tmp_path / "a.bin"
    path.write_bytes(b"trusted weights")
    digest = hashlib.sha256(b"trusted weights").hexdigest()
    _, reader, actual = open_verified(path, digest, what="checkpoint")
    with open(path, "r+b") as f:  # same inode, new content
        f.write(b"evil!!!")
    with reader:
        assert reader.read() == b"trusted weights" and actual == digest


def test_an_artifact_above_the_limit_is_refused_before_it_is_read(tmp_path, monkeypatch):
    from lvm_serving import artifacts

    path = tmp_path / "big.bin"
    path.write_bytes(b"x" * 2048)
    monkeypatch.setattr(artifacts, "MAX_ARTIFACT_BYTES", 1024)
    with pytest.raises(artifacts.ArtifactTooLargeError, match=r"2,048 bytes, more than the 1,024"):
        artifacts.open_verified(path, None, what="checkpoint")


def test_fault_injection_switches_are_refused_unless_the_deployment_allows_them(
        tmp_path, monkeypatch):
    from lvm_serving.checkpoints import ALLOW_FAULTS_ENV
    from lvm_serving.models import build_model

    model = build_model("memory_gru", {"d_model": 8, "hidden": 4, "memory_slots": 2,
                                       "fusion_dim": 4, "mlp_dim": 4, "num_layers": 1},
                        faults={"nan_lanes": [5], "extra_latency_ms": 3})
    digest = save_checkpoint(tmp_path / "f.pt", model)
    monkeypatch.delenv(ALLOW_FAULTS_ENV, raising=False)
    with pytest.raises(CheckpointConfigError,
                       match=r"FAULT INJECTION switches \['extra_latency_ms', 'nan_lanes'\].*"
                             r"LVM_ALLOW_FAULT_INJECTION=1"):
        load_checkpoint(tmp_path / "f.pt", digest)
    assert load_checkpoint(tmp_path / "f.pt", digest, allow_faults=True).faults.nan_lanes == (5,)
    monkeypatch.setenv(ALLOW_FAULTS_ENV, "1")
    assert load_checkpoint(tmp_path / "f.pt", digest).faults.extra_latency_ms == 3
    # a checkpoint without switches loads anywhere
    monkeypatch.delenv(ALLOW_FAULTS_ENV)
    clean = build_model("memory_gru", {"d_model": 8, "hidden": 4, "memory_slots": 2,
                                       "fusion_dim": 4, "mlp_dim": 4, "num_layers": 1})
    load_checkpoint(tmp_path / "c.pt", save_checkpoint(tmp_path / "c.pt", clean))


def test_a_torch_that_cannot_load_pickles_safely_is_refused(tmp_path, tiny_ckpt, monkeypatch):
    from lvm_serving import checkpoints

    assert checkpoints._torch_version("2.15.0+cu132") == (2, 15)
    assert checkpoints._torch_version("2.5.1") < checkpoints.MIN_TORCH
    path, digest, _ = tiny_ckpt
    monkeypatch.setattr(checkpoints.torch, "__version__", "2.5.1")
    with pytest.raises(UnsafeCheckpointError, match="CVE-2025-32434"):
        load_checkpoint(path, digest)
