"""Kopf handlers: a daemon per LVMRollout that ticks, and event handlers that wake it.

Run with ``lvm-rollout operator`` (see :func:`run`) or ``kopf run -m
lvm_operator.controller.handlers``. Why a daemon rather than timers: a rollout's next useful
moment varies (a check falls due, a step's dwell ends, a warm champion expires), and
:func:`~lvm_operator.decision.next_decision_in_s` says exactly when; the daemon sleeps that long,
bounded by the guardrail interval, and create/update events (spec edits, command annotations)
wake it at once.

The ticks are synchronous (kubernetes client, Prometheus reader, serve backends) and run on a
thread pool owned here, not Kopf's default executor, so hundreds of idle daemons hold no
threads. All state lives in the CR's status; the process keeps only caches.

Peering is on by default (``settings.peering``): a second operator process stays paused while a
higher-priority one is alive and takes over once its peering record expires
(``LVM_PEERING_LIFETIME`` seconds after the last keep-alive). The peering CRDs and the peering
object are in ``crds/kopf-peering.yaml``.
"""

from __future__ import annotations

import asyncio
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import kopf

from ..api import GROUP, PLURAL, VERSION, InvalidRolloutError, parse_rollout
from ..metrics import METRICS, serve_metrics
from .reconcile import AnalysisCache, KubeAccess, Reconciler

log = logging.getLogger("lvm_operator.controller")

#: Environment knobs (the CLI sets them from its options).
PEERING_LIFETIME_ENV = "LVM_PEERING_LIFETIME"
METRICS_PORT_ENV = "LVM_METRICS_PORT"
WORKERS_ENV = "LVM_TICK_WORKERS"

_state: dict[str, Any] = {}


def _api_client() -> Any:
    from kubernetes import client, config

    try:
        config.load_incluster_config()
        return client.ApiClient()
    except config.ConfigException:
        return config.new_client_from_config()


def reconciler() -> Reconciler:
    r = _state.get("reconciler")
    if r is None:
        r = _state["reconciler"] = Reconciler(KubeAccess(_api_client()), analysis=AnalysisCache())
    return r


def _executor() -> ThreadPoolExecutor:
    ex = _state.get("executor")
    if ex is None:
        workers = int(os.environ.get(WORKERS_ENV, "16"))
        ex = _state["executor"] = ThreadPoolExecutor(workers, thread_name_prefix="lvm-tick")
    return ex


def _waker(namespace: str, name: str) -> asyncio.Event:
    wakers: dict[tuple[str, str], asyncio.Event] = _state.setdefault("wakers", {})
    return wakers.setdefault((namespace, name), asyncio.Event())


async def _tick(namespace: str, name: str) -> float | None:
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(_executor(), reconciler().tick, namespace, name)


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Kopf's own handler bookkeeping goes to annotations under our group: the CRD's structural
    # schema would prune a status.kopf field.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=GROUP)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=GROUP, key="last-handled-configuration")
    # Our Events are posted by the reconciler with the numbers; Kopf posts only its warnings.
    settings.posting.enabled = True
    settings.posting.level = logging.WARNING
    lifetime = os.environ.get(PEERING_LIFETIME_ENV)
    if lifetime:
        settings.peering.lifetime = int(lifetime)
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 70
    settings.networking.request_timeout = 30
    port = os.environ.get(METRICS_PORT_ENV)
    if port:
        serve_metrics(int(port))
        log.info("operator metrics on :%s/metrics", port)
    r = reconciler()
    if not settings.peering.standalone:
        ensure_peering_object(r.kube.api_client, settings.peering.name,
                              None if settings.peering.clusterwide else _state.get("namespaces"))
    log.info("lvm-rollout operator started (peering %r, lifetime %ss)", settings.peering.name,
             settings.peering.lifetime)


def ensure_peering_object(api_client: Any, name: str, namespaces: list[str] | None) -> None:
    """Create the (Cluster)KopfPeering object Kopf keeps alive, unless it exists.

    Kopf only patches it; without it peering silently does nothing. Lacking the CRDs or the
    permission is logged, not fatal (``kubectl apply -f crds/kopf-peering.yaml``).
    """
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    api = client.CustomObjectsApi(api_client)
    targets = [None] if namespaces is None else list(namespaces)
    for ns in targets:
        kind = "ClusterKopfPeering" if ns is None else "KopfPeering"
        body = {"apiVersion": "kopf.dev/v1", "kind": kind, "metadata": {"name": name}}
        # Look before creating: the Helm chart creates the object and grants get/patch on that
        # one name but no create (create cannot be limited to a name), so a blind create would
        # log a 403 on every start.
        try:
            if ns is None:
                api.get_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", name)
            else:
                api.get_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", name)
            continue
        except ApiException as e:
            if e.status != 404:
                log.warning("cannot read %s %s (HTTP %s): peering needs it; apply "
                            "crds/kopf-peering.yaml", kind, name, e.status)
                continue
        try:
            if ns is None:
                api.create_cluster_custom_object("kopf.dev", "v1", "clusterkopfpeerings", body)
            else:
                api.create_namespaced_custom_object("kopf.dev", "v1", ns, "kopfpeerings", body)
            log.info("created %s %s", kind, name)
        except ApiException as e:
            if e.status != 409:
                log.warning("cannot create %s %s (HTTP %s): peering needs it; apply "
                            "crds/kopf-peering.yaml", kind, name, e.status)


@kopf.on.cleanup()
def cleanup(**_: Any) -> None:
    ex = _state.pop("executor", None)
    if ex is not None:
        ex.shutdown(wait=False, cancel_futures=True)
    r = _state.get("reconciler")
    if r is not None:
        r.shutdown()  # running evaluations end with the operator


@kopf.on.probe(id="rollouts")
def probe_rollouts(**_: Any) -> int:
    return len(_state.get("wakers", {}))


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.resume(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL)
async def validate_and_wake(body: kopf.Body, namespace: str, name: str, **_: Any) -> None:
    """Validate at once (invalid → Failed + Event, nothing applied) and wake the daemon.

    Update also fires on annotation changes, so a manual command is acted on within a tick.
    """
    try:
        parse_rollout({k: v for k, v in body.items() if k != "status"})
    except InvalidRolloutError:
        await _tick(namespace, name)  # writes phase Failed and the InvalidSpec Event
    _waker(namespace, name).set()


@kopf.on.delete(GROUP, VERSION, PLURAL, optional=True)
def forget(namespace: str, name: str, **_: Any) -> None:
    """Best effort, no finalizer: a deleted rollout's daemon stops; the Serve app stays (a
    rollout never removes the traffic it serves; delete the app with the backend if wanted)."""
    _state.get("wakers", {}).pop((namespace, name), None)
    METRICS.forget(f"{namespace}/{name}")


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=5.0)
async def rollout_daemon(namespace: str, name: str, stopped: kopf.DaemonStopped,
                         **_: Any) -> None:
    """Tick, then sleep until the next decision is due or something wakes us; exit on stop."""
    wake = _waker(namespace, name)
    loop = asyncio.get_running_loop()
    failures = 0
    while not stopped:
        wake.clear()
        try:
            wait = await _tick(namespace, name)
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
        dev: bool = False, peering_lifetime: int | None = None) -> None:
    """Run the operator in this process until SIGINT/SIGTERM (what ``lvm-rollout operator``
    calls). ``peering=None`` runs standalone; ``dev`` logs verbosely."""
    logging.basicConfig(
        level=logging.DEBUG if dev else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("kubernetes").setLevel(logging.WARNING)
    logging.getLogger("urllib3").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    if metrics_port is not None:
        os.environ[METRICS_PORT_ENV] = str(metrics_port)
    if peering_lifetime is not None:
        os.environ[PEERING_LIFETIME_ENV] = str(peering_lifetime)
    _state["namespaces"] = list(namespaces or [])
    liveness = f"http://0.0.0.0:{liveness_port}/healthz" if liveness_port else None
    kopf.run(
        clusterwide=not namespaces,
        namespaces=namespaces or (),
        standalone=peering is None,
        peering_name=peering,
        priority=priority,
        liveness_endpoint=liveness,
    )
