"""The locally built kube-apiserver behaves like a real one: versions, discovery, CRDs, status
subresource, watches and schema validation — all through the real kubectl and client library."""

from __future__ import annotations

import json
import threading

import yaml

WIDGET_CRD = {
    "apiVersion": "apiextensions.k8s.io/v1",
    "kind": "CustomResourceDefinition",
    "metadata": {"name": "widgets.stack.test"},
    "spec": {
        "group": "stack.test",
        "scope": "Namespaced",
        "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
        "versions": [{
            "name": "v1", "served": True, "storage": True,
            "subresources": {"status": {}},
            "schema": {"openAPIV3Schema": {
                "type": "object",
                "properties": {
                    "spec": {"type": "object", "required": ["size"], "properties": {
                        "size": {"type": "integer", "minimum": 1, "maximum": 10}}},
                    "status": {"type": "object", "properties": {"phase": {"type": "string"}}},
                },
            }},
        }],
    },
}


def test_version_and_discovery(kube, tools):
    out = json.loads(kube.kubectl("version", "-o", "json").stdout)
    assert out["serverVersion"]["gitVersion"] == tools.kubernetes_version
    assert out["clientVersion"]["gitVersion"] == tools.kubernetes_version
    resources = kube.kubectl("api-resources", "-o", "name").stdout.split()
    assert "customresourcedefinitions.apiextensions.k8s.io" in resources
    assert "events.events.k8s.io" in resources
    # RBAC is on: an unprivileged identity is refused.
    denied = kube.kubectl("auth", "can-i", "list", "pods", "--as=nobody", check=False)
    assert denied.stdout.strip() == "no"


def test_custom_resource_crud_status_and_watch(kube):
    from kubernetes import client, watch

    kube.apply(WIDGET_CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/widgets.stack.test", "--timeout=60s")
    ns = kube.new_namespace("widget")
    api = client.CustomObjectsApi(kube.api_client())

    seen: list[tuple[str, dict]] = []
    ready = threading.Event()

    def watch_widgets():
        w = watch.Watch()
        ready.set()
        for event in w.stream(api.list_namespaced_custom_object, "stack.test", "v1", ns,
                              "widgets", timeout_seconds=20):
            seen.append((event["type"], event["object"]))
            if event["object"].get("status", {}).get("phase") == "Ready":
                w.stop()

    watcher = threading.Thread(target=watch_widgets, daemon=True)
    watcher.start()
    ready.wait(5)

    kube.apply({"apiVersion": "stack.test/v1", "kind": "Widget",
                "metadata": {"name": "w1", "namespace": ns}, "spec": {"size": 3}})
    got = api.get_namespaced_custom_object("stack.test", "v1", ns, "widgets", "w1")
    assert got["spec"] == {"size": 3}

    # Status goes through the subresource; a plain update must not touch it.
    api.patch_namespaced_custom_object_status(
        "stack.test", "v1", ns, "widgets", "w1", {"status": {"phase": "Ready"}})
    kube.kubectl("patch", "widget", "w1", "-n", ns, "--type=merge",
                 "-p", '{"status": {"phase": "Ignored"}}')
    got = api.get_namespaced_custom_object("stack.test", "v1", ns, "widgets", "w1")
    assert got["status"] == {"phase": "Ready"}

    watcher.join(25)
    types = [t for t, _ in seen]
    assert types[0] == "ADDED"
    assert any(obj.get("status", {}).get("phase") == "Ready" for _, obj in seen), types


def test_schema_violation_rejected_with_apiserver_message(kube):
    kube.apply(WIDGET_CRD)
    kube.kubectl("wait", "--for=condition=Established", "crd/widgets.stack.test", "--timeout=60s")
    bad = {"apiVersion": "stack.test/v1", "kind": "Widget",
           "metadata": {"name": "too-big", "namespace": "default"}, "spec": {"size": 11}}
    proc = kube.kubectl("apply", "-f", "-", input=yaml.safe_dump(bad), check=False)
    assert proc.returncode != 0
    assert "spec.size" in proc.stderr
    assert "should be less than or equal to 10" in proc.stderr
    missing = kube.kubectl("get", "widget", "too-big", "-n", "default", check=False)
    assert missing.returncode != 0 and "NotFound" in missing.stderr
