"""The contract between the agent and bpf/*.c: enumerations and map layouts.

Every enumeration the C code uses (argument kinds, operators, actions, stat
indexes, value kinds, address classes) is defined here once and handed to the
compiler as ``-DNAME=value`` flags; the C files never define them. Struct
layouts live in bpf/weir.h and are read back through the ctypes types bcc
derives from them, by field name, so there is one definition of each fact. The
one exception is the posted event (``event_type``): bcc cannot derive its
two-dimensional string array, so its layout is spelled here and every event's
size is checked against it.
"""

from __future__ import annotations

import ctypes
import enum
import ipaddress
from collections.abc import Mapping
from typing import Any

from weir_api import limits

MAX_ARGS = limits.MAX_ARGS
STR_SLOTS = limits.STRING_ARGS
ADDR_SLOTS = limits.ADDRESS_ARGS
MAX_SELECTORS = limits.MAX_SELECTORS
MAX_MATCHERS = limits.MAX_MATCH_ARGS  # matchArgs per selector in the program's layout
MAX_BINARIES = limits.MAX_MATCH_BINARIES
MAX_AGGREGATIONS = limits.MAX_RULES_PER_HOOK  # AggregationRules folded by one hook
MAX_STARTS = limits.MAX_STARTS_PER_HOOK  # duration start keys recorded by one hook
MAX_MARK_ACTIONS = limits.MAX_MARK_ACTIONS  # Mark, Unmark, TrackSock, UntrackSock per selector
MAX_GROUP_ARGS = limits.MAX_GROUP_ARGS  # arg:LABEL keys per AggregationRule
MAX_RANGES = limits.MAX_RANGES
MAX_BOUNDS = limits.MAX_BUCKETS
MAX_STR = limits.MAX_STRING + 1  # bytes read of a string, NUL included
STACK_NOT_TAKEN = -65536  # an event's user_stack / kernel_stack when its selector took none
UPID_SIZE = 16  # struct upid {int nr; struct pid_namespace *ns;} on 64-bit architectures
EXP2_BUCKETS = 65


class Kind(enum.IntEnum):
    NONE = 0
    INT = 1
    STR_PTR = 2
    STR_DATALOC = 3
    STR_INLINE = 4
    CHAR_BUF = 5
    SOCK = 6
    SOCKADDR = 7
    FILE = 8  # struct file *: its path
    PATH = 9  # struct path *: the path
    FD = 10  # a descriptor of the current task: its file's path
    SKB = 11  # struct sk_buff *: its IP and transport headers


class Source(enum.IntEnum):
    FIELD = 0
    REG = 1
    RET = 2
    SAVED = 3  # a return probe's argument, saved by its entry half
    RAW = 4  # a raw tracepoint's argument (ctx: u64 args[])


class Op(enum.IntEnum):
    NONE = 0
    INT_SET = 1
    GT = 2
    LT = 3
    MASK = 4
    RANGE = 5
    STR = 6
    STR_POSTFIX = 7
    DADDR = 8
    SADDR = 9
    DPORT = 10
    SPORT = 11
    EQ = 12  # a single-value integer Equal/NotEqual: a constant compare, no map
    PID = 13  # matchPIDs
    NS = 14  # matchNamespaces
    CAPS = 15  # matchCapabilities
    FAMILY = 16  # sock/skb/sockaddr: the address family is one of a set
    PROTOCOL = 17  # sock/skb: the IP protocol is one of a set
    STATE = 18  # sock: the TCP state is one of a set
    MARK = 19  # matchMarks: the key is marked (VAL: the mark's id, its key's index on top)
    FILE_TYPE = 20  # FileType: a file, path or fd arg's kind of file is one of a set
    STR_SUB = 21  # SubString: a value occurs in the string (a Prefix of one of its suffixes)
    STR_SUB_ICASE = 22  # SubStringIgnCase: the same on the string in lower case
    CAPS_CHANGED = 23  # matchCapabilityChanges: a listed capability changed since start
    NS_CHANGED = 24  # matchNamespaceChanges: a listed namespace (VAL: bits) changed
    CAPS_GAINED = 25  # CapabilitiesGained: a cred arg's permitted set has what the task lacks


class Namespace(enum.IntEnum):
    """matchNamespaces' namespaces, as Tetragon names them: the index of each inode
    number in ``struct weir_task`` (weir.h)."""

    Uts = 0
    Ipc = 1
    Mnt = 2
    Pid = 3
    PidForChildren = 4
    Net = 5
    Time = 6
    TimeForChildren = 7
    Cgroup = 8
    User = 9


# What /proc/PID/ns/ calls each namespace (for host_ns, read from /proc/1/ns).
NAMESPACE_FILES = {
    Namespace.Uts: "uts",
    Namespace.Ipc: "ipc",
    Namespace.Mnt: "mnt",
    Namespace.Pid: "pid",
    Namespace.PidForChildren: "pid_for_children",
    Namespace.Net: "net",
    Namespace.Time: "time",
    Namespace.TimeForChildren: "time_for_children",
    Namespace.Cgroup: "cgroup",
    Namespace.User: "user",
}


class CapSet(enum.IntEnum):
    """matchCapabilities' ``type``: which of the task's capability sets is tested."""

    Effective = 0
    Inheritable = 1
    Permitted = 2


class Action(enum.IntEnum):
    POST = 1
    NOPOST = 2


class Stat(enum.IntEnum):
    """Per-program counters (a per-CPU array indexed by these)."""

    OBSERVED = 0
    MATCHED = 1
    POSTED = 2
    AGGREGATED = 3
    OVERFLOW = 4
    RATE_LIMITED = 5
    RINGBUF_FULL = 6
    SAVED = 7  # an entry half: argument registers saved for its return half
    STARTED = 8  # a duration's clock started (a start hook's match recorded its time)
    UNSTARTED = 9  # a duration's end found no start (began before attach, or evicted)
    MARKED = 10  # a Mark or TrackSock set a mark that was not set
    UNMARKED = 11  # an Unmark or UntrackSock cleared a mark that was set
    UNRECORDED = 12  # a duration's clock could not be recorded (the map refused it)
    COUNT = 13


class MarkOp(enum.IntEnum):
    """What a selector's mark action does (S<s>_A<a>_OP)."""

    NONE = 0
    SET = 1  # Mark, TrackSock
    CLEAR = 2  # Unmark, UntrackSock


class Corr(enum.IntEnum):
    """Entries the programs added to and deleted from the shared correlation maps
    (exec.bpf.c's weir_corr_stats): with the entries present, LRU evictions."""

    MARKS_ADDED = 0
    MARKS_DELETED = 1
    CLOCKS_ADDED = 2
    CLOCKS_DELETED = 3
    COUNT = 4


MARK_ID_BITS = 60  # a mark's id; the top 4 bits of a matchMarks VAL hold its key's index
# Where a mark's or clock's key is in the program's sc->raw: an arg's slot (0-7), or these.
KEY_THREAD = 8
KEY_PROCESS = 9
# ARGn_LEN_ARG of a char_buf read on return with no sizeArgIndex: the return value.
LEN_RETURN = 8


class Clock(enum.IntEnum):
    """What a duration's start is recorded and looked up by (AGGn_DUR, MKn_KEY)."""

    NONE = 0
    THREAD = 1  # the current thread id
    PROCESS = 2  # the current process id (tgid)
    ARG = 3  # an integer argument's value (the slot in AGGn_DARG, MKn_ARG)
    # cpu_time (AGGn_DUR only): the current thread's CPU time since the rule last saw it
    CPU = 4


class Deref(enum.IntEnum):
    """How an argument's value is reached from what the function was passed (ARGn_DEREF,
    with ARGn_OFF a member's offset): as passed, the member's address, or the member's
    (pointer or 64-bit) value."""

    NONE = 0
    ADDRESS = 1  # raw + OFF: a member stored in the struct (module's name)
    LOAD = 2  # *(u64 *)(raw + OFF): a member pointer (linux_binprm's file), or the value


class RateScope(enum.IntEnum):
    """rateLimitScope, in bits 60-61 of Ss_RATE_NS (the window is far below 2^60 ns)."""

    PROCESS = 0
    THREAD = 1
    GLOBAL = 2


RATE_SCOPE_SHIFT = 60


class ValueKind(enum.IntEnum):
    COUNT = 1
    SUM = 2
    HIST_EXP2 = 3
    HIST_EXPLICIT = 4


class AddressClass(enum.IntEnum):
    NONE = 0
    LOOPBACK = 1
    PRIVATE = 2
    LINK_LOCAL = 3
    MULTICAST = 4
    PUBLIC = 5


ADDRESS_CLASS_NETWORKS: dict[AddressClass, tuple[str, ...]] = {
    AddressClass.LOOPBACK: ("127.0.0.0/8", "::1/128"),
    AddressClass.PRIVATE: (
        "10.0.0.0/8",
        "172.16.0.0/12",
        "192.168.0.0/16",
        "100.64.0.0/10",
        "fc00::/7",
    ),
    AddressClass.LINK_LOCAL: ("169.254.0.0/16", "fe80::/10"),
    AddressClass.MULTICAST: ("224.0.0.0/4", "ff00::/8"),
}


def enum_flags() -> dict[str, int | str]:
    """Every enumeration as the C code names it (e.g. OP_GT, STAT_OBSERVED)."""
    flags: dict[str, int | str] = {}
    prefixes: list[tuple[str, type[enum.IntEnum]]] = [
        ("KIND", Kind),
        ("SRC", Source),
        ("OP", Op),
        ("ACTION", Action),
        ("STAT", Stat),
        ("VAL", ValueKind),
        ("ACLASS", AddressClass),
        ("CLOCK", Clock),
        ("DEREF", Deref),
        ("RATE", RateScope),
        ("MARK", MarkOp),
        ("CORR", Corr),
    ]
    for prefix, members in prefixes:
        for member in members:
            flags[f"{prefix}_{member.name}"] = int(member)
    flags["WEIR_MAX_STR"] = MAX_STR
    flags["UPID_SIZE"] = UPID_SIZE
    flags["STACK_NOT_TAKEN"] = STACK_NOT_TAKEN
    flags["DURATION_STARTS"] = limits.DURATION_STARTS
    flags["MARKS"] = limits.MARKS
    flags["CGROUPS"] = limits.CGROUPS
    flags["KEY_THREAD"] = KEY_THREAD
    flags["LEN_RETURN"] = LEN_RETURN
    flags["RATE_SCOPE_SHIFT"] = RATE_SCOPE_SHIFT
    flags["KEY_PROCESS"] = KEY_PROCESS
    flags["MARK_ID_MASK"] = f"{(1 << MARK_ID_BITS) - 1:#x}ULL"
    return flags


def fnv1a64(data: bytes) -> int:
    """FNV-1a 64 of an executable path, as exec.bpf.c computes it."""
    value = 0xCBF29CE484222325
    for byte in data[: MAX_STR - 1]:
        value ^= byte
        value = (value * 0x100000001B3) & 0xFFFFFFFFFFFFFFFF
    return value


def mapped16(network: ipaddress.IPv4Network | ipaddress.IPv6Network) -> tuple[bytes, int]:
    """An address network as the 16 bytes and prefix length the kernel compares
    (IPv4 becomes IPv4-mapped IPv6)."""
    if network.version == 4:
        return b"\x00" * 10 + b"\xff\xff" + network.network_address.packed, 96 + network.prefixlen
    return network.network_address.packed, network.prefixlen


def address_from16(data: bytes) -> str:
    """The text form of a 16-byte address as read by the kernel."""
    address = ipaddress.IPv6Address(bytes(data))
    mapped = address.ipv4_mapped
    return str(mapped) if mapped is not None else str(address)


class BuildIdFrame(ctypes.Structure):
    """``struct bpf_stack_build_id``: a user frame as (build id, file offset), or its ip."""

    _fields_ = [
        ("status", ctypes.c_int32),
        ("build_id", ctypes.c_uint8 * 20),
        ("offset", ctypes.c_uint64),
    ]


def event_type(flags: Mapping[str, int | str]) -> type[ctypes.Structure]:
    """``struct weir_event`` of weir.h for a program with these flags (EV_STRS, EV_ADDRS,
    EV_USTACK, EV_KSTACK; a missing one is 0).

    bcc cannot derive a ctypes type for the event's two-dimensional ``char str[][]``, so
    the layout is spelled here; ``ringbuf`` checks every record's size against it, so a
    drift between this and weir.h fails loudly on the first event, never decodes garbage."""
    strings, addresses = int(flags.get("EV_STRS", 0)), int(flags.get("EV_ADDRS", 0))
    user_frames, kernel_frames = int(flags.get("EV_USTACK", 0)), int(flags.get("EV_KSTACK", 0))

    class Addr(ctypes.Structure):
        _fields_ = [
            ("family", ctypes.c_uint16),
            ("sport", ctypes.c_uint16),
            ("dport", ctypes.c_uint16),
            ("valid", ctypes.c_uint16),
            ("protocol", ctypes.c_uint16),
            ("state", ctypes.c_uint16),
            ("pad", ctypes.c_uint32),
            ("saddr", ctypes.c_uint8 * 16),
            ("daddr", ctypes.c_uint8 * 16),
        ]

    fields: list[tuple[str, Any]] = [
        ("time_ns", ctypes.c_uint64),
        ("cgroup", ctypes.c_uint64),
        ("exe_hash", ctypes.c_uint64),
        ("pid", ctypes.c_uint32),
        ("tid", ctypes.c_uint32),
        ("selector", ctypes.c_uint32),
        ("user_stack", ctypes.c_int32),
        ("kernel_stack", ctypes.c_int32),
        ("pad", ctypes.c_uint32),
        ("comm", ctypes.c_char * 16),
        ("ints", ctypes.c_uint64 * MAX_ARGS),
    ]
    if strings:
        fields.append(("str", (ctypes.c_char * MAX_STR) * strings))
    if addresses:
        fields.append(("addr", Addr * addresses))
    if user_frames:
        fields.append(("ustack", BuildIdFrame * user_frames))
    if kernel_frames:
        fields.append(("kstack", ctypes.c_uint64 * kernel_frames))
    return type("WeirEvent", (ctypes.Structure,), {"_fields_": fields})
