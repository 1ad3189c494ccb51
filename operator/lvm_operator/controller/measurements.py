"""Measurements from Prometheus, shared by every rollout in this process.

The analysis queries return every rollout's series at once, so one reader per Prometheus URL
and a short-lived answer cache let rollouts whose checks fall due together (the common case at
scale) share one round of queries. A failed query is an ``error`` observation (the decision core
holds), never an exception.
"""

from __future__ import annotations

import logging
import threading
import time

from ..analysis.prometheus import PrometheusReader, Snapshot
from ..api.endpoints import check_endpoint
from ..decision import (
    Check,
    Observations,
    Plan,
    RolloutState,
    guardrail_window_s,
    quality_window_s,
)
from ..metrics import METRICS

log = logging.getLogger("lvm_operator.controller")


class AnalysisCache:
    """One Prometheus reader per URL, and each query round's answer kept for ``ttl_s``.

    The reader's queries return every rollout's series, so rollouts whose checks fall due
    together (the common case at scale) share one round of queries.
    """

    def __init__(self, ttl_s: float = 0.3, timeout_s: float = 3.0, connections: int = 16) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.connections = connections  # per Prometheus: one for each tick thread
        self._readers: dict[str, PrometheusReader] = {}
        self._answers: dict[tuple[str, Check, float], tuple[float, Snapshot]] = {}
        self._lock = threading.Lock()

    def snapshot(self, url: str, check: Check, window_s: float) -> Snapshot:
        key = (url, check, window_s)
        with self._lock:
            hit = self._answers.get(key)
            if hit is not None and time.monotonic() - hit[0] < self.ttl_s:
                return hit[1]
            reader = self._readers.get(url)
        if reader is None:
            # the rollout's author chose this URL: refuse SSRF targets before any connection
            problem = check_endpoint(url, "spec.prometheus.url")
            if problem is not None:
                METRICS.record_error("prometheus")
                return Snapshot(window_s, error=problem)
            with self._lock:
                reader = self._readers.get(url)
                if reader is None:
                    reader = self._readers[url] = PrometheusReader(
                        url, timeout_s=self.timeout_s, connections=self.connections)
        try:
            with METRICS.time_check(check.value):
                if check is Check.GUARDRAIL:
                    snap = reader.observe_guardrails(window_s)
                else:
                    snap = reader.observe_quality(window_s)
        except Exception as e:  # never crash the loop: an unreadable answer is an error verdict
            log.warning("analysis against %s failed: %s", url, e)
            snap = Snapshot(window_s, error=f"{type(e).__name__}: {e}")
        if snap.error is not None:
            METRICS.record_error("prometheus")
        with self._lock:
            self._answers[key] = (time.monotonic(), snap)
        return snap

    def observations(self, url: str, plan: Plan, state: RolloutState, due: frozenset[Check],
                     rollout: str, now: float) -> Observations:
        """The due checks' observations over the windows the decision core asks for."""
        g = q = ref = None
        if Check.GUARDRAIL in due:
            g = self.snapshot(url, Check.GUARDRAIL,
                              guardrail_window_s(plan, state, now)).for_rollout(rollout)
            champ = g.versions.get(plan.champion)
            if g.error is None and (champ is None or champ.requests < plan.guardrails.min_requests):
                # Too little champion traffic to compare latency with (e.g. at 100%): its
                # histogram over the quality window.
                ref = self.snapshot(url, Check.GUARDRAIL,
                                    plan.quality.window_s).for_rollout(rollout)
        if Check.QUALITY in due:
            q = self.snapshot(url, Check.QUALITY,
                              quality_window_s(plan, state, now)).for_rollout(rollout)
        return Observations(guardrail=g, quality=q, guardrail_reference=ref)
