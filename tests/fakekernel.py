"""A kernel in memory, for the engine (weir_agent.runtime.kernels.Kernel), in the spirit of
httpx's MockTransport: programs are maps of counters, hooks are stubs with a slot, pins are
entries of a dict (and directories under the pin root, which the engine lists).

It interprets nothing: ``fire(hook, n)`` counts n events on whatever program the hook's
stub runs now, as if each matched and folded into every rule under ``cgroup``. What it
checks is the engine's bookkeeping: what is loaded, configured, swapped, retired, adopted
and closed, and that counts carry across swaps and restarts. ``calls`` logs every step."""

from __future__ import annotations

import dataclasses
import itertools
import shutil
import time
from collections import Counter
from pathlib import Path
from typing import Any

from weir_agent.kernel import configuring
from weir_agent.kernel.handles import CorrelationMap, Loaded, LoadError
from weir_agent.kernel.reading import AggEntry
from weir_agent.spec import abi
from weir_agent.spec.programs import AggSlot, Program

FOLDED = (abi.Stat.OBSERVED, abi.Stat.MATCHED, abi.Stat.AGGREGATED)


@dataclasses.dataclass
class Maps:
    """A program's maps: counters, series by (series id, cgroup), what configured them.
    ``closed``: this agent let go of them (pinned, they live on)."""

    stats: Counter[abi.Stat] = dataclasses.field(default_factory=Counter)
    series: Counter[tuple[int, int]] = dataclasses.field(default_factory=Counter)
    digest: str = ""
    scope: frozenset[int] = frozenset()
    closed: bool = False

    def cleanup(self) -> None:
        self.closed = True


@dataclasses.dataclass
class Stub:
    kernel: FakeKernel
    hook: str
    slot: Loaded
    pin: Path | None
    adopted: bool = False
    prog_id: int = 0

    def swap(self, loaded: Loaded) -> None:
        self.kernel.calls.append(("swap", self.hook))
        self.slot = loaded

    def program_ids(self) -> list[int]:
        return [self.prog_id]

    def close(self, *, detach: bool = True) -> None:
        if detach:
            self.kernel.calls.append(("detach", self.hook))
            self.kernel.hooks.pop(self.hook, None)
            if self.pin is not None:
                self.kernel.remove_pins(self.pin)


class FakeKernel:
    grace_seconds = 0.05
    cpus = 2

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.hooks: dict[str, Stub] = {}  # what is attached, by hook
        self.pinned: dict[Path, Any] = {}  # pin path -> Maps or Stub
        self.refuse: dict[str, str] = {}  # hook -> the verifier's words for its next loads
        self.ids = itertools.count(1)

    def fire(self, hook: str, n: int = 1, *, cgroup: int = 7) -> None:
        loaded = self.hooks[hook].slot
        loaded.module.stats.update(dict.fromkeys(FOLDED, n))
        for agg in loaded.program.aggregations:
            loaded.module.series[(loaded.series_id(agg), cgroup)] += n

    def load(self, program: Program, *, pin: Path | None) -> Loaded:
        if program.hook in self.refuse:
            raise LoadError("verify", self.refuse[program.hook], "; the verifier's log")
        maps = self.pinned.get(pin) if pin is not None and pin.exists() else None
        adopted = isinstance(maps, Maps)
        loaded = Loaded(program, maps if adopted else Maps(), -1, next(self.ids), 10, 80, 64,
                        1.0, 1.0, "verified", pin=pin, adopted=adopted)  # fmt: skip
        self.calls.append(("adopt" if adopted else "load", program.hook))
        if pin is not None:
            pin.mkdir(parents=True, exist_ok=True)
            self.pinned[pin] = loaded.module
        if not adopted or loaded.module.digest != program.digest():
            self.configure(loaded, program)
        return loaded

    def open_ring(self, loaded: Loaded) -> Any:
        raise NotImplementedError("the fake kernel has no ring buffers: use NoPost")

    def configure(self, loaded: Loaded, program: Program) -> configuring.Retirement:
        self.calls.append(("configure", program.hook, time.monotonic()))
        old = loaded.active
        loaded.program, loaded.active = program, 1 - max(old, 0)
        loaded.sids = {a.rule: a.slot for a in program.aggregations}
        loaded.module.digest = program.digest()
        return configuring.Retirement(old, {})

    def retire(self, loaded: Loaded, retirement: configuring.Retirement) -> None:
        self.calls.append(("retire", loaded.program.hook, time.monotonic()))

    def set_scope(self, loaded: Loaded, cgroup_ids: set[int]) -> None:
        loaded.module.scope = frozenset(cgroup_ids)

    def attach(self, program: Program, first: Loaded, *, pin: Path | None) -> Stub:
        old = self.pinned.get(pin / "link") if pin is not None and pin.exists() else None
        if isinstance(old, Stub):
            old.adopted, old.slot = True, first
            self.calls.append(("adopt stub", program.hook))
            return old
        if program.hook in self.hooks:
            raise LoadError("attach", f"{program.hook} is attached already")
        stub = Stub(self, program.hook, first, pin, prog_id=next(self.ids))
        self.hooks[program.hook] = stub
        if pin is not None:
            self.pinned[pin / "link"] = stub
        self.calls.append(("attach", program.hook))
        return stub

    def read_stats(self, loaded: Loaded) -> dict[abi.Stat, int]:
        return {stat: loaded.module.stats[stat] for stat in abi.Stat if stat != abi.Stat.COUNT}

    def read_aggregation(self, loaded: Loaded, agg: AggSlot) -> list[AggEntry]:
        return [
            AggEntry(cgroup, 0, 0, 0, 0, False, count, 0, ())
            for (sid, cgroup), count in loaded.module.series.items()
            if sid == loaded.series_id(agg)
        ]

    def take_series(self, loaded: Loaded, agg: AggSlot, cgroups: frozenset[int]) -> list[AggEntry]:
        taken = [e for e in self.read_aggregation(loaded, agg) if e.cgroup in cgroups]
        for entry in taken:
            del loaded.module.series[(loaded.series_id(agg), entry.cgroup)]
        return taken

    def run_stats(self, loaded: Loaded) -> tuple[int, int]:
        return 0, 0

    def remove_pins(self, path: Path) -> None:
        for pinned in [p for p in self.pinned if p == path or path in p.parents]:
            del self.pinned[pinned]
        shutil.rmtree(path, ignore_errors=True)

    def prepare(self) -> None:
        pass

    def exec_tracker(self, *, pin: Any) -> Any:
        return Tracker()


class Tracker:
    def paths(self) -> dict[int, str]:
        return {}

    def correlation(self) -> dict[str, CorrelationMap]:
        return {}

    def cgroup_path(self, cgroup_id: int) -> str | None:
        return None

    def forget_cgroups(self, cgroup_ids: Any) -> None:
        pass

    def unpin(self) -> None:
        pass
