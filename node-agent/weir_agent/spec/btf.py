"""Kernel struct layouts from BTF (/sys/kernel/btf/vmlinux). Pure, apart from ``read``.

Programs that read kernel structs (sock, skb, file, path and fd arguments; the
task's pids, namespaces and capabilities) get the offsets of the fields they
read as integer -D flags, taken from the running kernel's own type
information, never from headers that may belong to another kernel. The
format is the kernel's (Documentation/bpf/btf.rst): a header, then type
records of kind-dependent size (ids count from 1), then a string section.
"""

from __future__ import annotations

import dataclasses
import functools
import struct
from collections.abc import Mapping
from pathlib import Path

VMLINUX = Path("/sys/kernel/btf/vmlinux")
MAGIC = 0xEB9F
INT, PTR, ARRAY, ENUM, FUNC, FUNC_PROTO, ENUM64 = 1, 2, 3, 6, 12, 13, 19
STRUCT, UNION = 4, 5
TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG = 8, 9, 10, 11, 18
# Bytes after the 12-byte btf_type header: fixed, and per vlen item.
_EXTRA = {1: (4, 0), 3: (12, 0), 4: (0, 12), 5: (0, 12), 6: (0, 8), 13: (0, 8), 14: (4, 0),
          15: (0, 12), 17: (4, 0), 19: (0, 12)}  # fmt: skip

# What read_sock in bpf/hook.bpf.c reads: flag name -> (struct, field path).
SOCK_FIELDS = {
    "SK_FAMILY": ("sock", "__sk_common.skc_family"),
    "SK_DPORT": ("sock", "__sk_common.skc_dport"),
    "SK_NUM": ("sock", "__sk_common.skc_num"),
    "SK_DADDR": ("sock", "__sk_common.skc_daddr"),
    "SK_RCV_SADDR": ("sock", "__sk_common.skc_rcv_saddr"),
    "SK_V6_DADDR": ("sock", "__sk_common.skc_v6_daddr"),
    "SK_V6_RCV_SADDR": ("sock", "__sk_common.skc_v6_rcv_saddr"),
    "SK_STATE": ("sock", "__sk_common.skc_state"),
    "SK_PROTOCOL": ("sock", "sk_protocol"),
}
# What read_path and fd_file read (file, path and fd arguments).
PATH_FIELDS = {
    "FILE_F_PATH": ("file", "f_path"),
    "PATH_MNT": ("path", "mnt"),
    "PATH_DENTRY": ("path", "dentry"),
    "DENTRY_PARENT": ("dentry", "d_parent"),
    "DENTRY_NAME_LEN": ("dentry", "d_name.len"),
    "DENTRY_NAME": ("dentry", "d_name.name"),
    "MOUNT_MNT": ("mount", "mnt"),
    "MOUNT_PARENT": ("mount", "mnt_parent"),
    "MOUNT_MOUNTPOINT": ("mount", "mnt_mountpoint"),
    "VFSMOUNT_ROOT": ("vfsmount", "mnt_root"),
    "TASK_FILES": ("task_struct", "files"),
    "FILES_FDT": ("files_struct", "fdt"),
    "FDT_MAX_FDS": ("fdtable", "max_fds"),
    "FDT_FD": ("fdtable", "fd"),
    "FILE_F_INODE": ("file", "f_inode"),
    "DENTRY_D_INODE": ("dentry", "d_inode"),
    "INODE_I_MODE": ("inode", "i_mode"),
}
# What read_skb reads (skb arguments).
SKB_FIELDS = {
    "SKB_HEAD": ("sk_buff", "head"),
    "SKB_NETWORK_HEADER": ("sk_buff", "network_header"),
    "SKB_TRANSPORT_HEADER": ("sk_buff", "transport_header"),
}
# What read_task reads (matchPIDs, matchNamespaces, matchCapabilities).
TASK_FIELDS = {
    "TASK_TGID": ("task_struct", "tgid"),
    "TASK_PID": ("task_struct", "pid"),
    "TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "TASK_THREAD_PID": ("task_struct", "thread_pid"),
    "TASK_NSPROXY": ("task_struct", "nsproxy"),
    "TASK_CRED": ("task_struct", "cred"),
    "PID_LEVEL": ("pid", "level"),
    "PID_NUMBERS": ("pid", "numbers"),
    "UPID_NS": ("upid", "ns"),
    "NSPROXY_UTS": ("nsproxy", "uts_ns"),
    "NSPROXY_IPC": ("nsproxy", "ipc_ns"),
    "NSPROXY_MNT": ("nsproxy", "mnt_ns"),
    "NSPROXY_PID_FOR_CHILDREN": ("nsproxy", "pid_ns_for_children"),
    "NSPROXY_NET": ("nsproxy", "net_ns"),
    "NSPROXY_TIME": ("nsproxy", "time_ns"),
    "NSPROXY_TIME_FOR_CHILDREN": ("nsproxy", "time_ns_for_children"),
    "NSPROXY_CGROUP": ("nsproxy", "cgroup_ns"),
    "UTS_INUM": ("uts_namespace", "ns.inum"),
    "IPC_INUM": ("ipc_namespace", "ns.inum"),
    "MNT_INUM": ("mnt_namespace", "ns.inum"),
    "PIDNS_INUM": ("pid_namespace", "ns.inum"),
    "NET_INUM": ("net", "ns.inum"),
    "TIME_INUM": ("time_namespace", "ns.inum"),
    "CGROUP_INUM": ("cgroup_namespace", "ns.inum"),
    "USERNS_INUM": ("user_namespace", "ns.inum"),
    "CRED_USER_NS": ("cred", "user_ns"),
    "CRED_CAP_EFFECTIVE": ("cred", "cap_effective"),
    "CRED_CAP_INHERITABLE": ("cred", "cap_inheritable"),
    "CRED_CAP_PERMITTED": ("cred", "cap_permitted"),
}
# What cpu_time reads of the current task (its CPU time, birth and state).
CPU_FIELDS = {
    "TASK_SUM_EXEC_RUNTIME": ("task_struct", "se.sum_exec_runtime"),
    "TASK_START_TIME": ("task_struct", "start_time"),
    "TASK_STATE": ("task_struct", "__state"),
}
# Struct args read as one value (Tetragon's linux_binprm, module and load_info types).
BINPRM_FIELDS = {"BPRM_FILE": ("linux_binprm", "file")}
MODULE_FIELDS = {"MODULE_NAME": ("module", "name")}
LOAD_INFO_FIELDS = {"LOAD_INFO_NAME": ("load_info", "name")}
BPF_ATTR_FIELDS = {"BPF_ATTR_PROG_NAME": ("bpf_attr", "prog_name")}
BPF_MAP_FIELDS = {"BPF_MAP_NAME": ("bpf_map", "name")}
PERF_EVENT_FIELDS = {"PERF_EVENT_KPROBE_FUNC": ("perf_event", "attr.kprobe_func")}
CRED_ARG_FIELDS = {"CRED_ARG_EUID": ("cred", "euid.val")}
USERNS_ARG_FIELDS = {"USERNS_ARG_INUM": ("user_namespace", "ns.inum")}
# Each group is compiled into a program only when it reads what the group describes.
GROUPS = {
    "sock": SOCK_FIELDS,
    "path": PATH_FIELDS,
    "skb": SKB_FIELDS,
    "task": TASK_FIELDS,
    "cpu": CPU_FIELDS,
    "binprm": BINPRM_FIELDS,
    "module": MODULE_FIELDS,
    "load_info": LOAD_INFO_FIELDS,
    "bpf_attr": BPF_ATTR_FIELDS,
    "bpf_map": BPF_MAP_FIELDS,
    "perf_event": PERF_EVENT_FIELDS,
    "cred": CRED_ARG_FIELDS,
    "user_namespace": USERNS_ARG_FIELDS,
}
ALL_FIELDS = {name: where for fields in GROUPS.values() for name, where in fields.items()}
# A flag's offset, or why the running kernel's BTF does not give it.
Layout = dict[str, int | str]


class BTFError(ValueError):
    pass


@dataclasses.dataclass(frozen=True)
class Member:
    name: str  # "" for an anonymous struct or union
    type: int
    bit_offset: int


@dataclasses.dataclass(frozen=True)
class Type:
    kind: int
    name: str
    ref: int  # the referenced type (typedef, const, pointer, array element, ...) or 0
    members: tuple[Member, ...] = ()  # a struct's or union's; a prototype's parameters
    size: int = 0  # an integer's or enum's bytes; an array's element count


@dataclasses.dataclass(frozen=True)
class Resolved:
    """How a resolve path reaches its field from the argument's value: steps of (byte
    offset, load), each ``value = *(u64 *)(value + offset)`` when load, else ``value +
    offset``; and the field's own type, for how to read it."""

    steps: tuple[tuple[int, bool], ...]
    field: Type


MAX_RESOLVE_STEPS = 6


class Types:
    """The struct, union and modifier types of one BTF blob, by id and by name."""

    def __init__(self, data: bytes) -> None:
        if len(data) < 24:
            raise BTFError("too short for a BTF header")
        magic, _version, _flags, hdr_len = struct.unpack_from("<HBBI", data)
        if magic != MAGIC:
            raise BTFError(f"bad magic {magic:#x} (big-endian BTF is not supported)")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        strings = data[hdr_len + str_off : hdr_len + str_off + str_len]

        self._data, self._strings = data, strings
        # One pass over the records finds each kept type's place and the names weir looks
        # up; a type itself (its members) is decoded when it is first asked for.
        self._records: dict[int, int] = {}  # type id -> offset of its record
        self._built: dict[int, Type] = {}
        self.structs: dict[str, int] = {}
        self.functions: dict[str, int] = {}  # FUNC name -> its prototype's id
        self.typedefs: dict[str, int] = {}
        self.pointers: dict[int, int] = {}  # type id -> the first pointer type to it
        pos, end, type_id = hdr_len + type_off, hdr_len + type_off + type_len, 1
        keep = {STRUCT, UNION, TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG, INT, PTR, ENUM}
        keep |= {ARRAY, FUNC, FUNC_PROTO, ENUM64}
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, size_or_type = unpack("<III", data, pos)
            kind, vlen = (info >> 24) & 0x1F, info & 0xFFFF
            if kind in keep:
                self._records[type_id] = pos
                if kind == PTR:
                    self.pointers.setdefault(size_or_type, type_id)
                elif name_off and kind in (STRUCT, UNION):  # a struct, or a named union
                    self.structs.setdefault(self._string(name_off), type_id)
                elif name_off and kind == FUNC:
                    self.functions.setdefault(self._string(name_off), size_or_type)
                elif name_off and kind == TYPEDEF:
                    self.typedefs.setdefault(self._string(name_off), type_id)
            fixed, per_item = _EXTRA.get(kind, (0, 0))
            pos += 12 + fixed + per_item * vlen
            type_id += 1

    def _string(self, offset: int) -> str:
        end = self._strings.index(b"\0", offset)
        return self._strings[offset:end].decode()

    def get(self, type_id: int) -> Type | None:
        """The type of this id (None: void, or a kind weir does not keep)."""
        found = self._built.get(type_id)
        if found is not None or type_id not in self._records:
            return found
        data, pos = self._data, self._records[type_id]
        name_off, info, size_or_type = struct.unpack_from("<III", data, pos)
        kind, vlen, kflag = (info >> 24) & 0x1F, info & 0xFFFF, info >> 31
        body = pos + 12
        members: tuple[Member, ...] = ()
        size = 0
        if kind in (STRUCT, UNION):
            items = []
            for i in range(vlen):
                m_name, m_type, m_offset = struct.unpack_from("<III", data, body + 12 * i)
                bits = m_offset & 0xFFFFFF if kflag else m_offset
                items.append(Member(self._string(m_name), m_type, bits))
            members = tuple(items)
        elif kind == FUNC_PROTO:
            members = tuple(
                Member("", struct.unpack_from("<II", data, body + 8 * i)[1], 0) for i in range(vlen)
            )
        elif kind == ARRAY:
            element, _index, count = struct.unpack_from("<III", data, body)
            size_or_type, size = element, count
        elif kind in (INT, ENUM, ENUM64):
            size, size_or_type = size_or_type, 0
        ref = 0 if kind in (STRUCT, UNION) else size_or_type
        found = Type(kind, self._string(name_off) if name_off else "", ref, members, size)
        self._built[type_id] = found
        return found

    def _resolve(self, type_id: int) -> Type | None:
        """Through typedefs and qualifiers to the struct or union, if it is one."""
        found = self.bare(type_id)
        return found if found is not None and found.kind in (STRUCT, UNION) else None

    def bare(self, type_id: int) -> Type | None:
        """The type without its typedefs and qualifiers (None: void, or not kept)."""
        for _ in range(32):
            found = self.get(type_id)
            if found is None or found.kind not in {TYPEDEF, VOLATILE, CONST, RESTRICT, TYPE_TAG}:
                return found
            type_id = found.ref
        return None

    def parameter(self, function: str, index: int) -> int:
        """The type id of a kernel function's parameter; raises BTFError."""
        proto = self.bare(self.functions.get(function, 0))
        if proto is None or proto.kind != FUNC_PROTO:
            raise BTFError(f"no function {function} in the kernel's BTF")
        if index >= len(proto.members):
            raise BTFError(f"{function} takes {len(proto.members)} arguments, not {index + 1}")
        return proto.members[index].type

    def tracepoint_argument(self, event: str, index: int) -> int:
        """The type id of a raw tracepoint's argument (its btf_trace_EVENT typedef: a
        pointer to a prototype whose first parameter is the context); raises BTFError."""
        pointer = self.bare(self.typedefs.get(f"btf_trace_{event}", 0))
        proto = self.bare(pointer.ref) if pointer is not None and pointer.kind == PTR else None
        if proto is None or proto.kind != FUNC_PROTO:
            raise BTFError(f"no raw tracepoint {event} in the kernel's BTF")
        if index + 1 >= len(proto.members):
            raise BTFError(f"{event} has {len(proto.members) - 1} arguments, not {index + 1}")
        return proto.members[index + 1].type

    def pointer_to(self, struct_name: str) -> int:
        """A pointer type to a named struct or union (btfType); raises BTFError."""
        target = self.structs.get(struct_name)
        if target is None:
            raise BTFError(f"no struct {struct_name} in the kernel's BTF")
        pointer = self.pointers.get(target)
        if pointer is None:
            raise BTFError(f"no pointer to struct {struct_name} in the kernel's BTF")
        return pointer

    def resolve(self, type_id: int, path: str) -> Resolved:
        """Follow a dotted field path from an argument of type ``type_id`` (a pointer to a
        struct, or to a pointer to one), through embedded structs and pointers, to its
        last field; raises BTFError naming the step that fails."""
        steps: list[tuple[int, bool]] = []
        current = self._pointee(type_id, steps, "the argument")
        offset = 0
        parts = path.split(".")
        last: Type | None = None
        for number, part in enumerate(parts):
            found = self._find(current, part)
            if found is None:
                raise BTFError(f"{self._name(current)} has no field {part!r}")
            bits, member = found
            if bits % 8:
                raise BTFError(f"{part!r} is a bit field")
            offset += bits // 8
            field = self.bare(member)
            if number == len(parts) - 1:
                last = field
                steps.append((offset, False))  # the address of the last field
                break
            if field is not None and field.kind in (STRUCT, UNION):
                current = member  # embedded: the same object, further in
                continue
            steps.append((offset, True))
            offset = 0
            current = self._pointee(member, steps, repr(part))
        if last is None:
            raise BTFError(f"{path!r} ends in a field of no type weir can read")
        merged = _merge(steps)
        if len(merged) > MAX_RESOLVE_STEPS:
            raise BTFError(f"{path!r} takes {len(merged)} steps; at most {MAX_RESOLVE_STEPS}")
        return Resolved(tuple(merged), last)

    def _pointee(self, type_id: int, steps: list[tuple[int, bool]], what: str) -> int:
        """The struct a pointer (to a pointer ...) leads to, adding a load per extra
        level (the first is the value in hand: the argument, or a member just loaded)."""
        found = self.bare(type_id)
        if found is None or found.kind != PTR:
            raise BTFError(f"{what} is not a pointer to a struct")
        target = found.ref
        for _ in range(4):
            inner = self.bare(target)
            if inner is not None and inner.kind in (STRUCT, UNION):
                return target
            if inner is None or inner.kind != PTR:
                break
            steps.append((0, True))
            target = inner.ref
        raise BTFError(f"{what} is not a pointer to a struct")

    def _name(self, type_id: int) -> str:
        found = self._resolve(type_id)
        kind = "union" if found is not None and found.kind == UNION else "struct"
        return f"{kind} {found.name}" if found is not None and found.name else "the struct"

    def _find(self, type_id: int, field: str) -> tuple[int, int] | None:
        """(bit offset, member type) of ``field``, looking into anonymous members too."""
        found = self._resolve(type_id)
        if found is None:
            return None
        for member in found.members:
            if member.name == field:
                return member.bit_offset, member.type
            if not member.name:
                inner = self._find(member.type, field)
                if inner is not None:
                    return member.bit_offset + inner[0], inner[1]
        return None

    def offset(self, struct_name: str, path: str) -> int:
        """Byte offset of a dotted field path in a struct; raises BTFError."""
        if struct_name not in self.structs:
            raise BTFError(f"no struct {struct_name} in the kernel's BTF")
        type_id, bits = self.structs[struct_name], 0
        for field in path.split("."):
            found = self._find(type_id, field)
            if found is None:
                raise BTFError(f"struct {struct_name} has no field {path} in the kernel's BTF")
            bits, type_id = bits + found[0], found[1]
        if bits % 8:
            raise BTFError(f"{struct_name}.{path} is a bit field")
        return bits // 8


def _merge(steps: list[tuple[int, bool]]) -> list[tuple[int, bool]]:
    """Address steps folded into the next step's offset (value + a + b = value + (a+b))."""
    out: list[tuple[int, bool]] = []
    pending = 0
    for offset, load in steps:
        if load:
            out.append((pending + offset, True))
            pending = 0
        else:
            pending += offset
    if pending or not out or not out[-1][1]:
        out.append((pending, False))
    return out


def offsets(data: bytes, fields: Mapping[str, tuple[str, str]] = SOCK_FIELDS) -> dict[str, int]:
    """Flag name -> byte offset, for each (struct, field path) of ``fields``."""
    types = Types(data)
    return {flag: types.offset(name, path) for flag, (name, path) in fields.items()}


def layout(data: bytes) -> Layout:
    """Every flag of ALL_FIELDS: its offset, or why this BTF does not have it (a field
    another kernel version lacks fails only the programs that read it)."""
    return _layout(Types(data))


def _layout(types: Types) -> Layout:
    found: Layout = {}
    for flag, (name, path) in ALL_FIELDS.items():
        try:
            found[flag] = types.offset(name, path)
        except BTFError as error:
            found[flag] = str(error)
    return found


def zero_layout() -> Layout:
    """Offsets for checking a policy without compiling it (nothing is read)."""
    return dict.fromkeys(ALL_FIELDS, 0)


def kernel_types(path: Path = VMLINUX) -> Types | None:
    """The running kernel's types, for resolve paths (None without BTF); read once."""
    return _types_at(path)


@functools.cache
def _types_at(path: Path) -> Types | None:
    try:
        return Types(path.read_bytes())
    except (OSError, BTFError):
        return None


def kernel_layout(path: Path = VMLINUX) -> Layout:
    """The running kernel's offsets of what weir's programs read, or why each is unknown."""
    return _layout_at(path)


@functools.cache
def _layout_at(path: Path) -> Layout:
    try:
        types = kernel_types(path)
        return _layout(types) if types is not None else layout(path.read_bytes())
    except OSError as error:
        reason = f"cannot read {path} ({error.strerror}); this needs a kernel with BTF"
    except BTFError as error:
        reason = f"{path}: {error}"
    return dict.fromkeys(ALL_FIELDS, reason)
