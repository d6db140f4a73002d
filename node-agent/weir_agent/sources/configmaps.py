"""Kubernetes mode: policies from the operator's ConfigMaps in the agent's namespace.

Only ConfigMaps labelled ``weir.dev/policy`` (weir_api.handoff) in one namespace are read:
the agent needs no cluster-wide access to the CRDs. They are listed once and watched from
there (cluster/watching.py); while the API server is away the last known set stays in
force and the programs keep running. A policy whose nodeSelector excludes this node is
dropped here, with its rules, and reported as not targeted.
"""

from __future__ import annotations

import threading
from typing import Any

from kubernetes import client as k8s

from weir_agent.cluster.apierrors import ApiErrors
from weir_agent.cluster.connecting import Cluster
from weir_agent.cluster.watching import follow
from weir_api import documents, handoff
from weir_api.aggregations import AggregationRule
from weir_api.policies import TracingPolicy


class ConfigMapSource:
    def __init__(
        self,
        *,
        core: k8s.CoreV1Api,
        namespace: str,
        errors: ApiErrors | None = None,
        wake: threading.Event | None = None,
    ) -> None:
        self.core = core
        self.errors = errors
        self.wake = wake if wake is not None else threading.Event()  # set on every change
        self.namespace = namespace
        self.lock = threading.Lock()
        self.texts: dict[str, str] = {}
        self.version = 0  # bumps whenever the set of texts changes
        self.synced = threading.Event()

    def _set(self, name: str, text: str | None) -> None:
        with self.lock:
            before = self.version
            if text is None:
                if self.texts.pop(name, None) is not None:
                    self.version += 1
            elif self.texts.get(name) != text:
                self.texts[name] = text
                self.version += 1
            if self.version != before:
                self.wake.set()

    def snapshot(self) -> tuple[int, list[documents.Parsed]]:
        with self.lock:
            version, texts = self.version, dict(self.texts)
        parsed = []
        for name, text in sorted(texts.items()):
            parsed.extend(documents.parse_text(text, source=f"configmap/{self.namespace}/{name}"))
        return version, parsed

    @staticmethod
    def _text(item: Any) -> str:
        return str((item.data or {}).get(handoff.POLICY_KEY, ""))

    def run(self, stop: threading.Event) -> None:
        def listed(items: list[Any]) -> None:
            names = {item.metadata.name for item in items}
            for item in items:
                self._set(item.metadata.name, self._text(item))
            for gone in set(self.texts) - names:
                self._set(gone, None)
            self.synced.set()
            self.wake.set()

        def changed(kind: str, item: Any) -> None:
            self._set(item.metadata.name, None if kind == "DELETED" else self._text(item))

        follow(
            self.core.list_namespaced_config_map,
            self.namespace,
            label_selector=handoff.POLICY_LABEL,
            on_list=listed,
            on_event=changed,
            stop=stop,
            what="policy ConfigMaps",
            errors=self.errors,
        )


class NodePolicies:
    """Kubernetes mode's policies: the ConfigMaps, as this node's labels select them."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.configmaps = ConfigMapSource(
            core=cluster.core, namespace=cluster.namespace, errors=cluster.errors, wake=cluster.wake
        )
        self.labels: dict[str, str] = {}
        threading.Thread(
            target=self.configmaps.run, args=(cluster.stop,), name="weir-configmaps", daemon=True
        ).start()

    def synced(self) -> bool:
        """The policy ConfigMaps and this Node's labels have both been listed once."""
        return self.configmaps.synced.is_set() and self.cluster.node_synced.is_set()

    def poll(self) -> tuple[object, list[documents.Parsed]]:
        # "synced" is part of the version: a namespace with no policy ConfigMaps at all
        # changes nothing else when its first list arrives, and readiness waits for it.
        synced = self.synced()
        version, parsed = self.configmaps.snapshot()
        self.labels = self.cluster.node_labels()
        return ("configmaps", version, synced, tuple(sorted(self.labels.items()))), parsed

    def targeted(
        self, parsed: list[documents.Parsed]
    ) -> tuple[list[documents.Parsed], dict[str, int]]:
        """What this node runs of ``parsed``, and the generations of what it does not."""
        return targeted(parsed, self.labels)


def targeted(
    parsed: list[documents.Parsed], labels: dict[str, str]
) -> tuple[list[documents.Parsed], dict[str, int]]:
    """Drop policies whose nodeSelector excludes a node with these labels (and their
    rules); the excluded policies' generations are the second value."""
    excluded: dict[str, int] = {}
    for item in parsed:
        if not isinstance(item.obj, TracingPolicy):
            continue
        selector = item.obj.spec.node_selector
        if selector is not None and not selector.matches(labels):
            excluded[item.name] = item.obj.metadata.generation

    def excluded_item(item: documents.Parsed) -> bool:
        if isinstance(item.obj, AggregationRule):
            return item.obj.spec.policy_ref.name in excluded
        return item.kind == "TracingPolicy" and item.name in excluded

    return [item for item in parsed if not excluded_item(item)], excluded
