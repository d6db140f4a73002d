"""Watches of namespaced kinds in the operator's own namespace (the agent's pods, the policy
ConfigMaps), with the kubernetes client.

kopf runs cluster-wide, so a kopf handler on pods or ConfigMaps would list them across the
cluster, which the operator's namespaced Role does not (and should not) allow. These loops
list and watch in the namespace only, with a label selector, resume each watch from the
last version seen (bookmarks keep it recent), and relist only after a 410 or an error (the
agent has the same loop; the two packages never import each other). The roll-up follows
NodeReports the same way (cluster-wide).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from kubernetes import watch as k8s_watch

from weir_operator import metrics

log = logging.getLogger("weir.operator")


PAGE = 500  # objects per LIST page: thousands of NodeReports are never all in memory at once


def follow(
    list_call: Any,
    *args: Any,
    on_list: Callable[[Iterable[Any]], None],
    on_event: Callable[[str, Any], None],
    stop: threading.Event,
    what: str,
    **selectors: Any,
) -> None:
    """Until ``stop``: list (in pages of ``PAGE``; ``on_list`` gets the objects as they
    come, to go through once), then watch from the list's version, resuming after each
    server timeout; on errors keep what is known and retry with backoff (up to 30 s).
    Typed objects (CoreV1Api) and plain dicts (CustomObjectsApi) both work."""
    backoff = 1.0
    while not stop.is_set():
        try:
            versions: list[str | None] = []
            on_list(_pages(list_call, args, selectors, versions))
            backoff = 1.0
            version = versions[0] if versions else None
            while version and not stop.is_set():
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
                        break
                    if event["type"] == "ERROR":  # e.g. 410 Gone: relist
                        version = None
                        break
                    if event["type"] != "BOOKMARK":
                        on_event(event["type"], event["object"])
                    # A bookmark only moves the version on: a quiet watch resumes from a
                    # recent version, not one the server has compacted away (410, relist).
                    version = _version(event["object"]) or version
        except Exception as error:
            metrics.api_error(f"follow {what}", error)
            log.warning("%s: %s; retrying in %.0fs", what, error, backoff)
            stop.wait(backoff)
            backoff = min(backoff * 2, 30.0)


def _items(listed: Any) -> list[Any]:
    return list(listed["items"] if isinstance(listed, dict) else listed.items)


def _version(obj: Any) -> str | None:
    if isinstance(obj, dict):
        version: str | None = (obj.get("metadata") or {}).get("resourceVersion")
        return version
    return obj.metadata.resource_version  # type: ignore[no-any-return]


def _pages(
    list_call: Any, args: tuple[Any, ...], selectors: dict[str, Any], versions: list[str | None]
) -> Iterator[Any]:
    """Every object of a paged LIST; ``versions`` gets the first page's resourceVersion
    (what the pages are a view of, and where the watch starts)."""
    token = None
    while True:
        extra: dict[str, Any] = {"_continue": token} if token else {}
        page: Any = list_call(*args, limit=PAGE, **extra, **selectors)
        if not versions:
            versions.append(_version(page))
        yield from _items(page)
        meta = page.get("metadata") or {} if isinstance(page, dict) else None
        token = meta.get("continue") if meta is not None else page.metadata._continue
        if not token:
            return
