"""A loaded program as the agent holds it, and the error a load, configuration or attach
raises. No bcc here: the engine, the configuring and attaching code and the tests share
these types."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

from weir_agent.kernel import bpf, ringbuf
from weir_agent.spec import programs
from weir_agent.spec.programs import Program


class LoadError(Exception):
    """A program failed in one phase; ``log`` holds the compiler's or verifier's words."""

    def __init__(self, phase: str, message: str, log: str = "") -> None:
        super().__init__(f"{phase} failed: {message}" + (f"\n{log}" if log else ""))
        self.phase = phase
        self.message = message
        self.log = log


@dataclasses.dataclass
class Loaded:
    """One loaded (verified) version of a hook's program."""

    program: Program
    module: Any  # bcc.BPF
    fd: int
    prog_id: int
    instructions: int
    translated_bytes: int
    jited_bytes: int
    compile_ms: float
    load_ms: float
    verifier_summary: str
    active: int = -1  # the configuration copy the program reads (0 or 1; -1: none yet)
    flipped: float = 0.0  # monotonic time of the last flip
    sids: dict[str, int] = dataclasses.field(default_factory=dict)  # rule -> series id
    pin: Path | None = None  # where its maps are pinned
    adopted: bool = False  # its maps, counts and configuration were an earlier agent's
    ring: ringbuf.RingReader | None = None  # a posting program's events, mapped

    def series_id(self, agg: programs.AggSlot) -> int:
        return self.sids.get(agg.rule, agg.slot)

    def close(self, *, detach: bool = True) -> None:
        """Close this agent's handles; with ``detach``, remove the pinned maps too."""
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.module.cleanup()
        if detach and self.pin is not None:
            bpf.remove_pins(self.pin)


@dataclasses.dataclass(frozen=True)
class CorrelationMap:
    """A shared correlation map (marks, duration clocks) as the agent exports it."""

    capacity: int
    entries: int
    evicted: int  # taken by LRU eviction: added, never deleted, no longer present
