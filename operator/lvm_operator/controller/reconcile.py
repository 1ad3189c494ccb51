"""The I/O shell around the pure tick: read → measure → observe serving → tick → apply → write
status → emit.

Each step is one method below, in that order; what to do is decided by :mod:`.tick` (pure), what
is done is here:

1. **Read** the CR fresh from the apiserver (the daemon's copy may be stale; status is the only
   memory: decision state, timers, what is served) and plan the tick
   (:func:`~.tick.plan_tick`: validation, a spec change, a manual command, what is due).
2. **Measure** only what the plan asks: the due checks and the production lane window through
   one shared :class:`~.measurements.AnalysisCache` (Prometheus failures arrive as ``error``
   observations, never as exceptions), and the offline evaluations it wants: started when not
   running, collected when finished (child processes; nothing here blocks, a tick starts an
   evaluation and a later tick collects it).
3. **Observe serving**: what the backend reports live for the rollout's application
   (:meth:`~lvm_operator.backends.ServeBackend.observe`); a backend error is "unknown".
4. **Tick** (:func:`~.tick.tick`): decide, render the Serve config, compute the whole status.
5. **Apply** the Serve config when its hash differs from the recorded one (after writing the
   decision to status with the hash unrecorded, so a failed write moves no traffic), then
   verify the router's config is in effect; a backend failure becomes the Ready/Degraded
   conditions and a Warning Event (:func:`~.tick.settle`), and is retried on the next tick; it
   never crashes the loop.
6. **Write status once** (a merge patch, skipped when unchanged), then remove a consumed
   command's annotations (after the write, so a crash between the two never runs a command
   twice). A status whose only news is newer numbers (a holding rollout's check times and
   measurements) waits up to :func:`~.heartbeat.heartbeat_s`: the newer one is kept here and
   the next tick decides from it while the apiserver still has the one written last
   (:mod:`.heartbeat`; a status someone else changed, or a restart, drops it).
7. **Emit** the Events, each with a log line at the same severity.
"""

from __future__ import annotations

import logging
import math
import os
import threading
import time
from collections.abc import Callable

from ..api import InvalidRolloutError, LVMRolloutSpec, LVMRolloutStatus, parse_status
from ..backends.factory import BackendFactory, default_backend_factory, factory_hook
from ..backends.protocol import ObservedApp, ServeBackend
from ..decision import Check, Observations, WindowObservation
from ..evaluation.runner import EvaluationRunner, Finished, LocalEvaluationRunner, Running
from ..metrics import METRICS
from . import adapter
from .deletion import plan_deletion
from .heartbeat import heartbeat_only, heartbeat_s
from .kube import KubeAccess
from .live import other_owner
from .measurements import AnalysisCache
from .status import WARNING, Event, merge_patch, tick_failed
from .tick import (
    ApplyReport,
    Seen,
    TickOutcome,
    TickPlan,
    plan_tick,
    settle,
    tick,
)

log = logging.getLogger("lvm_operator.controller")

#: FAULT INJECTION, for tests only: with ``LVM_FAULT_INJECTION=1`` in the operator's environment,
#: a rollout annotated ``lvm.rollout.io/fault-skip-ticks: "true"`` is not ticked (a starved
#: rollout, which cannot be caused on demand otherwise; ``LVMRolloutChecksLate`` must notice).
FAULT_INJECTION_ENV = "LVM_FAULT_INJECTION"
FAULT_SKIP_TICKS = "lvm.rollout.io/fault-skip-ticks"


class Reconciler:
    """Ticks rollouts. Thread-safe: one lock per rollout, shared caches for the rest."""

    def __init__(self, kube: KubeAccess, *, backend_factory: BackendFactory | None = None,
                 analysis: AnalysisCache | None = None,
                 evaluator: EvaluationRunner | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.kube = kube
        self.backend_factory = backend_factory or default_backend_factory()
        self.analysis = analysis or AnalysisCache()
        self._evaluator = evaluator
        self.clock = clock
        self._locks: dict[tuple[str, str], threading.Lock] = {}
        self._backends: dict[tuple[str, str, str], ServeBackend] = {}
        self._guard = threading.Lock()
        self._failing: set[tuple[str, str]] = set()  # rollouts whose last tick raised
        self._faults = os.environ.get(FAULT_INJECTION_ENV) == "1"
        # numbers-only statuses not written yet: key -> (the status on the apiserver as read,
        # the newer one); the status each tick read; when each rollout's status was written
        self._unwritten: dict[tuple[str, str], tuple[dict, dict]] = {}
        self._read: dict[tuple[str, str], dict] = {}
        self._written_at: dict[tuple[str, str], float] = {}

    @property
    def evaluator(self) -> EvaluationRunner:
        with self._guard:
            if self._evaluator is None:
                self._evaluator = LocalEvaluationRunner()
            return self._evaluator

    def shutdown(self) -> None:
        """Operator stopping: end running evaluations with it."""
        with self._guard:
            evaluator = self._evaluator
        if isinstance(evaluator, LocalEvaluationRunner):
            evaluator.shutdown()

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def backend(self, namespace: str, spec: LVMRolloutSpec) -> ServeBackend:
        key = (namespace, spec.serve.model_dump_json(), factory_hook())
        with self._guard:
            if key not in self._backends:
                self._backends[key] = self.backend_factory(
                    spec.serve, namespace=namespace, kube_api_client=self.kube.api_client)
            return self._backends[key]

    def tick(self, namespace: str, name: str) -> float | None:
        """Reconcile once; seconds until the next tick is useful, None if the CR is gone.

        A tick that raises is reported once per run of failures (``Degraded=True``,
        ``TickFailed``, a Warning Event) and re-raised for the caller's back-off."""
        with self.lock(namespace, name):
            obj = self.kube.get(namespace, name)
            if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
                for memo in (self._unwritten, self._read, self._written_at):
                    memo.pop((namespace, name), None)
                return None  # gone, or going: the deletion handler reverts (see delete())
            self._read[(namespace, name)] = obj.get("status") or {}
            obj = self._with_unwritten(obj)
            if self._faults and ((obj.get("metadata") or {}).get("annotations") or {}).get(
                    FAULT_SKIP_TICKS) == "true":
                log.warning("FAULT INJECTION: not ticking %s/%s", namespace, name)
                return 1.0
            try:
                wait = self._tick(obj)
            except Exception as e:
                self._report_failure(obj, e)
                raise
            self._failing.discard((namespace, name))
            return wait

    def delete(self, namespace: str, name: str) -> str:
        """Revert on deletion (:mod:`.deletion`): apply the champion-only config and check it
        is in effect. Raises while it is not, so the finalizer keeps the object (retried)."""
        with self.lock(namespace, name):
            obj = self.kube.get(namespace, name)  # fresh: the finalizer keeps it readable
            if obj is None:
                return "already gone"
            meta = obj["metadata"]
            d = plan_deletion(obj, self.clock())
            if d.app is None or d.spec is None:
                return d.reason
            backend = self.backend(meta["namespace"], d.spec)
            key = adapter.rollout_key(namespace, name)
            owner = other_owner(key, backend.observe(d.app.application))
            if owner is not None:
                return f"the application is served by {owner}: left as it is"
            backend.apply(d.app)
            if backend.verify_applied(d.app) is False:
                raise RuntimeError("the champion-only Serve config is not in effect yet")
            self.emit(obj, [Event(WARNING, "RevertedOnDeletion", d.reason)])
            return d.reason

    def _report_failure(self, obj: dict, error: Exception) -> None:
        meta = obj.get("metadata", {})
        key = (meta.get("namespace"), meta.get("name"))
        if key in self._failing:
            return
        self._failing.add(key)
        try:
            old = parse_status(obj.get("status"))
        except InvalidRolloutError:
            old = LVMRolloutStatus()
        update = tick_failed(old, type(error).__name__, self.clock(), meta.get("generation"))
        try:
            if update.patch is not None:
                self.kube.patch_status(key[0], key[1], update.patch)
        except Exception as e:  # the apiserver may be what fails; the log still says it
            log.warning("%s/%s: could not record the failed tick: %s", key[0], key[1], e)
        self.emit(obj, update.events)

    def _tick(self, obj: dict) -> float:
        p = self.read(obj)
        observations, lane = self.measure(p)
        observed = self.observe_serving(p)
        outcome = tick(p, Seen(observations, lane, self.evaluate(p), observed,
                               owner=self.live_owner(p, observed)))
        if outcome.decision is not None:
            METRICS.record_decision(outcome.decision.action.value)
        emitted: set[tuple[str, str, str]] = set()
        if outcome.apply is not None:
            # Record the decision before traffic moves: a status write that fails then moves
            # nothing (the next tick decides again from what is stored). The other order could
            # leave traffic rolled back and a status that still says the candidate has its
            # share, which the drift check would then "restore". The hash stays unrecorded
            # until the apply is verified (the second write). The decision's Events go out with
            # its record: a later failure (the apply, the second write) cannot lose them.
            pending = settle(p, outcome, ApplyReport(in_effect=False))
            self.write_status(p, pending)
            self.emit(obj, pending.events)
            emitted = {(e.type, e.reason, e.message) for e in pending.events}
        outcome = self.apply(p, outcome)
        self.write_status(p, outcome)
        self.emit(obj, [e for e in outcome.events
                        if (e.type, e.reason, e.message) not in emitted])
        return outcome.wait_s

    # --- the steps, in order ---------------------------------------------------------------

    def read(self, obj: dict) -> TickPlan:
        p = plan_tick(obj, self.clock())
        for note in p.notes:
            log.warning("%s: %s", p.key, note)
        return p

    def measure(self, p: TickPlan) -> tuple[Observations, WindowObservation | None]:
        """The due checks, and the production lane window when its check is due."""
        observations = Observations()
        if p.decides and p.plan is not None and p.prometheus_url is not None:
            observations = self.analysis.observations(p.prometheus_url, p.plan, p.state,
                                                      p.checks, p.key, p.now)
            for check in p.checks:
                METRICS.record_check(check.value)
        lane = None
        if p.lane_check is not None:
            lane = self.analysis.snapshot(p.lane_check.url, Check.QUALITY,
                                          p.lane_check.window_s).for_rollout(p.key)
        return observations, lane

    def evaluate(self, p: TickPlan) -> tuple[Running | Finished, ...]:
        """Start the wanted evaluations that are not running; collect the finished ones."""
        if not p.evaluation_requests:
            return ()
        runner = self.evaluator
        answers: list[Running | Finished] = []
        for req in p.evaluation_requests:
            polled = runner.poll(req)
            if isinstance(polled, Finished):
                runner.collect(req)
            elif polled is None:
                polled = runner.submit(req, p.now)
            answers.append(polled)
        return tuple(answers)

    def observe_serving(self, p: TickPlan) -> ObservedApp | None:
        if p.spec is None or p.application is None:
            return None
        try:
            return self.backend(p.namespace, p.spec).observe(p.application)
        except Exception as e:  # an unreadable backend is "unknown"; apply reports failures
            log.debug("%s: cannot observe Serve application %s: %s", p.key, p.application, e)
            return None

    def live_owner(self, p: TickPlan, observed: ObservedApp | None) -> str | None:
        """Another LVMRollout that exists and serves this application (one owner each); a
        deleted owner's application may be taken over."""
        other = other_owner(p.key, observed)
        if other is None:
            return None
        namespace, _, name = other.partition("/")
        try:
            return other if self.kube.get(namespace, name) is not None else None
        except Exception as e:  # cannot tell: leave the application alone this tick
            log.warning("%s: could not look up %s, the live owner of the application: %s",
                        p.key, other, e)
            return other

    def apply(self, p: TickPlan, outcome: TickOutcome) -> TickOutcome:
        app = outcome.apply
        if app is None or p.spec is None:
            return outcome
        try:
            backend = self.backend(p.namespace, p.spec)
            result = backend.apply(app)
            log.info("%s: applied Serve config %s to %s (%s)", p.key, adapter.app_summary(app),
                     result.target, "changed" if result.changed else "already live")
            if outcome.held_back:
                log.info("%s: waiting for %s to be running before it gets traffic", p.key,
                         p.serving.candidate if p.serving is not None else "the candidate")
            # Verify: the router's user_config in effect. False (not yet) leaves the hash
            # unrecorded, so the next tick applies again (a no-op when live) and re-checks;
            # None (cannot tell) is taken as applied.
            in_effect = backend.verify_applied(app) is not False
            if not in_effect:
                log.info("%s: Serve config not in effect yet; checking again next tick", p.key)
            report = ApplyReport(in_effect=in_effect)
        except Exception as e:  # any backend failure: condition + Event, retry next tick
            report = ApplyReport(error=f"{type(e).__name__}: {e}"[:1024])
            METRICS.record_error("serve")
        return settle(p, outcome, report)

    def _with_unwritten(self, obj: dict) -> dict:
        """The object with the newer status this process has not written yet, while the
        apiserver still has the one it wrote last (else someone else wrote: theirs counts)."""
        meta = obj["metadata"]
        key = (meta.get("namespace"), meta.get("name"))
        pending = self._unwritten.get(key)
        if pending is None:
            return obj
        if (obj.get("status") or {}) != pending[0]:
            del self._unwritten[key]
            return obj
        return {**obj, "status": pending[1]}

    def write_status(self, p: TickPlan, outcome: TickOutcome) -> None:
        update = outcome.update
        METRICS.set_phase(p.key, update.status.phase)
        every = p.spec.analysis.guardrails.interval_seconds if p.spec is not None else None
        if update.patch is not None or not METRICS.quality.knows(p.key):
            METRICS.set_quality(p.key, update.status, every)
        if update.patch is not None:
            key = (p.namespace, p.name)
            new = update.status.to_k8s()
            pending = self._unwritten.get(key)
            if (heartbeat_only(p.old.to_k8s(), new) and self._read.get(key) is not None
                    and p.now - self._written_at.get(key, -math.inf) < heartbeat_s(every)):
                self._unwritten[key] = (self._read[key], new)
            else:
                # against what the apiserver has (not the unwritten status this tick began from)
                patch = update.patch if pending is None else merge_patch(pending[0], new)
                if patch is not None:
                    self.kube.patch_status(p.namespace, p.name, patch)
                self._unwritten.pop(key, None)
                self._written_at[key] = p.now
        if outcome.remove_annotations:
            self.kube.patch_metadata(p.namespace, p.name, {"annotations": {
                a: None for a in outcome.remove_annotations}})

    def emit(self, obj: dict, events: list[Event]) -> None:
        meta = obj["metadata"]
        for event in events:
            level = logging.WARNING if event.type == WARNING else logging.INFO
            log.log(level, "%s/%s %s: %s", meta["namespace"], meta["name"], event.reason,
                    event.message)
            try:
                self.kube.post_event(obj, event)
            except Exception as e:  # an Event is best effort; the status already says it
                log.warning("could not post Event %s for %s/%s: %s", event.reason,
                            meta["namespace"], meta["name"], e)
