"""The engine's way into the kernel: one small Protocol, and the real implementation.

Everything the engine asks of the kernel goes through ``Kernel``: load a program through
the verifier (adopting maps pinned by an earlier agent), configure and retire
configuration copies, attach a hook's stub (or adopt a pinned one), scope a program to
cgroups, read its counters and series, remove pins, and start the exec tracker.
``LiveKernel`` does it with bcc and bpf() (weir_agent.kernel); tests give the engine a
fake (tests/fakekernel.py) to check reconcile, swaps, adoption and failures without root.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Protocol

from weir_agent.kernel import attaching, bpf, configuring, loading, objects, reading, ringbuf
from weir_agent.kernel.handles import CorrelationMap, Loaded, LoadError
from weir_agent.spec import abi, programs
from weir_agent.spec.programs import AggSlot, Program


class Attachment(Protocol):
    """A hook's permanent stub: runs whatever program its slot holds."""

    adopted: bool  # an earlier agent attached it (pinned) and this one took it over

    def swap(self, loaded: Loaded) -> None: ...

    def program_ids(self) -> list[int]: ...

    def close(self, *, detach: bool = True) -> None: ...


class Tracker(Protocol):
    """The exec tracker: executables by inode, and the shared correlation maps."""

    def paths(self) -> dict[int, str]: ...

    def correlation(self) -> dict[str, CorrelationMap]: ...

    def cgroup_path(self, cgroup_id: int) -> str | None: ...

    def forget_cgroups(self, cgroup_ids: Iterable[int]) -> None: ...

    def unpin(self) -> None:
        """Remove its pins: it stops when the process ends (nothing else holds it)."""
        ...


class Kernel(Protocol):
    """What the engine needs of the kernel. Failures raise handles.LoadError."""

    grace_seconds: float  # runs of a replaced program or configuration copy end within this

    @property
    def cpus(self) -> int:
        """Possible CPUs: a per-CPU map holds a value for each."""
        ...

    def load(self, program: Program, *, pin: Path | None) -> Loaded:
        """Compile (once per shape) and verify a copy with maps of its own, configured
        for ``program``; with ``pin``, adopt the maps an earlier agent pinned there."""
        ...

    def prepare(self) -> None:
        """Compile ahead what every new hook needs (its stub); failures wait for attach."""
        ...

    def open_ring(self, loaded: Loaded) -> ringbuf.RingReader: ...

    def configure(self, loaded: Loaded, program: Program) -> configuring.Retirement: ...

    def retire(self, loaded: Loaded, retirement: configuring.Retirement) -> None: ...

    def set_scope(self, loaded: Loaded, cgroup_ids: set[int]) -> None: ...

    def attach(self, program: Program, first: Loaded, *, pin: Path | None) -> Attachment: ...

    def read_stats(self, loaded: Loaded) -> dict[abi.Stat, int]: ...

    def read_aggregation(self, loaded: Loaded, agg: AggSlot) -> list[reading.AggEntry]: ...

    def take_series(
        self, loaded: Loaded, agg: AggSlot, cgroups: frozenset[int]
    ) -> list[reading.AggEntry]:
        """Read and delete the rule's entries of these cgroups."""
        ...

    def run_stats(self, loaded: Loaded) -> tuple[int, int]:
        """bpf_stats: (run time in ns, runs) of the program, 0 when stats are off."""
        ...

    def remove_pins(self, path: Path) -> None: ...

    def exec_tracker(self, *, pin: Path | None) -> Tracker:
        """The process's exec tracker; with ``pin``, its maps and links live there (the
        first call decides)."""
        ...


class LiveKernel:
    """The kernel itself, through bcc and bpf()."""

    grace_seconds = configuring.GRACE_SECONDS

    @property
    def cpus(self) -> int:
        return objects.possible_cpus()

    def load(self, program: Program, *, pin: Path | None) -> Loaded:
        return loading.compile_and_load(program, pin=pin)

    def prepare(self) -> None:
        with contextlib.suppress(LoadError):  # attach says it, for the hook that needs it
            loading.compile_source(programs.STUB_SOURCE, [])

    def open_ring(self, loaded: Loaded) -> ringbuf.RingReader:
        return loading.open_ring(loaded)

    def configure(self, loaded: Loaded, program: Program) -> configuring.Retirement:
        return configuring.configure(loaded, program)

    def retire(self, loaded: Loaded, retirement: configuring.Retirement) -> None:
        configuring.retire(loaded, retirement)

    def set_scope(self, loaded: Loaded, cgroup_ids: set[int]) -> None:
        configuring.set_scope(loaded, cgroup_ids)

    def attach(self, program: Program, first: Loaded, *, pin: Path | None) -> Attachment:
        return attaching.attach_stub(program, first, pin=pin)

    def read_stats(self, loaded: Loaded) -> dict[abi.Stat, int]:
        return reading.read_stats(loaded)

    def read_aggregation(self, loaded: Loaded, agg: AggSlot) -> list[reading.AggEntry]:
        return reading.read_aggregation(loaded, agg)

    def take_series(
        self, loaded: Loaded, agg: AggSlot, cgroups: frozenset[int]
    ) -> list[reading.AggEntry]:
        return reading.read_aggregation(loaded, agg, take=cgroups)

    def run_stats(self, loaded: Loaded) -> tuple[int, int]:
        info = bpf.prog_info(loaded.fd)
        return int(info.run_time_ns), int(info.run_cnt)

    def remove_pins(self, path: Path) -> None:
        bpf.remove_pins(path)

    def exec_tracker(self, *, pin: Path | None) -> Tracker:
        return loading.exec_tracker(pin=pin)
