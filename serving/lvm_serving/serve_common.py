"""What the router and the version deployments share at their edges: metrics and HTTP helpers.

* :class:`Metrics` — the contract's metrics (:mod:`lvm_serving.contracts.metrics`) as
  ``ray.util.metrics`` objects, one set per replica process. Tag dicts come from small caches
  (:func:`tags`, :func:`stage_tags`): a replica sees a handful of (rollout, version, lane)
  combinations, so building and filtering a dict per record is waste.
* :class:`StageClock` — the per-request stage timer behind the ``lvm_stage_latency_seconds``
  histogram and the ``server-timing`` response header (milliseconds per stage, the standard
  header browsers and the benchmark read), so one request shows where its time went.
* JSON error answers and body parsing.
"""

from __future__ import annotations

import functools
import json
import time
from typing import Any

from ray.util import metrics as ray_metrics
from starlette.requests import Request
from starlette.responses import JSONResponse

from lvm_serving.contracts import metrics as mc
from lvm_serving.router import BadRequest


class Metrics:
    """The contract's metrics as ``ray.util.metrics`` objects (one set per replica process)."""

    def __init__(self) -> None:
        self._m: dict[str, Any] = {}
        for d in mc.ALL_METRICS:
            if d.kind is mc.MetricKind.HISTOGRAM:
                self._m[d.name] = ray_metrics.Histogram(
                    d.name, description=d.description,
                    boundaries=list(mc.buckets_for(d)), tag_keys=d.labels,
                )
            else:
                self._m[d.name] = ray_metrics.Counter(d.name, description=d.description,
                                                      tag_keys=d.labels)

    @staticmethod
    def _only(metric: mc.MetricDef, tags: dict[str, str]) -> dict[str, str]:
        if len(tags) == len(metric.labels):  # the common case: exactly the metric's labels
            return tags
        return {k: tags[k] for k in metric.labels}

    def inc(self, metric: mc.MetricDef, tags: dict[str, str], value: float = 1.0) -> None:
        if value > 0:  # Ray counters refuse 0
            self._m[metric.name].inc(value, tags=self._only(metric, tags))

    def observe(self, metric: mc.MetricDef, value: float, tags: dict[str, str]) -> None:
        self._m[metric.name].observe(value, tags=self._only(metric, tags))

    def stages(self, rollout: str, version: str, seconds: dict[str, float]) -> None:
        hist = self._m[mc.STAGE_LATENCY.name]
        for stage, value in seconds.items():
            hist.observe(value, tags=stage_tags(rollout, version, stage))


@functools.lru_cache(maxsize=4096)
def tags(rollout: str, version: str, lane: Any, shadow: bool = False,
         pinned: bool = False) -> dict[str, str]:
    """The common labels (cached: callers must not modify the dict)."""
    return {mc.LABEL_ROLLOUT: rollout, mc.LABEL_VERSION: version, mc.LABEL_LANE: str(lane),
            mc.LABEL_SHADOW: "true" if shadow else "false",
            mc.LABEL_PINNED: "true" if pinned else "false"}


@functools.lru_cache(maxsize=4096)
def with_reason(rollout: str, version: str, lane: Any, shadow: bool, pinned: bool,
                reason: str) -> dict[str, str]:
    return {**tags(rollout, version, lane, shadow, pinned), mc.LABEL_REASON: reason}


@functools.lru_cache(maxsize=1024)
def stage_tags(rollout: str, version: str, stage: str) -> dict[str, str]:
    return {mc.LABEL_ROLLOUT: rollout, mc.LABEL_VERSION: version, mc.LABEL_STAGE: stage}


class StageClock:
    """Seconds per stage of one request: ``lap(stage)`` closes the stage that began at the
    previous lap (or at creation); ``add`` records a duration measured elsewhere."""

    __slots__ = ("began", "last", "seconds")

    def __init__(self, began: float | None = None) -> None:
        self.began = self.last = time.perf_counter() if began is None else began
        self.seconds: dict[str, float] = {}

    def lap(self, stage: str) -> float:
        now = time.perf_counter()
        self.seconds[stage] = self.seconds.get(stage, 0.0) + now - self.last
        self.last = now
        return now

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def total(self, stage: str) -> None:
        self.seconds[stage] = time.perf_counter() - self.began


def server_timing(seconds: dict[str, float]) -> str:
    """``server-timing`` header value: ``stage;dur=<ms>, ...`` (milliseconds, 3 decimals)."""
    return ", ".join(f"{stage};dur={s * 1000:.3f}" for stage, s in seconds.items())


def parse_server_timing(value: str) -> dict[str, float]:
    """Milliseconds per stage from a ``server-timing`` header (the inverse of the above)."""
    out: dict[str, float] = {}
    for part in value.split(","):
        name, _, rest = part.strip().partition(";")
        if name and rest.startswith("dur="):
            out[name] = float(rest[4:])
    return out


def error(status: int, reason: str, message: str) -> JSONResponse:
    return JSONResponse({"error": message, "reason": reason}, status_code=status)


#: The largest request body read (a 1,000-vector context at d=768 in JSON is ~15 MB; the
#: binary form ~3 MB). A bigger one is refused before it is read: it would hold the router's
#: event loop and memory for every other request.
MAX_BODY_BYTES = 32 * 1024 * 1024


def json_loads(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BadRequest(f"malformed JSON body: {exc}") from None
    except RecursionError:
        raise BadRequest("malformed JSON body: nested too deeply") from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits
        raise BadRequest(f"malformed JSON body: {str(exc)[:200]}") from None


async def read_body(request: Request, limit: int = MAX_BODY_BYTES) -> bytes:
    """The request body, refused with 413 once it is longer than ``limit`` bytes (by its
    content-length, else while it streams in)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BadRequest(f"request body of {declared} bytes is over the limit of {limit}", 413)
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BadRequest(f"request body is over the limit of {limit} bytes", 413)
        chunks.append(chunk)
    return b"".join(chunks)


async def json_body(request: Request) -> Any:
    return json_loads(await read_body(request))


def route_name(request: Request) -> str:
    return request.url.path.rstrip("/").rsplit("/", 1)[-1]
