"""Where the locally built Kubernetes tools live, and building them when they are missing.

``scripts/build-tools.sh`` builds kube-apiserver, kube-controller-manager, kubectl, etcd and helm
from the Go module proxy into a cache keyed by version (``scripts/versions.env``); this module
reads the same pins so Python and the shell agree on one location.
"""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[3]
VERSIONS_FILE = REPO_ROOT / "scripts" / "versions.env"
BUILD_SCRIPT = REPO_ROOT / "scripts" / "build-tools.sh"


def cache_dir() -> Path:
    return Path(os.environ.get("LVM_CACHE_DIR", Path.home() / ".cache" / "lvm-rollout"))


def pinned_versions() -> dict[str, str]:
    versions = {}
    for line in VERSIONS_FILE.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, value = line.split("=", 1)
            versions[key.strip()] = value.strip()
    return versions


@dataclass(frozen=True)
class Tools:
    kube_apiserver: Path
    kube_controller_manager: Path
    kubectl: Path
    etcd: Path
    helm: Path
    prometheus: Path
    promtool: Path
    kubernetes_version: str

    @property
    def bin_dirs(self) -> list[Path]:
        return [self.kubectl.parent, self.helm.parent, self.etcd.parent]


def locate(build_if_missing: bool = True) -> Tools:
    v = pinned_versions()
    bin_root = cache_dir() / "bin"
    kube = bin_root / f"kubernetes-{v['KUBERNETES_VERSION']}"
    tools = Tools(
        kube_apiserver=kube / "kube-apiserver",
        kube_controller_manager=(bin_root / f"kube-controller-manager-{v['KUBERNETES_VERSION']}"
                                 / "kube-controller-manager"),
        kubectl=kube / "kubectl",
        etcd=bin_root / f"etcd-{v['ETCD_VERSION']}" / "etcd",
        helm=bin_root / f"helm-{v['HELM_VERSION']}" / "helm",
        prometheus=Path(os.environ.get("LVM_PROMETHEUS", "/usr/bin/prometheus")),
        promtool=Path(os.environ.get("LVM_PROMTOOL", "/usr/bin/promtool")),
        kubernetes_version=v["KUBERNETES_VERSION"],
    )
    built = (tools.kube_apiserver, tools.kube_controller_manager, tools.kubectl, tools.etcd,
             tools.helm)
    if build_if_missing and not all(p.exists() for p in built):
        subprocess.run(["bash", str(BUILD_SCRIPT)], check=True)
    missing = [str(p) for p in (*built, tools.prometheus, tools.promtool) if not p.exists()]
    if missing:
        raise FileNotFoundError(
            "local stack tools missing: " + ", ".join(missing)
            + " — run scripts/setup.sh (builds the Kubernetes tools, installs Debian's prometheus)"
        )
    return tools
