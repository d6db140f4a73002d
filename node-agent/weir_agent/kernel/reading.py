"""Read a loaded program's counters and series out of its maps, decoded to plain values."""

from __future__ import annotations

import ctypes
import dataclasses
from typing import Any

from weir_agent.kernel.handles import Loaded
from weir_agent.spec import abi, programs

# A packed key (AGG_PACKED, bpf/weir.h): the series id in the top byte, the overflow flag
# below it, the cgroup id in the rest.
KEY_SLOT_SHIFT = 56
KEY_OVERFLOW = 1 << 55
KEY_CGROUP_MASK = KEY_OVERFLOW - 1


def key_slot(key: Any) -> int:
    """The series id of an aggregation map's key, packed or not."""
    if hasattr(key, "packed"):
        return int(key.packed) >> KEY_SLOT_SHIFT
    return int(key.slot)


def overflow_key(table: Any, sid: int) -> Any:
    """The key of series id ``sid``'s overflow entry in ``table``."""
    key = table.Key()
    if hasattr(key, "packed"):
        key.packed = (sid << KEY_SLOT_SHIFT) | KEY_OVERFLOW
    else:
        key.slot, key.overflow = sid, 1
    return key


def _key_parts(key: Any) -> tuple[int, int, int, int, int, bool]:
    """(cgroup, binary, arg0, arg1, aclass, overflow) of a key, packed or not."""
    if hasattr(key, "packed"):
        packed = int(key.packed)
        return packed & KEY_CGROUP_MASK, 0, 0, 0, 0, bool(packed & KEY_OVERFLOW)
    return (int(key.cgroup), int(key.binary), int(key.arg0), int(key.arg1), int(key.aclass),
            bool(key.overflow))  # fmt: skip


def _added(leaf: Any) -> tuple[int, int, tuple[int, ...]]:
    """(count, sum, buckets) of a value, its per-CPU copies added up. A histogram's count
    is the sum of its buckets (the program adds to those only)."""
    copies = leaf if isinstance(leaf, list) else [leaf]
    if hasattr(copies[0], "buckets"):
        width = len(copies[0].buckets)
        buckets = tuple(sum(int(c.buckets[i]) for c in copies) for i in range(width))
        return sum(buckets), sum(int(c.sum) for c in copies), buckets
    return sum(int(c.count) for c in copies), sum(int(c.sum) for c in copies), ()


def read_stats(loaded: Loaded) -> dict[abi.Stat, int]:
    copies = loaded.module[b"stats"][ctypes.c_int(0)]  # struct weir_stats, one per CPU
    return {
        stat: sum(int(copy.s[stat]) for copy in copies)
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
        if key_slot(key) != sid:
            continue
        cgroup, binary, arg0, arg1, aclass, overflow = _key_parts(key)
        if take is not None:
            if cgroup not in take or overflow:
                continue
            try:
                del table[key]
            except KeyError:
                continue
        count, total, buckets = _added(leaf)
        entries.append(
            AggEntry(
                cgroup=cgroup,
                binary=binary,
                arg0=arg0,
                arg1=arg1,
                aclass=aclass,
                overflow=overflow,
                count=count,
                sum=total,
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
