"""API requests the agent could not make, counted by operation and HTTP status, for
``weir_agent_api_errors_total`` (an agent that cannot publish its NodeReport or follow
its ConfigMaps says so in its metrics, not only in its log)."""

from __future__ import annotations

import collections
import threading


class ApiErrors:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.counts: collections.Counter[tuple[str, str]] = collections.Counter()

    def record(self, operation: str, error: BaseException) -> None:
        code = getattr(error, "status", None)
        with self.lock:
            self.counts[(operation, str(code) if code else "none")] += 1

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self.lock:
            return dict(self.counts)
