"""Pure routing and request validation for the router deployment (no Ray, no torch).

:func:`choose_route` decides, for one request, which version answers the client and whether the
candidate also answers in the shadow. The modes
(:class:`~lvm_serving.contracts.serve_config.RoutingMode`):

* ``weighted`` — the candidate gets ``candidate_weight`` percent of requests, uniformly at random;
* ``userHash`` — a user's *bucket* (0..99, from a stable SHA-256 of the user key, never Python's
  per-process randomised ``hash``) is compared with the weight: bucket < weight → candidate. The
  candidate's users at 10% are therefore a subset of those at 20%, which are a subset of those at
  50%: a user moved to the candidate stays there as the weight grows. A request without the user
  key goes to the champion (deterministic and safe);
* ``contextLength`` — a request whose context holds more than ``context_threshold`` vectors is
  *eligible* and goes to the candidate with probability ``candidate_weight``; shorter contexts go
  to the champion. Without a threshold every request is eligible. An eligible request that the
  weight leaves on the champion has reason ``long_context``: the app cuts its context to the
  champion's window (the most recent vectors) rather than refusing it.

No candidate (``None``) or weight 0 → the champion answers everything. Shadow: when ``shadow`` is
on and a candidate is named, the candidate also answers ``shadow_percent`` percent of the
requests the champion answers (an independent draw; the client sees only the champion's answer),
whatever the weight, so a weight-0 shadow phase works and a 25% mirror costs the candidate a
quarter of the champion's load.

Pinning (QA): a request naming a live version in ``x-lvm-version`` (:data:`HEADER_PIN`) goes to
that version whatever the weight, with reason ``pinned`` and no shadow copy; its metrics carry
``pinned="true"`` and the judge never counts them. Naming a version that is not live is a 400
that lists the live ones (:func:`pinned_version`).

:func:`parse_predict_request` validates a ``POST /predict`` JSON body,
:func:`parse_binary_request` the binary one (``application/octet-stream``: the context's float32
bytes as the body, the scalars in ``x-lvm-*`` headers; no JSON, no list, no copy); both raise
:class:`BadRequest` with a message naming what is wrong.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from lvm_serving.contracts.metrics import NUM_LANES
from lvm_serving.contracts.serve_config import RouterConfig, RoutingMode

TMD_DIM = NUM_LANES
DEFAULT_K = 10
MAX_K = 100
NUM_BUCKETS = 100


class BadRequest(ValueError):
    """The client sent something invalid: answered with a 4xx and this message."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


# --------------------------------------------------------------------------------------------
# Routing


def user_bucket(user_key: Any) -> int:
    """Stable bucket 0..99 of a user key: the same on every replica, process and restart."""
    digest = hashlib.sha256(str(user_key).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % NUM_BUCKETS


@dataclass(frozen=True)
class Route:
    version: str  # answers the client
    shadow: str | None  # also answers, unseen by the client (the candidate), or None
    reason: str  # why: "no_candidate", "weight", "user_bucket", "short_context", "pinned", ...

    @property
    def pinned(self) -> bool:
        return self.reason == PINNED


PINNED = "pinned"


def live_versions(config: RouterConfig) -> tuple[str, ...]:
    """The versions a request may be pinned to: the champion and a candidate with traffic or a
    shadow (a rolled-back candidate kept deployed for forensics is not live)."""
    live = [config.champion]
    if config.candidate and config.candidate != config.champion and (
            config.candidate_weight > 0 or config.shadow):
        live.append(config.candidate)
    return tuple(live)


def pinned_version(config: RouterConfig, header_value: str | None) -> str | None:
    """The version named by ``x-lvm-version``, or None without the header.

    Raises :class:`BadRequest` for a name that is not live, listing the live versions (names
    are the operator's, bounded; the client's value is cut to 63 characters in the message)."""
    if header_value is None:
        return None
    name = header_value.strip()
    live = live_versions(config)
    if name not in live:
        raise BadRequest(f"{HEADER_PIN} names version {name[:63]!r}, which is not live in this "
                         f"rollout: pin one of {', '.join(repr(v) for v in live)} or drop the "
                         "header")
    return name


def choose_route(
    config: RouterConfig,
    *,
    user_key: Any = None,
    context_length: int | None = None,
    rng: random.Random | None = None,
    pinned: str | None = None,
) -> Route:
    """Which version answers a request (and which one shadows it).

    ``pinned``: a live version from :func:`pinned_version`; it answers, nothing shadows it."""
    if pinned is not None:
        return Route(pinned, None, PINNED)
    champion, candidate = config.champion, config.candidate
    weight = max(0, min(100, int(config.candidate_weight)))
    rng = rng or random  # type: ignore[assignment]

    def to_champion(reason: str) -> Route:
        mirror = config.shadow and candidate and candidate != champion and (
            config.shadow_percent >= 100 or rng.random() * 100.0 < config.shadow_percent)
        return Route(champion, candidate if mirror else None, reason)

    if not candidate or candidate == champion:
        return Route(champion, None, "no_candidate")
    if weight <= 0:
        return to_champion("weight_zero")
    draw = rng.random() * 100.0
    match config.mode:
        case RoutingMode.WEIGHTED:
            return Route(candidate, None, "weight") if draw < weight else to_champion("weight")
        case RoutingMode.USER_HASH:
            if user_key is None or user_key == "":
                return to_champion("no_user_key")
            if user_bucket(user_key) < weight:
                return Route(candidate, None, "user_bucket")
            return to_champion("user_bucket")
        case RoutingMode.CONTEXT_LENGTH:
            threshold = config.context_threshold
            if threshold is not None and (context_length or 0) <= threshold:
                return to_champion("short_context")
            if draw < weight:
                return Route(candidate, None, "long_context")
            return to_champion("long_context")
    raise ValueError(f"unknown routing mode {config.mode!r}")  # pragma: no cover


# --------------------------------------------------------------------------------------------
# Request validation

#: Bytes one context number may take in a JSON body: a full-precision float ("-0.1234567890123
#: 4567") and its separator, with room to spare. The cap on a JSON body is the longest context a
#: routed version takes at this size per number, plus :data:`BODY_SLACK_BYTES` for the rest (tmd,
#: scalars, whitespace); a binary body's numbers are 4 bytes each (base64 in JSON: 5.3).
JSON_BYTES_PER_NUMBER = 24
BINARY_BYTES_PER_NUMBER = 4
BODY_SLACK_BYTES = 64 * 1024


def body_limit(max_context: int | None, dim: int, *, binary: bool, absolute: int) -> int:
    """The largest body worth reading for a context of at most ``max_context`` vectors."""
    if max_context is None:
        return absolute
    per = BINARY_BYTES_PER_NUMBER if binary else JSON_BYTES_PER_NUMBER
    return min(absolute, max_context * dim * per + BODY_SLACK_BYTES)


@dataclass(frozen=True)
class PredictRequest:
    context: np.ndarray  # float32 [T, D]
    tmd: np.ndarray  # float32 [16]
    lane: int
    k: int
    user_key: Any


def _numeric_array(value: Any, what: str) -> np.ndarray:
    if isinstance(value, (str, bytes, dict)) or value is None:
        raise BadRequest(f"{what} must be an array of numbers, got {type(value).__name__}")
    try:
        with np.errstate(over="ignore"):  # 1e300 becomes inf, refused as "NaN or Inf" later
            arr = np.asarray(value, dtype=np.float32)
    except (TypeError, ValueError, OverflowError) as exc:
        raise BadRequest(f"{what} must be a rectangular array of numbers: "
                         f"{str(exc)[:200]}") from None
    return arr


def parse_predict_request(
    body: Any,
    *,
    dim: int,
    max_context: int | None = None,
    user_key_field: str = "user_id",
    max_k: int = MAX_K,
) -> PredictRequest:
    """Validate a predict body: ``{context: [[float]*dim]*T, tmd: [16] | lane: int, k, user}``.

    ``context_b64`` (base64 of little-endian float32 ``[T, dim]``) may replace ``context``: the
    same data without the JSON number parsing that dominates latency at 768-d x 1000 vectors."""
    if not isinstance(body, Mapping):
        raise BadRequest(f"request body must be a JSON object, got {type(body).__name__}")
    if "context" in body:
        context = _numeric_array(body["context"], "context")
    elif "context_b64" in body:
        context = _b64_context(body["context_b64"], dim)
    else:
        raise BadRequest("missing field 'context' ([T, D] list of concept vectors) or "
                         "'context_b64' (base64 of little-endian float32 [T * D])")
    _check_context(context, dim, max_context)
    tmd_value = body.get("tmd")
    tmd = None if tmd_value is None else _numeric_array(tmd_value, "tmd")
    tmd, lane = _domain(tmd, body.get("lane"), "'tmd'", "'lane'")
    k = body.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= max_k:
        raise BadRequest(f"k must be an integer in 1..{max_k}, got {k!r}")
    return PredictRequest(context=context, tmd=tmd, lane=lane, k=k,
                          user_key=body.get(user_key_field))


def parse_feedback_request(body: Any) -> tuple[str, int]:
    """(token, clicked concept id) from a ``POST /feedback`` body, or :class:`BadRequest`."""
    if not isinstance(body, Mapping):
        raise BadRequest("request body must be a JSON object")
    if "token" not in body:
        raise BadRequest("missing field 'token' (the feedback_token of a prediction)")
    token = body["token"]
    if not isinstance(token, str):
        raise BadRequest(f"token must be a string (the feedback_token of a prediction), got "
                         f"{type(token).__name__}")
    clicked = body.get("clicked_concept_id")
    if isinstance(clicked, bool) or not isinstance(clicked, int) or not 0 <= clicked < 2**63:
        raise BadRequest("clicked_concept_id must be a concept id (an integer in "
                         f"0..2^63-1), got {_brief(clicked)}")
    return token, clicked


def _brief(value: Any) -> str:
    """A client's value in a message: short, and never a conversion that can itself fail."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an integer of {value.bit_length()} bits"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return repr(str(value)[:40])
    return f"a {type(value).__name__}"


def _check_context(context: np.ndarray, dim: int, max_context: int | None) -> None:
    if context.ndim != 2:
        raise BadRequest(f"context must be a list of vectors [T, {dim}], got shape "
                         f"{list(context.shape)}")
    if context.shape[0] < 1:
        raise BadRequest("context is empty: give at least one vector")
    if context.shape[1] != dim:
        raise BadRequest(f"context vectors must have dimension {dim}, got {context.shape[1]}")
    if max_context is not None and context.shape[0] > max_context:
        raise BadRequest(f"context too long: {context.shape[0]} vectors, at most {max_context}")
    if not np.isfinite(context).all():
        raise BadRequest("context holds NaN or Inf values")


def _domain(tmd: np.ndarray | None, lane_value: Any, tmd_name: str,
            lane_name: str) -> tuple[np.ndarray, int]:
    """(tmd float32 [16], lane) from a TMD vector and/or a lane; they must agree."""
    if tmd is not None:
        if tmd.shape != (TMD_DIM,):
            raise BadRequest(f"tmd must be a list of {TMD_DIM} numbers, got shape "
                             f"{list(tmd.shape)}")
        if not np.isfinite(tmd).all():
            raise BadRequest("tmd holds NaN or Inf values")
        lane = int(np.argmax(tmd))
        if lane_value is not None and _lane(lane_value) != lane:
            raise BadRequest(f"lane {lane_value} disagrees with the tmd vector's lane {lane}")
        return tmd, lane
    if lane_value is not None:
        lane = _lane(lane_value)
        tmd = np.zeros(TMD_DIM, dtype=np.float32)
        tmd[lane] = 1.0
        return tmd, lane
    raise BadRequest(f"give the request's domain: {tmd_name} ({TMD_DIM} numbers) or "
                     f"{lane_name} (0..{NUM_LANES - 1})")


def _b64_context(value: Any, dim: int) -> np.ndarray:
    """The compact form: base64 of the row-major little-endian float32 bytes of [T, D]."""
    if not isinstance(value, str):
        raise BadRequest("context_b64 must be a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise BadRequest(f"context_b64 is not valid base64: {exc}") from None
    if len(raw) % (4 * dim):
        raise BadRequest(f"context_b64 holds {len(raw)} bytes: not a whole number of "
                         f"float32 vectors of dimension {dim}")
    return _f32_rows(raw, dim)


def _f32_rows(raw: bytes, dim: int) -> np.ndarray:
    """``[T, dim]`` float32 view of little-endian bytes: no copy on a little-endian host (the
    array is read-only; nothing downstream writes to a context)."""
    arr = np.frombuffer(raw, dtype="<f4").reshape(-1, dim)
    return arr if arr.dtype == np.float32 else arr.astype(np.float32)


# --------------------------------------------------------------------------------------------
# The binary request


BINARY_CONTENT_TYPE = "application/octet-stream"
HEADER_LANE = "x-lvm-lane"  # 0..15
HEADER_TMD = "x-lvm-tmd"  # 16 comma-separated numbers (instead of, or agreeing with, the lane)
HEADER_K = "x-lvm-k"  # 1..MAX_K, default DEFAULT_K
HEADER_USER = "x-lvm-user"  # the user key (userHash routing)
HEADER_PIN = "x-lvm-version"  # a live version's name: QA pins the request to it (not judged)
HEADER_VECTOR = "x-lvm-vector"  # "0" / "false" / "no" / "omit": answer without the vector
QUERY_VECTOR = "vector"  # the same as a query parameter: ?vector=0

_NO = frozenset({"0", "false", "no", "omit", "none"})
_YES = frozenset({"1", "true", "yes"})


def is_binary(content_type: str | None) -> bool:
    """Whether a request's ``content-type`` selects the binary body (parameters ignored)."""
    return (content_type or "").split(";", 1)[0].strip().lower() == BINARY_CONTENT_TYPE


def parse_binary_request(
    body: bytes,
    headers: Mapping[str, str],
    *,
    dim: int,
    max_context: int | None = None,
    max_k: int = MAX_K,
) -> PredictRequest:
    """Validate a binary predict request: the body is the context as little-endian float32
    ``[T, dim]`` (row-major, no header), the scalars come in headers (lower-case names, as
    Starlette's ``request.headers`` gives them): ``x-lvm-lane`` or ``x-lvm-tmd``, ``x-lvm-k``,
    ``x-lvm-user``. The context is a read-only view of ``body`` (no copy, no list)."""
    if not isinstance(body, (bytes, bytearray, memoryview)):
        raise BadRequest(f"binary body must be bytes, got {type(body).__name__}")
    if len(body) == 0:
        raise BadRequest(f"binary body is empty: send the context as little-endian float32 "
                         f"[T, {dim}] ({4 * dim} bytes per vector)")
    if len(body) % (4 * dim):
        raise BadRequest(f"binary body holds {len(body)} bytes: not a whole number of float32 "
                         f"vectors of dimension {dim} ({4 * dim} bytes each)")
    context = _f32_rows(bytes(body) if not isinstance(body, bytes) else body, dim)
    _check_context(context, dim, max_context)
    tmd = None
    tmd_text = headers.get(HEADER_TMD)
    if tmd_text is not None:
        try:
            tmd = np.asarray([float(x) for x in tmd_text.split(",")], dtype=np.float32)
        except ValueError:
            raise BadRequest(f"header {HEADER_TMD} must be {TMD_DIM} comma-separated numbers, "
                             f"got {tmd_text[:80]!r}") from None
    lane_value = _header_int(headers, HEADER_LANE, f"an integer 0..{NUM_LANES - 1}")
    tmd, lane = _domain(tmd, lane_value, f"header {HEADER_TMD}", f"header {HEADER_LANE}")
    k = _header_int(headers, HEADER_K, f"an integer in 1..{max_k}")
    k = DEFAULT_K if k is None else k
    if not 1 <= k <= max_k:
        raise BadRequest(f"header {HEADER_K} must be an integer in 1..{max_k}, got {k}")
    user = headers.get(HEADER_USER)
    return PredictRequest(context=context, tmd=tmd, lane=lane, k=k,
                          user_key=user if user else None)


def _header_int(headers: Mapping[str, str], name: str, what: str) -> int | None:
    text = headers.get(name)
    if text is None:
        return None
    text = text.strip()
    if not (text.isascii() and text.lstrip("-").isdigit()):
        raise BadRequest(f"header {name} must be {what}, got {text[:40]!r}")
    return int(text)


def wants_vector(query_value: str | None, header_value: str | None) -> bool:
    """Whether the answer carries the predicted vector (``?vector=0`` or ``x-lvm-vector: 0``
    omit it: many clients only need the concepts). Default: yes."""
    for name, value in ((QUERY_VECTOR, query_value), (HEADER_VECTOR, header_value)):
        if value is None:
            continue
        v = value.strip().lower()
        if v in _NO:
            return False
        if v not in _YES:
            raise BadRequest(f"{name} must be one of 1/true/yes or 0/false/no/omit, "
                             f"got {value[:40]!r}")
    return True


def _lane(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < NUM_LANES:
        raise BadRequest(f"unknown lane {value!r}: lanes are integers 0..{NUM_LANES - 1}")
    return value


# --------------------------------------------------------------------------------------------
# Shadow comparison


def shadow_comparison(champion_vec: Any, champion_ids: Any, candidate_vec: Any,
                      candidate_ids: Any) -> tuple[float, float]:
    """(|top5 ∩ top5| / 5, cosine of the two predictions); non-finite cosine → 0."""
    top_a = {int(i) for i in list(champion_ids)[:5]}
    top_b = {int(i) for i in list(candidate_ids)[:5]}
    overlap = len(top_a & top_b) / 5.0
    a = np.asarray(champion_vec, dtype=np.float64)
    b = np.asarray(candidate_vec, dtype=np.float64)
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    cosine = float(a @ b) / denom if denom > 0 else 0.0
    if not math.isfinite(cosine):
        cosine = 0.0
    return overlap, cosine
