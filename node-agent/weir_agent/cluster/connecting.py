"""Kubernetes mode: what the agent follows about its own node, and where it reports.

``Cluster`` holds the API clients and the follows that run beside the engine, each a
watch, never a poll: this Node's labels (for nodeSelectors), the pods on the node (labels
for series, and the cgroup ids a podSelector scopes to), Namespace labels (started with
the first namespaceSelector), and the NodeReport publisher. It also answers whether the
agent's DaemonSet is being uninstalled, which decides whether pinned hooks stay attached.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from weir_agent.cluster import apierrors, pods, publishing, watching
from weir_agent.identity import metadata
from weir_api import documents
from weir_api.meta import LabelSelector
from weir_api.policies import TracingPolicy

log = logging.getLogger("weir.agent")

Scope = tuple[LabelSelector | None, LabelSelector | None, LabelSelector | None]
"""A scoped policy's podSelector, namespaceSelector and containerSelector."""


class Cluster:
    """The agent's side of the cluster, beside the policy ConfigMaps (sources/configmaps)."""

    def __init__(
        self,
        *,
        core: k8s.CoreV1Api,
        custom: k8s.CustomObjectsApi,
        apps: k8s.AppsV1Api | None = None,
        namespace: str,
        node: str,
        report_interval: float,
        heartbeat: float,
        stop: threading.Event,
        wake: threading.Event | None = None,
    ) -> None:
        """``wake`` is set when what the agent runs may change: this Node's labels, the
        policy ConfigMaps (sources/configmaps.py)."""
        self.errors = apierrors.ApiErrors()
        self.wake = wake if wake is not None else threading.Event()
        self.core = core
        self.apps = apps
        self.namespace = namespace
        self.node = node
        self.stop = stop
        self.publisher = publishing.NodeReportPublisher(
            core=core,
            custom=custom,
            node=node,
            min_interval=report_interval,
            heartbeat=heartbeat,
            errors=self.errors,
        )
        self.not_targeted: dict[str, int] = {}
        self.selectors: dict[str, Scope] = {}
        self.pods: pods.PodResolver | None = None
        self._lock = threading.Lock()
        self._node_labels: dict[str, str] = {}
        self._namespace_labels: dict[str, dict[str, str]] = {}
        self._namespaces_followed = False  # the Namespace watch starts with the first selector
        self.node_synced = threading.Event()
        threading.Thread(target=self._follow_node, name="weir-node", daemon=True).start()

    @classmethod
    def connect(
        cls,
        *,
        namespace: str,
        node: str,
        report_interval: float,
        heartbeat: float,
        stop: threading.Event,
        wake: threading.Event | None = None,
    ) -> Cluster:
        """In a pod, the service account's credentials; elsewhere, KUBECONFIG."""
        if os.environ.get("KUBERNETES_SERVICE_HOST"):
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
            api = k8s.ApiClient()
        else:
            api = k8s_config.new_client_from_config(os.environ.get("KUBECONFIG"))  # type: ignore[no-untyped-call]
        return cls(
            core=k8s.CoreV1Api(api),
            custom=k8s.CustomObjectsApi(api),
            apps=k8s.AppsV1Api(api),
            namespace=namespace,
            node=node,
            report_interval=report_interval,
            heartbeat=heartbeat,
            stop=stop,
            wake=wake,
        )

    def node_labels(self) -> dict[str, str]:
        """This Node's labels as last seen (empty before the first list)."""
        with self._lock:
            return dict(self._node_labels)

    def uninstalling(self) -> bool:
        """Whether this agent's DaemonSet (WEIR_DAEMONSET, set by the chart) is gone or
        being deleted, or the agent may no longer read it: an uninstall, not a restart or
        a rolling update, so its hooks are detached."""
        name = os.environ.get("WEIR_DAEMONSET")
        if not name or self.apps is None:
            return False
        try:
            found = self.apps.read_namespaced_daemon_set(name, self.namespace, _request_timeout=10)
        except k8s.ApiException as error:
            # Gone (404), or so are the agent's Role (403) or service account (401): helm
            # deletes the DaemonSet first and the RBAC after it, before the pod stops.
            if error.status in (401, 403, 404):
                return True
            self.errors.record("read DaemonSet", error)
            log.warning("cannot read DaemonSet %s (%s): leaving hooks attached", name, error)
            return False
        except Exception as error:  # the API may be unreachable
            self.errors.record("read DaemonSet", error)
            log.warning("cannot read DaemonSet %s (%s): leaving hooks attached", name, error)
            return False
        return found.metadata is not None and found.metadata.deletion_timestamp is not None

    def pod_resolver(self, fallback: metadata.CgroupResolver) -> pods.PodResolver:
        """Labels from the pods on this node (watched from now on)."""
        self.pods = pods.PodResolver(core=self.core, node=self.node, index=fallback.index)
        self.pods.errors = self.errors
        threading.Thread(
            target=self.pods.run, args=(self.stop,), name="weir-pods", daemon=True
        ).start()
        return self.pods

    def remember_scopes(self, parsed: list[documents.Parsed]) -> None:
        """The selectors of the scoped policies about to run."""
        self.selectors = {
            item.name: (
                item.obj.spec.pod_selector,
                item.obj.spec.namespace_selector,
                item.obj.spec.container_selector,
            )
            for item in parsed
            if isinstance(item.obj, TracingPolicy) and item.obj.spec.scoped()
        }

    def scopes(self) -> dict[str, set[int]]:
        """policy -> cgroup ids of the containers its podSelector/namespaceSelector pick."""
        if not self.selectors or self.pods is None:
            return {}
        if any(ns is not None for _, ns, _ in self.selectors.values()):
            self._follow_namespaces()
        with self._lock:
            namespace_labels = dict(self._namespace_labels)
        out = {}
        for name, (pod, ns, container) in self.selectors.items():
            containers = self.pods.selected(pod, ns, namespace_labels, container)
            out[name] = self.pods.index.ids_of(containers)
            log.debug("scope %s: containers %s -> cgroups %s", name, containers, out[name])
        return out

    def _follow_namespaces(self) -> None:
        """Namespace labels for namespaceSelectors, from a watch started the first time a
        policy has one (never a poll); while the API is away the last known labels stay."""
        if self._namespaces_followed:
            return
        self._namespaces_followed = True

        def listed(items: list[Any]) -> None:
            with self._lock:
                self._namespace_labels = {
                    n.metadata.name: dict(n.metadata.labels or {}) for n in items
                }

        def changed(kind: str, item: Any) -> None:
            with self._lock:
                if kind == "DELETED":
                    self._namespace_labels.pop(item.metadata.name, None)
                else:
                    self._namespace_labels[item.metadata.name] = dict(item.metadata.labels or {})

        threading.Thread(
            target=watching.follow,
            args=(self.core.list_namespace,),
            kwargs={
                "on_list": listed,
                "on_event": changed,
                "stop": self.stop,
                "what": "Namespaces",
                "errors": self.errors,
            },
            name="weir-namespaces",
            daemon=True,
        ).start()

    def _follow_node(self) -> None:
        """This node's labels, from a watch of its own Node (a field selector), never a
        poll. Before the first list no nodeSelector is judged; with no Node object (a
        host outside the cluster's nodes) there are no labels; while the API is away the
        last known labels stay."""

        def listed(items: list[Any]) -> None:
            with self._lock:
                self._node_labels = dict(items[0].metadata.labels or {}) if items else {}
            self.node_synced.set()
            self.wake.set()

        def changed(kind: str, item: Any) -> None:
            with self._lock:
                self._node_labels = {} if kind == "DELETED" else dict(item.metadata.labels or {})
            self.wake.set()

        watching.follow(
            self.core.list_node,
            field_selector=f"metadata.name={self.node}",
            on_list=listed,
            on_event=changed,
            stop=self.stop,
            what="this Node",
            errors=self.errors,
        )
