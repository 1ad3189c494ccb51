"""Polling helpers shared by the tests (never fixed sleeps: wait for the real condition)."""

from __future__ import annotations

import time

from lvm_operator.devstack.prometheus import PrometheusServer
from lvm_operator.devstack.stack import wait_for


def wait_for_series(server: PrometheusServer, promql: str, timeout_s: float = 30) -> list[dict]:
    """Poll an instant query until it returns at least one series; returns the result."""
    result: list[dict] = []

    def has_data() -> bool:
        nonlocal result
        result = server.query(promql)
        return bool(result)

    wait_for(has_data, timeout_s, f"series for {promql!r} in Prometheus", "prometheus")
    return result


def eventually(predicate, timeout_s: float = 30, what: str = "condition", interval_s: float = 0.2):
    """Poll until ``predicate()`` is truthy and return its value, else fail the test."""
    deadline = time.monotonic() + timeout_s
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except Exception as exc:  # retried until the deadline, then reported
            last_exc = exc
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}; last error: {last_exc}")


def kstatus(obj: dict) -> str:
    """What kstatus (kubernetes-sigs/cli-utils, behind Flux's health assessment) makes of a
    custom resource, by the rules of its README: ``InProgress`` while
    ``status.observedGeneration`` is behind ``metadata.generation`` or ``Reconciling`` is True,
    ``Failed`` when ``Stalled`` is True, otherwise ``Current``."""
    status = obj.get("status") or {}
    generation = obj["metadata"].get("generation")
    if generation is not None and status.get("observedGeneration", 0) < generation:
        return "InProgress"
    conditions = {c["type"]: c["status"] for c in status.get("conditions") or []}
    if conditions.get("Reconciling") == "True":
        return "InProgress"
    if conditions.get("Stalled") == "True":
        return "Failed"
    return "Current"
