"""The operator's own Prometheus metrics: is it keeping rollouts on schedule, and what is it doing?

These describe the *operator* (the serving app's metrics are in
:mod:`lvm_serving.contracts.metrics`). They live in their own registry, not prometheus_client's
global one, so importing Ray, Kopf or anything else that registers collectors cannot leak into the
operator's ``/metrics``, and tests can make a fresh set.

=====================================================  =======  ==============================
name                                                   type     labels
=====================================================  =======  ==============================
``lvm_operator_rollouts``                              gauge    ``phase`` (every phase, 0 too)
``lvm_operator_decisions_total``                       counter  ``action`` (hold, advance, ...)
``lvm_operator_checks_total``                          counter  ``check``: checks judged (the
                                                                rate a rollout count needs)
``lvm_operator_check_duration_seconds``                histo    ``check`` (guardrail, quality)
``lvm_operator_errors_total``                          counter  ``kind`` (prometheus, serve, ...)
``lvm_operator_reconcile_delay_seconds``               histo    — how late a due reconcile ran
=====================================================  =======  ==============================

Model quality, exported by the operator because the operator measures it (offline evaluation on
the eval set, and lane health); set from each rollout's status on every tick, so a restarted
operator exports them again from what status recorded:

=====================================================  =======  ==============================
``lvm_eval_hit_ratio``                                 gauge    ``rollout, version, k``
``lvm_eval_lane_hit_ratio``                            gauge    ``rollout, version, lane, k``
``lvm_eval_drift_ratio``                               gauge    ``rollout, version, metric,
                                                                lane`` (no lane: overall)
``lvm_eval_drift_detected``                            gauge    ``rollout, version`` (0 or 1)
``lvm_eval_gate_passed``                               gauge    ``rollout, version`` (0 or 1)
``lvm_eval_last_run_timestamp_seconds``                gauge    ``rollout, version, purpose``
``lvm_lane_below_overall_ratio``                       gauge    ``rollout, version, lane,
                                                                source`` (flagged lanes only)
``lvm_lane_health_flagged_lanes``                      gauge    ``rollout`` (0 when healthy)
``lvm_rollout_info``                                   gauge    ``rollout, namespace, phase,
                                                                champion, candidate`` (1)
``lvm_rollout_candidate_weight_percent``               gauge    ``rollout``
``lvm_rollout_current_step``                           gauge    ``rollout`` (from 1; 0 before)
``lvm_rollout_condition``                              gauge    ``rollout, type, status,
                                                                reason`` (1 per condition)
``lvm_rollout_analysis_value``                         gauge    ``rollout, check, metric,
                                                                version`` (the candidate's)
``lvm_rollout_decision_lag_seconds``                   gauge    ``rollout``: seconds since its
                                                                guardrails last ran (judged
                                                                phases only), at scrape time
``lvm_rollout_guardrail_interval_seconds``             gauge    ``rollout``: how often they
                                                                should
=====================================================  =======  ==============================

The lag is computed when Prometheus scrapes, from the last check the rollout's status recorded,
so it grows while a rollout is starved: a tick that never runs cannot hide in a histogram of the
ticks that did (``LVMRolloutChecksLate`` fires at three intervals).

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
from prometheus_client.core import GaugeMetricFamily

from lvm_operator.api.status import (
    DriftVerdict,
    EvalResult,
    GateVerdict,
    LVMRolloutStatus,
    Phase,
)

PREFIX = "lvm_operator"

# Model-quality metric names (the alert rules are rendered from these).
EVAL_HIT = "lvm_eval_hit_ratio"
EVAL_LANE_HIT = "lvm_eval_lane_hit_ratio"
EVAL_DRIFT = "lvm_eval_drift_ratio"
EVAL_DRIFT_DETECTED = "lvm_eval_drift_detected"
EVAL_GATE_PASSED = "lvm_eval_gate_passed"
EVAL_LAST_RUN = "lvm_eval_last_run_timestamp_seconds"
LANE_BELOW_OVERALL = "lvm_lane_below_overall_ratio"
LANE_FLAGGED = "lvm_lane_health_flagged_lanes"
ROLLOUT_INFO = "lvm_rollout_info"
ROLLOUT_WEIGHT = "lvm_rollout_candidate_weight_percent"
ROLLOUT_STEP = "lvm_rollout_current_step"
ROLLOUT_CONDITION = "lvm_rollout_condition"
ROLLOUT_MEASUREMENT = "lvm_rollout_analysis_value"
ROLLOUT_DECISION_LAG = "lvm_rollout_decision_lag_seconds"
ROLLOUT_GUARDRAIL_INTERVAL = "lvm_rollout_guardrail_interval_seconds"
#: Phases in which guardrails run (they stay armed while paused).
JUDGED_PHASES = frozenset({Phase.PROGRESSING, Phase.PAUSED})
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
        self.checks = Counter(f"{PREFIX}_checks", "Checks judged, by check.", ["check"],
                              registry=self.registry)
        self.check_duration = Histogram(
            f"{PREFIX}_check_duration_seconds", "Time to run one analysis check, by check.",
            ["check"], buckets=CHECK_BUCKETS_S, registry=self.registry)
        self.errors = Counter(f"{PREFIX}_errors", "Errors while reconciling, by kind.", ["kind"],
                              registry=self.registry)
        self.reconcile_delay = Histogram(
            f"{PREFIX}_reconcile_delay_seconds",
            "How long after it was due a reconcile ran (timer or check).",
            buckets=DELAY_BUCKETS_S, registry=self.registry)
        self.quality = QualityCollector()
        self.registry.register(self.quality)
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
        self.quality.forget(rollout)

    def set_quality(self, rollout: str, status: LVMRolloutStatus,
                    guardrail_interval_s: float | None = None) -> None:
        """Model-quality gauges of ``rollout`` from its new status."""
        self.quality.set_rollout(rollout, status, guardrail_interval_s)

    def _publish_phases(self) -> None:
        counts = {str(p): 0 for p in Phase}
        for phase in self._phases.values():
            counts[phase] = counts.get(phase, 0) + 1
        for phase, count in counts.items():
            self.rollouts.labels(phase=phase).set(count)

    # -- events -------------------------------------------------------------------------------

    def record_decision(self, action: str) -> None:
        self.decisions.labels(action=str(action)).inc()

    def record_check(self, check: str) -> None:
        self.checks.labels(check=str(check)).inc()

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


class QualityCollector:
    """Model-quality gauges, rebuilt from each rollout's latest status (see the table above)."""

    _HELP = {
        EVAL_HIT: ("Hit@k (exact) of a version on the held-out eval set, newest evaluation.",
                   ["rollout", "version", "k"]),
        EVAL_LANE_HIT: ("Hit@k (exact) of one TMD lane on the eval set, newest evaluation.",
                        ["rollout", "version", "lane", "k"]),
        EVAL_DRIFT: ("Relative drift (current - baseline) / baseline of the champion's eval-set "
                     "Hit@k; no lane label: overall.", ["rollout", "version", "metric", "lane"]),
        EVAL_DRIFT_DETECTED: ("1 when the champion's eval-set numbers drifted beyond "
                              "spec.evaluation.drift.maxRelativeDrift.", ["rollout", "version"]),
        EVAL_GATE_PASSED: ("1 when the candidate passed the pre-rollout gate, 0 when blocked.",
                           ["rollout", "version"]),
        EVAL_LAST_RUN: ("When the newest evaluation of a version finished (unix seconds).",
                        ["rollout", "version", "purpose"]),
        LANE_BELOW_OVERALL: ("How far (relative) a flagged lane is below its version's overall "
                             "Hit@5; only lanes beyond analysis.laneHealth.maxBelowOverall.",
                             ["rollout", "version", "lane", "source"]),
        LANE_FLAGGED: ("Number of flagged lanes of a rollout (0 when every lane is healthy).",
                       ["rollout"]),
        ROLLOUT_INFO: ("1 per rollout: its phase and the versions serving as champion and "
                       "candidate (empty: none).",
                       ["rollout", "namespace", "phase", "champion", "candidate"]),
        ROLLOUT_WEIGHT: ("Percent of traffic the candidate receives now.", ["rollout"]),
        ROLLOUT_STEP: ("The current step, from 1 (0: before the first step).", ["rollout"]),
        ROLLOUT_CONDITION: ("1 per condition of a rollout's status, with its status and reason "
                            "(as kube-state-metrics exports conditions).",
                            ["rollout", "type", "status", "reason"]),
        ROLLOUT_MEASUREMENT: ("The latest analysis' numbers for the candidate (all lanes): the "
                              "judge's current estimate of each metric.",
                              ["rollout", "check", "metric", "version"]),
    }

    _LAG_HELP = {
        ROLLOUT_DECISION_LAG: "Seconds since the rollout's guardrails last ran (while they "
                              "should run: Progressing or Paused), computed at scrape time.",
        ROLLOUT_GUARDRAIL_INTERVAL: "How often the rollout's guardrails should run "
                                    "(spec.analysis.guardrails.interval).",
    }

    def __init__(self, clock: Any = time.time) -> None:
        self._samples: dict[str, list[tuple[str, tuple[str, ...], float]]] = {}
        self._checked: dict[str, tuple[float, float]] = {}  # rollout -> (last check, interval)
        self._clock = clock
        self._lock = threading.Lock()

    def set_rollout(self, rollout: str, status: LVMRolloutStatus,
                    guardrail_interval_s: float | None = None) -> None:
        samples = list(_quality_samples(rollout, status))
        since = _last_judged(status)
        with self._lock:
            self._samples[rollout] = samples
            if since is not None and guardrail_interval_s:
                self._checked[rollout] = (since, guardrail_interval_s)
            else:
                self._checked.pop(rollout, None)

    def forget(self, rollout: str) -> None:
        with self._lock:
            self._samples.pop(rollout, None)
            self._checked.pop(rollout, None)

    def knows(self, rollout: str) -> bool:
        with self._lock:
            return rollout in self._samples

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            rows = [x for samples in self._samples.values() for x in samples]
            checked = dict(self._checked)
        for name, (help_text, labels) in self._HELP.items():
            family = GaugeMetricFamily(name, help_text, labels=labels)
            for metric, values, value in rows:
                if metric == name:
                    family.add_metric(list(values), value)
            yield family
        now = self._clock()
        lag = GaugeMetricFamily(ROLLOUT_DECISION_LAG, self._LAG_HELP[ROLLOUT_DECISION_LAG],
                                labels=["rollout"])
        interval = GaugeMetricFamily(ROLLOUT_GUARDRAIL_INTERVAL,
                                     self._LAG_HELP[ROLLOUT_GUARDRAIL_INTERVAL],
                                     labels=["rollout"])
        for rollout, (since, every) in sorted(checked.items()):
            lag.add_metric([rollout], max(now - since, 0.0))
            interval.add_metric([rollout], every)
        yield lag
        yield interval


def _last_judged(status: LVMRolloutStatus) -> float | None:
    """When the rollout's guardrails last ran (or its step began, before the first check), in
    the phases where they run; None otherwise."""
    ds = status.decision_state
    if ds is None or ds.phase not in JUDGED_PHASES:
        return None
    times = [t for t in (ds.last_guardrail_at, ds.step_started_at) if t is not None]
    return max(times) if times else None


def _quality_samples(rollout: str, status: LVMRolloutStatus
                     ) -> Iterator[tuple[str, tuple[str, ...], float]]:
    ev = status.evaluation
    if ev is not None:
        newest: dict[str, EvalResult] = {}
        last_run: dict[tuple[str, str], float] = {}
        for r in ev.history or []:
            last_run[(r.version, r.purpose.value)] = r.time.timestamp()
            if r.error is None:
                newest[r.version] = r
        for (version, purpose), t in sorted(last_run.items()):
            yield EVAL_LAST_RUN, (rollout, version, purpose), t
        for version, r in sorted(newest.items()):
            for k in ("1", "5", "10"):
                value = getattr(r, f"hit{k}")
                if value is not None:
                    yield EVAL_HIT, (rollout, version, k), value
                for lane in r.lanes or []:
                    lane_value = getattr(lane, f"hit{k}")
                    if lane_value is not None:
                        yield EVAL_LANE_HIT, (rollout, version, str(lane.lane), k), lane_value
        d = ev.drift
        if d is not None and d.verdict in (DriftVerdict.OK, DriftVerdict.DRIFTED):
            yield EVAL_DRIFT_DETECTED, (rollout, d.version), float(
                d.verdict is DriftVerdict.DRIFTED)
            for row in d.rows or []:
                lane = "" if row.lane is None else str(row.lane)
                yield EVAL_DRIFT, (rollout, d.version, row.metric, lane), row.relative
        g = ev.gate
        if g is not None and g.verdict in (GateVerdict.PASS, GateVerdict.BLOCKED):
            yield EVAL_GATE_PASSED, (rollout, g.candidate), float(g.verdict is GateVerdict.PASS)
    yield from _rollout_samples(rollout, status)
    lh = status.lane_health
    if lh is not None:
        flagged = lh.flagged or []
        yield LANE_FLAGGED, (rollout,), float(len(flagged))
        for f in flagged:
            yield (LANE_BELOW_OVERALL, (rollout, f.version, str(f.lane), f.source.value),
                   f.below_relative)


def _rollout_samples(rollout: str, status: LVMRolloutStatus
                     ) -> Iterator[tuple[str, tuple[str, ...], float]]:
    """Where a rollout stands, for alerts and dashboards (every label value is bounded: names,
    enum values and CamelCase reasons, never a message)."""
    serving = status.serving
    champion = (serving.champion if serving is not None else None) or ""
    candidate = (serving.candidate if serving is not None else None) or ""
    phase = str(status.phase or Phase.PENDING)
    yield ROLLOUT_INFO, (rollout, rollout.partition("/")[0], phase, champion, candidate), 1.0
    yield ROLLOUT_WEIGHT, (rollout,), float(status.candidate_weight or 0)
    step = status.current_step
    yield ROLLOUT_STEP, (rollout,), float(step + 1 if step is not None else 0)
    for c in status.conditions or []:
        yield ROLLOUT_CONDITION, (rollout, c.type, c.status.value, c.reason), 1.0
    analysis = status.last_analysis
    if analysis is not None and candidate:
        for m in analysis.measurements or []:
            if m.version == candidate and m.lane is None and m.value is not None:
                yield (ROLLOUT_MEASUREMENT, (rollout, analysis.check or "", m.metric, m.version),
                       m.value)


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
