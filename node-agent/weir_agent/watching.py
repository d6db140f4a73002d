"""Kubernetes mode: the policy ConfigMaps of the agent's namespace, watched.

Only ConfigMaps labelled ``weir.dev/policy`` in one namespace are read (the
agent needs no cluster-wide access to the CRDs). A list gives the starting
point and a resourceVersion; a watch follows from there; a 410 Gone relists.
When the API server is unreachable the last known set stays in force (the
programs keep running) and the watch retries with backoff.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import client as k8s
from kubernetes import watch as k8s_watch

from weir_agent.apierrors import ApiErrors
from weir_api import documents

LABEL = "weir.dev/policy"
log = logging.getLogger("weir.agent")


class ConfigMapSource:
    def __init__(
        self, *, core: k8s.CoreV1Api, namespace: str, errors: ApiErrors | None = None
    ) -> None:
        self.core = core
        self.errors = errors
        self.namespace = namespace
        self.lock = threading.Lock()
        self.texts: dict[str, str] = {}
        self.version = 0  # bumps whenever the set of texts changes
        self.synced = threading.Event()

    def _set(self, name: str, text: str | None) -> None:
        with self.lock:
            if text is None:
                if self.texts.pop(name, None) is not None:
                    self.version += 1
            elif self.texts.get(name) != text:
                self.texts[name] = text
                self.version += 1

    def snapshot(self) -> tuple[int, list[documents.Parsed]]:
        with self.lock:
            version, texts = self.version, dict(self.texts)
        parsed = []
        for name, text in sorted(texts.items()):
            parsed.extend(documents.parse_text(text, source=f"configmap/{self.namespace}/{name}"))
        return version, parsed

    @staticmethod
    def _text(item: Any) -> str:
        return str((item.data or {}).get("policy.yaml", ""))

    def run(self, stop: threading.Event) -> None:
        def listed(items: list[Any]) -> None:
            names = {item.metadata.name for item in items}
            for item in items:
                self._set(item.metadata.name, self._text(item))
            for gone in set(self.texts) - names:
                self._set(gone, None)
            self.synced.set()

        def changed(kind: str, item: Any) -> None:
            self._set(item.metadata.name, None if kind == "DELETED" else self._text(item))

        follow(
            self.core.list_namespaced_config_map,
            self.namespace,
            label_selector=LABEL,
            on_list=listed,
            on_event=changed,
            stop=stop,
            what="policy ConfigMaps",
            errors=self.errors,
        )


def follow(
    list_call: Any,
    *args: Any,
    on_list: Any,
    on_event: Any,
    stop: threading.Event,
    what: str,
    errors: ApiErrors | None = None,
    **selectors: Any,
) -> None:
    """List, then watch from the list's resourceVersion, and when a watch ends (the server's
    timeout) watch again from the last version seen: relist only after a 410 or an error.
    On errors (the API server may be away) keep what is known and retry with backoff.
    Returns when ``stop`` is set."""
    backoff = 1.0
    while not stop.is_set():
        try:
            listed: Any = list_call(*args, **selectors)
            on_list(listed.items)
            backoff = 1.0
            version = listed.metadata.resource_version
            while version and not stop.is_set():
                version = _watch(list_call, args, selectors, version, on_event, stop)
        except Exception as error:
            if errors is not None:
                errors.record(f"follow {what}", error)
            log.warning("%s: %s; retrying in %.0fs", what, error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)


def _watch(
    list_call: Any,
    args: tuple[Any, ...],
    selectors: dict[str, Any],
    version: str,
    on_event: Any,
    stop: threading.Event,
) -> str | None:
    """One watch from ``version``; the last version seen when it ends, None to relist."""
    watcher: Any = k8s_watch.Watch()  # type: ignore[no-untyped-call]
    for event in watcher.stream(
        list_call,
        *args,
        resource_version=version,
        timeout_seconds=30,
        allow_watch_bookmarks=True,
        **selectors,
    ):
        if stop.is_set():
            watcher.stop()
            return version
        if event["type"] == "ERROR":
            return None  # e.g. 410 Gone: relist
        if event["type"] == "BOOKMARK":
            # Only a newer version: a quiet watch resumes from a recent version, not one
            # the server has compacted away (410 and a relist).
            found = (event["object"].get("metadata") or {}).get("resourceVersion")
            version = found or version
            continue
        on_event(event["type"], event["object"])
        version = event["object"].metadata.resource_version or version
    return version
