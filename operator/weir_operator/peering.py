"""Which of several operator replicas is the active one: kopf's peering, read back.

With ``--peering NAME`` every replica keeps itself alive in the ClusterKopfPeering NAME
(kopf patches its entry every lifetime; a replica that stops cleanly removes it), and kopf
pauses the handlers of every replica but the one of highest priority. A replica's priority
is fixed at its start so that the oldest live replica wins: a replica started later waits
as a standby, and takes over when the active one is gone (at once when it stopped cleanly,
within the peering lifetime when it died).

kopf pauses only its own handlers. The roll-up thread, which writes every status, asks
``Peering.active`` before each pass: the same rule kopf applies, worked out from the same
object, which this module watches (one LIST, then a watch).
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import socket
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from weir_operator import watching

log = logging.getLogger("weir.operator")

GROUP, VERSION, PLURAL = "kopf.dev", "v1", "clusterkopfpeerings"
_LATEST = 4_000_000_000_000  # milliseconds since the epoch, past any start time


def identity() -> str:
    """This replica's name among its peers: its pod's name (a pod's hostname) and pid."""
    return f"{socket.gethostname()}/{os.getpid()}"


def start_priority(now: float | None = None) -> int:
    """Higher for a replica started earlier (milliseconds), with a random last digits so
    that two replicas started in the same millisecond still differ (equal priorities
    would pause both)."""
    started = int((time.time() if now is None else now) * 1000)
    return (_LATEST - started) * 1000 + random.randrange(1000)


def _seconds(text: str) -> float:
    stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=datetime.UTC)
    return stamp.timestamp()


def active(status: Mapping[str, Any], *, me: str, priority: int, now: float) -> bool:
    """kopf's rule: run unless a live peer (last seen within its lifetime) has a priority
    as high as ours or higher."""
    for peer, info in (status or {}).items():
        if peer == me or not isinstance(info, Mapping):
            continue
        try:
            deadline = _seconds(str(info["lastseen"])) + float(info.get("lifetime", 60))
            theirs = int(info.get("priority", 0))
        except (KeyError, TypeError, ValueError):
            continue
        if deadline > now and theirs >= priority:
            return False
    return True


class Peering:
    """The ClusterKopfPeering ``name``, followed by a watch; ``active()`` at any time."""

    def __init__(self, custom: Any, *, name: str, me: str, priority: int) -> None:
        self.custom, self.name, self.me, self.priority = custom, name, me, priority
        self.lock = threading.Lock()
        self.status: dict[str, Any] | None = None  # None: not listed yet
        self.was_active: bool | None = None  # what was last logged

    def ensure(self) -> None:
        """Create the peering object when it is not there yet (kopf waits, paused, until
        it exists); another replica creating it at the same time is fine."""
        from kubernetes import client as k8s

        body = {"apiVersion": f"{GROUP}/{VERSION}", "kind": "ClusterKopfPeering"}
        body["metadata"] = {"name": self.name}  # type: ignore[assignment]
        try:
            self.custom.create_cluster_custom_object(GROUP, VERSION, PLURAL, body)
            log.info("created ClusterKopfPeering %s", self.name)
        except k8s.ApiException as error:
            if error.status != 409:
                raise

    def active(self) -> bool:
        """Not before the peering object was read once (a replica never writes before it
        knows whether another one is active)."""
        with self.lock:
            status = self.status
        if status is None:
            return False
        now = active(status, me=self.me, priority=self.priority, now=time.time())
        if now != self.was_active:
            self.was_active = now
            log.info(
                "peering %s: this replica (%s) is %s",
                self.name,
                self.me,
                "active" if now else "a standby",
            )
        return now

    def follow(self, stop: threading.Event) -> None:
        def listed(items: Iterable[Any]) -> None:
            found = list(items)
            with self.lock:
                self.status = dict(found[0].get("status") or {}) if found else {}

        def changed(kind: str, item: Any) -> None:
            with self.lock:
                self.status = {} if kind == "DELETED" else dict(item.get("status") or {})

        watching.follow(
            self.custom.list_cluster_custom_object,
            GROUP,
            VERSION,
            PLURAL,
            field_selector=f"metadata.name={self.name}",
            on_list=listed,
            on_event=changed,
            stop=stop,
            what=f"ClusterKopfPeering {self.name}",
        )
