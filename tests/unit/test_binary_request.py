"""The binary predict request (float32 body, scalars in headers) and the answer's vector switch."""

from __future__ import annotations

import base64

import numpy as np
import pytest

from lvm_serving.router import (
    MAX_K,
    BadRequest,
    is_binary,
    parse_binary_request,
    parse_predict_request,
    wants_vector,
)
from lvm_serving.serve_common import StageClock, parse_server_timing, server_timing

D = 8


def ctx(t: int = 3, seed: int = 0) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((t, D)).astype("<f4")
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_binary_equals_json_and_b64_for_the_same_context():
    x = ctx()
    binary = parse_binary_request(x.tobytes(), {"x-lvm-lane": "4", "x-lvm-k": "7",
                                                "x-lvm-user": "alice"}, dim=D)
    as_json = parse_predict_request({"context": x.tolist(), "lane": 4, "k": 7,
                                     "user_id": "alice"}, dim=D)
    as_b64 = parse_predict_request({"context_b64": base64.b64encode(x.tobytes()).decode(),
                                    "lane": 4, "k": 7, "user_id": "alice"}, dim=D)
    for req in (as_json, as_b64):
        np.testing.assert_array_equal(binary.context, req.context)
        np.testing.assert_array_equal(binary.tmd, req.tmd)
        assert (binary.lane, binary.k, binary.user_key) == (req.lane, req.k, req.user_key)
    assert binary.context.dtype == np.float32 and binary.context.shape == (3, D)


def test_binary_context_is_a_view_of_the_body_not_a_copy():
    body = ctx(5).tobytes()
    req = parse_binary_request(body, {"x-lvm-lane": "0"}, dim=D)
    assert not req.context.flags.writeable and not req.context.flags.owndata


@pytest.mark.parametrize(("headers", "lane", "k", "user"), [
    ({"x-lvm-lane": "0"}, 0, 10, None),
    ({"x-lvm-lane": " 15 ", "x-lvm-k": "1"}, 15, 1, None),
    ({"x-lvm-tmd": ",".join(["0"] * 5 + ["1"] + ["0"] * 10)}, 5, 10, None),
    ({"x-lvm-tmd": ",".join(["0"] * 5 + ["1"] + ["0"] * 10), "x-lvm-lane": "5"}, 5, 10, None),
    ({"x-lvm-lane": "2", "x-lvm-k": str(MAX_K), "x-lvm-user": "u-1"}, 2, MAX_K, "u-1"),
    ({"x-lvm-lane": "2", "x-lvm-user": ""}, 2, 10, None),
])
def test_binary_headers(headers, lane, k, user):
    req = parse_binary_request(ctx().tobytes(), headers, dim=D)
    assert (req.lane, req.k, req.user_key) == (lane, k, user)
    assert req.tmd.shape == (16,) and int(np.argmax(req.tmd)) == lane


NAN = np.full((1, D), np.nan, dtype="<f4").tobytes()
INF = np.full((1, D), np.inf, dtype="<f4").tobytes()


@pytest.mark.parametrize(("body", "headers", "needle"), [
    (b"", {"x-lvm-lane": "1"}, "body is empty"),
    (ctx().tobytes()[:-4], {"x-lvm-lane": "1"}, "not a whole number of float32 vectors"),
    (b"\x00" * (4 * D + 2), {"x-lvm-lane": "1"}, "dimension 8"),
    (NAN, {"x-lvm-lane": "1"}, "NaN or Inf"),
    (INF, {"x-lvm-lane": "1"}, "NaN or Inf"),
    (ctx().tobytes(), {}, "header x-lvm-tmd (16 numbers) or header x-lvm-lane"),
    (ctx().tobytes(), {"x-lvm-lane": "16"}, "unknown lane 16"),
    (ctx().tobytes(), {"x-lvm-lane": "-1"}, "unknown lane -1"),
    (ctx().tobytes(), {"x-lvm-lane": "three"}, "header x-lvm-lane must be an integer"),
    (ctx().tobytes(), {"x-lvm-lane": "1.5"}, "header x-lvm-lane must be an integer"),
    (ctx().tobytes(), {"x-lvm-lane": "1", "x-lvm-k": "0"}, "header x-lvm-k must be"),
    (ctx().tobytes(), {"x-lvm-lane": "1", "x-lvm-k": str(MAX_K + 1)}, "x-lvm-k must be"),
    (ctx().tobytes(), {"x-lvm-lane": "1", "x-lvm-k": "ten"}, "x-lvm-k must be an integer"),
    (ctx().tobytes(), {"x-lvm-tmd": "1,0"}, "tmd must be a list of 16 numbers"),
    (ctx().tobytes(), {"x-lvm-tmd": "a,b"}, "x-lvm-tmd must be 16 comma-separated"),
    (ctx().tobytes(), {"x-lvm-tmd": ",".join(["nan"] * 16)}, "tmd holds NaN"),
    (ctx().tobytes(), {"x-lvm-tmd": ",".join(["1"] + ["0"] * 15), "x-lvm-lane": "3"},
     "disagrees"),
    ("not bytes", {"x-lvm-lane": "1"}, "must be bytes"),
])
def test_bad_binary_requests_name_the_problem(body, headers, needle):
    with pytest.raises(BadRequest, match=None) as info:
        parse_binary_request(body, headers, dim=D)
    assert needle in str(info.value)
    assert info.value.status == 400


def test_binary_context_length_limit():
    with pytest.raises(BadRequest, match="context too long: 5 vectors, at most 4"):
        parse_binary_request(ctx(5).tobytes(), {"x-lvm-lane": "1"}, dim=D, max_context=4)


@pytest.mark.parametrize(("content_type", "binary"), [
    ("application/octet-stream", True),
    ("Application/Octet-Stream; charset=binary", True),
    ("application/json", False),
    (None, False),
    ("", False),
])
def test_is_binary(content_type, binary):
    assert is_binary(content_type) is binary


@pytest.mark.parametrize(("query", "header", "want"), [
    (None, None, True),
    ("0", None, False),
    ("false", None, False),
    (None, "omit", False),
    ("1", None, True),
    ("yes", "no", False),
    ("TRUE", None, True),
])
def test_wants_vector(query, header, want):
    assert wants_vector(query, header) is want


def test_wants_vector_refuses_nonsense():
    with pytest.raises(BadRequest, match="vector must be one of"):
        wants_vector("maybe", None)


def test_server_timing_round_trip():
    clock = StageClock(began=0.0)
    clock.add("read", 0.0012)
    clock.add("model", 0.0084)
    clock.add("read", 0.0001)
    header = server_timing(clock.seconds)
    assert header == "read;dur=1.300, model;dur=8.400"
    assert parse_server_timing(header) == {"read": 1.3, "model": 8.4}
    assert parse_server_timing("") == {}
