"""The apiserver calls the operator makes, behind one small class (the kubernetes client).

A tick reads its LVMRollout, merge-patches its status and annotations and posts Events
(:class:`KubeAccess`); start-up creates the Kopf peering object (:func:`ensure_peering_object`).
Nothing else in the controller talks to Kubernetes, so the tick itself needs no cluster.
"""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime
from typing import Any

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from ..api import API_VERSION, GROUP, KIND, PLURAL, VERSION
from .status import Event

log = logging.getLogger("lvm_operator.controller")

COMPONENT = "lvm-rollout-operator"


def api_client(connections: int = 16) -> Any:
    """In-cluster credentials when running in a pod, else the kubeconfig; with as many pooled
    connections as ticks run at once (urllib3's default, 5 x the CPU count, made tick threads
    wait for a connection on small machines)."""
    configuration = client.Configuration()
    configuration.connection_pool_maxsize = max(connections, 1)
    try:
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    except config.ConfigException:
        return config.new_client_from_config(client_configuration=configuration)


class KubeAccess:
    """The few apiserver calls a tick makes (the kubernetes client, synchronous)."""

    def __init__(self, api_client: Any) -> None:
        self.api_client = api_client
        self.custom = client.CustomObjectsApi(api_client)
        self.core = client.CoreV1Api(api_client)

    def get(self, namespace: str, name: str) -> dict | None:
        try:
            return self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL,
                                                            name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise

    def patch_status(self, namespace: str, name: str, patch: dict) -> None:
        self.custom.patch_namespaced_custom_object_status(
            GROUP, VERSION, namespace, PLURAL, name, {"status": patch},
            _content_type="application/merge-patch+json",
        )

    def patch_metadata(self, namespace: str, name: str, metadata: dict) -> None:
        self.custom.patch_namespaced_custom_object(
            GROUP, VERSION, namespace, PLURAL, name, {"metadata": metadata},
            _content_type="application/merge-patch+json",
        )

    def post_event(self, obj: dict, event: Event) -> None:
        meta = obj.get("metadata", {})
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{meta.get('name')}.{uuid.uuid4().hex[:12]}",
                         "namespace": meta.get("namespace")},
            "involvedObject": {"apiVersion": API_VERSION, "kind": KIND, "name": meta.get("name"),
                               "namespace": meta.get("namespace"), "uid": meta.get("uid")},
            "type": event.type,
            "reason": event.reason,
            "message": event.message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self.core.create_namespaced_event(meta.get("namespace"), body)


def ensure_peering_object(api_client: Any, name: str, namespaces: list[str] | None) -> None:
    """Create the (Cluster)KopfPeering object Kopf keeps alive, unless it exists.

    Kopf only patches it; without it peering silently does nothing. Lacking the CRDs or the
    permission is logged, not fatal (``kubectl apply -f crds/kopf-peering.yaml``).
    """
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
