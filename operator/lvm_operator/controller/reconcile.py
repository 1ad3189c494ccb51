"""One reconcile tick of one LVMRollout: read → command → measure → decide → serve → status.

The order, and why:

1. **Read** the CR fresh from the apiserver (the daemon's copy may be stale; status is the only
   memory: decision state, timers, what is served).
2. **Validate** with :func:`~lvm_operator.api.parse_rollout`: an invalid spec becomes phase
   Failed with the pydantic message and a Warning Event, and nothing in the cluster changes.
3. **Consume a manual command** (``kubectl lvm ...`` annotations, :mod:`lvm_operator.commands`)
   whose id differs from ``status.lastCommand.id``; its effect is applied to the state before
   deciding, recorded in ``status.lastCommand``, and the annotations are removed right after
   the status write (so a crash between the two never runs a command twice).
4. **Evaluate** offline when ``spec.evaluation`` asks (:mod:`.evaluations`): start or collect
   child-process evaluations (the pre-rollout gate before step 1, the champion's scheduled
   drift check), and check production lane health when it is due. Nothing here blocks: a tick
   starts an evaluation and a later tick collects it.
5. **Measure** only the checks :func:`~lvm_operator.decision.checks_due` asks for, through one
   shared :class:`AnalysisCache`: the analysis queries cover every rollout at once, so rollouts
   ticking together share one round of queries. Prometheus failures arrive as an ``error``
   observation (the core holds), never as an exception.
6. **Decide** with the pure core (which also reads the gate's verdict before step 1).
7. **Serve**: render the Serve config for the new state and apply it only when its hash differs
   from the one recorded in status. A backend failure becomes the Ready/Degraded conditions and
   a Warning Event, and is retried on the next tick; it never crashes the loop.
8. **Write status once** (a merge patch, skipped when unchanged) and **emit Events**, each with a
   log line at the same severity.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from ..analysis.prometheus import PrometheusReader, Snapshot
from ..api import (
    API_VERSION,
    GROUP,
    KIND,
    PLURAL,
    VERSION,
    CommandResult,
    HistoryEntry,
    InvalidRolloutError,
    LastCommand,
    LVMRolloutSpec,
    LVMRolloutStatus,
    ModelVersion,
    Outcome,
    Serving,
    parse_rollout,
    parse_status,
)
from ..api.spec import DNS_LABEL_PATTERN
from ..backends.factory import BackendFactory, default_backend_factory, factory_hook
from ..commands import ANNOTATION_COMMAND, ANNOTATION_COMMAND_ID, CommandError, Verb, parse_command
from ..decision import (
    Check,
    Decision,
    Observations,
    Phase,
    Plan,
    RolloutState,
    checks_due,
    decide,
    next_decision_in_s,
)
from ..evaluation.runner import EvaluationRunner, LocalEvaluationRunner
from ..metrics import METRICS
from . import adapter
from .evaluations import (
    EVAL_POLL_S,
    evaluation_tick,
    lane_check_due,
    lane_health_tick,
)
from .status import NORMAL, WARNING, Event, TickResult, compute

log = logging.getLogger("lvm_operator.controller")

#: Longest sleep between ticks of a finished rollout (commands and spec changes also wake it).
IDLE_TICK_S = 10.0
#: Shortest sleep, so a rollout whose next decision is "now" cannot spin.
MIN_TICK_S = 0.05
COMPONENT = "lvm-rollout-operator"


# --- the Kubernetes side ---------------------------------------------------------------------


class KubeAccess:
    """The few apiserver calls a tick makes (the kubernetes client, synchronous)."""

    def __init__(self, api_client: Any) -> None:
        from kubernetes import client

        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def get(self, namespace: str, name: str) -> dict | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                            name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, patch: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": patch},
            _content_type="application/merge-patch+json",
        )

    def patch_metadata(self, namespace: str, name: str, metadata: dict) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": metadata},
            _content_type="application/merge-patch+json",
        )

    def post_event(self, obj: dict, event: Event) -> None:
        meta = obj.get("metadata", {})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:12]}",
                         "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta.get("name"),
                               "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.core.create_namespaced_event(meta.get("namespace"), body)


# --- analysis, shared by every rollout in this process ---------------------------------------


class AnalysisCache:
    """One Prometheus reader per URL, and each query round's answer kept for ``ttl_s``.

    The reader's queries return every rollout's series, so rollouts whose checks fall due
    together (the common case at scale) share one round of queries.
    """

    def __init__(self, ttl_s: float = 0.3, timeout_s: float = 3.0) -> None:
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
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
                reader = self._readers[url] = PrometheusReader(url, timeout_s=self.timeout_s)
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

    def observations(self, url: str, plan: Plan, due: frozenset[Check], rollout: str
                     ) -> Observations:
        g = q = None
        if Check.GUARDRAIL in due:
            g = self.snapshot(url, Check.GUARDRAIL, plan.guardrails.window_s).for_rollout(rollout)
        if Check.QUALITY in due:
            q = self.snapshot(url, Check.QUALITY, plan.quality.window_s).for_rollout(rollout)
        return Observations(guardrail=g, quality=q)


# --- the tick --------------------------------------------------------------------------------


@dataclass
class _Command:
    record: LastCommand
    state: RolloutState
    serving: Serving
    history: list[HistoryEntry]
    events: list[Event]
    message: str | None
    reevaluate: bool = False  # retry of a blocked or failed pre-rollout gate


_VERSION = re.compile(DNS_LABEL_PATTERN)


def _history_entry(mv: ModelVersion, outcome: Outcome, now: float, reason: str
                   ) -> HistoryEntry:
    return HistoryEntry(
        version=mv.version, checkpoint=mv.checkpoint, sha256=mv.sha256, family=mv.family,
        context_length=mv.context_length, node_pool=mv.node_pool, outcome=outcome,
        time=adapter.to_rfc3339(now), reason=reason[:1024],
    )


def _entry(spec: LVMRolloutSpec, version: str, outcome: Outcome, now: float, reason: str,
           history: list[HistoryEntry] | None) -> HistoryEntry | None:
    """A history entry for ``version`` (from the spec, else from earlier history)."""
    for mv in (spec.candidate, spec.champion):
        if mv.version == version:
            return _history_entry(mv, outcome, now, reason)
    for h in reversed(history or []):
        if h.version == version:
            return h.model_copy(update={"outcome": outcome, "time": adapter.to_rfc3339(now),
                                        "reason": reason[:1024]})
    return None


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
        self._backends: dict[tuple[str, str, str], Any] = {}
        self._guard = threading.Lock()

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
        if evaluator is not None and hasattr(evaluator, "shutdown"):
            evaluator.shutdown()

    def lock(self, namespace: str, name: str) -> threading.Lock:
        with self._guard:
            return self._locks.setdefault((namespace, name), threading.Lock())

    def backend(self, namespace: str, spec: LVMRolloutSpec) -> Any:
        key = (namespace, spec.serve.model_dump_json(), factory_hook())
        with self._guard:
            if key not in self._backends:
                self._backends[key] = self.backend_factory(
                    spec.serve, namespace=namespace, kube_api_client=self.kube.api_client)
            return self._backends[key]

    def tick(self, namespace: str, name: str) -> float | None:
        """Reconcile once; seconds until the next tick is useful, None if the CR is gone."""
        with self.lock(namespace, name):
            obj = self.kube.get(namespace, name)
            if obj is None:
                return None
            return self._tick(obj)

    # The body of a tick, split from locking and reading so tests can drive it directly.
    def _tick(self, obj: dict) -> float:
        meta = obj.get("metadata", {})
        namespace, name = meta["namespace"], meta["name"]
        now = self.clock()
        generation = meta.get("generation")
        try:
            old = parse_status(obj.get("status"))
        except InvalidRolloutError as e:
            log.warning("%s/%s: unreadable status, starting from an empty one: %s",
                        namespace, name, e)
            old = LVMRolloutStatus()
        try:
            rollout = parse_rollout({k: v for k, v in obj.items() if k != "status"})
        except InvalidRolloutError as e:
            self._finish(obj, old, TickResult(now=now, generation=generation, invalid=str(e)))
            return IDLE_TICK_S
        spec = rollout.spec
        key = adapter.rollout_key(namespace, name)
        fp = adapter.fingerprint(spec)
        state = adapter.state_from_status(old.decision_state)
        serving = old.serving or Serving(champion=spec.champion.version,
                                         candidate=spec.candidate.version)
        events: list[Event] = []
        history: list[HistoryEntry] = []
        message: str | None = None
        if state.fingerprint and state.fingerprint != fp and state.phase.finished:
            # A new experiment after a finished one (e.g. the promoted candidate is now the
            # spec's champion): start clean, keep a warm old champion until its deadline.
            state = RolloutState()
            serving = serving.model_copy(update={"champion": spec.champion.version,
                                                 "candidate": spec.candidate.version})
        elif state.fingerprint and state.fingerprint != fp:
            was = serving.candidate_model
            if was is not None and was != spec.candidate:
                history.append(_history_entry(
                    was, Outcome.SUPERSEDED, now,
                    f"superseded by {spec.candidate.version} at step "
                    f"{(state.current_step or 0) + 1}"))
            serving = serving.model_copy(update={"champion": spec.champion.version,
                                                 "candidate": spec.candidate.version})
        current = spec.candidate
        if serving.candidate == current.version and serving.candidate_model != current:
            serving = serving.model_copy(update={"candidate_model": spec.candidate})

        command = None
        annotations = meta.get("annotations") or {}
        # A command already recorded (the annotation removal after the status write failed, or
        # a tool re-set it): remove it without running it again.
        stale_command = ANNOTATION_COMMAND in annotations and old.last_command is not None and \
            annotations.get(ANNOTATION_COMMAND_ID) == old.last_command.id
        try:
            parsed = parse_command(annotations)
        except CommandError as e:
            parsed = None
            cid = (meta.get("annotations") or {}).get(ANNOTATION_COMMAND_ID) or "invalid"
            if old.last_command is None or old.last_command.id != cid:
                command = _Command(
                    LastCommand(verb="invalid", id=cid[:253], time=adapter.to_rfc3339(now),
                                result=CommandResult.REJECTED, message=str(e)[:1024]),
                    state, serving, [], [Event(WARNING, "CommandRejected", str(e))], None)
        if parsed is not None and (old.last_command is None or old.last_command.id != parsed.id):
            command = self._command(parsed, spec, state, serving, old, now)
        if command is not None:
            state, serving = command.state, command.serving
            history += command.history
            events += command.events
            message = command.message

        plan = adapter.plan_for(spec, paused=bool(serving.manual_pause))
        versions = adapter.known_versions(spec, old.history)
        champion = versions.get(serving.champion or "") or versions[spec.champion.version]
        not_started = (state.current_step is None and not state.phase.finished) or bool(
            state.fingerprint and state.fingerprint != plan.fingerprint)
        in_rollout = serving.candidate == spec.candidate.version
        evaluation = evaluation_tick(
            spec, key, old.evaluation, not_started=not_started, champion=champion,
            candidate=versions[spec.candidate.version] if in_rollout else None,
            runner=self.evaluator, now=now,
            reevaluate=command is not None and command.reevaluate)
        lane_versions = [champion.version] + (
            [spec.candidate.version] if in_rollout and not state.phase.finished else [])
        lane_obs = None
        if lane_check_due(old.lane_health, now):
            lane_obs = self.analysis.snapshot(
                spec.prometheus.url, Check.QUALITY,
                spec.analysis.lane_health.window_seconds).for_rollout(key)
        lane_health = lane_health_tick(
            spec, old.lane_health, evaluation.status or old.evaluation, versions=lane_versions,
            observation=lane_obs, now=now)

        decision: Decision | None = None
        if not state.phase.finished or state.fingerprint != plan.fingerprint:
            due = checks_due(plan, state, now)
            obs = self.analysis.observations(spec.prometheus.url, plan, due, key)
            obs = replace(obs, gate=evaluation.gate)
            decision = decide(plan, state, obs, now)
            METRICS.record_decision(decision.action.value)
            state = decision.state
            history += self._outcome_history(decision, spec, old, now)
            serving = self._serving_after(decision, spec, serving, now)
        if serving.retiring and serving.retiring_until is not None and \
                now >= serving.retiring_until.timestamp():
            events.append(Event(NORMAL, "ChampionRetired",
                                f"old champion {serving.retiring} removed after its warm period"))
            serving = serving.model_copy(update={"retiring": None, "retiring_until": None})

        all_history = [*(old.history or []), *history]
        app = adapter.app_spec_for(spec, key, state, serving, all_history, now=now)
        digest = adapter.config_hash(app)
        apply_error = None
        if digest != serving.config_hash:
            try:
                backend = self.backend(namespace, spec)
                result = backend.apply(app)
                log.info("%s: applied Serve config %s to %s (%s)", key,
                         adapter.app_summary(app), getattr(result, "target", "?"),
                         "changed" if getattr(result, "changed", True) else "already live")
                # Verify: the router's user_config in effect. False (not yet) leaves the hash
                # unrecorded, so the next tick applies again (a no-op when live) and re-checks;
                # None (cannot tell) is taken as applied.
                verify = getattr(backend, "verify_applied", None)
                verified = verify(app) if verify is not None else None
                if verified is False:
                    log.info("%s: Serve config not in effect yet; checking again next tick", key)
                else:
                    serving = serving.model_copy(update={"config_hash": digest,
                                                         "applied_at": adapter.to_rfc3339(now)})
            except Exception as e:  # any backend failure: condition + Event, retry next tick
                apply_error = f"{type(e).__name__}: {e}"[:1024]
                METRICS.record_error("serve")
        elif old.conditions:
            ready = next((c for c in old.conditions if c.type == "Ready"), None)
            if ready is not None and ready.reason == "ServeApplyFailed":
                apply_error = ready.message

        self._finish(obj, old, TickResult(
            now=now, generation=generation, state=state, plan=plan, decision=decision,
            serving=serving, apply_error=apply_error, message=message, history_add=history,
            command=command.record if command else None, events=events,
            evaluation=evaluation.status, lane_health=lane_health,
        ), consumed=command is not None or stale_command)
        if apply_error is not None:
            return min(plan.guardrails.interval_s, 2.0)
        wait = next_decision_in_s(plan, state, now)
        if wait is None:
            wait = IDLE_TICK_S
            if serving.retiring_until is not None:
                wait = min(wait, max(0.0, serving.retiring_until.timestamp() - now))
        if evaluation.busy:
            wait = min(wait, EVAL_POLL_S)
        for due_at in (evaluation.next_at, lane_health.next_check_at and
                       lane_health.next_check_at.timestamp()):
            if due_at is not None:
                wait = min(wait, max(0.0, due_at - now))
        return max(MIN_TICK_S, min(wait, plan.guardrails.interval_s, IDLE_TICK_S))

    # --- pieces --------------------------------------------------------------------------------

    def _finish(self, obj: dict, old: LVMRolloutStatus, t: TickResult,
                consumed: bool = False) -> None:
        meta = obj["metadata"]
        namespace, name = meta["namespace"], meta["name"]
        update = compute(old, t)
        METRICS.set_phase(f"{namespace}/{name}", update.status.phase)
        if update.patch is not None or not METRICS.quality.knows(f"{namespace}/{name}"):
            METRICS.set_quality(f"{namespace}/{name}", update.status)
        if update.patch is not None:
            self.kube.patch_status(namespace, name, update.patch)
        if consumed:
            self.kube.patch_metadata(namespace, name, {"annotations": {
                ANNOTATION_COMMAND: None, ANNOTATION_COMMAND_ID: None}})
        for event in update.events:
            self.emit(obj, event)

    def emit(self, obj: dict, event: Event) -> None:
        meta = obj["metadata"]
        level = logging.WARNING if event.type == WARNING else logging.INFO
        log.log(level, "%s/%s %s: %s", meta["namespace"], meta["name"], event.reason,
                event.message)
        try:
            self.kube.post_event(obj, event)
        except Exception as e:  # an Event is best effort; the status already says it
            log.warning("could not post Event %s for %s/%s: %s", event.reason,
                        meta["namespace"], meta["name"], e)

    @staticmethod
    def _outcome_history(d: Decision, spec: LVMRolloutSpec, old: LVMRolloutStatus,
                         now: float) -> list[HistoryEntry]:
        out: list[HistoryEntry | None] = []
        if d.action.value == "promote":
            out += _promotion_history(spec, now, d.reason, old.history)
        elif d.action.value == "rollback":
            out.append(_entry(spec, spec.candidate.version, Outcome.ROLLED_BACK, now, d.reason,
                              old.history))
        return [e for e in out if e is not None]

    @staticmethod
    def _serving_after(d: Decision, spec: LVMRolloutSpec, serving: Serving, now: float
                       ) -> Serving:
        if d.action.value != "promote":
            return serving
        return _promoted(spec, serving, now)

    def _command(self, cmd: Any, spec: LVMRolloutSpec, state: RolloutState, serving: Serving,
                 old: LVMRolloutStatus, now: float) -> _Command:
        verb = cmd.verb
        history: list[HistoryEntry] = []

        def done(ok: bool, text: str, st: RolloutState = state, sv: Serving = serving,
                 message: str | None = None) -> _Command:
            target = cmd.target_version
            if target is not None and not _VERSION.fullmatch(target[:63]):
                target = None  # not a version name at all; the message still quotes it
            record = LastCommand(
                verb=str(verb), id=cmd.id[:253], target_version=target,
                time=adapter.to_rfc3339(now),
                result=CommandResult.ACCEPTED if ok else CommandResult.REJECTED,
                message=text[:1024],
            )
            event = Event(NORMAL if ok else WARNING,
                          f"Command{str(verb).capitalize()}" if ok else "CommandRejected",
                          f"{verb}{':' + cmd.target_version if cmd.target_version else ''} "
                          f"(id {cmd.id}): {text}")
            return _Command(record, st if ok else state, sv if ok else serving,
                            history if ok else [], [event], message if ok else None)

        running = not state.phase.finished
        if verb is Verb.PAUSE:
            if serving.manual_pause or spec.paused:
                return done(False, "already paused")
            return done(True, "paused by command: step timers stop; guardrails stay armed",
                        sv=serving.model_copy(update={"manual_pause": True}))
        if verb is Verb.RESUME:
            if spec.paused:
                return done(False, "spec.paused is true; set it to false to resume")
            if not serving.manual_pause:
                return done(False, "not paused")
            return done(True, "resumed by command",
                        sv=serving.model_copy(update={"manual_pause": None}))
        if verb is Verb.PROMOTE:
            if not running or state.current_step is None:
                return done(False, f"nothing to promote in phase {state.phase.value}")
            text = (f"promoted {spec.candidate.version} by command at step "
                    f"{state.current_step + 1}/{len(spec.steps)} (remaining steps skipped)")
            history.extend(_promotion_history(spec, now, text, old.history))
            st = replace(state, phase=Phase.PROMOTED, candidate_weight=100, shadow=False,
                         paused_at=None)
            return done(True, text, st, _promoted(spec, serving, now), message=text)
        if verb is Verb.ABORT:
            if not running:
                return done(False, f"nothing to abort in phase {state.phase.value}")
            text = (f"aborted by command: all traffic to champion {spec.champion.version}; "
                    f"candidate {spec.candidate.version} kept scaled down")
            entry = _entry(spec, spec.candidate.version, Outcome.ABORTED, now, text, old.history)
            history.extend(e for e in (entry,) if e is not None)
            st = replace(state, phase=Phase.ROLLED_BACK, candidate_weight=0, shadow=False,
                         paused_at=None)
            return done(True, text, st, message=text)
        gate = old.evaluation.gate if old.evaluation is not None else None
        if verb is Verb.RETRY and state.current_step is None and not state.phase.finished \
                and gate is not None and gate.verdict.value in ("blocked", "error"):
            text = (f"re-evaluating candidate {spec.candidate.version} and champion on the eval "
                    f"set by command (gate was {gate.verdict.value}: {gate.reason})")
            cmd_result = done(True, text, message=text)
            cmd_result.reevaluate = True
            return cmd_result
        if verb is Verb.RETRY:
            if state.phase is not Phase.ROLLED_BACK:
                return done(False, f"retry needs a rolled-back or aborted rollout, or a "
                                   f"blocked pre-rollout gate, not {state.phase.value}")
            text = f"retrying {spec.candidate.version} from step 1 by command"
            sv = serving.model_copy(update={"champion": spec.champion.version,
                                            "candidate": spec.candidate.version})
            return done(True, text, RolloutState(fingerprint=adapter.fingerprint(spec)), sv,
                        message=text)
        # rollback:<version>
        target = cmd.target_version or ""
        known = {h.version for h in old.history or []} | {spec.champion.version}
        if target not in known:
            return done(False, f"version {target!r} is not in history; known: "
                               f"{', '.join(sorted(known))}")
        current = serving.champion or spec.champion.version
        if target == current and not running:
            return done(False, f"{target} is already serving all traffic")
        text = f"rolled back by command to {target}: it serves all traffic"
        if running:
            entry = _entry(spec, spec.candidate.version, Outcome.ROLLED_BACK, now, text,
                           old.history)
            history.extend(e for e in (entry,) if e is not None)
        elif current != target:
            entry = _entry(spec, current, Outcome.ROLLED_BACK, now, text, old.history)
            history.extend(e for e in (entry,) if e is not None)
        st = replace(state, phase=Phase.ROLLED_BACK, candidate_weight=0, shadow=False,
                     paused_at=None)
        sv = serving.model_copy(update={"champion": target, "candidate": None,
                                        "retiring": None, "retiring_until": None})
        return done(True, text, st, sv, message=text)


def _promoted(spec: LVMRolloutSpec, serving: Serving, now: float) -> Serving:
    """Serving after a promotion: the candidate is champion; the old one stays warm a while."""
    keep_s = spec.promotion.keep_champion_warm_for_seconds
    old_champion = serving.champion or spec.champion.version
    return serving.model_copy(update={
        "champion": spec.candidate.version,
        "candidate": None,
        "retiring": old_champion if keep_s > 0 else None,
        "retiring_until": adapter.to_rfc3339(now + keep_s) if keep_s > 0 else None,
    })


def _promotion_history(spec: LVMRolloutSpec, now: float, reason: str,
                       history: list[HistoryEntry] | None) -> list[HistoryEntry]:
    """A promotion records the candidate (promoted) and the champion it replaced (superseded,
    with its checkpoint, so ``rollback --to`` can bring it back later)."""
    entries = [
        _entry(spec, spec.champion.version, Outcome.SUPERSEDED, now,
               f"replaced by {spec.candidate.version} (promoted)", history),
        _entry(spec, spec.candidate.version, Outcome.PROMOTED, now, reason, history),
    ]
    return [e for e in entries if e is not None]
