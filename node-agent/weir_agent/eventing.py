"""Draining posted events and writing them as JSON lines (``--events-file``).

The kernel wakes readers only every few dozen events (batched wakeups), so a
pump drains every posting program's ring buffer on a short timer. Each event is
copied out with its stacks while the engine lock is held (map reads only), then
symbolised and written outside it. Written bytes count as the policy's
exported bytes. With no sink, events are drained and nothing more: no
symbolisation, no JSON.
"""

from __future__ import annotations

import threading
import time
from typing import TextIO

from weir_agent import engine, events, metadata, symbols


class EventWriter:
    def __init__(
        self,
        *,
        core: engine.Engine,
        resolver: metadata.Resolver,
        node: str,
        out: TextIO | None,
    ) -> None:
        self.core = core
        self.resolver = resolver
        self.node = node
        self.out = out
        self.symbolizer = symbols.Symbolizer()
        self.written = 0
        self._exes: dict[int, str] = {}
        self._learned: set[str] = set()

    def pump(self) -> int:
        """Drain every ring buffer once; returns how many events were handled."""
        batch = self.core.drain_events()
        if not batch:
            return 0
        if self.out is None:  # no sink: the ring buffers are emptied, nothing is decoded
            self.written += len(batch)
            return len(batch)
        offset = time.time_ns() - time.monotonic_ns()
        lines: list[tuple[str, str]] = []
        labels: dict[int, metadata.Labels] = {}  # per batch: one lookup per cgroup
        for item in batch:
            raw = item.raw
            exe = self._exe(raw.exe_hash)
            if item.user_frames:
                if exe and exe not in self._learned:
                    self._learned.add(exe)
                    self.symbolizer.learn(exe)
                self.symbolizer.learn_process(raw.pid)
            if raw.cgroup not in labels:
                labels[raw.cgroup] = self.resolver.labels(raw.cgroup)
            frames = [
                self.symbolizer.frame(build_id, where)
                if status == 1
                else symbols.Frame(function=f"{where:#x}", module="", offset=where)
                for status, build_id, where in item.user_frames
            ]
            event = events.encode(
                item.program,
                raw,
                node=self.node,
                labels=labels[raw.cgroup],
                exe=exe,
                user_frames=frames,
                kernel_frames=item.kernel_frames,
                monotonic_to_unix_ns=offset,
            )
            lines.append((item.program.policy, events.line(event)))
        if self.out is not None:
            written: dict[str, int] = {}
            for policy, text in lines:
                self.out.write(text)
                written[policy] = written.get(policy, 0) + len(text.encode())
            self.out.flush()
            for policy, size in written.items():
                self.core.add_exported(policy, events=size)
        self.written += len(lines)
        return len(lines)

    def _exe(self, exe_hash: int) -> str:
        if not exe_hash:
            return ""
        if exe_hash not in self._exes:
            self._exes.update(self.core.binary_paths())
        return self._exes.get(exe_hash, "")

    def run(self, stop: threading.Event, *, interval: float = 0.02) -> None:
        while not stop.is_set():
            self.pump()
            stop.wait(interval)
        self.pump()
