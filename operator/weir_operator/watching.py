"""Watches of namespaced kinds in the operator's own namespace (the agent's pods, the policy
ConfigMaps), with the kubernetes client.

kopf runs cluster-wide, so a kopf handler on pods or ConfigMaps would list them across the
cluster, which the operator's namespaced Role does not (and should not) allow. These loops
list and watch in the namespace only, with a label selector, resume each watch from the last
version seen, and relist only after a 410 or an error (the agent has the same loop; the two
packages never import each other).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from kubernetes import watch as k8s_watch

from weir_operator import metrics

log = logging.getLogger("weir.operator")


def follow(
    list_call: Any,
    namespace: str,
    *,
    label_selector: str,
    on_list: Callable[[list[Any]], None],
    on_event: Callable[[str, Any], None],
    stop: threading.Event,
    what: str,
) -> None:
    """Until ``stop``: list, then watch from the list's version, resuming after each
    server timeout; on errors keep what is known and retry with backoff (up to 30 s)."""
    backoff = 1.0
    while not stop.is_set():
        try:
            listed: Any = list_call(namespace, label_selector=label_selector)
            on_list(listed.items)
            backoff = 1.0
            version = listed.metadata.resource_version
            while version and not stop.is_set():
                watcher: Any = k8s_watch.Watch()  # type: ignore[no-untyped-call]
                for event in watcher.stream(
                    list_call,
                    namespace,
                    label_selector=label_selector,
                    resource_version=version,
                    timeout_seconds=30,
                ):
                    if stop.is_set():
                        watcher.stop()
                        break
                    if event["type"] == "ERROR":  # e.g. 410 Gone: relist
                        version = None
                        break
                    on_event(event["type"], event["object"])
                    version = event["object"].metadata.resource_version or version
        except Exception as error:
            metrics.api_error(f"follow {what}", error)
            log.warning("%s: %s; retrying in %.0fs", what, error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)
