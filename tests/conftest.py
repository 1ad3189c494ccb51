"""Session-wide fixtures that bring up the real local stack once and tear it down at the end.

Components start lazily: a run that only needs the apiserver never starts Ray. Each fixture
yields a small handle with the calls tests need (kubectl, helm, Prometheus queries, Ray's
dashboard), all pointed at processes on 127.0.0.1 that this session started itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

from lvm_operator.devstack.control_plane import ControlPlane, start_control_plane
from lvm_operator.devstack.object_store import SeaweedS3
from lvm_operator.devstack.prometheus import PrometheusServer
from lvm_operator.devstack.ray_cluster import RayCluster, start_ray_cluster
from lvm_operator.devstack.tools import Tools, locate
from lvm_serving.contracts.serve_config import ALLOW_FAULT_INJECTION_ENV

REPO_ROOT = Path(__file__).resolve().parents[1]
# The tests' checkpoints carry FAULT INJECTION switches on purpose; this process and every child
# (trainer, evaluator, operator) may load them. Production serving leaves it unset.
os.environ.setdefault(ALLOW_FAULT_INJECTION_ENV, "1")


def _interrupt(signum, frame):
    raise KeyboardInterrupt(f"received signal {signum}")


def pytest_configure(config):
    # A SIGTERM (a CI timeout, a supervisor) must still run fixture teardown, or the stack's
    # processes would outlive the test run.
    signal.signal(signal.SIGTERM, _interrupt)


@pytest.fixture(scope="session")
def tools() -> Tools:
    return locate()


@pytest.fixture(scope="session")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("stack")


@dataclass
class Kube:
    """Handle on the session's kube-apiserver: real kubectl/helm with an admin kubeconfig."""

    control_plane: ControlPlane
    tools: Tools

    @property
    def kubeconfig(self) -> str:
        return str(self.control_plane.kubeconfig)

    @property
    def env(self) -> dict[str, str]:
        path = os.pathsep.join([*map(str, self.tools.bin_dirs), os.environ["PATH"]])
        return {**os.environ, "KUBECONFIG": self.kubeconfig, "PATH": path}

    def _run(self, argv, input, check, timeout) -> subprocess.CompletedProcess:
        proc = subprocess.run(argv, input=input, capture_output=True, text=True, env=self.env,
                              timeout=timeout)
        if check and proc.returncode != 0:
            cmd = " ".join(map(str, argv))
            raise AssertionError(f"{cmd} failed ({proc.returncode}):\n{proc.stderr}{proc.stdout}")
        return proc

    def kubectl(self, *args: str, input: str | None = None, check: bool = True,
                timeout: float = 60) -> subprocess.CompletedProcess:
        return self._run([str(self.tools.kubectl), *args], input, check, timeout)

    def helm(self, *args: str, input: str | None = None, check: bool = True,
             timeout: float = 120) -> subprocess.CompletedProcess:
        return self._run([str(self.tools.helm), *args], input, check, timeout)

    def apply(self, manifest: dict | str, *extra: str, check: bool = True):
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        return self.kubectl("apply", "-f", "-", *extra, input=text, check=check)

    def api_client(self):
        from kubernetes import config

        return config.new_client_from_config(config_file=self.kubeconfig)

    def new_namespace(self, prefix: str = "t") -> str:
        """A fresh namespace (deleted namespaces never finalize without a controller-manager)."""
        name = f"{prefix}-{uuid.uuid4().hex[:8]}"
        self.kubectl("create", "namespace", name)
        return name


@pytest.fixture(scope="session")
def kube(tools, run_dir) -> Iterator[Kube]:
    control_plane = start_control_plane(tools, run_dir / "kube")
    try:
        yield Kube(control_plane, tools)
    finally:
        control_plane.stop()


@pytest.fixture(scope="session")
def crd_installed(kube) -> Path:
    """Apply the generated LVMRollout CRD and wait until the apiserver serves it."""
    crd = REPO_ROOT / "crds" / "lvmrollout.yaml"
    kube.kubectl("apply", "--server-side", "-f", str(crd))
    name = yaml.safe_load(crd.read_text())["metadata"]["name"]
    kube.kubectl("wait", "--for=condition=Established", f"crd/{name}", "--timeout=60s")
    return crd


@pytest.fixture(scope="session")
def object_store(run_dir) -> Iterator[SeaweedS3]:
    """The session's S3-compatible store (SeaweedFS on loopback); the Ray nodes and the
    operators the tests start get its AWS_* environment."""
    store = SeaweedS3(run_dir / "seaweedfs").start()
    try:
        yield store
    finally:
        store.stop()


@pytest.fixture(scope="session")
def ray_cluster(run_dir, object_store) -> Iterator[RayCluster]:
    cluster = start_ray_cluster(run_dir / "ray", extra_env=object_store.node_env(run_dir))
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="session")
def prometheus(tools, run_dir, ray_cluster) -> Iterator[PrometheusServer]:
    """Prometheus scraping both Ray nodes' metrics ports every second."""
    server = PrometheusServer(tools, run_dir / "prometheus",
                              jobs={"ray": ray_cluster.metrics_targets}, scrape_interval_s=1.0)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def prometheus_factory(tools, tmp_path) -> Iterator:
    """Make extra Prometheus servers with chosen scrape targets; all stopped after the test.

    ``prometheus_factory(["127.0.0.1:9100"], scrape_interval_s=1.0)`` → a started
    :class:`PrometheusServer` (``.url``, ``.stop()``, ``.start()`` restarts on the same port and
    data, ``.query(promql)``); ``wait_for_series(server, promql, timeout_s)`` waits for data.
    """
    servers: list[PrometheusServer] = []

    def make(targets: list[str], scrape_interval_s: float = 1.0, rule_files=None):
        server = PrometheusServer(tools, tmp_path / f"prom{len(servers)}",
                                  jobs={"test": list(targets)}, scrape_interval_s=scrape_interval_s,
                                  rule_files=list(rule_files or []))
        servers.append(server)
        return server.start()

    yield make
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def serve_http_port(ray_cluster) -> int:
    """The one HTTP port Ray Serve listens on for the whole session.

    Serve takes ``http_options`` only when it first starts; a module that left Serve running
    (with its own port) would make the next module's router unreachable. Every test that
    deploys to the session's cluster uses this port.
    """
    from lvm_operator.devstack.procs import free_port

    return free_port()
