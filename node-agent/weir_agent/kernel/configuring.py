"""Configure a loaded program: what a policy says inside its shape, written into maps.

A program reads one of two configuration copies (``active``). ``configure`` writes the
spare copy (struct fields, seeds tagged with its generation, series of new or changed
rules) and flips ``active`` to it in one map write; ``retire``, once the runs that read
the old copy are done (``GRACE_SECONDS``), clears what the old copy left. An edit that
keeps the shape is therefore map writes and one flip, never a compile. Maps a previous
agent pinned are adopted with their counts (``adopt``).
"""

from __future__ import annotations

import ctypes
import dataclasses
import ipaddress
import sys
import time
from typing import Any

from weir_agent.kernel import reading
from weir_agent.kernel.handles import Loaded
from weir_agent.spec import abi, programs, selectors
from weir_agent.spec.programs import Program


def _be32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "big"), sys.byteorder)


GENERATION_BIT = 128  # matcher ids of configuration copy 1 (bpf/hook.bpf.c, MATCH)


GRACE_SECONDS = 0.05  # runs of a replaced program or configuration copy end within this


def seed_classes(loaded: Loaded) -> None:
    try:
        classes = loaded.module[b"class_lpm"]
    except KeyError:
        return  # a specialised program without addressClass has no such map
    for cls, networks in abi.ADDRESS_CLASS_NETWORKS.items():
        for text in networks:
            data, bits = abi.mapped16(ipaddress.ip_network(text))
            key = classes.Key()
            key.prefixlen = bits
            ctypes.memmove(ctypes.addressof(key) + 4, data, 16)
            classes[key] = ctypes.c_uint32(int(cls))


def adopt(loaded: Loaded, program: Program) -> None:
    """Take over maps an earlier agent pinned: its configuration copy and series ids when
    it ran this very program (same digest), else configure this one over them (series of
    every rule start afresh; the hook's counters go on)."""
    module = loaded.module
    seed_classes(loaded)
    loaded.active = int(module[b"active"][ctypes.c_int(0)].value) & 1
    loaded.adopted = True
    if module.read_meta() == program.digest():
        config = module[b"config"][ctypes.c_int(loaded.active)]
        loaded.sids = {a.rule: int(config.AGG[a.slot].SID) for a in program.aggregations}
        return
    loaded.sids = {}
    retire(loaded, configure(loaded, program))


def configure(loaded: Loaded, program: Program) -> Retirement:
    """Make a loaded program run ``program``'s configuration (same shape): write the
    spare copy (config, seeds tagged with its generation, series of new or changed
    rules) and flip ``active`` to it. Pass the result to ``retire`` once the runs that
    read the old copy are done."""
    if program.shape_digest() != loaded.program.shape_digest():
        raise ValueError(f"{program.hook}: a new shape needs a new program, not configure")
    if program.entry_half:  # no configuration of its own
        loaded.program = program
        return Retirement(-1, {})
    module = loaded.module
    old_bit = loaded.active
    bit = 1 if old_bit == 0 else 0
    _wait_grace(loaded)
    _clear_generation(module, bit)  # leftovers, if a previous retire was cut short
    # Series ids: a rule whose layout is unchanged keeps its entries; others start afresh.
    old_layouts = {a.rule: a.layout() for a in loaded.program.aggregations} if old_bit >= 0 else {}
    sids: dict[str, int] = {}
    for agg in program.aggregations:
        if old_layouts.get(agg.rule) == agg.layout() and agg.rule in loaded.sids:
            sids[agg.rule] = loaded.sids[agg.rule]
    taken = set(sids.values()) | (set(loaded.sids.values()) if old_bit >= 0 else set())
    free = iter(i for i in range(8) if i not in taken)
    fresh = [agg for agg in program.aggregations if agg.rule not in sids]
    for agg in fresh:
        sids[agg.rule] = next(free)
        reset_series(module, sids[agg.rule], agg.table)
    write_seeds(module, program.seeds, bit)
    table = module[b"config"]
    leaf = table.Leaf()
    config = program.config.with_series_ids({a.slot: sids[a.rule] for a in program.aggregations})
    _fill(leaf, config)
    leaf.GEN = bit
    table[ctypes.c_int(bit)] = leaf
    module[b"active"][ctypes.c_int(0)] = ctypes.c_uint32(bit)  # the flip
    loaded.flipped = time.monotonic()
    if hasattr(module, "write_meta"):  # a copy of weir's (not a bcc module)
        module.write_meta(program.digest())
    retired = {
        loaded.sids[a.rule]: a.table
        for a in loaded.program.aggregations
        if a.rule in loaded.sids and sids.get(a.rule) != loaded.sids[a.rule]
    }
    loaded.active, loaded.sids, loaded.program = bit, sids, program
    return Retirement(old_bit, retired)


@dataclasses.dataclass(frozen=True)
class Retirement:
    """What a flip left behind: the old copy's seeds and the series ids no rule uses now."""

    bit: int  # -1: nothing (the first configuration)
    series: dict[int, bytes]  # series id -> its table


def retire(loaded: Loaded, retirement: Retirement) -> None:
    """Remove what the previous configuration left; call ``GRACE_SECONDS`` after the flip
    (``configure`` waits for it itself before the next flip in any case)."""
    if retirement.bit < 0 or retirement.bit == loaded.active:
        return
    _clear_generation(loaded.module, retirement.bit)
    for sid, name in retirement.series.items():
        if sid not in loaded.sids.values():
            reset_series(loaded.module, sid, name, overflow=False)


def _wait_grace(loaded: Loaded) -> None:
    left = loaded.flipped + GRACE_SECONDS - time.monotonic()
    if left > 0:
        time.sleep(left)


def _fill(target: Any, node: object) -> None:
    """Write a configuration (spec/configs.py) into struct weir_config, field by field: the
    dataclasses are the struct's, with its field names and arrays."""
    for field in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, field.name)
        if isinstance(value, tuple):
            for index, item in enumerate(value):
                _fill(getattr(target, field.name)[index], item)
        else:
            setattr(target, field.name, value)


def write_seeds(module: Any, seeds: programs.Seeds, bit: int) -> None:
    """Write seeds tagged with configuration copy ``bit`` (maps are only opened when the
    seeds need them: a specialised program has only the maps it uses)."""
    tag = GENERATION_BIT * bit
    for matcher, data, bits in seeds.strings:
        strings = module[b"str_lpm"]
        key = strings.Key()
        key.prefixlen, key.matcher = bits, _be32(matcher + tag)
        ctypes.memmove(ctypes.addressof(key) + 8, data, len(data))
        strings[key] = ctypes.c_uint8(1)
    for data, mask in seeds.substrings:
        substrings = module[b"sub_lpm"]
        key = substrings.Key()
        key.prefixlen, key.matcher = 32 + 8 * len(data), _be32(tag)
        ctypes.memmove(ctypes.addressof(key) + 8, data, len(data))
        substrings[key] = ctypes.c_uint64(mask)
    for matcher, data, bits in seeds.addresses:
        addresses = module[b"addr_lpm"]
        key = addresses.Key()
        key.prefixlen, key.matcher = bits, _be32(matcher + tag)
        ctypes.memmove(ctypes.addressof(key) + 8, data, 16)
        addresses[key] = ctypes.c_uint8(1)
    for matcher, value in seeds.integers:
        integers = module[b"int_set"]
        key = integers.Key()
        key.matcher, key.value = matcher + tag, value
        integers[key] = ctypes.c_uint8(1)
    for matcher, low, high in seeds.ranges:
        ranges = module[b"range_lpm"]
        for value, bits in selectors.range_prefixes(low, high):
            key = ranges.Key()
            key.prefixlen, key.matcher = 32 + bits, _be32(matcher + tag)
            ctypes.memmove(ctypes.addressof(key) + 8, value.to_bytes(8, "big"), 8)
            ranges[key] = ctypes.c_uint8(1)
    per_rule: dict[int, list[int]] = {}
    for index, bound in seeds.bounds:
        per_rule.setdefault(index // abi.MAX_BOUNDS, []).append(_s64(bound))
    for position, values in per_rule.items():
        bounds = module[b"bounds"]
        leaf = bounds.Leaf()
        padded = values + [(1 << 63) - 1] * (abi.MAX_BOUNDS - len(values))
        for i, bound in enumerate(padded):
            leaf.b[i] = bound
        bounds[ctypes.c_int(position + abi.MAX_AGGREGATIONS * bit)] = leaf


def _clear_generation(module: Any, bit: int) -> None:
    """Remove one configuration copy's seeds (bounds are overwritten)."""
    tag = GENERATION_BIT * bit
    for name in (b"str_lpm", b"addr_lpm", b"range_lpm", b"sub_lpm", b"int_set"):
        try:
            table = module[name]
        except KeyError:  # a program without matchers of that kind has no such map
            continue
        big_endian = name != b"int_set"
        for key in [
            k
            for k in table
            if ((_be32(k.matcher) if big_endian else k.matcher) & GENERATION_BIT) == tag
        ]:
            del table[key]


def reset_series(module: Any, sid: int, name: bytes, *, overflow: bool = True) -> None:
    """Empty series id ``sid`` (entries and count); with ``overflow``, seed its overflow entry."""
    table = module[name]
    for key in [k for k in table if reading.key_slot(k) == sid]:
        del table[key]
    module[b"series"][ctypes.c_int(sid)] = ctypes.c_uint64(0)
    if overflow:
        table[reading.overflow_key(table, sid)] = table.Leaf()


def _agg_table(agg: programs.AggSlot) -> bytes:
    return b"hist" if agg.value >= abi.ValueKind.HIST_EXP2 else b"agg"


def _s64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


def set_scope(loaded: Loaded, cgroup_ids: set[int]) -> None:
    """Make the program's scope map hold exactly these cgroup ids."""
    table = loaded.module[b"scope"]
    current = {int(key.value) for key in table}
    for gone in current - cgroup_ids:
        del table[ctypes.c_uint64(gone)]
    for new in cgroup_ids - current:
        table[ctypes.c_uint64(new)] = ctypes.c_uint8(1)
