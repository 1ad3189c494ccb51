"""Shared harness of the operator end-to-end tests: a controllable exporter and the operator
as a real subprocess."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from helpers import eventually
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

from lvm_operator.devstack.procs import free_port
from lvm_serving.contracts import metrics as mc

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
LANES = ("0", "1", "2", "3")


# --- a controllable exporter -----------------------------------------------------------------


@dataclass
class Profile:
    """Traffic of one version of one rollout, per 0.1 s tick and lane."""

    requests: int = 5
    latency_s: float = 0.002
    error_share: dict[str, float] = field(default_factory=dict)  # lane -> share of requests
    empty_share: float = 0.02
    hit5_share: float = 0.7
    lane_hit5: dict[str, float] = field(default_factory=dict)  # lane -> hit5 share override


class _Locked:
    """A collector that exposes ``registry`` under ``lock``: a scrape sees all or none of the
    series created under the same lock."""

    def __init__(self, registry: CollectorRegistry, lock: threading.Lock) -> None:
        self.registry, self.lock = registry, lock

    def collect(self):
        with self.lock:
            return list(self.registry.collect())


class Traffic:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()

        def counter(m: mc.MetricDef) -> Counter:
            return Counter(mc.RAY_PREFIX + m.name, m.description, m.labels,
                           registry=self.registry)

        self.requests, self.errors = counter(mc.REQUESTS), counter(mc.ERRORS)
        self.empty, self.feedback = counter(mc.EMPTY_HITS), counter(mc.FEEDBACK)
        self.hits = counter(mc.FEEDBACK_HITS)
        self.latency = Histogram(mc.RAY_PREFIX + mc.LATENCY.name, mc.LATENCY.description,
                                 mc.LATENCY.labels, buckets=mc.LATENCY_BUCKETS_SECONDS,
                                 registry=self.registry)
        self.profiles: dict[tuple[str, str], Profile] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        # A scrape and the creation of a version's series never interleave (see set()).
        self._lock = threading.Lock()
        self.exposed = CollectorRegistry()
        self.exposed.register(_Locked(self.registry, self._lock))

    def set(self, rollout: str, version: str, profile: Profile | None) -> None:
        if profile is None:
            self.profiles.pop((rollout, version), None)
            return
        # Every series of the version starts at 0 before it counts anything (the Prometheus
        # practice for labelled counters), all in one scrape (under the lock the exposition
        # takes), so no window sees one series born a scrape after its sibling (feedback
        # counted, hits not yet: a false "0% Hit@5").
        with self._lock:
            self._create_series(rollout, version)
        self.profiles[(rollout, version)] = profile

    def _create_series(self, rollout: str, version: str) -> None:
        for lane in LANES:
            lbl = {mc.LABEL_ROLLOUT: rollout, mc.LABEL_VERSION: version,
                   mc.LABEL_LANE: lane, mc.LABEL_SHADOW: "false",
                   mc.LABEL_PINNED: "false"}
            for counter in (self.requests, self.empty, self.feedback):
                counter.labels(**lbl)
            self.errors.labels(**lbl, reason="nan_output")
            self.hits.labels(**lbl, k="5", kind="proxy")
            self.latency.labels(**lbl)

    def _run(self) -> None:
        while not self._stop.wait(0.1):
            with self._lock:  # a scrape sees whole ticks: no feedback without its hits
                self._tick()

    def _tick(self) -> None:
        for (rollout, version), p in list(self.profiles.items()):
            for lane in LANES:
                lbl = {mc.LABEL_ROLLOUT: rollout, mc.LABEL_VERSION: version,
                       mc.LABEL_LANE: lane, mc.LABEL_SHADOW: "false", mc.LABEL_PINNED: "false"}
                n = p.requests
                self.requests.labels(**lbl).inc(n)
                self.errors.labels(**lbl, reason="nan_output").inc(
                    n * p.error_share.get(lane, 0.0))
                self.empty.labels(**lbl).inc(n * p.empty_share)
                self.feedback.labels(**lbl).inc(n)
                self.hits.labels(**lbl, k="5", kind="proxy").inc(
                    n * p.lane_hit5.get(lane, p.hit5_share))
                for _ in range(n):
                    self.latency.labels(**lbl).observe(p.latency_s)

    def start(self) -> int:
        port = free_port()
        self.server = start_http_server(port, addr="127.0.0.1", registry=self.exposed)[0]
        self._thread.start()
        return port

    def stop(self) -> None:
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()


# --- the operator as a subprocess ------------------------------------------------------------


class Operator:
    """``lvm-rollout operator`` as a subprocess with the test kubeconfig.

    With ``backend_log`` it uses the FAKE recording backend (``fake_serve_backend.py``);
    without, the real backend the rollout's ``spec.serve`` names.
    """

    def __init__(self, kube, log_dir: Path, backend_log: Path | None, priority: int = 10,
                 *, peering: str = "lvm-rollout-e2e", scope: tuple[str, ...] = (
                     "--all-namespaces",), extra_env: dict[str, str] | None = None) -> None:
        self.kube, self.log_dir, self.backend_log = kube, log_dir, backend_log
        self.priority, self.peering, self.scope = priority, peering, scope
        self.extra_env = dict(extra_env or {})
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    def start(self) -> Operator:
        self.starts += 1
        env = {**self.kube.env, **self.extra_env,
               "PYTHONPATH": os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")])}
        if self.backend_log is not None:
            env.update(LVM_SERVE_BACKEND_FACTORY="fake_serve_backend:make",
                       LVM_FAKE_BACKEND_LOG=str(self.backend_log))
        self.log = self.log_dir / f"operator-{self.peering}-{self.priority}-{self.starts}.log"
        self.metrics_port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lvm_operator.cli", "operator", *self.scope,
             "--peering", self.peering, "--priority", str(self.priority),
             "--peering-lifetime", "3", "--liveness-port", str(free_port()),
             "--metrics-port", str(self.metrics_port)],
            env=env, stdout=self.log.open("w"), stderr=subprocess.STDOUT,
            start_new_session=True, cwd=REPO,
        )
        eventually(lambda: "lvm-rollout operator started" in self.log.read_text()
                   or self.proc.poll() is not None, 60, "operator start-up")
        assert self.proc.poll() is None, self.log.read_text()[-3000:]
        return self

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()




# --- what the tests read back ----------------------------------------------------------------


class RolloutView:
    """Reading a rollout back: its status, its Events, and what the FAKE recording backend was
    asked to serve. Mixed into each module's ``Env`` (which has ``kube``, ``operator`` and
    ``backend_log``)."""

    kube: object
    operator: Operator
    backend_log: Path

    def applies(self, rollout: str) -> list[dict]:
        if not self.backend_log.exists():
            return []
        lines = [json.loads(x) for x in self.backend_log.read_text().splitlines() if x]
        return [x for x in lines if x["rollout"] == rollout]

    def get(self, ns: str, name: str = "lvm") -> dict:
        out = self.kube.kubectl("get", "lvmrollout", name, "-n", ns, "-o", "json")
        return json.loads(out.stdout)

    def status(self, ns: str, name: str = "lvm") -> dict:
        return self.get(ns, name).get("status") or {}

    def wait_status(self, ns: str, pred, what: str, timeout_s: float = 30) -> dict:
        try:
            return eventually(lambda: (s := self.status(ns)) and pred(s) and s, timeout_s,
                              what, interval_s=0.1)
        except AssertionError as e:
            status = json.dumps(self.status(ns), indent=1)[-5000:]
            log = self.operator.log.read_text()[-4000:]
            raise AssertionError(f"{e}\nstatus: {status}\noperator log tail:\n{log}") from None

    def events(self, ns: str) -> list[dict]:
        """The namespace's Events, oldest first (to the second: ties keep the API's order)."""
        out = self.kube.kubectl("get", "events", "-n", ns, "-o", "json")
        return sorted(json.loads(out.stdout)["items"], key=lambda e: e["lastTimestamp"])
