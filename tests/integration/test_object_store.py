"""Artifacts from a real S3-compatible store: SeaweedFS' S3 gateway on loopback (no mock of S3).

The serving side's loader reads ``s3://`` URIs through obstore with the standard ``AWS_*``
environment (a custom endpoint, as for any S3-compatible store), into a node cache keyed by
sha256; what it loads is verified. Faults are real: a corrupted object, a missing key, wrong
credentials, replicas racing for the same file.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pytest
import torch

from lvm_operator.devstack.object_store import SeaweedS3
from lvm_serving.artifacts import ArtifactNotFoundError, ChecksumMismatchError
from lvm_serving.checkpoints import load_checkpoint, save_checkpoint
from lvm_serving.concept_bank import ConceptBank
from lvm_serving.models import build_model
from lvm_serving.remote import RemoteFetchError

pytestmark = pytest.mark.stack

TINY = {"d_model": 16, "hidden": 8, "memory_slots": 4, "fusion_dim": 8, "mlp_dim": 16,
        "num_layers": 1}


@pytest.fixture
def s3(object_store) -> SeaweedS3:
    return object_store  # the session's store (conftest)


@pytest.fixture
def client(s3, tmp_path, monkeypatch):
    """This process as a serving node: the store's AWS_* environment and its own cache."""
    for k, v in s3.client_env().items():
        monkeypatch.setenv(k, v)
    cache = tmp_path / "node-cache"
    monkeypatch.setenv("LVM_ARTIFACT_CACHE", str(cache))
    return cache


@pytest.fixture
def checkpoint(tmp_path) -> tuple[Path, str, torch.nn.Module]:
    torch.manual_seed(0)
    model = build_model("memory_gru", TINY).eval()
    path = tmp_path / "model.pt"
    return path, save_checkpoint(path, model), model


def test_a_checkpoint_loads_from_s3_and_is_cached_by_its_digest(s3, client, checkpoint):
    path, digest, model = checkpoint
    uri, uploaded = s3.put_file("models", "phase2/best_val_hit5.pt", path)
    assert uploaded == digest
    loaded = load_checkpoint(uri, digest)
    x = torch.randn(2, 5, 16)
    with torch.inference_mode():
        torch.testing.assert_close(loaded.model(x), model(x))
    cached = client / digest[:2] / digest
    assert cached.read_bytes() == path.read_bytes()
    assert not list(client.glob("**/*.partial.*"))
    # the node cache answers the next load: it works with the object gone from the store
    s3.put("models", "phase2/best_val_hit5.pt", b"overwritten")
    assert load_checkpoint(uri, digest).sha256 == digest


def test_a_corrupted_object_is_refused_and_nothing_is_kept(s3, client, checkpoint):
    path, digest, _ = checkpoint
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte
    uri = s3.put("models", "corrupt/best_val_hit5.pt", bytes(data))
    with pytest.raises(ChecksumMismatchError) as info:
        load_checkpoint(uri, digest)
    message = str(info.value)
    assert uri in message and f"expected {digest}" in message
    assert info.value.actual != digest and f"actual {info.value.actual}" in message
    assert not (client / digest[:2] / digest).exists()
    assert not [p for p in client.glob("**/*") if p.is_file() and not p.name.endswith(".lock")]


def test_a_concept_bank_loads_from_s3(s3, client, tmp_path):
    import numpy as np

    vectors = np.random.default_rng(0).standard_normal((50, 16)).astype(np.float32)
    bank = ConceptBank(np.arange(50), vectors, np.arange(50) % 16)
    local = tmp_path / "bank.npz"
    bank.save(local)
    uri, digest = s3.put_file("banks", "concepts/bank.npz", local)
    loaded = ConceptBank.load(uri, digest)
    assert len(loaded) == 50 and loaded.sha256 == digest


def test_a_missing_object_and_wrong_credentials_are_named(s3, client, monkeypatch):
    with pytest.raises(ArtifactNotFoundError, match=r"s3://models/nope\.pt: no such object"):
        load_checkpoint("s3://models/nope.pt", "0" * 64)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret")
    with pytest.raises(RemoteFetchError, match=r"could not be read \(\w+\); check the endpoint"):
        load_checkpoint("s3://models/phase2/best_val_hit5.pt", "1" * 64)


def test_replicas_on_one_node_download_once(s3, client, checkpoint, caplog):
    path, digest, _ = checkpoint
    uri, _ = s3.put_file("models", "shared/model.pt", path)
    caplog.set_level(logging.INFO, logger="lvm_serving.remote")
    results, errors = [], []

    def replica():
        try:
            results.append(load_checkpoint(uri, digest).sha256)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=replica) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors and results == [digest] * 4
    fetches = [r for r in caplog.records if r.getMessage().startswith("fetching checkpoint")]
    assert len(fetches) == 1, [r.getMessage() for r in fetches]


def test_the_local_store_takes_many_buckets(s3, client):
    # Every SeaweedFS bucket is a collection that grows its own volumes (7 at a time): with too
    # few volume slots the third bucket of a session was refused ("no free volumes left").
    for i in range(6):
        uri = s3.put(f"bucket-{i}", "k.bin", bytes([i]) * 1000)
        assert uri == f"s3://bucket-{i}/k.bin"
        assert s3.get(f"bucket-{i}", "k.bin") == bytes([i]) * 1000
