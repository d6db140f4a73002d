"""Draining posted events and writing them as JSON lines (``--events-file``).

The writer sleeps in epoll on every posting program's ring buffer; the programs
wake it only when it had caught up (the kernel's adaptive wakeup), and after each
drain it waits ``interval`` before draining again, so records gather into
batches: one wakeup and one copy per batch, not per event. Each program's
committed records are copied out whole while the engine lock is held, then
decoded and written outside it (``events.Encoder``). Written bytes count as the
policy's exported bytes. With no sink, records are skipped in the ring buffer,
never copied or decoded.

Sinks: standard output (``-``) or a file, rotated by size when ``max_bytes`` is
set (``events.jsonl`` becomes ``events.jsonl.1``, and so on up to ``backups``).
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from typing import TextIO

from weir_agent.identity import metadata
from weir_agent.kernel import loading
from weir_agent.outputs import events, symbols
from weir_agent.runtime import engine


class RotatingFile:
    """A text file of event lines that is rotated before it would pass ``max_bytes``."""

    def __init__(self, path: Path, *, max_bytes: int = 0, backups: int = 1) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = max(backups, 0)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 (closed in close)
        self.size = self._file.tell()

    def write(self, text: str) -> int:
        """Write whole lines; the file is rotated between lines, never inside one."""
        size = len(text.encode())
        if not self.max_bytes or self.size + size <= self.max_bytes:
            self._file.write(text)
            self.size += size
            return size
        for line in text.splitlines(keepends=True):
            length = len(line.encode())
            if self.size and self.size + length > self.max_bytes:
                self._rotate()
            self._file.write(line)
            self.size += length
        return size

    def _rotate(self) -> None:
        self._file.close()
        if self.backups:
            for n in range(self.backups - 1, 0, -1):
                older = self.path.with_name(f"{self.path.name}.{n}")
                if older.exists():
                    os.replace(older, self.path.with_name(f"{self.path.name}.{n + 1}"))
            os.replace(self.path, self.path.with_name(f"{self.path.name}.1"))
        self._file = open(self.path, "w", encoding="utf-8")  # noqa: SIM115
        self.size = 0

    def flush(self) -> None:
        self._file.flush()

    def close(self) -> None:
        self._file.close()


class EventWriter:
    def __init__(
        self,
        *,
        core: engine.Engine,
        resolver: metadata.Resolver,
        node: str,
        out: TextIO | RotatingFile | None,
    ) -> None:
        self.core = core
        self.resolver = resolver
        self.node = node
        self.out = out
        self.symbolizer = symbols.Symbolizer()
        self.encoder = events.Encoder(
            node=node, frame=self._frame, ksym=loading.ksym, learn=self._learn
        )
        self.written = 0
        self._exes: dict[int, str] = {}

    def pump(self) -> int:
        """Drain every ring buffer once; returns how many events were handled."""
        batches = self.core.drain_events(copy=self.out is not None)
        if not batches:
            return 0
        count = sum(batch.count for batch in batches)
        self.written += count
        if self.out is None:  # no sink: the records were skipped, nothing is decoded
            return count
        offset = time.time_ns() - time.monotonic_ns()
        labels: dict[int, metadata.Labels] = {}  # per pump: one lookup per cgroup

        def labels_of(cgroup: int) -> metadata.Labels:
            if cgroup not in labels:
                labels[cgroup] = self.resolver.labels(cgroup)
            return labels[cgroup]

        refreshed = [False]

        def exe_of(exe_hash: int) -> str:
            if exe_hash not in self._exes and not refreshed[0]:
                refreshed[0] = True  # once per pump: a hash may never resolve
                self._exes.update(self.core.binary_paths())
            return self._exes.get(exe_hash, "")

        written: dict[str, int] = {}
        for batch in batches:
            lines = self.encoder.lines(
                batch.program,
                batch.data,
                labels=labels_of,
                exes=exe_of,
                monotonic_to_unix_ns=offset,
            )
            text = "".join(lines)
            self.out.write(text)
            policy = batch.program.policy
            written[policy] = written.get(policy, 0) + len(text.encode())
        self.out.flush()
        for policy, size in written.items():
            self.core.add_exported(policy, events=size)
        return count

    def _frame(self, build_id: str, offset: int) -> symbols.Frame | None:
        return self.symbolizer.frame(build_id, offset) if self.symbolizer.knows(build_id) else None

    def _learn(self, pid: int, exe: str) -> None:
        if exe:
            self.symbolizer.learn(exe)
        self.symbolizer.learn_process(pid)

    def run(self, stop: threading.Event, *, interval: float = 0.002, idle: float = 0.2) -> None:
        """Drain as records arrive until ``stop``: wait (at most ``idle`` s) for a ring
        buffer to have records, drain them all, then let the next batch gather for
        ``interval`` s."""
        while not stop.is_set():
            ready = self.core.wait_events(idle)
            # Pump after a quiet wait too (a wakeup can race a drain). A ring that is ready
            # with nothing to take holds a record still being written: epoll says ready until
            # it is committed, so wait ``interval`` rather than spin on it.
            if self.pump() or ready:
                stop.wait(interval)
        self.pump()
