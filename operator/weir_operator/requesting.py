"""The operator's own requests to the API server, in one small client object.

kopf watches the custom resources; what the handlers then read and write goes through
``Api``: a policy and the AggregationRules (when the watch cache is not seeded yet), the
policy ConfigMaps in the operator's namespace, and the merge patch that drops what older
operators left on an object. The handlers decide; this module only talks HTTP.
"""

from __future__ import annotations

import os
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from weir_api import GROUP, VERSION, handoff


class Api:
    """API clients and the operator's namespace."""

    def __init__(self, *, core: Any, custom: Any, namespace: str) -> None:
        self.core = core  # kubernetes.client.CoreV1Api
        self.custom = custom  # kubernetes.client.CustomObjectsApi
        self.namespace = namespace

    @classmethod
    def connect(cls, *, namespace: str) -> Api:
        """In a pod: the service account; elsewhere: KUBECONFIG."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = k8s.ApiClient()
        else:
            api = k8s_config.new_client_from_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        return cls(core=k8s.CoreV1Api(api), custom=k8s.CustomObjectsApi(api), namespace=namespace)

    def policy(self, name: str) -> dict[str, Any] | None:
        """A TracingPolicy as stored, or None when there is none by that name."""
        try:
            found: dict[str, Any] = self.custom.get_cluster_custom_object(
                GROUP, VERSION, "tracingpolicies", name
            )
        except k8s.ApiException as error:
            if error.status == 404:
                return None
            raise
        return found

    def rules(self) -> list[dict[str, Any]]:
        """Every AggregationRule, listed."""
        items: list[dict[str, Any]] = self.custom.list_cluster_custom_object(
            GROUP, VERSION, "aggregationrules"
        )["items"]
        return items

    def policy_configmaps(self) -> list[Any]:
        """The policy ConfigMaps in the operator's namespace, listed."""
        items: list[Any] = self.core.list_namespaced_config_map(
            self.namespace, label_selector=handoff.POLICY_LABEL
        ).items
        return items

    def configmap_meta(self, name: str) -> dict[str, Any] | None:
        """A ConfigMap's annotations and labels (what tells whether it is current), or None
        when there is no such ConfigMap."""
        try:
            current = self.core.read_namespaced_config_map(name, self.namespace).to_dict()
        except k8s.ApiException as error:
            if error.status != 404:
                raise
            return None
        meta = current["metadata"]
        return {"metadata": {"annotations": meta["annotations"], "labels": meta["labels"]}}

    def write_configmap(self, desired: dict[str, Any], *, exists: bool) -> None:
        """Create or replace a ConfigMap; created meanwhile (another replica), replace it."""
        name = desired["metadata"]["name"]
        if exists:
            self.core.replace_namespaced_config_map(name, self.namespace, desired)
            return
        try:
            self.core.create_namespaced_config_map(self.namespace, desired)
        except k8s.ApiException as error:
            if error.status != 409:
                raise
            self.core.replace_namespaced_config_map(name, self.namespace, desired)

    def patch_metadata(self, plural: str, name: str, patch: dict[str, Any]) -> None:
        """A merge patch of a custom object's metadata."""
        self.custom.patch_cluster_custom_object(GROUP, VERSION, plural, name, {"metadata": patch})
