"""A configured program's configuration, typed: struct weir_config (bpf/weir.h) as data.

A program's *shape* is compiled in; its *configuration* (selectors, matchers, mark actions,
aggregations, duration starts) is a struct the program reads from its ``config`` map, in
two copies that the agent flips between. ``Config`` mirrors that struct field by field
(the names are weir.h's); codegen builds one per program and kernel/configuring.py writes
it into the map as it is. A specialised build takes the same values as -D flags instead,
named by their place in the struct (``S0_M1_OP`` is ``S[0].M[1].OP``): ``flags`` and
``from_flags`` are the only code that knows those names. Pure.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterator, Mapping

# The flags of a specialised build that a configured program reads from its config map.
CONFIG_FLAG = re.compile(
    r"^(NUM_SELECTORS|S\d+_(ACTION|RATE_NS|USTACK|KSTACK)|S\d+_M\d+_(OP|NEG|ARG|VAL)|REV_SLOTS|SUB_SLOTS"
    r"|S\d+_B\d+_(OP|NEG)|AGG\d+_(ON|VALUE|CGROUP|BINARY|KARG0|KARG1|ACLASS|VARG|NBOUNDS|MAX|SID"
    r"|DUR|DARG|DID)|MK\d+_(KEY|ARG|ID)|S\d+_A\d+_(ID|ARG|KEY|OP))$"
)
_ITEM = re.compile(r"^([A-Z]+)(\d+)$")  # S0, M1, AGG2, MK0: an element of an array field


@dataclasses.dataclass(frozen=True)
class MatchConfig:
    """struct weir_match_cfg: one matchArgs (or matchPIDs, matchNamespaces, ...)."""

    VAL: int = 0
    OP: int = 0
    NEG: int = 0
    ARG: int = 0


@dataclasses.dataclass(frozen=True)
class BinaryConfig:
    """struct weir_binary_cfg: one matchBinaries."""

    OP: int = 0
    NEG: int = 0


@dataclasses.dataclass(frozen=True)
class MarkConfig:
    """struct weir_mark_cfg: one Mark, Unmark, TrackSock or UntrackSock action."""

    ID: int = 0
    ARG: int = 0
    KEY: int = 0
    OP: int = 0


@dataclasses.dataclass(frozen=True)
class SelectorConfig:
    """struct weir_selector_cfg: one selector."""

    RATE_NS: int = 0
    ACTION: int = 0
    USTACK: int = 0
    KSTACK: int = 0
    M: tuple[MatchConfig, ...] = ()
    B: tuple[BinaryConfig, ...] = ()
    A: tuple[MarkConfig, ...] = ()


@dataclasses.dataclass(frozen=True)
class AggConfig:
    """struct weir_agg_cfg: one AggregationRule folded by the hook."""

    MAX: int = 0
    ON: int = 0
    VALUE: int = 0
    CGROUP: int = 0
    BINARY: int = 0
    KARG0: int = 0
    KARG1: int = 0
    ACLASS: int = 0
    VARG: int = 0
    NBOUNDS: int = 0
    SID: int = 0
    DID: int = 0
    DARG: int = 0
    DUR: int = 0


@dataclasses.dataclass(frozen=True)
class StartConfig:
    """struct weir_start_cfg: a duration clock the hook starts."""

    ID: int = 0
    ARG: int = 0
    KEY: int = 0


@dataclasses.dataclass(frozen=True)
class Config:
    """struct weir_config, but for GEN (the copy it goes into, set when it is written)."""

    NUM_SELECTORS: int = 0
    REV_SLOTS: int = 0
    SUB_SLOTS: int = 0
    S: tuple[SelectorConfig, ...] = ()
    AGG: tuple[AggConfig, ...] = ()
    MK: tuple[StartConfig, ...] = ()

    def with_series_ids(self, sids: Mapping[int, int]) -> Config:
        """The same configuration with aggregation slot -> series id (SID) replaced."""
        aggs = [dataclasses.replace(a, SID=sids.get(n, a.SID)) for n, a in enumerate(self.AGG)]
        return dataclasses.replace(self, AGG=tuple(aggs))

    def flags(self) -> dict[str, int]:
        """The configuration as a specialised build's -D flags: S0_M1_OP and so on."""
        return dict(_walk(self, ""))


def _walk(node: object, prefix: str) -> Iterator[tuple[str, int]]:
    for field in dataclasses.fields(node):  # type: ignore[arg-type]
        value = getattr(node, field.name)
        if isinstance(value, tuple):
            for index, item in enumerate(value):
                yield from _walk(item, f"{prefix}{field.name}{index}_")
        else:
            yield f"{prefix}{field.name}", value


_ARRAYS: dict[type, dict[str, type]] = {
    Config: {"S": SelectorConfig, "AGG": AggConfig, "MK": StartConfig},
    SelectorConfig: {"M": MatchConfig, "B": BinaryConfig, "A": MarkConfig},
}
_ARRAY_NAMES = {name for fields in _ARRAYS.values() for name in fields}
Tree = dict[str, "int | dict[int, Tree]"]


def from_flags(flags: Mapping[str, int | str]) -> Config:
    """The configuration among a specialised build's flags (others are ignored); values
    are ints, or 64-bit patterns written as C literals (0x...ULL)."""
    tree: Tree = {}
    for name, value in flags.items():
        if not CONFIG_FLAG.match(name):
            continue
        path, field = _path(name)
        node = tree
        for array, index in path:
            items = node.setdefault(array, {})
            assert isinstance(items, dict)
            node = items.setdefault(index, {})
        node[field] = flag_int(value)
    config = _build(Config, tree)
    assert isinstance(config, Config)
    return config


def _path(name: str) -> tuple[list[tuple[str, int]], str]:
    """S0_M1_OP -> ([("S", 0), ("M", 1)], "OP"); AGG2_KARG0 -> ([("AGG", 2)], "KARG0")."""
    parts = name.split("_")
    path = []
    while parts:
        item = _ITEM.match(parts[0])
        if item is None or item.group(1) not in _ARRAY_NAMES:
            break
        path.append((item.group(1), int(item.group(2))))
        parts.pop(0)
    return path, "_".join(parts)


def _build(kind: type, tree: Tree) -> object:
    values: dict[str, object] = {}
    for name, value in tree.items():
        if isinstance(value, dict):
            item_kind = _ARRAYS[kind][name]
            values[name] = tuple(_build(item_kind, value.get(i, {})) for i in range(max(value) + 1))
        else:
            values[name] = value
    return kind(**values)


def flag_int(value: int | str) -> int:
    """A flag's value as a signed 64-bit integer (C literals 0x...ULL included)."""
    if isinstance(value, int):
        return value
    number = int(value.removesuffix("ULL"), 16)
    return number - (1 << 64) if number >= 1 << 63 else number
