"""Kopf handlers: a daemon per LVMRollout that ticks, and event handlers that wake it.

Run with ``lvm-rollout operator`` (see :func:`run`) or ``kopf run -m
lvm_operator.controller.handlers``. Why a daemon rather than timers: a rollout's next useful
moment varies (a check falls due, a step's dwell ends, a warm champion expires), and
:func:`~lvm_operator.decision.next_decision_in_s` says exactly when; the daemon sleeps that long,
bounded by the guardrail interval, and create/update events (spec edits, command annotations)
wake it at once.

The ticks are synchronous (kubernetes client, Prometheus reader, serve backends) and run on a
thread pool owned here, not Kopf's default executor, so hundreds of idle daemons hold no
threads. All state lives in the CR's status; the process keeps only caches, in one
:class:`Runtime` held in Kopf's memo; the options (:class:`OperatorOptions`) come from
:func:`run` through the memo too, not the environment.

Peering is on by default (``settings.peering``): a second operator process stays paused while a
higher-priority one is alive and takes over once its peering record expires
(``--peering-lifetime`` seconds after the last keep-alive). The peering CRDs and the peering
object are in ``crds/kopf-peering.yaml``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import kopf

from ..api import GROUP, PLURAL, VERSION, InvalidRolloutError, parse_rollout, parse_status
from ..metrics import METRICS, serve_metrics
from .kube import KubeAccess, api_client, ensure_peering_object
from .measurements import AnalysisCache
from .reconcile import Reconciler

log = logging.getLogger("lvm_operator.controller")


@dataclass(frozen=True)
class OperatorOptions:
    """What ``lvm-rollout operator`` was asked for, handed to the handlers in Kopf's memo."""

    namespaces: tuple[str, ...] = ()  # empty: cluster-wide
    peering_lifetime: int | None = None  # seconds a silent peer counts as alive (Kopf's: 60)
    metrics_port: int | None = None  # the operator's /metrics; None: off
    tick_workers: int = 16  # threads that run ticks (all rollouts share them)


@dataclass
class Runtime:
    """What this process keeps between ticks: caches and wake-ups, never rollout state."""

    options: OperatorOptions
    reconciler: Reconciler
    executor: ThreadPoolExecutor
    wakers: dict[tuple[str, str], asyncio.Event] = field(default_factory=dict)

    def waker(self, namespace: str, name: str) -> asyncio.Event:
        return self.wakers.setdefault((namespace, name), asyncio.Event())

    async def tick(self, namespace: str, name: str) -> float | None:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.executor, self.reconciler.tick, namespace, name)


def _runtime(memo: kopf.Memo) -> Runtime:
    """The process's runtime, made at start-up (Kopf copies the operator's memo, shallowly,
    into every rollout's, so all handlers share this one object)."""
    runtime = memo.get("runtime")
    if runtime is None:
        options = memo.get("options") or OperatorOptions()
        runtime = memo["runtime"] = Runtime(
            options, Reconciler(
                KubeAccess(api_client(options.tick_workers + 4)),
                analysis=AnalysisCache(connections=options.tick_workers)),
            ThreadPoolExecutor(options.tick_workers, thread_name_prefix="lvm-tick"))
    return runtime


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    # Kopf's own handler bookkeeping goes to annotations under our group: the CRD's structural
    # schema would prune a status.kopf field.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # Our Events are posted by the reconciler with the numbers; Kopf posts only its warnings.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    runtime = _runtime(memo)
    options = runtime.options
    if options.peering_lifetime:
        settings.peering.lifetime = options.peering_lifetime
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.networking.request_timeout = 30
    if options.metrics_port:
        serve_metrics(options.metrics_port)
        log.info("operator metrics on :%s/metrics", options.metrics_port)
    if not settings.peering.standalone:
        ensure_peering_object(runtime.reconciler.kube.api_client, settings.peering.name,
                              None if settings.peering.clusterwide else list(options.namespaces))
    log.info("lvm-rollout operator started (peering %r, lifetime %ss)", settings.peering.name,
             settings.peering.lifetime)


@kopf.on.cleanup()
def cleanup(memo: kopf.Memo, **_: Any) -> None:
    runtime = memo.get("runtime")
    if runtime is not None:
        runtime.executor.shutdown(wait=False, cancel_futures=True)
        runtime.reconciler.shutdown()  # running evaluations end with the operator


@kopf.on.probe(id="rollouts")
def probe_rollouts(memo: kopf.Memo, **_: Any) -> int:
    runtime = memo.get("runtime")
    return len(runtime.wakers) if runtime is not None else 0


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def validate_and_wake(body: kopf.Body, namespace: str, name: str, memo: kopf.Memo,
                            **_: Any) -> None:
    """Validate at once (invalid → Failed + Event, nothing applied) and wake the daemon.

    Update also fires on annotation changes, so a manual command is acted on within a tick.
    """
    runtime = _runtime(memo)
    try:
        rollout = parse_rollout({k: v for k, v in body.items() if k != "status"})
    except InvalidRolloutError:
        await runtime.tick(namespace, name)  # writes phase Failed and the InvalidSpec Event
    else:
        _seed_lag(f"{namespace}/{name}", rollout.spec.analysis.guardrails.interval_seconds,
                  body.get("status"))
    runtime.waker(namespace, name).set()


def _seed_lag(key: str, interval_s: float, status: Any) -> None:
    """A rollout this process has not ticked yet reports its decision lag from the status it
    was found with (an operator that starts behind 1,000 rollouts must not hide the ones it
    has not reached: ``LVMRolloutChecksLate`` reads this)."""
    if METRICS.quality.knows(key) or not status:
        return
    with contextlib.suppress(InvalidRolloutError):  # the tick reports an unreadable status
        METRICS.set_quality(key, parse_status(status), interval_s)


@kopf.on.delete(GROUP, VERSION, PLURAL)
async def revert_on_delete(namespace: str, name: str, memo: kopf.Memo, **_: Any) -> None:
    """Deleted mid-rollout: all traffic to the champion and the candidate's application gone
    before the object is (Kopf's finalizer keeps it until this succeeds, also while no operator
    runs); a finished rollout leaves serving alone. Failures are retried."""
    runtime = _runtime(memo)
    loop = asyncio.get_running_loop()
    try:
        why = await loop.run_in_executor(runtime.executor, runtime.reconciler.delete,
                                         namespace, name)
    except Exception as e:
        raise kopf.TemporaryError(f"revert on deletion failed, retrying: "
                                  f"{type(e).__name__}: {str(e)[:300]}", delay=2) from e
    log.info("%s/%s deleted: %s", namespace, name, why)
    runtime.wakers.pop((namespace, name), None)
    METRICS.forget(f"{namespace}/{name}")


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def rollout_daemon(namespace: str, name: str, stopped: kopf.DaemonStopped,
                         memo: kopf.Memo, **_: Any) -> None:
    """Tick, then sleep until the next decision is due or something wakes us; exit on stop."""
    runtime = _runtime(memo)
    wake = runtime.waker(namespace, name)
    loop = asyncio.get_running_loop()
    failures = 0
    while not stopped:
        wake.clear()
        try:
            wait = await runtime.tick(namespace, name)
            failures = 0
        except Exception:  # never let one bad tick end the rollout's loop
            failures += 1
            log.exception("%s/%s: tick failed (%d in a row); retrying", namespace, name,
                          failures)
            wait = min(30.0, 0.5 * 2 ** min(failures, 6))
        if wait is None:
            METRICS.forget(f"{namespace}/{name}")
            return  # the object is gone
        waiter = asyncio.ensure_future(wake.wait())
        stopper = asyncio.ensure_future(stopped.wait())
        due = loop.time() + wait
        try:
            done, _ = await asyncio.wait({waiter, stopper}, timeout=wait,
                                         return_when=asyncio.FIRST_COMPLETED)
        finally:
            waiter.cancel()
            stopper.cancel()
        if not done:  # woke by the timer: how late against when the decision was due
            METRICS.observe_reconcile_delay(loop.time() - due)


def run(*, namespaces: list[str] | None = None, peering: str | None = "lvm-rollout",
        priority: int = 0, liveness_port: int | None = 8080, metrics_port: int | None = None,
        dev: bool = False, peering_lifetime: int | None = None, tick_workers: int = 16
        ) -> None:
    """Run the operator in this process until SIGINT/SIGTERM (what ``lvm-rollout operator``
    calls). ``peering=None`` runs standalone; ``dev`` logs verbosely."""
    logging.basicConfig(
        level=logging.DEBUG if dev else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    options = OperatorOptions(namespaces=tuple(namespaces or ()),
                              peering_lifetime=peering_lifetime, metrics_port=metrics_port,
                              tick_workers=tick_workers)
    liveness = f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
        memo=kopf.Memo(options=options),
    )
