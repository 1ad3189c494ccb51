"""The concept bank: search, lookup, the file format, checksums and loading errors."""

from __future__ import annotations

import hashlib
import io

import numpy as np
import pytest
import torch

from lvm_serving.artifacts import (
    ArtifactNotFoundError,
    ChecksumMismatchError,
    UnsupportedURIError,
)
from lvm_serving.concept_bank import ConceptBank, ConceptBankError, UnknownConceptError


def make_bank(n: int = 40, d: int = 8, seed: int = 0) -> ConceptBank:
    rng = np.random.default_rng(seed)
    vectors = rng.standard_normal((n, d)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    ids = np.arange(n, dtype=np.int64) * 10 + 1000  # not 0..N-1, not sorted by row later
    ids = ids[rng.permutation(n)]
    lanes = np.arange(n) % 16
    return ConceptBank(ids, vectors, lanes, [f"c{i}" for i in ids])


def write_npz(path, **arrays) -> str:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    path.write_bytes(buffer.getvalue())
    return hashlib.sha256(buffer.getvalue()).hexdigest()


def test_search_matches_brute_force_cosine():
    bank = make_bank()
    rng = np.random.default_rng(1)
    queries = rng.standard_normal((5, 8)).astype(np.float32) * 3.0  # not unit: normalised
    ids, sims = bank.search(queries, k=7)
    vectors = bank.vectors.numpy()
    q = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    expected = q @ vectors.T
    order = np.argsort(-expected, axis=1)[:, :7]
    np.testing.assert_array_equal(ids, bank.ids[order])
    np.testing.assert_allclose(sims, np.take_along_axis(expected, order, 1), atol=1e-5)
    assert (np.diff(sims, axis=1) <= 1e-7).all()
    assert ids.dtype == np.int64 and sims.dtype == np.float32


def test_a_concept_finds_itself_first_and_k_is_capped():
    bank = make_bank(n=12)
    cid = int(bank.ids[5])
    ids, sims = bank.search(bank.vectors_for([cid]), k=50)
    assert ids.shape == (1, 12)
    assert ids[0, 0] == cid
    assert sims[0, 0] == pytest.approx(1.0, abs=1e-5)


def test_search_tensor_stays_on_the_device():
    bank = make_bank()
    ids, sims = bank.search_tensor(torch.randn(2, 8), k=3)
    assert ids.device == bank.device and ids.dtype == torch.int64
    assert sims.shape == (2, 3)
    with pytest.raises(ValueError, match="queries"):
        bank.search(np.zeros((2, 9)), k=3)


def test_lookup_by_id():
    bank = make_bank()
    cid = int(bank.ids[3])
    row = bank.index_of([cid])[0]
    assert row == 3
    np.testing.assert_allclose(bank.vectors_for(cid).numpy(), bank.vectors[3].numpy())
    assert bank.lanes_for([cid])[0] == bank.lanes[3]
    assert bank.text_for(cid) == f"c{cid}"
    assert bank.contains(cid) and not bank.contains(7)
    with pytest.raises(UnknownConceptError) as info:
        bank.vectors_for([cid, 7, 8])
    assert info.value.ids == [7, 8]


def test_save_load_round_trip_is_deterministic(tmp_path):
    bank = make_bank()
    a, b = tmp_path / "a.npz", tmp_path / "b.npz"
    digest = bank.save(a)
    assert bank.save(b) == digest
    assert a.read_bytes() == b.read_bytes()
    assert (tmp_path / "a.npz.sha256").read_text().split()[0] == digest
    loaded = ConceptBank.load(a.as_uri(), digest)
    np.testing.assert_array_equal(loaded.ids, bank.ids)
    np.testing.assert_array_equal(loaded.lanes, bank.lanes)
    torch.testing.assert_close(loaded.vectors, bank.vectors)
    assert loaded.texts == bank.texts
    assert loaded.renormalised == 0


def test_vectors_are_normalised_on_load(tmp_path):
    vectors = np.array([[3.0, 4.0], [0.0, 2.0], [0.6, 0.8]], dtype=np.float64)
    path = tmp_path / "bank.npz"
    digest = write_npz(path, ids=np.array([1, 2, 3]), vectors=vectors, lanes=np.array([0, 1, 2]))
    bank = ConceptBank.load(path, digest)
    assert bank.vectors.dtype == torch.float32
    torch.testing.assert_close(bank.vectors.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(bank.vectors[0], torch.tensor([0.6, 0.8]))
    assert bank.renormalised == 2
    assert bank.texts is None


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"ids": [1, 2], "lanes": [0, 1]}, "missing array"),
        ({"ids": [1, 2], "vectors": [[1.0, 0.0]], "lanes": [0, 1]}, "'vectors' must be"),
        ({"ids": [1, 1], "vectors": [[1.0, 0.0], [0.0, 1.0]], "lanes": [0, 1]}, "not unique"),
        ({"ids": [1, 2], "vectors": [[1.0, 0.0], [0.0, 1.0]], "lanes": [0, 16]}, "outside"),
        ({"ids": [1, 2], "vectors": [[1.0, 0.0], [0.0, 0.0]], "lanes": [0, 1]}, "row 1"),
        ({"ids": [1, 2], "vectors": [[1.0, 0.0], [np.nan, 1.0]], "lanes": [0, 1]}, "non-finite"),
        ({"ids": [1.5, 2], "vectors": [[1.0, 0.0], [0.0, 1.0]], "lanes": [0, 1]}, "'ids'"),
    ],
)
def test_invalid_banks_are_rejected(tmp_path, arrays, message):
    path = tmp_path / "bank.npz"
    digest = write_npz(path, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(ConceptBankError, match=message) as info:
        ConceptBank.load(path, digest)
    assert str(path) in str(info.value)


def test_object_arrays_are_refused(tmp_path):
    path = tmp_path / "bank.npz"
    digest = write_npz(path, ids=np.array([1], dtype=object), vectors=np.ones((1, 2)),
                       lanes=np.array([0]))
    with pytest.raises(ConceptBankError, match="without pickles"):
        ConceptBank.load(path, digest)


def test_not_an_npz(tmp_path):
    path = tmp_path / "bank.npz"
    path.write_bytes(b"nope")
    with pytest.raises(ConceptBankError, match="not a readable"):
        ConceptBank.load(path)


def test_checksum_missing_file_and_scheme(tmp_path):
    path = tmp_path / "bank.npz"
    digest = make_bank().save(path)
    with pytest.raises(ChecksumMismatchError) as info:
        ConceptBank.load(path, "0" * 64)
    assert info.value.actual == digest
    assert "concept bank" in str(info.value)
    with pytest.raises(ArtifactNotFoundError, match="concept bank file not found"):
        ConceptBank.load(tmp_path / "missing.npz")
    with pytest.raises(UnsupportedURIError):
        ConceptBank.load("ftp://bucket/bank.npz")
