"""A two-node Ray cluster on loopback standing in for two GPU node pools.

Each node advertises one custom resource (``pool_a10`` on the head, ``pool_a100`` on the worker)
so a Serve deployment that asks for ``{"pool_a100": 1}`` can only be placed on the worker, as a
KubeRay worker group with a node selector would place it on the A100 pool in a real cluster.

Both nodes export metrics on their own port for Prometheus, and the head runs the dashboard whose
REST API (``/api/serve/applications/``) is the Ray-dashboard serve backend.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import sys
import tempfile
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

from lvm_serving.contracts.serve_config import ALLOW_FAULT_INJECTION_ENV

from .procs import ComponentError, ManagedProcess, free_ports

DEFAULT_POOLS: dict[str, str] = {"head": "pool_a10", "worker": "pool_a100"}
POOL_CAPACITY = 100  # replicas per pool; a replica asks for one unit of its pool's resource


LOOPBACK_SITE_DIR = Path(__file__).parent / "ray_loopback"


def ray_command() -> list[str]:
    return [sys.executable, "-m", "ray.scripts.scripts"]


def ray_env() -> dict[str, str]:
    """Environment for Ray processes: loopback-only addresses (see ray_loopback/), no telemetry."""
    pythonpath = os.pathsep.join(p for p in (str(LOOPBACK_SITE_DIR), os.environ.get("PYTHONPATH"))
                                 if p)
    return {
        "RAY_USAGE_STATS_ENABLED": "0", "RAY_ADDRESS": "", "PYTHONPATH": pythonpath,
        # Ray exports custom metrics every 10 s by default; the local stack compresses time
        # (1 s scrapes, guardrail windows of seconds), so export every second (Ray's minimum).
        "RAY_metrics_report_interval_ms": "1000",
        # Counters only as counters (``ray_lvm_requests_total``): Ray's legacy exporter would
        # also emit a deprecated same-named gauge without ``_total`` (the queries select the
        # one ``_total`` name anyway: tests/integration/test_exporter_modes.py).
        "RAY_EXPORT_COUNTER_AS_GAUGE": "0",
        # A test and demo stack: its checkpoints carry FAULT INJECTION switches on purpose.
        ALLOW_FAULT_INJECTION_ENV: "1",
    }


def _get_json(url: str, timeout: float = 3) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as resp:
        return json.load(resp)


@dataclass
class RayNode:
    role: str
    pool: str
    process: ManagedProcess
    metrics_port: int

    @property
    def metrics_target(self) -> str:
        return f"127.0.0.1:{self.metrics_port}"


@dataclass
class RayCluster:
    gcs_address: str
    dashboard_url: str
    temp_dir: Path
    nodes: list[RayNode] = field(default_factory=list)

    @property
    def metrics_targets(self) -> list[str]:
        return [n.metrics_target for n in self.nodes]

    def alive_nodes(self) -> list[dict]:
        body = _get_json(f"{self.dashboard_url}/api/v0/nodes?limit=100&detail=true")
        return [n for n in body["data"]["result"]["result"] if n.get("state") == "ALIVE"]

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.process.stop(grace_s=3)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _node_argv(role: str, pool: str, ports: dict[str, int], temp_dir: Path, gcs: str | None,
               num_cpus: int, object_store_bytes: int) -> list[str]:
    argv = [
        *ray_command(), "start", "--block", "--disable-usage-stats",
        "--node-ip-address=127.0.0.1",
        f"--num-cpus={num_cpus}", "--num-gpus=0",
        f"--resources={json.dumps({pool: POOL_CAPACITY})}",
        f"--object-store-memory={object_store_bytes}",
        f"--metrics-export-port={ports['metrics']}",
        f"--dashboard-agent-listen-port={ports['agent_http']}",
        f"--dashboard-agent-grpc-port={ports['agent_grpc']}",
        f"--runtime-env-agent-port={ports['runtime_env']}",
        f"--node-manager-port={ports['node_manager']}",
        f"--object-manager-port={ports['object_manager']}",
        "--min-worker-port=0", "--max-worker-port=0",  # random: two raylets share this host
    ]
    if role == "head":
        argv += [
            "--head", f"--port={ports['gcs']}", f"--temp-dir={temp_dir}",
            "--include-dashboard=true", "--dashboard-host=127.0.0.1",
            f"--dashboard-port={ports['dashboard']}",
            f"--ray-client-server-port={ports['client']}",
        ]
    else:
        argv += [f"--address={gcs}"]
    return argv


def start_ray_cluster(
    run_dir: Path,
    pools: dict[str, str] | None = None,
    num_cpus_per_node: int = 4,
    object_store_mb: int = 256,
    timeout_s: float = 180,
    *,
    with_worker: bool = True,
    extra_env: dict[str, str] | None = None,
) -> RayCluster:
    """A local Ray cluster: a head and (``with_worker``) a worker node, one pool each.
    ``extra_env`` overrides :func:`ray_env` (tests: e.g. the legacy exporter's mode)."""
    pools = pools or DEFAULT_POOLS
    # Ray puts unix sockets under temp_dir; their paths must stay under ~100 chars.
    temp_dir = Path(tempfile.mkdtemp(prefix="lvmray-", dir="/tmp"))
    env = ray_env()
    # The routers sign feedback tokens with this key; every node needs the same one. A fresh
    # key per local cluster: tokens from an earlier stack are (rightly) refused.
    env["LVM_FEEDBACK_KEY"] = secrets.token_hex(32)
    env.update(extra_env or {})
    names = ["gcs", "dashboard", "client", "metrics", "agent_http", "agent_grpc", "runtime_env",
             "node_manager", "object_manager"]
    head_ports = dict(zip(names, free_ports(len(names)), strict=True))
    gcs = f"127.0.0.1:{head_ports['gcs']}"
    cluster = RayCluster(gcs_address=gcs, dashboard_url=f"http://127.0.0.1:{head_ports['dashboard']}",
                         temp_dir=temp_dir)

    head = ManagedProcess(
        "ray-head",
        _node_argv("head", pools["head"], head_ports, temp_dir, None, num_cpus_per_node,
                   object_store_mb * 1024 * 1024),
        run_dir / "logs" / "ray-head.log", env=env,
    ).start()
    cluster.nodes.append(RayNode("head", pools["head"], head, head_ports["metrics"]))
    try:
        head.wait_ready(lambda: len(cluster.alive_nodes()) >= 1, timeout_s, what="dashboard up")
        if with_worker:
            worker_ports = dict(zip(names, free_ports(len(names)), strict=True))
            worker = ManagedProcess(
                "ray-worker",
                _node_argv("worker", pools["worker"], worker_ports, temp_dir, gcs,
                           num_cpus_per_node, object_store_mb * 1024 * 1024),
                run_dir / "logs" / "ray-worker.log", env=env,
            ).start()
            cluster.nodes.append(RayNode("worker", pools["worker"], worker,
                                         worker_ports["metrics"]))
            worker.wait_ready(lambda: len(cluster.alive_nodes()) >= 2, timeout_s,
                              what="joined")
        for node in cluster.nodes:
            node.process.wait_ready(
                lambda n=node: _metrics_ok(n.metrics_target), timeout_s, what="exporting metrics"
            )
    except ComponentError:
        cluster.stop()
        raise
    return cluster


def _metrics_ok(target: str) -> bool:
    with urllib.request.urlopen(f"http://{target}/metrics", timeout=3) as resp:
        return resp.status == 200


def node_pool_of(node: dict, pools: dict[str, str] | None = None) -> str | None:
    """The pool resource a state-API node record carries, if any."""
    resources = node.get("resources_total") or {}
    for pool in (pools or DEFAULT_POOLS).values():
        if pool in resources:
            return pool
    return None
