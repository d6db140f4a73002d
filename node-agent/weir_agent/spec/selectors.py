"""Selectors: matchArgs, matchPIDs, matchNamespaces, matchCapabilities, matchMarks and
mark actions as matcher flags and map seeds.

One matcher per filter, numbered by selector and position (``S<s>_M<m>_*``); values go
into seeds (strings and CIDRs into LPM tries, integer sets, ranges as prefixes), never
into C text. Pure.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence

from weir_agent.spec import abi, programs
from weir_agent.spec.abi import Clock, Kind, MarkOp, Op
from weir_api import values
from weir_api.policies import (
    SOCK_MARK,
    Arg,
    MatchAction,
    Selector,
)
from weir_api.problems import PathPart, Problem, at

# The architecture (uname -m) whose syscall numbers a syscall:NAME value stands for.
SYSCALL_ARCHES = {"__x64_sys_": "x86_64", "__arm64_sys_": "aarch64"}


# One matchPIDs, matchNamespaces or matchCapabilities entry as a matcher: the operator,
# its ARG and VAL fields, whether it is negated, the integer set it looks up, and what is
# wrong with it (host_ns that cannot be resolved).
TaskMatcher = tuple[Op, int, int, bool, tuple[int, ...], Problem | None]


def _parsed(texts: Sequence[str], parse: Callable[[str], int]) -> list[int]:
    """The values that parse (weir_api.checks reports the others)."""
    out = []
    for text in texts:
        with contextlib.suppress(ValueError):
            out.append(parse(text))
    return out


def task_matchers(
    selector: Selector,
    host_namespaces: Mapping[str, int | str],
    sel_path: tuple[PathPart, ...],
) -> list[TaskMatcher]:
    out: list[TaskMatcher] = []
    pid = functools.partial(values.parse_int, arg_type="uint32")
    for pids in selector.match_pids:
        # VAL: bit 0 the pid namespace's numbering, bit 1 followForks (hook.bpf.c).
        value = int(pids.is_namespace_pid) | (2 if pids.follow_forks else 0)
        found = tuple(_parsed(pids.values, pid))
        out.append((Op.PID, 0, value, pids.operator == "NotIn", found, None))
    for m, entry in enumerate(selector.match_namespaces):
        which = abi.Namespace[entry.namespace]
        inode = host_namespaces.get(
            abi.NAMESPACE_FILES[which], "the node's namespaces were not read"
        )
        given = [text for text in entry.values if text.strip() != "host_ns"]
        numbers = _parsed(given, pid)
        problem = None
        if len(given) < len(entry.values):
            if isinstance(inode, str):
                v = [text.strip() for text in entry.values].index("host_ns")
                problem = at((*sel_path, "matchNamespaces", m, "values", v), f"host_ns: {inode}")
            else:
                numbers.append(inode)
        out.append((Op.NS, 0, int(which), entry.operator == "NotIn", tuple(numbers), problem))
    capability_filters = [
        (Op.CAPS, "matchCapabilities", c, caps)
        for c, caps in enumerate(selector.match_capabilities)
    ] + [
        (Op.CAPS_CHANGED, "matchCapabilityChanges", c, caps)
        for c, caps in enumerate(selector.match_capability_changes)
    ]
    for op, field, c, caps in capability_filters:
        mask = sum({1 << bit for bit in _parsed(caps.values, values.parse_capability)})
        negated = caps.operator == "NotIn"
        out.append((op, int(abi.CapSet[caps.type]), mask, negated, (), None))
        if caps.is_namespace_capability:
            # Tetragon's isNamespaceCapability: only outside the host's user namespace,
            # i.e. one more filter, the user namespace NotIn the host's.
            inode = host_namespaces.get(
                abi.NAMESPACE_FILES[abi.Namespace.User], "the node's namespaces were not read"
            )
            problem = None
            if isinstance(inode, str):
                where = (*sel_path, field, c, "isNamespaceCapability")
                problem = at(where, f"needs the host's user namespace: {inode}")
            user = int(abi.Namespace.User)
            found = () if isinstance(inode, str) else (inode,)
            out.append((Op.NS, 0, user, True, found, problem))
    for changes in selector.match_namespace_changes:
        bits = sum({1 << int(abi.Namespace[name]) for name in changes.values})
        out.append((Op.NS_CHANGED, 0, bits, changes.operator == "NotIn", (), None))
    return out


_STRING_OPS = {
    "Equal": (Op.STR, False),
    "NotEqual": (Op.STR, True),
    "Prefix": (Op.STR, False),
    "NotPrefix": (Op.STR, True),
    "Postfix": (Op.STR_POSTFIX, False),
    "NotPostfix": (Op.STR_POSTFIX, True),
    "SubString": (Op.STR_SUB, False),
    "SubStringIgnCase": (Op.STR_SUB_ICASE, False),
}


_ADDRESS_OPS = {
    "DAddr": (Op.DADDR, False),
    "NotDAddr": (Op.DADDR, True),
    "SAddr": (Op.SADDR, False),
    "NotSAddr": (Op.SADDR, True),
    "DPort": (Op.DPORT, False),
    "NotDPort": (Op.DPORT, True),
    "SPort": (Op.SPORT, False),
    "NotSPort": (Op.SPORT, True),
    "DPortPriv": (Op.DPORT, False),
    "NotDPortPriv": (Op.DPORT, True),
    "SPortPriv": (Op.SPORT, False),
    "NotSPortPriv": (Op.SPORT, True),
}


_SOCKET_OPS = {"Family": Op.FAMILY, "Protocol": Op.PROTOCOL, "State": Op.STATE}


def arg_matcher(
    flags: programs.Flags,
    seeds: programs.SeedBuilder,
    prefix: str,
    matcher: int,
    operator: str,
    texts: list[str],
    arg: Arg,
    slot: int,
    path: tuple[PathPart, ...],
    arch: str | None,
) -> list[Problem]:
    try:
        parsed = values.parse_match_values(operator, arg.type, texts, arch)
    except values.IndexedValueError as error:
        try:
            values.parse_match_values(operator, arg.type, texts)
        except values.IndexedValueError:
            return []  # reported by weir_api.checks
        return [at((*path, "values", error.index), str(error))]  # not on this architecture
    flags.set(f"{prefix}_ARG", slot)
    negated = operator in values.NEGATED_OPERATORS
    operator = values.canonical(operator)
    if operator in values.FILE_TYPE_OPERATORS:
        op = Op.FILE_TYPE
        for value in parsed.integers:
            seeds.integers.append((matcher, value))
    elif operator in values.CRED_OPERATORS:  # the mask of the listed capabilities
        op = Op.CAPS_GAINED
        flags.set(f"{prefix}_VAL", programs.int_literal(sum({1 << bit for bit in parsed.integers})))
    elif arg.type in values.STRING_TYPES:
        op, negated = _STRING_OPS[operator]
        for data in parsed.strings:
            if operator in {"Equal", "NotEqual"}:
                seeds.string(matcher, data + b"\0")
            elif op == Op.STR_POSTFIX:
                seeds.string(matcher, data[::-1])
            elif op == Op.STR_SUB:
                seeds.substrings.append((matcher, data))
            elif op == Op.STR_SUB_ICASE:
                seeds.substrings.append((matcher, data.lower()))  # ASCII, as the kernel
            else:
                seeds.string(matcher, data)
    elif operator in _SOCKET_OPS:
        op = _SOCKET_OPS[operator]
        for value in parsed.integers:
            seeds.integers.append((matcher, value))
    elif operator in _ADDRESS_OPS:
        op, negated = _ADDRESS_OPS[operator]
        if arg.type == "sockaddr" and op in {Op.SADDR, Op.SPORT}:
            return [
                at(
                    (*path, "operator"),
                    f"{operator} needs a sock argument; a sockaddr holds "
                    "only the destination (DAddr, DPort)",
                )
            ]
        for network in parsed.networks:
            data, bits = abi.mapped16(network)
            seeds.addresses.append((matcher, data, 32 + bits))
        _ranges(seeds, matcher, parsed.ranges, signed=False)
    elif operator in {"Equal", "NotEqual"} and len(parsed.integers) == 1:
        op = Op.EQ  # specialised: one value is a compare against a constant
        flags.set(f"{prefix}_VAL", programs.int_literal(parsed.integers[0]))
    elif operator in {"Equal", "NotEqual"}:
        op = Op.INT_SET
        for value in parsed.integers:
            seeds.integers.append((matcher, value & programs.MASK64))
    elif operator in {"GT", "LT", "Mask"}:
        op = {"GT": Op.GT, "LT": Op.LT, "Mask": Op.MASK}[operator]
        flags.set(f"{prefix}_VAL", programs.int_literal(parsed.integers[0]))
    else:  # InRange, NotInRange
        op = Op.RANGE
        _ranges(seeds, matcher, parsed.ranges, signed=values.INTEGER_TYPES[arg.type][1])
    if len(parsed.ranges) > abi.MAX_RANGES:
        return [
            at(
                (*path, "values"),
                f"{len(parsed.ranges)} ranges; at most {abi.MAX_RANGES} "
                "per matchArgs entry (split it across selectors)",
            )
        ]
    flags.set(f"{prefix}_OP", int(op))
    flags.set(f"{prefix}_NEG", int(negated))
    return []


def _ranges(
    seeds: programs.SeedBuilder, matcher: int, ranges: tuple[tuple[int, int], ...], *, signed: bool
) -> None:
    bias = 1 << 63 if signed else 0
    for low, high in ranges[: abi.MAX_RANGES]:
        seeds.ranges.append(
            (matcher, (low & programs.MASK64) ^ bias, (high & programs.MASK64) ^ bias)
        )


def range_prefixes(low: int, high: int, bits: int = 64) -> list[tuple[int, int]]:
    """The fewest (value, prefix length) pairs whose prefixes cover exactly low..high."""
    out = []
    while low <= high:
        size = (low & -low).bit_length() - 1 if low else bits  # the alignment of low
        while size > 0 and low + (1 << size) - 1 > high:
            size -= 1
        out.append((low, bits - size))
        low += 1 << size
    return out


def mark_actions(
    flags: programs.Flags,
    s: int,
    actions: Sequence[tuple[MatchAction, str]],
    by_label: Mapping[str, programs.ArgPlan],
    policy_name: str,
) -> bool:
    """Selector ``s``'s mark actions (with their keys) as its S<s>_A<a>_* flags; whether it
    has any."""
    for a, (marking, key) in enumerate(actions[: abi.MAX_MARK_ACTIONS]):
        clock, arg_slot = clock_key(key, by_label)
        if clock is None:
            continue  # reported by weir_api.checks
        name = marking.mark or SOCK_MARK
        setting = marking.action in ("Mark", "TrackSock")
        flags.set(f"S{s}_A{a}_OP", int(MarkOp.SET if setting else MarkOp.CLEAR))
        flags.set(f"S{s}_A{a}_KEY", int(clock))
        flags.set(f"S{s}_A{a}_ARG", arg_slot)
        flags.set(f"S{s}_A{a}_ID", programs.int_literal(programs.mark_id(policy_name, name)))
    return bool(actions)


# Kinds whose raw value can key a mark or a clock: an integer, an object's address, an fd.
_KEY_KINDS = frozenset({Kind.INT, Kind.SOCK, Kind.SKB, Kind.FILE, Kind.PATH, Kind.FD})


def clock_key(key: str, by_label: Mapping[str, programs.ArgPlan]) -> tuple[Clock | None, int]:
    """A mark's or clock's key (thread, process, arg:LABEL) as CLOCK_* and the key's
    index in the program's sc->raw (an arg slot, KEY_THREAD or KEY_PROCESS)."""
    if key == "thread":
        return Clock.THREAD, abi.KEY_THREAD
    if key == "process":
        return Clock.PROCESS, abi.KEY_PROCESS
    plan = by_label.get(key.removeprefix("arg:"))
    if plan is None or plan.kind not in _KEY_KINDS:
        return None, 0  # reported by weir_api.checks
    return Clock.ARG, plan.slot
