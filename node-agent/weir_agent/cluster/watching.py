"""List, then watch: how the agent follows any set of Kubernetes objects.

A list gives the starting point and a resourceVersion; a watch follows from there; a
410 Gone relists. When the API server is unreachable what is known stays in force and
the watch retries with backoff. The operator follows its own objects through kopf (and
its ConfigMaps and pods with a loop of its own, weir_operator/watching.py): the two sides
never import each other, so each keeps its loop.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kubernetes import watch as k8s_watch

from weir_agent.cluster.apierrors import ApiErrors

log = logging.getLogger("weir.agent")


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
