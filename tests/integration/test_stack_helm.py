"""The locally built helm works against the local apiserver."""

from __future__ import annotations

from pathlib import Path

import yaml

CHART = Path(__file__).resolve().parents[1] / "fixtures" / "minimal-chart"


def test_helm_version(kube, tools):
    out = kube.helm("version", "--short").stdout
    assert out.startswith("v3."), out


def test_helm_template_minimal_chart(kube):
    out = kube.helm("template", "demo", str(CHART), "--set", "greeting=hi").stdout
    docs = [d for d in yaml.safe_load_all(out) if d]
    assert docs == [{"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": "demo-minimal"}, "data": {"greeting": "hi"}}]


def test_helm_install_and_uninstall(kube):
    ns = kube.new_namespace("helm")
    kube.helm("install", "demo", str(CHART), "-n", ns, "--wait", "--timeout", "60s")
    got = kube.kubectl("get", "configmap", "demo-minimal", "-n", ns, "-o", "yaml").stdout
    assert yaml.safe_load(got)["data"] == {"greeting": "hello"}
    kube.helm("uninstall", "demo", "-n", ns)
    gone = kube.kubectl("get", "configmap", "demo-minimal", "-n", ns, check=False)
    assert gone.returncode != 0
