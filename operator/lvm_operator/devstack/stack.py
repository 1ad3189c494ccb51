"""The whole local stack: control plane, Prometheus, a two-node Ray cluster and an S3 store.

Used in two ways:

* in-process by the tests (session fixtures call :func:`start_stack` / :meth:`Stack.stop`);
* by ``lvm-rollout dev up|status|down``, which starts the same processes detached and records
  them in ``state.json`` inside the run directory so a later command can find and stop them.

Every process runs in its own session and is stopped by session id, so nothing is left behind.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from .control_plane import ControlPlane, start_control_plane
from .object_store import SeaweedS3
from .procs import ComponentError, kill_session, session_processes
from .prometheus import PrometheusServer
from .ray_cluster import RayCluster, start_ray_cluster
from .tools import Tools, cache_dir, locate

COMPONENTS = ("kube", "prometheus", "ray", "s3")


def default_run_dir() -> Path:
    return Path(os.environ.get("LVM_RUN_DIR", cache_dir() / "run" / "dev"))


@dataclass
class Stack:
    run_dir: Path
    tools: Tools
    control_plane: ControlPlane | None = None
    prometheus: PrometheusServer | None = None
    ray: RayCluster | None = None
    object_store: SeaweedS3 | None = None
    extra_sessions: dict[str, int] = field(default_factory=dict)

    @property
    def kubeconfig(self) -> Path | None:
        return self.control_plane.kubeconfig if self.control_plane else None

    def env(self) -> dict[str, str]:
        """Environment for child processes (kubectl, helm, the operator) to use this stack."""
        env = {"PATH": os.pathsep.join([*map(str, self.tools.bin_dirs), os.environ["PATH"]])}
        if self.control_plane:
            env["KUBECONFIG"] = str(self.control_plane.kubeconfig)
        if self.prometheus:
            env["LVM_PROMETHEUS_URL"] = self.prometheus.url
        if self.ray:
            env["RAY_ADDRESS"] = self.ray.gcs_address
            env["LVM_RAY_DASHBOARD_URL"] = self.ray.dashboard_url
        env.update(self.node_env())
        return env

    def node_env(self) -> dict[str, str]:
        """What reads artifacts from the stack's object store (Ray nodes, evaluators)."""
        return self.object_store.node_env(self.run_dir) if self.object_store else {}

    def endpoints(self) -> dict[str, str]:
        out = {"run_dir": str(self.run_dir)}
        if self.control_plane:
            out["kube-apiserver"] = self.control_plane.url
            out["kubeconfig"] = str(self.control_plane.kubeconfig)
        if self.prometheus:
            out["prometheus"] = self.prometheus.url
        if self.ray:
            out["ray-gcs"] = self.ray.gcs_address
            out["ray-dashboard"] = self.ray.dashboard_url
            out["ray-metrics"] = ",".join(self.ray.metrics_targets)
        if self.object_store:
            out["s3"] = self.object_store.endpoint
        return out

    def sessions(self) -> dict[str, int]:
        sids: dict[str, int] = {}
        if self.control_plane:
            sids["etcd"] = self.control_plane.etcd.sid
            sids["kube-apiserver"] = self.control_plane.apiserver.sid
        if self.prometheus and self.prometheus.process:
            sids["prometheus"] = self.prometheus.process.sid
        if self.ray:
            for node in self.ray.nodes:
                sids[f"ray-{node.role}"] = node.process.sid
        if self.object_store and self.object_store.process:
            sids["seaweedfs"] = self.object_store.process.sid
        sids.update(self.extra_sessions)
        return {k: v for k, v in sids.items() if v is not None}

    def write_state(self) -> Path:
        state = {"endpoints": self.endpoints(), "sessions": self.sessions(),
                 "env": self.env(), "ray_temp_dir": str(self.ray.temp_dir) if self.ray else None}
        path = self.run_dir / "state.json"
        path.write_text(json.dumps(state, indent=2))
        return path

    def stop(self) -> None:
        for sid in self.extra_sessions.values():
            kill_session(sid, grace_s=5)
        if self.ray:
            self.ray.stop()
        if self.prometheus:
            self.prometheus.stop()
        if self.object_store:
            self.object_store.stop()
        if self.control_plane:
            self.control_plane.stop()
        (self.run_dir / "state.json").unlink(missing_ok=True)


def start_stack(
    run_dir: Path,
    components: tuple[str, ...] = COMPONENTS,
    scrape_interval_s: float = 1.0,
) -> Stack:
    """Start the chosen components in dependency order; on failure stop what started."""
    unknown = set(components) - set(COMPONENTS)
    if unknown:
        raise ValueError(f"unknown components {sorted(unknown)}; choose from {list(COMPONENTS)}")
    run_dir.mkdir(parents=True, exist_ok=True)
    stack = Stack(run_dir=run_dir, tools=locate())
    try:
        if "kube" in components:
            stack.control_plane = start_control_plane(stack.tools, run_dir)
        if "s3" in components:
            stack.object_store = SeaweedS3(run_dir / "seaweedfs").start()
        if "ray" in components:
            stack.ray = start_ray_cluster(run_dir, extra_env=stack.node_env())
        if "prometheus" in components:
            jobs = {"ray": stack.ray.metrics_targets} if stack.ray else {}
            stack.prometheus = PrometheusServer(
                stack.tools, run_dir / "prometheus", jobs=jobs, scrape_interval_s=scrape_interval_s
            ).start()
    except BaseException:
        stack.stop()
        raise
    stack.write_state()
    return stack


def read_state(run_dir: Path) -> dict | None:
    path = run_dir / "state.json"
    if not path.exists():
        return None
    return json.loads(path.read_text())


def stop_recorded(run_dir: Path) -> list[str]:
    """Stop every process recorded in ``run_dir/state.json``; returns the components stopped."""
    state = read_state(run_dir)
    if state is None:
        return []
    stopped = []
    # Reverse start order: operator and Ray first, the control plane last.
    for name, sid in reversed(list(state["sessions"].items())):
        if session_processes(sid):
            kill_session(sid, grace_s=5)
            stopped.append(name)
    if state.get("ray_temp_dir"):
        shutil.rmtree(state["ray_temp_dir"], ignore_errors=True)
    (run_dir / "state.json").unlink()
    return stopped


def recorded_health(run_dir: Path) -> dict[str, bool]:
    """component → whether its recorded process session still has live processes."""
    state = read_state(run_dir)
    if state is None:
        return {}
    return {name: bool(session_processes(sid)) for name, sid in state["sessions"].items()}


def wait_for(predicate, timeout_s: float, what: str, component: str = "stack") -> None:
    """Poll ``predicate`` until true; raise a ComponentError naming ``what`` on timeout."""
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while True:
        with contextlib.suppress(Exception):
            if predicate():
                return
        if time.monotonic() > deadline:
            raise ComponentError(component, f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 1.5, 1.0)
