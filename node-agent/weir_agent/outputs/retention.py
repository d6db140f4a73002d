"""How long a gone container's series stay: the retention, and which are due. Pure.

A container's counts live in the kernel's aggregation maps under its cgroup id. When its
cgroup is gone, the agent keeps the entries (and the container's labels) for the
retention, so that Prometheus scrapes the final counts under the container's own labels;
then it deletes them, and the series stop, as cAdvisor's do for a dead container.

The retention is given in scrapes (``2scrapes``: the series are in two scrapes after the
container is seen gone, then retired) or in time (``90s``, ``5m``, ``1h``: retired that
long after it is seen gone, scraped or not).
"""

from __future__ import annotations

import dataclasses
import re

_FORM = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(scrapes?|s|m|h)\s*$")
_SECONDS = {"s": 1, "m": 60, "h": 3600}


@dataclasses.dataclass(frozen=True)
class Retention:
    scrapes: int = 0  # retire after this many scrapes have seen the cgroup gone
    seconds: float = 0.0  # or this long after it was first seen gone

    @classmethod
    def parse(cls, text: str) -> Retention:
        """``2scrapes`` or a duration (``90s``, ``5m``, ``1h``); ValueError says the forms."""
        match = _FORM.match(text)
        if match is None:
            raise ValueError(
                f"{text!r}: give a number of scrapes (2scrapes) or a duration (90s, 5m, 1h)"
            )
        number, unit = float(match.group(1)), match.group(2)
        if unit.startswith("scrape"):
            if not number.is_integer() or number < 1:
                raise ValueError(f"{text!r}: scrapes are a whole number, 1 or more (2scrapes)")
            return cls(scrapes=int(number))
        return cls(seconds=number * _SECONDS[unit])

    def __str__(self) -> str:
        return f"{self.scrapes}scrapes" if self.scrapes else f"{self.seconds:g}s"


DEFAULT = Retention(seconds=300)


class Departures:
    """The gone cgroups the exporter has seen, and when each is due to retire."""

    def __init__(self, retention: Retention) -> None:
        self.retention = retention
        self._seen: dict[int, tuple[float, int]] = {}  # cgroup id -> (first seen gone, scrapes)

    def due(self, gone: set[int], *, now: float, scraped: bool) -> frozenset[int]:
        """``gone``: the cgroups with series whose cgroup no longer exists, as found now;
        ``scraped``: this look is a scrape that exported their series."""
        for cgroup_id in [c for c in self._seen if c not in gone]:
            del self._seen[cgroup_id]  # retired, or its series went with a policy
        ready = set()
        for cgroup_id in gone:
            since, scrapes = self._seen.get(cgroup_id, (now, 0))
            scrapes += int(scraped)
            self._seen[cgroup_id] = (since, scrapes)
            if self._passed(since, scrapes, now):
                ready.add(cgroup_id)
        for cgroup_id in ready:
            del self._seen[cgroup_id]
        return frozenset(ready)

    def _passed(self, since: float, scrapes: int, now: float) -> bool:
        if self.retention.scrapes:
            return scrapes >= self.retention.scrapes
        return now - since >= self.retention.seconds

    def waiting(self) -> int:
        return len(self._seen)
