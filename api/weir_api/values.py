"""Parsing of matchArgs / matchBinaries values, from the strings users write.

Values in a policy are strings (as in Tetragon). Before anything reaches the
kernel each is parsed here into a plain integer, an (inclusive) integer range,
an IP network or a byte string, and checked against the argument's type. The
code generator and the map seeder use these same functions, so what the
validator accepted is exactly what the kernel gets. A ``ValueError`` message
says what was expected, with an example.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re

from weir_api import limits
from weir_api.syscalls import TABLES

# Integer argument types: name → (bits, signed).
INTEGER_TYPES: dict[str, tuple[int, bool]] = {
    "int": (32, True),
    "uint": (32, False),
    "int8": (8, True),
    "uint8": (8, False),
    "int16": (16, True),
    "uint16": (16, False),
    "int32": (32, True),
    "uint32": (32, False),
    "int64": (64, True),
    "uint64": (64, False),
    "long": (64, True),
    "ulong": (64, False),
    "size_t": (64, False),
    # Tetragon's capability types: a capability's number; a capability set (kernel_cap_t,
    # and the cap_* names of a cred's sets), read through the pointer the function takes.
    "capability": (32, True),
    "kernel_cap_t": (64, False),
    "cap_inheritable": (64, False),
    "cap_permitted": (64, False),
    "cap_effective": (64, False),
    # Tetragon's syscall64: a syscall's number (raw_syscalls' id), matched against a list.
    "syscall64": (64, False),
    # Kernel structs read as one number: a struct cred * as its effective uid, a struct
    # user_namespace * as the namespace's inode number.
    "cred": (32, False),
    "user_namespace": (32, False),
}
# Integer types whose kprobe or uprobe argument points to the value.
CAP_SET_TYPES = frozenset({"kernel_cap_t", "cap_inheritable", "cap_permitted", "cap_effective"})
# Strings: ``string`` is a kernel char *, ``filename`` a path passed from user
# space (a syscall's ``const char __user *``), ``char_buf`` a user buffer whose
# length is another argument (``sizeArgIndex``).
# ``file`` (a ``struct file *``), ``path`` (a ``struct path *``) and ``fd`` (a descriptor
# of the current task) are read as the file's path: strings too.
FILE_TYPES = frozenset({"file", "path", "fd"})
# Kernel structs read as one string, as Tetragon reads them: a ``struct linux_binprm *``
# as the path of the file being executed, a ``struct module *`` (``module`` or
# ``kernel_module``) and a ``struct load_info *`` as the module's name; a ``union
# bpf_attr *`` as the loaded program's name, a ``struct bpf_map *`` as the map's, a
# ``struct perf_event *`` as the function a kprobe event names (``kprobe_func``).
STRUCT_STRING_TYPES = frozenset(
    {"linux_binprm", "module", "kernel_module", "load_info", "bpf_attr", "bpf_map", "perf_event"}
) | frozenset({"bpf_prog", "net_device"})
# Kernel structs weir reads through a resolve path of its own (the kernel's BTF finds the
# field): the type -> (path, what the field is read as). A struct socket * is its sock; a
# struct bpf_prog * the program's name; a struct net_device * the device's name.
IMPLICIT_RESOLVE = {
    "socket": ("sk", "sock"),
    "bpf_prog": ("aux.name", "string"),
    "net_device": ("name", "string"),
}
STRING_TYPES = frozenset({"string", "filename", "char_buf"}) | FILE_TYPES | STRUCT_STRING_TYPES
# Addresses read from a ``struct sock *``, a ``struct sockaddr *`` or the headers of a
# ``struct sk_buff *``.
ADDRESS_TYPES = frozenset({"sock", "sockaddr", "skb", "socket"})
# What a mark or a duration's clock may be keyed by (arg:LABEL): an integer's value, the
# address of the kernel object a sock, skb, file or path arg points to, or an fd's number.
KEY_TYPES = frozenset(INTEGER_TYPES) | frozenset({"sock", "skb", "file", "path", "fd"})
# ``nop`` reads nothing: a placeholder that keeps Tetragon's argument positions.
NOP_TYPES = frozenset({"nop"})
ARG_TYPES = (
    tuple(INTEGER_TYPES)
    + tuple(sorted(STRING_TYPES))
    + tuple(sorted(ADDRESS_TYPES))
    + tuple(NOP_TYPES)
)

# Tetragon's other names for the same operators (InMap is Equal over a set of values).
ALIASES = {
    "GreaterThan": "GT",
    "LessThan": "LT",
    "InMap": "Equal",
    "NotInMap": "NotEqual",
    "NotFamily": "Family",  # negated (NEGATED_OPERATORS)
    "NotProtocol": "Protocol",
}
INTEGER_OPERATORS = frozenset(
    {"Equal", "NotEqual", "GT", "LT", "Mask", "InRange", "NotInRange"}
    | {"GreaterThan", "LessThan", "InMap", "NotInMap"}
)
STRING_OPERATORS = frozenset(
    {"Equal", "NotEqual", "Prefix", "NotPrefix", "Postfix", "NotPostfix", "InMap", "NotInMap"}
    | {"SubString", "SubStringIgnCase"}
)
# SubStringIgnCase compares ASCII letters without case (values are folded to lower case).
SUBSTRING_OPERATORS = frozenset({"SubString", "SubStringIgnCase"})
ADDRESS_OPERATORS = frozenset({"DAddr", "NotDAddr", "SAddr", "NotSAddr"})
# SPortPriv / DPortPriv: a privileged port (0-1023); they take no values.
PRIVILEGED_PORT_OPERATORS = frozenset({"SPortPriv", "NotSPortPriv", "DPortPriv", "NotDPortPriv"})
PORT_OPERATORS = frozenset({"DPort", "NotDPort", "SPort", "NotSPort"}) | PRIVILEGED_PORT_OPERATORS
# What a socket or packet is, beyond its addresses: names or numbers.
SOCKET_OPERATORS = frozenset({"Family", "NotFamily", "Protocol", "NotProtocol", "State"})
# What kind of file a file, path or fd arg is (Tetragon's FileType): the inode's S_IFMT
# nibble (i_mode >> 12), by Tetragon's names.
FILE_TYPE_OPERATORS = frozenset({"FileType", "NotFileType"})
FILE_TYPE_NAMES = {
    "FIFO": 1, "PIPE": 1, "CHR": 2, "CHAR": 2, "DIR": 4, "BLK": 6, "BLOCK": 6,
    "REG": 8, "REGULAR": 8, "LNK": 10, "LINK": 10, "SOCK": 12, "SOCKET": 12,
}  # fmt: skip
SINGLE_VALUE_OPERATORS = frozenset({"GT", "LT", "Mask", "GreaterThan", "LessThan"})
NEGATED_OPERATORS = frozenset(
    {"NotEqual", "NotPrefix", "NotPostfix", "NotDAddr", "NotSAddr", "NotDPort", "NotSPort"}
    | {"NotInRange", "NotInMap", "NotSPortPriv", "NotDPortPriv", "NotFileType"}
    | {"NotFamily", "NotProtocol"}
)
# Which socket operators each address type can answer.
SOCKET_OPERATORS_FOR = {
    "sock": SOCKET_OPERATORS,
    "socket": SOCKET_OPERATORS,  # read as its sock
    "skb": frozenset({"Family", "NotFamily", "Protocol", "NotProtocol"}),
    "sockaddr": frozenset({"Family", "NotFamily"}),
}

# Values the socket operators take by name (or as numbers).
FAMILIES = {"AF_UNSPEC": 0, "AF_UNIX": 1, "AF_LOCAL": 1, "AF_INET": 2, "AF_INET6": 10,
            "AF_NETLINK": 16, "AF_PACKET": 17, "AF_VSOCK": 40, "AF_XDP": 44}  # fmt: skip
PROTOCOLS = {"IPPROTO_IP": 0, "IPPROTO_ICMP": 1, "IPPROTO_IGMP": 2, "IPPROTO_TCP": 6,
             "IPPROTO_UDP": 17, "IPPROTO_IPV6": 41, "IPPROTO_GRE": 47, "IPPROTO_ESP": 50,
             "IPPROTO_ICMPV6": 58, "IPPROTO_SCTP": 132, "IPPROTO_UDPLITE": 136,
             "IPPROTO_RAW": 255, "IPPROTO_MPTCP": 262}  # fmt: skip
_STATE_NAMES = """TCP_ESTABLISHED TCP_SYN_SENT TCP_SYN_RECV TCP_FIN_WAIT1 TCP_FIN_WAIT2
TCP_TIME_WAIT TCP_CLOSE TCP_CLOSE_WAIT TCP_LAST_ACK TCP_LISTEN TCP_CLOSING TCP_NEW_SYN_RECV"""
SOCK_STATES = {name: number for number, name in enumerate(_STATE_NAMES.split(), start=1)}
SOCKET_NAMES = {"Family": FAMILIES, "Protocol": PROTOCOLS, "State": SOCK_STATES}
# linux/capability.h, for matchCapabilities.
_CAPABILITY_NAMES = """CAP_CHOWN CAP_DAC_OVERRIDE CAP_DAC_READ_SEARCH CAP_FOWNER CAP_FSETID
CAP_KILL CAP_SETGID CAP_SETUID CAP_SETPCAP CAP_LINUX_IMMUTABLE CAP_NET_BIND_SERVICE
CAP_NET_BROADCAST CAP_NET_ADMIN CAP_NET_RAW CAP_IPC_LOCK CAP_IPC_OWNER CAP_SYS_MODULE
CAP_SYS_RAWIO CAP_SYS_CHROOT CAP_SYS_PTRACE CAP_SYS_PACCT CAP_SYS_ADMIN CAP_SYS_BOOT
CAP_SYS_NICE CAP_SYS_RESOURCE CAP_SYS_TIME CAP_SYS_TTY_CONFIG CAP_MKNOD CAP_LEASE
CAP_AUDIT_WRITE CAP_AUDIT_CONTROL CAP_SETFCAP CAP_MAC_OVERRIDE CAP_MAC_ADMIN CAP_SYSLOG
CAP_WAKE_ALARM CAP_BLOCK_SUSPEND CAP_AUDIT_READ CAP_PERFMON CAP_BPF CAP_CHECKPOINT_RESTORE"""
CAPABILITIES = {name: bit for bit, name in enumerate(_CAPABILITY_NAMES.split())}


def canonical(operator: str) -> str:
    """The operator weir implements for one of Tetragon's names."""
    return ALIASES.get(operator, operator)


# Tetragon's CapabilitiesGained, on a cred argument (the credentials a task is given):
# any of the listed capabilities is in its permitted set and not in the calling task's.
CRED_OPERATORS = frozenset({"CapabilitiesGained"})


def operators_for(arg_type: str) -> frozenset[str]:
    if arg_type == "cred":
        return INTEGER_OPERATORS | CRED_OPERATORS
    if arg_type in INTEGER_TYPES:
        return INTEGER_OPERATORS
    if arg_type in FILE_TYPES:
        return STRING_OPERATORS | FILE_TYPE_OPERATORS
    if arg_type in STRING_TYPES:
        return STRING_OPERATORS
    if arg_type in ADDRESS_TYPES:
        return ADDRESS_OPERATORS | PORT_OPERATORS | SOCKET_OPERATORS_FOR[arg_type]
    return frozenset()


def parse_named(text: str, names: dict[str, int], what: str, example: str) -> int:
    """A name from ``names`` (any case) or a non-negative integer."""
    cleaned = text.strip()
    if cleaned.upper() in names:
        return names[cleaned.upper()]
    if cleaned.isdigit():
        return int(cleaned)
    raise ValueError(f"{text!r} is not {what}; write e.g. {example} or a number")


def parse_capability(text: str) -> int:
    """A capability name (CAP_SYS_ADMIN) or its number: the bit it is in a capability set."""
    cleaned = text.strip().upper()
    if not cleaned.startswith("CAP_") and "CAP_" + cleaned in CAPABILITIES:
        cleaned = "CAP_" + cleaned
    if cleaned in CAPABILITIES:
        return CAPABILITIES[cleaned]
    if cleaned.isdigit() and int(cleaned) < 64:
        return int(cleaned)
    raise ValueError(f"{text!r} is not a capability; write e.g. CAP_SYS_ADMIN (linux/capability.h)")


_INT_RE = re.compile(r"^[+-]?(0[xX][0-9a-fA-F]+|0[oO][0-7]+|0[bB][01]+|[0-9]+)$")


def parse_int(text: str, arg_type: str = "int64") -> int:
    """A decimal, 0x, 0o or 0b integer that fits ``arg_type``."""
    cleaned = text.strip().replace("_", "")
    if not _INT_RE.match(cleaned):
        raise ValueError(f"{text!r} is not an integer; write e.g. 42, -1 or 0x1f")
    value = int(cleaned, 0)
    bits, signed = INTEGER_TYPES.get(arg_type, (64, True))
    low, high = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not low <= value <= high:
        raise ValueError(f"{text!r} does not fit type {arg_type} (range {low}..{high})")
    return value


def parse_int_range(text: str, arg_type: str = "int64") -> tuple[int, int]:
    """``"LOW:HIGH"`` (inclusive), as Tetragon's InRange."""
    low_text, sep, high_text = text.partition(":")
    if not sep:
        raise ValueError(f"{text!r} is not a range; write LOW:HIGH, e.g. 1024:65535")
    low, high = parse_int(low_text, arg_type), parse_int(high_text, arg_type)
    if low > high:
        raise ValueError(f"range {text!r} is empty: {low} > {high}")
    return low, high


def parse_network(text: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An address or CIDR (IPv4 or IPv6): ``10.0.0.0/8``, ``127.0.0.1``, ``fd00::/8``."""
    try:
        return ipaddress.ip_network(text.strip(), strict=False)
    except ValueError:
        raise ValueError(
            f"{text!r} is not an IP address or CIDR; write e.g. 10.0.0.0/8 or 192.168.1.1"
        ) from None


def parse_port_range(text: str) -> tuple[int, int]:
    """A port ``443`` or an inclusive range ``8000:8080``."""
    low_text, sep, high_text = text.strip().partition(":")
    try:
        low = int(low_text, 10)
        high = int(high_text, 10) if sep else low
    except ValueError:
        raise ValueError(f"{text!r} is not a port; write e.g. 443 or 8000:8080") from None
    if not (0 <= low <= 65535 and 0 <= high <= 65535):
        raise ValueError(f"{text!r}: ports are 0..65535")
    if low > high:
        raise ValueError(f"port range {text!r} is empty: {low} > {high}")
    return low, high


def parse_string(text: str) -> bytes:
    """A string value as the kernel will compare it: UTF-8, no NUL, bounded."""
    if "\x00" in text:
        raise ValueError("contains a NUL byte, which a kernel string can never hold; remove it")
    data = text.encode("utf-8")
    if not data:
        raise ValueError("is empty; an empty string matches nothing useful, remove the value")
    if len(data) > limits.MAX_STRING:
        raise ValueError(
            f"is {len(data)} bytes; the kernel compares at most {limits.MAX_STRING} bytes"
        )
    return data


_DURATION_RE = re.compile(r"^([0-9]+)(ms|s|m|h)?$")
_DURATION_NS = {"ms": 1_000_000, "s": 1_000_000_000, "m": 60_000_000_000, "h": 3_600_000_000_000}


def parse_duration_ns(text: str) -> int:
    """``500ms``, ``10s``, ``1m``, ``1h`` → nanoseconds (at least 1 ms, at most 24 h); a
    bare number is seconds, as Tetragon reads it."""
    match = _DURATION_RE.match(text.strip())
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. 500ms, 10s, 1m or 1h")
    value = int(match.group(1)) * _DURATION_NS[match.group(2) or "s"]
    if not _DURATION_NS["ms"] <= value <= 24 * _DURATION_NS["h"]:
        raise ValueError(f"{text!r} is out of range; use between 1ms and 24h")
    return value


@dataclasses.dataclass(frozen=True)
class ParsedValues:
    """The values of one matchArgs entry, parsed for its operator."""

    integers: tuple[int, ...] = ()
    ranges: tuple[tuple[int, int], ...] = ()
    networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    strings: tuple[bytes, ...] = ()


SYSCALL_VALUE = "syscall:"  # a syscall's number, by name: what a list:NAME value becomes


def parse_syscall(text: str, arch: str | None = None) -> int:
    """``syscall:NAME`` (NAME with or without sys_): its number on ``arch`` (as
    ``uname -m`` says it), or on any architecture weir knows when ``arch`` is None."""
    name = text.removeprefix(SYSCALL_VALUE).strip().removeprefix("sys_")
    if "/" in name:
        raise ValueError(
            f"{name!r}: syscalls of another ABI (i386/...) are not supported by weir (yet); "
            "list the 64-bit syscall"
        )
    tables = [TABLES[arch]] if arch in TABLES else list(TABLES.values())
    for table in tables:
        if name in table:
            return table[name]
    where = arch if arch in TABLES else " or ".join(TABLES)
    raise ValueError(f"no syscall named {name!r} on {where}")


def parse_match_values(
    operator: str, arg_type: str, values: list[str], arch: str | None = None
) -> ParsedValues:
    """Parse every value of a matchArgs entry; raises ``ValueError`` naming the index.
    ``arch``: the architecture whose numbers a syscall's name stands for (None: any)."""
    parsed = ParsedValues()
    operator = canonical(operator)
    if operator in PRIVILEGED_PORT_OPERATORS:
        return dataclasses.replace(parsed, ranges=((0, 1023),))
    for index, text in enumerate(values):
        try:
            if operator in SOCKET_OPERATORS:
                number = parse_named(
                    text,
                    SOCKET_NAMES[operator],
                    f"a {operator.lower()}",
                    {"Family": "AF_INET", "Protocol": "IPPROTO_TCP", "State": "TCP_ESTABLISHED"}[
                        operator
                    ],
                )
                parsed = dataclasses.replace(parsed, integers=(*parsed.integers, number))
            elif operator in CRED_OPERATORS:
                parsed = dataclasses.replace(
                    parsed, integers=(*parsed.integers, parse_capability(text))
                )
            elif operator in FILE_TYPE_OPERATORS:
                number = parse_named(text, FILE_TYPE_NAMES, "a file type", "reg")
                parsed = dataclasses.replace(parsed, integers=(*parsed.integers, number))
            elif operator in ADDRESS_OPERATORS:
                parsed = dataclasses.replace(
                    parsed, networks=(*parsed.networks, parse_network(text))
                )
            elif operator in PORT_OPERATORS:
                parsed = dataclasses.replace(
                    parsed, ranges=(*parsed.ranges, parse_port_range(text))
                )
            elif operator in {"InRange", "NotInRange"}:
                parsed = dataclasses.replace(
                    parsed, ranges=(*parsed.ranges, parse_int_range(text, arg_type))
                )
            elif arg_type in STRING_TYPES:
                parsed = dataclasses.replace(parsed, strings=(*parsed.strings, parse_string(text)))
            elif text.startswith(SYSCALL_VALUE) and operator in {"Equal", "NotEqual"}:
                number = parse_syscall(text, arch)
                parsed = dataclasses.replace(parsed, integers=(*parsed.integers, number))
            elif text.startswith("list:"):
                raise ValueError(
                    f"{text!r}: spec.lists has no list of type syscalls named "
                    f"{text.removeprefix('list:')!r}; InMap and NotInMap take the syscalls of "
                    "such a list (with a syscall64 or other integer arg)"
                )
            else:
                parsed = dataclasses.replace(
                    parsed, integers=(*parsed.integers, parse_int(text, arg_type))
                )
        except ValueError as error:
            raise IndexedValueError(index, str(error)) from None
    return parsed


class IndexedValueError(ValueError):
    """A value error that knows which value (by position) caused it."""

    def __init__(self, index: int, message: str) -> None:
        super().__init__(message)
        self.index = index
