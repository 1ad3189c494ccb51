"""Bounded requests (issue 19): what a client may send before the router refuses it, with a
4xx that says why, instead of a 500 or a stalled event loop."""

from __future__ import annotations

import asyncio

import pytest
from starlette.requests import Request

from lvm_serving.feedback import MAX_TOKEN_CHARS, TokenError, TokenSigner
from lvm_serving.router import BadRequest
from lvm_serving.serve_common import MAX_BODY_BYTES, json_loads, read_body


def request(chunks: list[bytes], content_length: int | None = None) -> Request:
    headers = [] if content_length is None else [(b"content-length",
                                                  str(content_length).encode())]
    scope = {"type": "http", "method": "POST", "path": "/lvm/predict", "headers": headers,
             "query_string": b""}
    messages = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1}
                for i, c in enumerate(chunks)]

    async def receive() -> dict:
        return messages.pop(0)

    return Request(scope, receive)


@pytest.mark.parametrize(("raw", "says"), [
    (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
    (b'{"k": ' + b"9" * 5000 + b"}", "malformed JSON body"),  # over Python's 4,300 digits
    (b"{not json", "malformed JSON body"),
])
def test_hostile_json_is_a_400(raw, says):
    with pytest.raises(BadRequest, match=says) as e:
        json_loads(raw)
    assert e.value.status == 400


def test_a_body_over_the_limit_is_a_413_before_or_while_it_is_read():
    with pytest.raises(BadRequest, match="over the limit") as e:
        asyncio.run(read_body(request([b"x"], content_length=MAX_BODY_BYTES + 1)))
    assert e.value.status == 413
    with pytest.raises(BadRequest, match="over the limit") as e:  # no length: counted as read
        asyncio.run(read_body(request([b"x" * 1024] * 5), limit=4096))
    assert e.value.status == 413
    assert asyncio.run(read_body(request([b"ab", b"cd"]), limit=4)) == b"abcd"


@pytest.mark.parametrize("token", ["é" * 10 + ".sig", "a" * MAX_TOKEN_CHARS + ".b", 42, None])
def test_odd_tokens_are_a_400(token):
    signer = TokenSigner([b"k" * 32])
    with pytest.raises(TokenError) as e:
        signer.verify(token)
    assert e.value.status == 400
