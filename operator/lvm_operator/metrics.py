"""The operator's own Prometheus metrics: is it keeping rollouts on schedule, and what is it doing?

These describe the *operator* (the serving app's metrics are in
:mod:`lvm_serving.metrics_contract`). They live in their own registry, not prometheus_client's
global one, so importing Ray, Kopf or anything else that registers collectors cannot leak into the
operator's ``/metrics``, and tests can make a fresh set.

=====================================================  =======  ==============================
name                                                   type     labels
=====================================================  =======  ==============================
``lvm_operator_rollouts``                              gauge    ``phase`` (every phase, 0 too)
``lvm_operator_decisions_total``                       counter  ``action`` (hold, advance, ...)
``lvm_operator_check_duration_seconds``                histo    ``check`` (guardrail, quality)
``lvm_operator_errors_total``                          counter  ``kind`` (prometheus, serve, ...)
``lvm_operator_reconcile_delay_seconds``               histo    — how late a due reconcile ran
=====================================================  =======  ==============================

The rollouts gauge is derived from the last phase seen per rollout (:meth:`set_phase`,
:meth:`forget`), so a rollout that changes phase moves from one series to the other instead of
being counted twice.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from lvm_operator.api.status import Phase

PREFIX = "lvm_operator"
METRICS_PATH = "/metrics"
#: Check durations: PromQL round trips, from a few ms to a slow Prometheus.
CHECK_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Reconcile delays: 0 is on time; minutes mean the operator cannot keep up.
DELAY_BUCKETS_S = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


class OperatorMetrics:
    """One set of the operator's metrics in its own registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry(auto_describe=True)
        self.rollouts = Gauge(f"{PREFIX}_rollouts", "LVMRollouts by phase.", ["phase"],
                              registry=self.registry)
        self.decisions = Counter(f"{PREFIX}_decisions", "Decisions taken, by action.",
                                 ["action"], registry=self.registry)
        self.check_duration = Histogram(
            f"{PREFIX}_check_duration_seconds", "Time to run one analysis check, by check.",
            ["check"], buckets=CHECK_BUCKETS_S, registry=self.registry)
        self.errors = Counter(f"{PREFIX}_errors", "Errors while reconciling, by kind.", ["kind"],
                              registry=self.registry)
        self.reconcile_delay = Histogram(
            f"{PREFIX}_reconcile_delay_seconds",
            "How long after it was due a reconcile ran (timer or check).",
            buckets=DELAY_BUCKETS_S, registry=self.registry)
        self._phases: dict[str, str] = {}
        self._lock = threading.Lock()
        self._publish_phases()

    # -- rollouts by phase ---------------------------------------------------------------------

    def set_phase(self, rollout: str, phase: Phase | str | None) -> None:
        """Record the phase of ``rollout`` (``namespace/name``); None counts it as Pending."""
        with self._lock:
            self._phases[rollout] = str(phase or Phase.PENDING)
            self._publish_phases()

    def forget(self, rollout: str) -> None:
        """The rollout was deleted: stop counting it."""
        with self._lock:
            self._phases.pop(rollout, None)
            self._publish_phases()

    def _publish_phases(self) -> None:
        counts = {str(p): 0 for p in Phase}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.rollouts.labels(phase=phase).set(count)

    # -- events -------------------------------------------------------------------------------

    def record_decision(self, action: str) -> None:
        self.decisions.labels(action=str(action)).inc()

    def record_error(self, kind: str) -> None:
        self.errors.labels(kind=str(kind)).inc()

    def observe_check(self, check: str, seconds: float) -> None:
        self.check_duration.labels(check=str(check)).observe(max(seconds, 0.0))

    @contextmanager
    def time_check(self, check: str) -> Iterator[None]:
        """``with metrics.time_check("guardrail"): ...`` (timed even when it raises)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.observe_check(check, time.perf_counter() - start)

    def observe_reconcile_delay(self, seconds: float) -> None:
        """How late a due reconcile ran (negative — early — counts as 0)."""
        self.reconcile_delay.observe(max(seconds, 0.0))


#: The operator process's metrics.
METRICS = OperatorMetrics()


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # scrapes are not news
        pass


class _ThreadingWSGIServer(WSGIServer):
    daemon_threads = True

    def process_request(self, request, client_address):  # one thread per scrape
        thread = threading.Thread(target=self._handle, args=(request, client_address),
                                  daemon=True)
        thread.start()

    def _handle(self, request, client_address):
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


def serve_metrics(port: int, host: str = "0.0.0.0",
                  metrics: OperatorMetrics | None = None) -> WSGIServer:
    """Serve ``metrics`` (default :data:`METRICS`) on ``http://host:port/metrics`` in a thread.

    Other paths answer 404. ``port=0`` picks a free port (read it from ``server.server_port``);
    ``server.shutdown()`` stops it.
    """
    exporter = make_wsgi_app((metrics or METRICS).registry)

    def app(environ, start_response):
        if environ.get("PATH_INFO", "") in (METRICS_PATH, METRICS_PATH + "/"):
            return exporter(environ, start_response)
        start_response("404 Not Found", [("Content-Type", "text/plain")])
        return [b"metrics are at /metrics\n"]

    server = make_server(host, port, app, server_class=_ThreadingWSGIServer,
                         handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="metrics-http", daemon=True).start()
    return server
