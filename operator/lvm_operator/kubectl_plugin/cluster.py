"""The plugin's only contact with the apiserver: read LVMRollouts, set command annotations.

It picks the kubeconfig, context and namespace as kubectl would, and turns the apiserver's
answers into a :class:`ClusterError` that says what went wrong *and what to do about it* (a
missing CRD, a missing rollout, missing RBAC). Printing and exit codes are the commands' job, so
this module has no terminal output of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, NoReturn

from lvm_operator.api.rollout import CRD_NAME, GROUP, KIND, PLURAL, VERSION
from lvm_operator.commands import PLUGIN_FIELD_MANAGER


class ClusterError(Exception):
    """A failed call, with the message for the user and, where there is one, a hint."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


@dataclass(frozen=True)
class Cluster:
    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str  # the context's namespace (or 'default')
    server: str
    version: str = VERSION  # the API version the plugin speaks
    user: str = ""  # the kubeconfig context's user: recorded with each command (command-by)

    def ns(self, namespace: str | None) -> str:
        return namespace or self.namespace

    # -- errors that say what to do -------------------------------------------------------------

    def explain(self, exc: Exception, namespace: str | None, name: str | None = None) -> NoReturn:
        from kubernetes.client.exceptions import ApiException

        where = f"namespace {namespace!r}" if namespace else "the cluster"
        if not isinstance(exc, ApiException):
            raise ClusterError(
                f"cannot reach the cluster at {self.server}: {type(exc).__name__}: {exc}",
                "check the kubeconfig's current context: kubectl config current-context")
        try:
            body = json.loads(exc.body or "")
        except (TypeError, ValueError):
            body = {}
        body = body if isinstance(body, dict) else {}
        if exc.status == 404:
            if name and body.get("reason") == "NotFound" and (body.get("details") or {}).get(
                    "name"):
                raise ClusterError(f"{KIND} {name!r} not found in {where}",
                                   f"list the rollouts there with: kubectl lvm get -n {namespace}"
                                   if namespace else "list them with: kubectl lvm get -A")
            raise ClusterError(
                f"the {KIND} CRD ({CRD_NAME}) is not installed in the cluster at {self.server}",
                "install it: kubectl apply --server-side -f crds/lvmrollout.yaml "
                "(or install the Helm chart)")
        if exc.status in (401, 403):
            raise ClusterError(f"not allowed: {body.get('message') or exc.reason}",
                               f"you need get/list/watch/patch on {CRD_NAME} in {where}")
        raise ClusterError(f"the apiserver answered {exc.status}: "
                           f"{body.get('message') or exc.reason}")

    # -- calls --------------------------------------------------------------------------------

    def get(self, name: str, namespace: str) -> dict:
        try:
            return self.api.get_namespaced_custom_object(GROUP, self.version, namespace, PLURAL,
                                                         name)
        except Exception as exc:
            self.explain(exc, namespace, name)

    def list(self, namespace: str | None) -> dict:
        try:
            if namespace is None:
                return self.api.list_cluster_custom_object(GROUP, self.version, PLURAL)
            return self.api.list_namespaced_custom_object(GROUP, self.version, namespace, PLURAL)
        except Exception as exc:
            self.explain(exc, namespace)

    def annotate(self, name: str, namespace: str, annotations: dict[str, str]) -> dict:
        """Merge-patch ``metadata.annotations`` (never the spec, so GitOps tools keep it)."""
        try:
            return self.api.patch_namespaced_custom_object(
                GROUP, self.version, namespace, PLURAL, name,
                {"metadata": {"annotations": annotations}},
                field_manager=PLUGIN_FIELD_MANAGER,  # the operator records it with the command
                _content_type="application/merge-patch+json")
        except Exception as exc:
            self.explain(exc, namespace, name)

    def watch_call(self, namespace: str | None) -> tuple[Any, tuple[str, ...]]:
        """The list function (and its arguments) to stream a watch of ``namespace`` (or all)."""
        if namespace is None:
            return self.api.list_cluster_custom_object, (GROUP, self.version, PLURAL)
        return self.api.list_namespaced_custom_object, (GROUP, self.version, namespace, PLURAL)


def connect(kubeconfig: str | None, context: str | None) -> Cluster:
    """The kubeconfig's client and namespace, as kubectl would pick them."""
    from kubernetes import client, config
    from kubernetes.config.config_exception import ConfigException

    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = active
        if context:
            chosen = next((c for c in contexts if c["name"] == context), None)
            if chosen is None:
                names = ", ".join(c["name"] for c in contexts) or "none"
                raise ClusterError(
                    f"context {context!r} not found in the kubeconfig; contexts: {names}")
        api_client = config.new_client_from_config(config_file=kubeconfig,
                                                   context=chosen["name"])
    except (ConfigException, FileNotFoundError) as exc:
        raise ClusterError(f"no usable kubeconfig: {exc}",
                           "set KUBECONFIG, pass --kubeconfig, or check: kubectl config view"
                           ) from exc
    namespace = (chosen.get("context") or {}).get("namespace") or "default"
    return Cluster(client.CustomObjectsApi(api_client), namespace,
                   api_client.configuration.host,
                   user=str((chosen.get("context") or {}).get("user") or ""))
