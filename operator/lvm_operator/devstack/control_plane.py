"""etcd + kube-apiserver on loopback, envtest-style (no kubelet, scheduler or controllers).

RBAC is on; the admin kubeconfig authenticates with a client certificate in ``system:masters``.
Without a controller-manager, namespaces are created fine but a deleted namespace stays
``Terminating`` forever, so tests use fresh namespaces instead of deleting them.
"""

from __future__ import annotations

import ssl
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

from .certs import PKI, generate_pki
from .procs import ManagedProcess, free_ports
from .tools import Tools


@dataclass
class ControlPlane:
    etcd: ManagedProcess
    apiserver: ManagedProcess
    url: str
    kubeconfig: Path
    pki: PKI

    def stop(self) -> None:
        self.apiserver.stop()
        self.etcd.stop()


def _https_ok(url: str, pki: PKI) -> bool:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.load_cert_chain(str(pki.admin_cert), str(pki.admin_key))
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
        return resp.status == 200


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return resp.status == 200


def write_kubeconfig(path: Path, server: str, pki: PKI, namespace: str = "default") -> None:
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "lvm-local", "cluster": {"server": server,
                                              "certificate-authority": str(pki.ca_cert)}}
        ],
        "users": [
            {"name": "lvm-admin", "user": {"client-certificate": str(pki.admin_cert),
                                           "client-key": str(pki.admin_key)}}
        ],
        "contexts": [
            {"name": "lvm-local",
             "context": {"cluster": "lvm-local", "user": "lvm-admin", "namespace": namespace}}
        ],
        "current-context": "lvm-local",
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    path.chmod(0o600)


def start_control_plane(tools: Tools, run_dir: Path, timeout_s: float = 120) -> ControlPlane:
    pki = generate_pki(run_dir / "pki")
    etcd_client, etcd_peer, api_port = free_ports(3)

    etcd = ManagedProcess(
        "etcd",
        [
            str(tools.etcd),
            "--name=lvm-local",
            f"--data-dir={run_dir / 'etcd-data'}",
            f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
            f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
            f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
            f"--initial-cluster=lvm-local=http://127.0.0.1:{etcd_peer}",
            "--unsafe-no-fsync",  # test data: durability is not the point, speed is
            "--log-level=warn",
        ],
        run_dir / "logs" / "etcd.log",
    ).start()
    try:
        etcd.wait_ready(lambda: _http_ok(f"http://127.0.0.1:{etcd_client}/health"), timeout_s,
                        what="healthy")
    except Exception:
        etcd.stop()
        raise

    apiserver = ManagedProcess(
        "kube-apiserver",
        [
            str(tools.kube_apiserver),
            f"--etcd-servers=http://127.0.0.1:{etcd_client}",
            "--bind-address=127.0.0.1",
            "--advertise-address=127.0.0.1",
            f"--secure-port={api_port}",
            f"--cert-dir={run_dir / 'pki'}",
            f"--tls-cert-file={pki.serving_cert}",
            f"--tls-private-key-file={pki.serving_key}",
            f"--client-ca-file={pki.ca_cert}",
            f"--service-account-key-file={pki.sa_pub}",
            f"--service-account-signing-key-file={pki.sa_key}",
            "--service-account-issuer=https://kubernetes.default.svc",
            "--authorization-mode=RBAC",
            "--service-cluster-ip-range=10.96.0.0/24",
            "--allow-privileged=true",
            # No controller-manager: nothing would mint tokens for pods we never run anyway.
            "--disable-admission-plugins=ServiceAccount",
            "--enable-priority-and-fairness=false",
            "--v=1",
        ],
        run_dir / "logs" / "kube-apiserver.log",
    ).start()
    url = f"https://127.0.0.1:{api_port}"
    try:
        apiserver.wait_ready(lambda: _https_ok(f"{url}/readyz", pki), timeout_s, what="ready")
    except Exception:
        apiserver.stop()
        etcd.stop()
        raise
    kubeconfig = run_dir / "kubeconfig"
    write_kubeconfig(kubeconfig, url, pki)
    return ControlPlane(etcd=etcd, apiserver=apiserver, url=url, kubeconfig=kubeconfig, pki=pki)


def start_role_aggregation(tools: Tools, control_plane: ControlPlane, run_dir: Path,
                           timeout_s: float = 60) -> ManagedProcess:
    """kube-controller-manager running only its clusterrole-aggregation controller: what folds
    ClusterRoles labelled ``rbac.authorization.k8s.io/aggregate-to-<role>`` into the built-in
    view/edit/admin roles (the local stack otherwise runs no controllers)."""
    (port,) = free_ports(1)
    kcm = ManagedProcess(
        "kube-controller-manager",
        [
            str(tools.kube_controller_manager),
            f"--kubeconfig={control_plane.kubeconfig}",
            f"--authentication-kubeconfig={control_plane.kubeconfig}",
            f"--authorization-kubeconfig={control_plane.kubeconfig}",
            "--controllers=clusterrole-aggregation",
            "--leader-elect=false",
            "--bind-address=127.0.0.1",
            f"--secure-port={port}",
            f"--cert-dir={run_dir / 'kcm-pki'}",
            "--v=1",
        ],
        run_dir / "logs" / "kube-controller-manager.log",
    ).start()
    try:
        kcm.wait_ready(lambda: _healthz_ok(f"https://127.0.0.1:{port}/healthz"), timeout_s,
                       what="healthy")
    except Exception:
        kcm.stop()
        raise
    return kcm


def _healthz_ok(url: str) -> bool:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # its self-signed serving cert
    with urllib.request.urlopen(url, context=ctx, timeout=2) as resp:
        return resp.status == 200
