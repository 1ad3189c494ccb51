"""Fuzzing the router's request parsers (issue 19 #3): whatever a client sends, the answer is a
valid request or a BadRequest with a 4xx, never another exception (which the router would answer
with a 500). Property-based with hypothesis: random JSON values, mutated valid bodies, raw bytes
and hostile headers."""

from __future__ import annotations

import base64
import json

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lvm_serving.contracts.serve_config import RouterConfig
from lvm_serving.router import (
    BadRequest,
    PredictRequest,
    body_limit,
    parse_binary_request,
    parse_feedback_request,
    parse_predict_request,
    pinned_version,
    wants_vector,
)
from lvm_serving.serve_common import json_loads

D = 8
MAX_CONTEXT = 5
FUZZ = settings(max_examples=300, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

numbers = st.one_of(st.integers(min_value=-(2**80), max_value=2**80),
                    st.floats(allow_nan=True, allow_infinity=True), st.booleans(),
                    # beyond str()'s 4,300 digits, and beyond int64 (built lazily: hypothesis
                    # cannot print the first one in its own strategy's repr)
                    st.builds(pow, st.just(10), st.sampled_from([5000, 400])),
                    st.just(2**64))
scalars = st.one_of(st.none(), numbers, st.text(max_size=20))
json_values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=6), st.dictionaries(st.text(max_size=8), inner, max_size=6)),
    max_leaves=40)


def _vectors(draw, rows: int, dim: int) -> list[list[float]]:
    return draw(st.lists(st.lists(numbers, min_size=dim, max_size=dim), min_size=rows,
                         max_size=rows))


@st.composite
def predict_bodies(draw) -> object:
    """Mostly near-valid bodies (the interesting edge), some arbitrary JSON values."""
    if draw(st.booleans()):
        return draw(json_values)
    body: dict = {}
    rows = draw(st.integers(min_value=0, max_value=MAX_CONTEXT + 2))
    dim = draw(st.sampled_from([D, D - 1, D + 1, 0]))
    choice = draw(st.sampled_from(["context", "context_b64", "both", "neither"]))
    if choice in ("context", "both"):
        body["context"] = draw(st.one_of(st.just(_vectors(draw, rows, dim)), json_values))
    if choice in ("context_b64", "both"):
        raw = draw(st.binary(max_size=4 * D * (MAX_CONTEXT + 1)))
        body["context_b64"] = draw(st.one_of(st.just(base64.b64encode(raw).decode()),
                                             st.text(max_size=30), json_values))
    for key, strategy in (("lane", st.one_of(st.integers(-3, 20), json_values)),
                          ("tmd", st.one_of(st.lists(numbers, min_size=0, max_size=18),
                                            json_values)),
                          ("k", st.one_of(st.integers(-5, 200), json_values)),
                          ("user_id", json_values)):
        if draw(st.booleans()):
            body[key] = draw(strategy)
    return body


def _accepts_or_refuses(fn, *args, **kwargs) -> PredictRequest | None:
    try:
        return fn(*args, **kwargs)
    except BadRequest as exc:
        assert 400 <= exc.status < 500
        assert len(str(exc)) < 1000  # bounded: it is answered to the client
        return None


@FUZZ
@given(predict_bodies())
def test_any_predict_body_is_a_request_or_a_4xx(body):
    req = _accepts_or_refuses(parse_predict_request, body, dim=D, max_context=MAX_CONTEXT)
    if req is not None:  # what a version may rely on
        assert req.context.dtype == np.float32 and req.context.ndim == 2
        assert 1 <= req.context.shape[0] <= MAX_CONTEXT and req.context.shape[1] == D
        assert np.isfinite(req.context).all() and np.isfinite(req.tmd).all()
        assert 0 <= req.lane < 16 and 1 <= req.k <= 100


@FUZZ
@given(st.binary(max_size=2048))
def test_any_json_bytes_parse_or_are_a_400(raw):
    _accepts_or_refuses(json_loads, raw)


@settings(max_examples=20, deadline=None)
@given(st.integers(min_value=1000, max_value=200_000), st.sampled_from(["[", "{\"a\":"]))
def test_deep_nesting_and_huge_numbers_are_a_400(depth, opener):
    for raw in (opener * depth, "9" * (4300 + depth % 5000), '{"k": 1e999999}'):
        _accepts_or_refuses(json_loads, raw.encode())


header_values = st.one_of(st.text(max_size=40), st.sampled_from(
    ["", "0", "15", "16", "-1", "1e3", "nan", ",".join(["0"] * 16), ",".join(["nan"] * 16),
     "9" * 5000, "\x00", "٣"]))


@FUZZ
@given(st.binary(max_size=4 * D * (MAX_CONTEXT + 2)),
       st.dictionaries(st.sampled_from(["x-lvm-lane", "x-lvm-tmd", "x-lvm-k", "x-lvm-user",
                                        "x-lvm-vector"]), header_values, max_size=5))
def test_any_binary_request_is_a_request_or_a_4xx(raw, headers):
    req = _accepts_or_refuses(parse_binary_request, raw, headers, dim=D,
                              max_context=MAX_CONTEXT)
    if req is not None:
        assert 1 <= req.context.shape[0] <= MAX_CONTEXT and np.isfinite(req.context).all()
    try:
        wants_vector(headers.get("x-lvm-vector"), None)
    except BadRequest as exc:
        assert exc.status == 400


feedback_bodies = st.one_of(json_values, st.fixed_dictionaries(
    {"token": st.one_of(st.text(max_size=30), json_values)},
    optional={"clicked_concept_id": st.one_of(numbers, json_values)}))


@FUZZ
@given(feedback_bodies)
def test_any_feedback_body_is_parsed_or_a_400(body):
    out = _accepts_or_refuses(parse_feedback_request, body)
    if out is not None:
        token, clicked = out
        assert isinstance(token, str) and 0 <= clicked < 2**63


@FUZZ
@given(st.one_of(st.none(), st.text(max_size=300)))
def test_any_pin_header_names_a_live_version_or_is_a_400(value):
    config = RouterConfig(rollout="ns/r", champion="a", candidate="b", candidate_weight=10)
    pinned = _accepts_or_refuses(pinned_version, config, value)
    assert pinned in (None, "a", "b")


def test_the_body_cap_follows_the_longest_context_a_routed_version_takes():
    absolute = 32 * 1024 * 1024
    # 1,000 vectors x 768 numbers x 24 bytes + 64 KiB = 18,497,536
    assert body_limit(1000, 768, binary=False, absolute=absolute) == 18_497_536
    # binary: 4 bytes a number: 3,072,000 + 65,536
    assert body_limit(1000, 768, binary=True, absolute=absolute) == 3_137_536
    assert body_limit(None, 768, binary=False, absolute=absolute) == absolute  # unknown
    assert body_limit(10_000, 768, binary=False, absolute=absolute) == absolute  # capped
    # a context that just fits is under its cap even written with full-precision floats
    ctx = np.random.default_rng(0).standard_normal((MAX_CONTEXT, D)) * 1e-7
    body = json.dumps({"context": ctx.tolist(), "tmd": [0.1] * 16, "k": 10}).encode()
    assert len(body) <= body_limit(MAX_CONTEXT, D, binary=False, absolute=absolute)
