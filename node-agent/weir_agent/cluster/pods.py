"""Kubernetes mode: cgroup id → namespace, pod, container and workload.

The agent watches only the pods on its own node (field selector
``spec.nodeName``) and keeps, per container id from
``status.containerStatuses[].containerID``, who runs in it. A cgroup id
resolves through its cgroup path (which names the container id, whatever the
runtime) to those labels. The workload is the owning controller as people
name it: a ReplicaSet's Deployment (the pod-template-hash suffix removed), a
StatefulSet, DaemonSet or Job, or the pod itself when it has no owner.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from kubernetes import client as k8s

from weir_agent.cluster import watching
from weir_agent.cluster.apierrors import ApiErrors
from weir_agent.identity import cgroups
from weir_agent.identity.metadata import Labels
from weir_api.meta import LabelSelector

log = logging.getLogger("weir.agent")


def workload(pod: dict[str, Any]) -> str:
    meta = pod.get("metadata") or {}
    owners = [o for o in meta.get("ownerReferences") or [] if o.get("controller", True)]
    if not owners:
        return str(meta.get("name", ""))
    owner = owners[0]
    name = str(owner.get("name", ""))
    template_hash = (meta.get("labels") or {}).get("pod-template-hash")
    if owner.get("kind") == "ReplicaSet" and template_hash and name.endswith(f"-{template_hash}"):
        return name[: -len(template_hash) - 1]
    return name


def containers(pod: dict[str, Any]) -> dict[str, Labels]:
    """container id → labels, for every container of a pod that has an id."""
    meta = pod.get("metadata") or {}
    status = pod.get("status") or {}
    out = {}
    for entry in [
        *(status.get("containerStatuses") or []),
        *(status.get("initContainerStatuses") or []),
    ]:
        raw = entry.get("containerID") or ""
        container_id = raw.split("://", 1)[-1]
        if container_id:
            out[container_id] = Labels(
                namespace=meta.get("namespace", ""),
                pod=meta.get("name", ""),
                container=entry.get("name", ""),
                workload=workload(pod),
                image=entry.get("image", ""),
            )
    return out


class PodResolver:
    """Labels for cgroup ids from the pods on this node."""

    def __init__(self, *, core: k8s.CoreV1Api, node: str, index: cgroups.CgroupIndex) -> None:
        self.errors: ApiErrors | None = None  # counted in weir_agent_api_errors_total
        self.core = core
        self.node = node
        self.index = index
        self.lock = threading.Lock()
        self.by_pod: dict[tuple[str, str], dict[str, Labels]] = {}
        self.pod_labels: dict[tuple[str, str], dict[str, str]] = {}
        # Containers of deleted pods, until their series are retired (forget): a pod that
        # lived for seconds keeps its labels for its final counts.
        self.departed: dict[str, Labels] = {}

    def labels(self, cgroup_id: int) -> Labels:
        path = self.index.path(cgroup_id)
        found = cgroups.container_id(path) if path else None
        if found is None:
            return Labels()
        with self.lock:
            for pod in self.by_pod.values():
                if found in pod:
                    return pod[found]
            departed = self.departed.get(found)
        return departed or Labels(container=found[:12])

    def forget(self, cgroup_ids: Iterable[int]) -> None:
        gone = [self.index.path(i) for i in cgroup_ids]
        with self.lock:
            for path in gone:
                found = cgroups.container_id(path) if path else None
                if found is not None:
                    self.departed.pop(found, None)
        self.index.forget(cgroup_ids)

    def _depart(self, key: tuple[str, str]) -> None:
        """A pod is gone (lock held): keep its containers' labels (bounded, oldest first)."""
        self.departed.update(self.by_pod.pop(key, {}))
        self.pod_labels.pop(key, None)
        while len(self.departed) > cgroups.MAX_REMEMBERED:
            del self.departed[next(iter(self.departed))]

    def selected(
        self,
        pod_selector: LabelSelector | None,
        namespace_selector: LabelSelector | None,
        namespace_labels: dict[str, dict[str, str]],
        container_selector: LabelSelector | None = None,
    ) -> set[str]:
        """Container ids of the pods on this node that the selectors pick (a container
        selector sees the container's name as the field name)."""
        with self.lock:
            out: set[str] = set()
            for (namespace, name), labels in self.pod_labels.items():
                if pod_selector is not None and not pod_selector.matches(labels):
                    continue
                if namespace_selector is not None and not namespace_selector.matches(
                    namespace_labels.get(namespace, {})
                ):
                    continue
                for container_id, found in self.by_pod.get((namespace, name), {}).items():
                    if container_selector is None or container_selector.matches(
                        {"name": found.container}
                    ):
                        out.add(container_id)
            return out

    def _set(self, pod: dict[str, Any], deleted: bool = False) -> None:
        meta = pod.get("metadata") or {}
        key = (meta.get("namespace", ""), meta.get("name", ""))
        with self.lock:
            if deleted:
                self._depart(key)
            else:
                self.by_pod[key] = containers(pod)
                self.pod_labels[key] = dict(meta.get("labels") or {})

    def run(self, stop: threading.Event) -> None:
        api = self.core.api_client

        def listed(items: list[Any]) -> None:
            pods = [api.sanitize_for_serialization(item) for item in items]
            now = {((p.get("metadata") or {}).get("namespace", ""),
                    (p.get("metadata") or {}).get("name", "")) for p in pods}  # fmt: skip
            with self.lock:
                for key in [k for k in self.by_pod if k not in now]:
                    self._depart(key)  # deleted while the watch was down
            for pod in pods:
                self._set(pod)

        def changed(kind: str, item: Any) -> None:
            self._set(api.sanitize_for_serialization(item), kind == "DELETED")

        watching.follow(
            self.core.list_pod_for_all_namespaces,
            field_selector=f"spec.nodeName={self.node}",
            on_list=listed,
            on_event=changed,
            stop=stop,
            what="pods on this node",
            errors=self.errors,
        )
