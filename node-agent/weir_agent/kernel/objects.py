"""Compiled programs as data, and their maps as tables, through bpf() alone (no bcc).

A compile (loading.py, in a child process) gives a ``Compiled``: each function's
instructions, where every map load names an index into ``maps``, and each map's
definition with its key and value types (bcc's type descriptions). It is plain JSON, so
the compile cache keeps it on disk and an agent that finds it compiles nothing.

An ``Instance`` is one program's maps made from it (or adopted from pins, or shared with
another instance by name) with its functions loaded through the verifier; ``Table``
reads and writes one map with ctypes keys and values, as bcc's tables do.
"""

from __future__ import annotations

import base64
import ctypes
import dataclasses
import functools
import json
import os
import platform
import re
import struct
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from weir_agent.kernel import bpf

# Map types whose values are one per possible CPU.
PERCPU_TYPES = frozenset({5, 6, 10})  # percpu_hash, percpu_array, lru_percpu_hash
ARRAY_TYPES = frozenset({2, 6})  # array, percpu_array: keys cannot be deleted
VERIFIER_LOG_BYTES = 1 << 20  # the kernel keeps the log's end when it is longer


@dataclasses.dataclass(frozen=True)
class MapSpec:
    """One map as the compiler declared it."""

    name: str
    type: int
    key_size: int
    value_size: int
    max_entries: int
    flags: int
    key: Any  # bcc's JSON description of the key type ([] when it has none)
    leaf: Any

    @property
    def pin_name(self) -> str:
        return self.name[:15]  # what the kernel keeps of a map's name


@dataclasses.dataclass(frozen=True)
class Compiled:
    """A compiled source: functions' instructions (map loads name ``maps`` indexes)."""

    functions: Mapping[str, bytes]
    maps: tuple[MapSpec, ...]
    license: str = "GPL"

    def to_json(self) -> str:
        return json.dumps(
            {
                "functions": {n: base64.b64encode(i).decode() for n, i in self.functions.items()},
                "maps": [dataclasses.asdict(m) for m in self.maps],
                "license": self.license,
            }
        )

    @classmethod
    def from_json(cls, text: str) -> Compiled:
        data = json.loads(text)
        return cls(
            functions={n: base64.b64decode(i) for n, i in data["functions"].items()},
            maps=tuple(MapSpec(**m) for m in data["maps"]),
            license=data["license"],
        )

    def used(self, function: str) -> list[int]:
        """The maps ``function`` loads, by index, in order of first use."""
        return list(dict.fromkeys(index for _, index in map_loads(self.functions[function])))


def map_loads(insns: bytes) -> Iterator[tuple[int, int]]:
    """(instruction index, immediate) of each ld_imm64 that loads a map by fd."""
    index = 0
    while index * 8 < len(insns):
        opcode, regs, _off, imm = struct.unpack_from("<BBhi", insns, index * 8)
        if opcode == 0x18:  # ld_imm64 takes two instructions
            if regs >> 4 == bpf.BPF_PSEUDO_MAP_FD:
                yield index, imm
            index += 2
        else:
            index += 1


def relocate(insns: bytes, fds: Mapping[int, int]) -> bytes:
    """``insns`` with each map load's immediate ``i`` replaced by ``fds[i]``."""
    out = bytearray(insns)
    for index, imm in map_loads(insns):
        struct.pack_into("<i", out, index * 8 + 4, fds[imm])
    return bytes(out)


# --- types: bcc's descriptions as ctypes -----------------------------------------------
_BASE: dict[str, Any] = {
    "_Bool": ctypes.c_bool,
    "char": ctypes.c_char,
    "signed char": ctypes.c_byte,
    "unsigned char": ctypes.c_ubyte,
    "short": ctypes.c_short,
    "unsigned short": ctypes.c_ushort,
    "int": ctypes.c_int,
    "unsigned int": ctypes.c_uint,
    "long": ctypes.c_long,
    "unsigned long": ctypes.c_ulong,
    "long long": ctypes.c_longlong,
    "unsigned long long": ctypes.c_ulonglong,
    "float": ctypes.c_float,
    "double": ctypes.c_double,
    "__int128": ctypes.c_int64 * 2,
    "unsigned __int128": ctypes.c_uint64 * 2,
}


def ctype(desc: Any) -> Any:
    """The ctypes type of one of bcc's type descriptions: a base type's name, or
    [name, fields, "struct" | "struct_packed" | "union"], each field [name, type],
    [name, type, [count]] (an array), [name, type, bits] or an inline struct."""
    if isinstance(desc, str):
        return _BASE[desc]
    fields: list[tuple[Any, ...]] = []
    anonymous: list[str] = []
    for field in desc[1]:
        if len(field) == 2:
            fields.append((field[0], ctype(field[1])))
        elif isinstance(field[2], list):
            fields.append((field[0], ctype(field[1]) * field[2][0]))
        elif isinstance(field[2], int):
            fields.append((field[0], ctype(field[1]), field[2]))
        else:  # an inline struct or union
            name = field[0] or f"__anon{len(anonymous)}"
            if not field[0]:
                anonymous.append(name)
            fields.append((name, ctype(field)))
    kind = desc[2] if len(desc) > 2 else "struct"
    base = ctypes.Union if kind == "union" else ctypes.Structure
    body: dict[str, Any] = {"_anonymous_": anonymous, "_fields_": fields}
    if kind == "struct_packed":
        body["_pack_"] = 1
    return type(str(desc[0]) or "anon", (base,), body)


@functools.cache
def possible_cpus() -> int:
    """How many values a per-CPU map holds per key (one per possible CPU)."""
    text = Path("/sys/devices/system/cpu/possible").read_text().strip()
    count = 0
    for part in text.split(","):
        low, _, high = part.partition("-")
        count += int(high or low) - int(low) + 1
    return count


BPF_MAP_DELETE_ELEM = 3
BPF_MAP_GET_NEXT_KEY = 4
BPF_PROG_LOAD = 5


class Table:
    """One map: ``table[key]``, ``table[key] = value``, ``del table[key]``, ``items()``,
    ``sum(key)``. A per-CPU map's ``Leaf`` is one CPU's value: reads give a list of them
    (``sum`` adds them up) and writes set every CPU's."""

    def __init__(self, fd: int, spec: MapSpec) -> None:
        self.map_fd = fd
        self.spec = spec
        self.Key: Any = ctype(spec.key) if spec.key else ctypes.c_uint32
        self.Leaf: Any = ctype(spec.leaf) if spec.leaf else ctypes.c_uint32
        self.percpu = spec.type in PERCPU_TYPES
        self._stride = (ctypes.sizeof(self.Leaf) + 7) // 8 * 8
        self._cpus = possible_cpus() if self.percpu else 1

    def _call(self, cmd: int, key: Any, value: Any = None, flags: int = 0) -> None:
        attr = bpf.ElemAttr(
            map_fd=self.map_fd,
            key=ctypes.addressof(key) if key is not None else 0,
            value=ctypes.addressof(value) if value is not None else 0,
            flags=flags,
        )
        bpf.call(cmd, attr)

    def _key(self, key: Any) -> Any:
        return key if isinstance(key, self.Key) else self.Key(key.value)

    def getvalue(self, key: Any) -> Any:
        """The value (per-CPU: one per possible CPU, a list); KeyError when absent."""
        raw = ctypes.create_string_buffer(self._stride * self._cpus)
        try:
            self._call(bpf.BPF_MAP_LOOKUP_ELEM, self._key(key), raw)
        except FileNotFoundError:
            raise KeyError(key) from None
        if not self.percpu:
            return self.Leaf.from_buffer_copy(raw.raw[: ctypes.sizeof(self.Leaf)])
        size = ctypes.sizeof(self.Leaf)
        return [
            self.Leaf.from_buffer_copy(raw.raw[i * self._stride : i * self._stride + size])
            for i in range(self._cpus)
        ]

    __getitem__ = getvalue

    def __setitem__(self, key: Any, value: Any) -> None:
        if self.percpu:
            raw = ctypes.create_string_buffer(self._stride * self._cpus)
            for i in range(self._cpus):
                ctypes.memmove(ctypes.addressof(raw) + i * self._stride, ctypes.addressof(value),
                               ctypes.sizeof(value))  # fmt: skip
            value = raw
        self._call(bpf.BPF_MAP_UPDATE_ELEM, self._key(key), value)

    def __delitem__(self, key: Any) -> None:
        try:
            self._call(BPF_MAP_DELETE_ELEM, self._key(key))
        except FileNotFoundError:
            raise KeyError(key) from None

    def keys(self) -> Iterator[Any]:
        if self.spec.type in ARRAY_TYPES:
            yield from (self.Key(i) for i in range(self.spec.max_entries))
            return
        key: Any = None
        while True:
            following = self.Key()
            try:
                self._call(BPF_MAP_GET_NEXT_KEY, key, following)
            except FileNotFoundError:
                return
            yield following
            key = following

    __iter__ = keys

    def items(self) -> list[tuple[Any, Any]]:
        """Every (key, value) present now (keys deleted meanwhile are left out)."""
        out = []
        for key in list(self.keys()):
            try:
                out.append((key, self.getvalue(key)))
            except KeyError:
                continue
        return out

    def sum(self, key: Any) -> Any:
        """A per-CPU map's values at ``key`` added up (integer values)."""
        values = self.getvalue(key)
        return self.Leaf(sum(int(v.value) for v in values))


# --- making maps and loading programs -----------------------------------------------------
def create_map(spec: MapSpec) -> int:
    return bpf.call(
        bpf.BPF_MAP_CREATE,
        bpf.MapCreate(
            map_type=spec.type,
            key_size=spec.key_size,
            value_size=spec.value_size,
            max_entries=spec.max_entries,
            map_flags=spec.flags,
            map_name=spec.pin_name.encode(),
        ),
    )


def fits(fd: int, spec: MapSpec) -> bool:
    """The map ``fd`` is defined as ``spec`` says (a pin of this layout)."""
    info = bpf.map_info(fd)
    return (info.type, info.key_size, info.value_size, info.max_entries, info.map_flags) == (
        spec.type, spec.key_size, spec.value_size, spec.max_entries, spec.flags,
    )  # fmt: skip


class ProgLoad(ctypes.Structure):
    _fields_ = [
        ("prog_type", ctypes.c_uint32),
        ("insn_cnt", ctypes.c_uint32),
        ("insns", ctypes.c_uint64),
        ("license", ctypes.c_uint64),
        ("log_level", ctypes.c_uint32),
        ("log_size", ctypes.c_uint32),
        ("log_buf", ctypes.c_uint64),
        ("kern_version", ctypes.c_uint32),
        ("prog_flags", ctypes.c_uint32),
        ("prog_name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 64),
    ]


@functools.cache
def kernel_version() -> int:
    """LINUX_VERSION_CODE of the running kernel (what old kernels check kprobes against)."""
    found = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", platform.release())
    if found is None:
        return 0
    a, b, c = (int(part or 0) for part in found.groups())
    return (a << 16) + (b << 8) + min(c, 255)


def load_program(
    prog_type: int, name: str, insns: bytes, license: str = "GPL"
) -> tuple[int, str, str]:
    """Load through the verifier: (fd or -1, errno text, verifier log). The log is asked
    for only when the load fails (a second load with a buffer of its own), so loads can
    run in parallel and a good one pays nothing for it."""
    code = ctypes.create_string_buffer(insns, len(insns))
    text = ctypes.create_string_buffer(license.encode())
    attr = ProgLoad(
        prog_type=prog_type,
        insn_cnt=len(insns) // 8,
        insns=ctypes.addressof(code),
        license=ctypes.addressof(text),
        kern_version=kernel_version(),
        prog_name=name.encode()[:15],
    )
    try:
        return bpf.call(BPF_PROG_LOAD, attr), "", ""
    except OSError as error:
        reason = error.strerror or str(error)
    log = ctypes.create_string_buffer(VERIFIER_LOG_BYTES)
    attr.log_level, attr.log_size, attr.log_buf = 1, len(log), ctypes.addressof(log)
    try:
        fd = bpf.call(BPF_PROG_LOAD, attr)
    except OSError:
        return -1, reason, log.value.decode(errors="replace")
    os.close(fd)  # loaded the second time: say why the first failed all the same
    return -1, reason, log.value.decode(errors="replace")


class Instance:
    """A compiled source's maps, made for one program: each map this agent creates, or
    adopts where ``pin`` holds one of its layout (counts and configuration go on), or
    takes from ``shared`` by name (the exec tracker's): those ``functions`` load, or
    ``every`` map. Tables by name, as bcc's BPF."""

    def __init__(
        self,
        compiled: Compiled,
        functions: tuple[str, ...],
        *,
        pin: Path | None = None,
        shared: Mapping[str, int] | None = None,
        every: bool = False,
    ) -> None:
        self.compiled = compiled
        self.fds: dict[int, int] = {}  # map index -> fd
        self.owned: set[int] = set()  # indexes whose fd this instance closes
        self.adopted = pin is not None
        self.tables: dict[bytes, Table] = {}
        self.prog_fds: dict[str, int] = {}
        shared = shared or {}
        used = (
            list(range(len(compiled.maps)))
            if every  # maps the agent reads though no function loads them
            else list(dict.fromkeys(i for f in functions for i in compiled.used(f)))
        )
        try:
            for index in used:
                spec = compiled.maps[index]
                if spec.name in shared:
                    self.fds[index] = shared[spec.name]
                    continue
                self.owned.add(index)
                path = pin / spec.pin_name if pin is not None else None
                if path is not None and path.exists():
                    fd = bpf.obj_get(path)
                    if fits(fd, spec):
                        self.fds[index] = fd
                        continue
                    os.close(fd)  # a pin from another layout
                    path.unlink()
                self.adopted = False
                self.fds[index] = create_map(spec)
                if path is not None:
                    path.parent.mkdir(parents=True, exist_ok=True)
                    bpf.obj_pin(self.fds[index], path)
        except OSError:
            self.close()
            raise

    def load(self, function: str, prog_type: int) -> tuple[int, str, str]:
        """Load one function with this instance's maps: (fd or -1, errno text, log)."""
        insns = relocate(self.compiled.functions[function], self.fds)
        fd, reason, log = load_program(prog_type, function, insns, self.compiled.license)
        if fd >= 0:
            self.prog_fds[function] = fd
        return fd, reason, log

    def _index(self, name: str) -> int:
        """The index of this instance's map called ``name``; KeyError when it has none."""
        for index in self.fds:
            if self.compiled.maps[index].name == name:
                return index
        raise KeyError(name)

    def fd(self, name: str) -> int:
        return self.fds[self._index(name)]

    def __getitem__(self, name: bytes) -> Table:
        if name not in self.tables:
            index = self._index(name.decode())
            self.tables[name] = Table(self.fds[index], self.compiled.maps[index])
        return self.tables[name]

    def close(self) -> None:
        for fd in self.prog_fds.values():
            os.close(fd)
        self.prog_fds = {}
        for index in self.owned:
            if index in self.fds:
                os.close(self.fds[index])
        self.fds, self.owned, self.tables = {}, set(), {}

    cleanup = close
