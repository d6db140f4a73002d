"""Read a loaded program's counters and series out of its maps, decoded to plain values."""

from __future__ import annotations

import ctypes
import dataclasses

from weir_agent.kernel.handles import Loaded
from weir_agent.spec import abi, programs


def read_stats(loaded: Loaded) -> dict[abi.Stat, int]:
    table = loaded.module[b"stats"]
    return {
        stat: int(table.sum(ctypes.c_int(int(stat))).value)
        for stat in abi.Stat
        if stat != abi.Stat.COUNT
    }


@dataclasses.dataclass(frozen=True)
class AggEntry:
    """One key of an aggregation map, decoded to plain values."""

    cgroup: int
    binary: int
    arg0: int
    arg1: int
    aclass: int
    overflow: bool
    count: int
    sum: int
    buckets: tuple[int, ...]


def read_aggregation(
    loaded: Loaded, agg: programs.AggSlot, *, take: frozenset[int] | None = None
) -> list[AggEntry]:
    """The rule's entries; with ``take``, only those of these cgroup ids, deleted from the
    map as they are read (a retired container's series: its cgroup is gone, so nothing can
    add to them between the read and the delete)."""
    table = loaded.module[agg.table]
    sid = loaded.series_id(agg)
    entries = []
    for key, leaf in table.items():
        if key.slot != sid:
            continue
        if take is not None:
            if int(key.cgroup) not in take or key.overflow:
                continue
            try:
                del table[key]
            except KeyError:
                continue
        buckets = tuple(int(b) for b in leaf.buckets) if hasattr(leaf, "buckets") else ()
        entries.append(
            AggEntry(
                cgroup=int(key.cgroup),
                binary=int(key.binary),
                arg0=int(key.arg0),
                arg1=int(key.arg1),
                aclass=int(key.aclass),
                overflow=bool(key.overflow),
                count=int(leaf.count),
                sum=int(leaf.sum),
                buckets=buckets,
            )
        )
    if take is not None and entries:
        # The series id's count of claimed series (maxSeries): the deleted ones free their
        # places. Not atomic against a claim that lands between the read and the write
        # (it would be lost, letting one more series in): that needs a BPF-side decrement.
        counts = loaded.module[b"series"]
        now = int(counts[ctypes.c_int(sid)].value)
        counts[ctypes.c_int(sid)] = ctypes.c_uint64(max(0, now - len(entries)))
    return entries
