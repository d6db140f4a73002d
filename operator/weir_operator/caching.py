"""What the roll-up reads, kept current by watches instead of a LIST per pass.

kopf's watch-event handlers put every TracingPolicy and AggregationRule they see here, and
take out what is deleted (NodeReports go to the roll-up's own index, summaries.ReportIndex).
The roll-up seeds each kind with one LIST the first time it needs it (a watch's events may
arrive before that LIST finishes: what an event says is never overwritten by the LIST, and
a deletion is never undone by it), then reads only from here: at steady state the operator
sends no periodic GET or LIST.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterable, Mapping
from typing import Any


class Cache:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.objects: dict[str, dict[str, dict[str, Any]]] = {}
        self.gone: dict[str, set[str]] = {}
        self.seeded: set[str] = set()

    def put(self, kind: str, body: Mapping[str, Any]) -> None:
        plain = copy.deepcopy({k: v for k, v in body.items()})
        name = plain["metadata"]["name"]
        with self.lock:
            self.objects.setdefault(kind, {})[name] = plain
            self.gone.setdefault(kind, set()).discard(name)

    def remove(self, kind: str, name: str) -> None:
        with self.lock:
            self.objects.setdefault(kind, {}).pop(name, None)
            self.gone.setdefault(kind, set()).add(name)

    def reset(self) -> None:
        """Forget everything (each kind is listed again when next needed)."""
        with self.lock:
            self.objects.clear()
            self.gone.clear()
            self.seeded.clear()

    def is_seeded(self, kind: str) -> bool:
        with self.lock:
            return kind in self.seeded

    def seed(self, kind: str, items: Iterable[Mapping[str, Any]]) -> None:
        """A LIST's result: adds what no event has said yet."""
        with self.lock:
            known = self.objects.setdefault(kind, {})
            gone = self.gone.setdefault(kind, set())
            for item in items:
                name = item["metadata"]["name"]
                if name not in known and name not in gone:
                    known[name] = copy.deepcopy(dict(item))
            self.seeded.add(kind)

    def items(self, kind: str) -> list[dict[str, Any]]:
        """The objects of a kind, by name: to read, never to change (no copy is made, so a
        pass over thousands of NodeReports costs no deep copies)."""
        with self.lock:
            return [body for _, body in sorted(self.objects.get(kind, {}).items())]

    def set_status(self, kind: str, name: str, status: dict[str, Any]) -> None:
        """What the operator just wrote, until the watch brings the object back (a new
        dict: readers holding the old one are not changed under them)."""
        with self.lock:
            known = self.objects.get(kind, {})
            if name in known:
                known[name] = {**known[name], "status": copy.deepcopy(status)}
