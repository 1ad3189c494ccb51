"""Signed feedback tokens (stdlib HMAC-SHA256), verified without server-side state.

A prediction's answer carries a token; the client sends it back with the concept it clicked. The
token holds everything the Hit@K computation needs — who answered (rollout, version, lane), the
top-10 concept ids and the predicted vector quantised to int8 — so any router replica, including
one started after the prediction, can score the click without shared storage. That a token
counts *once* is the replay guard's job (:mod:`lvm_serving.replay_guard`): each token carries a
random nonce, and :func:`token_id` names it there.

Wire format: ``base64url(json payload) "." base64url(HMAC-SHA256(key, base64url(payload)))``.
The payload: ``{"r": rollout, "v": version, "l": lane, "ids": [top-10], "q": base64(int8[D]),
"iat": issued, "exp": expiry, "n": nonce}`` (unix seconds; ``"p": 1`` when pinned). Cosine is
scale-free, so the vector is scaled by its largest component and rounded to int8 (the cosine
error this adds is ~1e-4, far below the gaps between the proxies' thresholds 0.4/0.6/0.8).

Keys: the environment variable named by the router's ``feedback_key_env`` arg (from a Kubernetes
Secret) holds one key or several separated by commas (the first signs, all verify: rotation
without rejecting tokens in flight), each at least :data:`MIN_KEY_BYTES` bytes. Keys fail closed:
without a valid key there is no derived fallback; answers carry no token and ``/feedback``
answers 503 saying what to set (:func:`keys_from_env` returns the problem).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

DEFAULT_TTL_S = 24 * 3600
TOKEN_IDS = 10
#: HMAC-SHA256 keys shorter than its block's security level are guessable: refused.
MIN_KEY_BYTES = 32


class TokenError(ValueError):
    """A feedback token that cannot be accepted; ``status`` is the HTTP status to answer."""

    def __init__(self, message: str, status: int, kind: str = "invalid") -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind  # "invalid" (malformed, forged, tampered) or "expired"


def _b64e(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


#: A token carries ids, a quantized vector and a few claims: a few kB at d=768, never more.
MAX_TOKEN_CHARS = 16_384


def _b64d(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def keys_from_env(env_name: str) -> tuple[list[bytes], str | None]:
    """Signing keys from ``$env_name`` (comma-separated): (keys, None), or ([], the problem)."""
    raw = os.environ.get(env_name, "")
    keys = [k.strip().encode("utf-8") for k in raw.split(",") if k.strip()]
    fix = (f"set {env_name} on every Ray node from a Kubernetes Secret (e.g. the output of "
           f"`openssl rand -hex 32`; two keys separated by a comma while rotating)")
    if not keys:
        return [], f"no feedback signing key: {fix}"
    short = [i for i, k in enumerate(keys) if len(k) < MIN_KEY_BYTES]
    if short:
        return [], (f"{env_name} holds a key of {len(keys[short[0]])} bytes: keys must have at "
                    f"least {MIN_KEY_BYTES}; {fix}")
    return keys, None


def token_id(token: str) -> str:
    """A verified token's name in the replay guard: its signature, hex (unique per nonce)."""
    return _b64d(token.rsplit(".", 1)[-1]).hex()


def quantize(vector: Any) -> str:
    v = np.asarray(vector, dtype=np.float64).reshape(-1)
    scale = float(np.max(np.abs(v))) if v.size else 0.0
    q = np.zeros(v.shape, dtype=np.int8) if scale == 0 or not np.isfinite(scale) else np.clip(
        np.rint(v / scale * 127.0), -127, 127).astype(np.int8)
    return _b64e(q.tobytes())


def dequantize(text: str) -> np.ndarray:
    return np.frombuffer(_b64d(text), dtype=np.int8).astype(np.float32) / 127.0


@dataclass(frozen=True)
class FeedbackClaims:
    rollout: str
    version: str
    lane: int
    ids: list[int]
    vector: np.ndarray  # float32 [D], direction of the prediction (not unit length)
    issued_at: int
    expires_at: int
    pinned: bool = False  # the answer was pinned to its version by x-lvm-version (QA)
    user: str | None = None  # a pseudonym of the request's user key (never the key itself)


class TokenSigner:
    def __init__(self, keys: list[bytes], ttl_s: int = DEFAULT_TTL_S) -> None:
        if not keys:
            raise ValueError("at least one signing key is needed")
        self.keys = keys
        self.ttl_s = ttl_s

    def _mac(self, key: bytes, body: str) -> bytes:
        return hmac.new(key, body.encode("ascii"), hashlib.sha256).digest()

    def user_pseudonym(self, user_key: Any) -> str | None:
        """A stable, keyed pseudonym of a user key (the same on every replica; it reveals
        nothing of the key), or None without one."""
        if user_key is None or user_key == "":
            return None
        mac = hmac.new(self.keys[0], b"user\x00" + str(user_key).encode("utf-8"),
                       hashlib.sha256).digest()
        return _b64e(mac[:12])

    def sign(self, *, rollout: str, version: str, lane: int, ids: Any, vector: Any,
             now: float | None = None, pinned: bool = False, user: Any = None) -> str:
        issued = int(time.time() if now is None else now)
        payload = {
            "r": rollout, "v": version, "l": int(lane),
            "ids": [int(i) for i in list(ids)[:TOKEN_IDS]],
            "q": quantize(vector), "iat": issued, "exp": issued + self.ttl_s,
            "n": _b64e(secrets.token_bytes(12)),  # one token per prediction, even twins
        }
        if pinned:  # signed like every claim: a client cannot turn QA feedback into judged
            payload["p"] = 1
        pseudonym = self.user_pseudonym(user)
        if pseudonym is not None:  # whose click this will be: per-user caps count it
            payload["u"] = pseudonym
        body = _b64e(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64e(self._mac(self.keys[0], body))}"

    def verify(self, token: Any, now: float | None = None) -> FeedbackClaims:
        if not isinstance(token, str) or token.count(".") != 1:
            raise TokenError("malformed feedback token: expected '<payload>.<signature>'", 400)
        if not token.isascii() or len(token) > MAX_TOKEN_CHARS:
            raise TokenError(f"malformed feedback token: expected at most {MAX_TOKEN_CHARS} "
                             "base64url characters", 400)
        body, sig = token.split(".")
        try:
            given = _b64d(sig)
        except (binascii.Error, ValueError):
            raise TokenError("malformed feedback token: signature is not base64url", 400) from None
        if not any(hmac.compare_digest(self._mac(k, body), given) for k in self.keys):
            raise TokenError("invalid feedback token signature: forged, tampered with, or "
                             "signed with another key", 403)
        try:
            p = json.loads(_b64d(body))
            claims = FeedbackClaims(
                rollout=str(p["r"]), version=str(p["v"]), lane=int(p["l"]),
                ids=[int(i) for i in p["ids"]], vector=dequantize(p["q"]),
                issued_at=int(p["iat"]), expires_at=int(p["exp"]), pinned=p.get("p") == 1,
                user=p["u"] if isinstance(p.get("u"), str) and len(p["u"]) <= 32 else None,
            )
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:
            raise TokenError(f"malformed feedback token payload: {exc}", 400) from None
        t = time.time() if now is None else now
        if t > claims.expires_at:
            raise TokenError(f"feedback token expired at {claims.expires_at} (now {int(t)})", 403,
                             "expired")
        return claims
