"""Posted events as JSON lines, a batch of ring buffer records at a time. Pure:
records and what user space knows (labels, executables, symbols) in, text out.

Each posting program has one record layout (its args, strings, addresses and
stacks are fixed when it is generated), so each program gets a ``Layout``: a
``struct`` format for a whole record, header included, with each integer arg
read at its declared width and sign, and a ``%`` template of the line with the
constant parts (node, policy, hook, message, tags, arg names) already encoded.
A record becomes a line through one ``iter_unpack`` row and one ``%``; what
repeats across events (a comm, an executable, a cgroup's labels, a path, an
address, a stack frame) is encoded once and looked up after that.

Fields: ``time`` (RFC 3339, ns), ``node``, ``policy``, ``hook``, ``message``
and ``tags`` (when the hook has them), ``selector``, ``pid``, ``tid``, ``comm``,
``exe``, ``cgroup``, ``namespace``/``pod``/``container``/``workload`` (when
known), ``args`` (each declared argument by label: integers as numbers, strings
as text (file, path and fd as the file's path), sockets and packets as
``{family, protocol, state, saddr, sport, daddr, dport}`` as far as the argument
holds them), and ``userStack``/``kernelStack`` when the action asked for them, or
``userStackError``/``kernelStackError`` saying why a stack could not be taken.
"""

from __future__ import annotations

import ctypes
import dataclasses
import datetime
import errno
import json
import operator
import os
import struct
from collections.abc import Callable, Iterable
from typing import Any

from weir_agent.identity.metadata import Labels
from weir_agent.kernel import ringbuf
from weir_agent.outputs.symbols import Frame
from weir_agent.spec import abi
from weir_agent.spec.abi import Kind
from weir_agent.spec.programs import Program
from weir_api import values

FAMILIES = {value: name for name, value in values.FAMILIES.items()}
PROTOCOLS = {value: name for name, value in values.PROTOCOLS.items()}
STATES = {value: name for name, value in values.SOCK_STATES.items()}
STRING_KINDS = {
    Kind.STR_PTR,
    Kind.STR_DATALOC,
    Kind.STR_INLINE,
    Kind.CHAR_BUF,
    Kind.FILE,
    Kind.PATH,
    Kind.FD,
}
ADDRESS_KINDS = {Kind.SOCK, Kind.SOCKADDR, Kind.SKB}
_ADDR = struct.Struct("<6H4x16s16s")  # struct weir_addr
ADDR_BYTES = _ADDR.size
BUILD_ID_FRAME = struct.Struct("<i20sQ")  # struct bpf_stack_build_id
CACHE_ENTRIES = 65_536  # per cache of encoded values; a full cache starts over
_INT_CODES = {(8, True): "b7x", (16, True): "h6x", (32, True): "i4x", (64, True): "q"}
_INT_CODES |= {(8, False): "B7x", (16, False): "H6x", (32, False): "I4x", (64, False): "Q"}
# Fields of every record, in unpacked order (after the 8-byte header).
TIME, CGROUP, EXE, PID, TID, SELECTOR, USTACK_N, KSTACK_N, COMM = range(9)
_HEAD = "<8xQQQIIIii4x16s"


def rfc3339_second(seconds: int) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def rfc3339(unix_ns: int) -> str:
    seconds, nanos = divmod(unix_ns, 1_000_000_000)
    return f"{rfc3339_second(seconds)}.{nanos:09d}Z"


def text(value: str) -> str:
    """A JSON string, as weir writes them (UTF-8, not \\u-escaped)."""
    return json.dumps(value, ensure_ascii=False)


def _constant(value: object) -> str:
    """A JSON value for the template: its % signs doubled."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).replace("%", "%%")


@dataclasses.dataclass(frozen=True)
class Layout:
    """How one program's records become lines."""

    record: struct.Struct  # one record, header and padding included
    template: str  # one line: time, selector, pid, tid, comm, exe, cgroup, labels, args, stacks
    args: tuple[int, ...]  # where each arg's raw value sits in an unpacked record
    conversions: tuple[tuple[int, Kind], ...]  # (arg position, kind) needing a conversion
    user_stack: int  # where the user stack's raw frames sit (0: none)
    kernel_stack: int


def layout(program: Program, *, node: str) -> Layout:
    flags = dict(program.flags)
    strings, addresses = int(flags["EV_STRS"]), int(flags["EV_ADDRS"])
    user_frames, kernel_frames = int(flags.get("EV_USTACK", 0)), int(flags.get("EV_KSTACK", 0))
    ints = {arg.slot: arg for arg in program.args if arg.kind == Kind.INT}
    fmt, fields, where = _HEAD, COMM + 1, {}
    for slot in range(abi.MAX_ARGS):
        arg = ints.get(slot)
        if arg is None:
            fmt += "8x"
            continue
        fmt += _INT_CODES[values.INTEGER_TYPES.get(arg.type, (64, True))]
        where[slot] = fields
        fields += 1
    string_at, fields = fields, fields + strings
    fmt += f"{abi.MAX_STR}s" * strings
    address_at, fields = fields, fields + addresses
    fmt += f"{ADDR_BYTES}s" * addresses
    user_at = kernel_at = 0
    if user_frames:
        fmt += f"{user_frames * BUILD_ID_FRAME.size}s"
        user_at, fields = fields, fields + 1
    if kernel_frames:
        fmt += f"{kernel_frames * 8}s"
        kernel_at, fields = fields, fields + 1
    size = struct.calcsize(fmt) - ringbuf.HEADER
    event = abi.event_type(flags)
    if size != ctypes.sizeof(event):
        raise RuntimeError(
            f"events.layout: {size} bytes where abi.event_type has {ctypes.sizeof(event)}"
        )
    fmt += "x" * (ringbuf.record_stride(size) - ringbuf.HEADER - size)
    positions: list[int] = []
    conversions: list[tuple[int, Kind]] = []
    parts: list[str] = []
    string_n = address_n = 0
    for arg in program.args:
        if arg.kind == Kind.INT:
            positions.append(where[arg.slot])
            placeholder = "%d"
        elif arg.kind in STRING_KINDS and string_n < strings:
            positions.append(string_at + string_n)
            conversions.append((len(positions) - 1, arg.kind))
            string_n += 1
            placeholder = "%s"
        elif arg.kind in ADDRESS_KINDS and address_n < addresses:
            positions.append(address_at + address_n)
            conversions.append((len(positions) - 1, arg.kind))
            address_n += 1
            placeholder = "%s"
        else:
            continue
        parts.append(f"{_constant(arg.name)}:{placeholder}")
    head = (
        '{"time":"%s.%09dZ","node":'
        + _constant(node)
        + f',"policy":{_constant(program.policy)},"hook":{_constant(program.hook)}'
        + (f',"message":{_constant(program.message)}' if program.message else "")
        + (f',"tags":{_constant(list(program.tags))}' if program.tags else "")
        + ',"selector":%d,"pid":%d,"tid":%d,"comm":%s,"exe":%s,"cgroup":%d%s,"args":{'
    )
    return Layout(
        record=struct.Struct(fmt),
        template=head + ",".join(parts) + "}%s%s}\n",
        args=tuple(positions),
        conversions=tuple(conversions),
        user_stack=user_at,
        kernel_stack=kernel_at,
    )


def _errno_text(code: int) -> str:
    name = errno.errorcode.get(code, str(code))
    return f"{os.strerror(code)} ({name})"


def stack_error(count: int, *, user: bool) -> str:
    """Why a stack has no frames: the kernel's error, or none to take."""
    if count < 0:
        return f"bpf_get_stack failed: {_errno_text(-count)}"
    if user:
        return "no user-space frames (a kernel thread, or the user stack could not be walked)"
    return "no kernel frames"


class Encoder:
    """Turns batches of records into JSON lines; holds the caches of encoded values.

    ``frame(build_id, offset)`` symbolises a user frame by build id (None: the build id
    is not known); ``learn(pid, exe)`` is called, once per process, when a frame's build
    id is not known, before the frame is tried again; ``ksym(address)`` names a kernel
    address."""

    def __init__(
        self,
        *,
        node: str,
        frame: Callable[[str, int], Frame | None],
        ksym: Callable[[int], str],
        learn: Callable[[int, str], None] = lambda _pid, _exe: None,
    ) -> None:
        self.node = node
        self.frame = frame
        self.ksym = ksym
        self.learn = learn
        self._layouts: dict[Program, Layout] = {}
        self._seconds: dict[int, str] = {}
        self._comms: dict[bytes, str] = {}
        self._strings: dict[bytes, str] = {}
        self._addresses: dict[tuple[Kind, bytes], str] = {}
        self._frames: dict[tuple[bytes, int], str] = {}
        self._ksyms: dict[int, str] = {}
        self._learned: set[int] = set()  # pids whose files were indexed for their frames

    def lines(
        self,
        program: Program,
        data: bytes,
        *,
        labels: Callable[[int], Labels],
        exes: Callable[[int], str],
        monotonic_to_unix_ns: int,
    ) -> list[str]:
        """One JSON line per record in ``data`` (records as the ring buffer holds them)."""
        shape = self._layouts.get(program)
        if shape is None:
            shape = self._layouts[program] = layout(program, node=self.node)
        template, seconds, comms = shape.template, self._seconds, self._comms
        fragments: dict[int, str] = {}  # per batch: a cgroup's labels can change
        exe_texts: dict[int, str] = {}
        getter = _getter(shape.args)
        conversions, convert = shape.conversions, self._convert
        user_at, kernel_at = shape.user_stack, shape.kernel_stack
        out: list[str] = []
        for r in shape.record.iter_unpack(data):
            second, nanos = divmod(r[TIME] + monotonic_to_unix_ns, 1_000_000_000)
            when = seconds.get(second)
            if when is None:
                if len(seconds) > 4:
                    seconds.clear()
                when = seconds[second] = rfc3339_second(second)
            comm = comms.get(r[COMM])
            if comm is None:
                comm = self._comm(r[COMM])
            exe = exe_texts.get(r[EXE])
            if exe is None:
                exe = exe_texts[r[EXE]] = text(exes(r[EXE])) if r[EXE] else '""'
            cgroup = r[CGROUP]
            fragment = fragments.get(cgroup)
            if fragment is None:
                fragment = fragments[cgroup] = _labels(labels(cgroup))
            args: Any = getter(r)
            if conversions:
                args = list(args)
                for position, kind in conversions:
                    args[position] = convert(kind, args[position])
            user = kernel = ""
            if user_at:
                user = self._user_stack(r[USTACK_N], r[user_at], r[PID], exes, r[EXE])
            if kernel_at:
                kernel = self._kernel_stack(r[KSTACK_N], r[kernel_at])
            fields = (when, nanos, r[SELECTOR], r[PID], r[TID], comm, exe, cgroup, fragment)
            out.append(template % (*fields, *args, user, kernel))
        return out

    def _comm(self, raw: bytes) -> str:
        if len(self._comms) >= CACHE_ENTRIES:
            self._comms.clear()
        value = self._comms[raw] = text(raw.split(b"\0", 1)[0].decode("utf-8", errors="replace"))
        return value

    def _convert(self, kind: Kind, raw: bytes) -> str:
        if kind in STRING_KINDS:
            found = self._strings.get(raw)
            if found is None:
                if len(self._strings) >= CACHE_ENTRIES:
                    self._strings.clear()
                value = raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
                found = self._strings[raw] = text(value)
            return found
        key = (kind, raw)
        found = self._addresses.get(key)
        if found is None:
            if len(self._addresses) >= CACHE_ENTRIES:
                self._addresses.clear()
            found = self._addresses[key] = json.dumps(address(kind, raw), separators=(",", ":"))
        return found

    def _user_stack(
        self, count: int, raw: bytes, pid: int, exes: Callable[[int], str], exe_hash: int
    ) -> str:
        if count == abi.STACK_NOT_TAKEN:
            return ""
        if count <= 0:
            return f',"userStackError":{text(stack_error(count, user=True))}'
        frames = []
        for status, build_id, offset in _build_id_frames(raw, count):
            key = (build_id if status == 1 else b"", offset)
            found = self._frames.get(key)
            if found is None:
                frame = self._frame(status, build_id, offset, pid, lambda: exes(exe_hash))
                if frame is None:  # not known (yet): not cached
                    unknown = Frame(f"[unknown build id {build_id.hex()[:16]}]", "", offset)
                    found = json.dumps(unknown.to_json(), separators=(",", ":"))
                else:
                    if len(self._frames) >= CACHE_ENTRIES:
                        self._frames.clear()
                    found = self._frames[key] = json.dumps(
                        frame.to_json(), ensure_ascii=False, separators=(",", ":")
                    )
            frames.append(found)
        return ',"userStack":[' + ",".join(frames) + "]"

    def _frame(
        self, status: int, build_id: bytes, offset: int, pid: int, exe: Callable[[], str]
    ) -> Frame | None:
        if status != 1:  # the kernel could give only the address
            return Frame(function=f"{offset:#x}", module="", offset=offset)
        frame = self.frame(build_id.hex(), offset)
        if frame is None and pid not in self._learned:
            if len(self._learned) >= CACHE_ENTRIES:
                self._learned.clear()
            self._learned.add(pid)
            self.learn(pid, exe())
            frame = self.frame(build_id.hex(), offset)
        return frame

    def _kernel_stack(self, count: int, raw: bytes) -> str:
        if count == abi.STACK_NOT_TAKEN:
            return ""
        if count <= 0:
            return f',"kernelStackError":{text(stack_error(count, user=False))}'
        names = []
        for (where,) in struct.iter_unpack("<Q", raw[: count * 8]):
            found = self._ksyms.get(where)
            if found is None:
                if len(self._ksyms) >= CACHE_ENTRIES:
                    self._ksyms.clear()
                found = self._ksyms[where] = text(self.ksym(where))
            names.append(found)
        return ',"kernelStack":[' + ",".join(names) + "]"


def _build_id_frames(raw: bytes, count: int) -> Iterable[tuple[int, bytes, int]]:
    for status, build_id, offset in BUILD_ID_FRAME.iter_unpack(raw[: count * BUILD_ID_FRAME.size]):
        if status == 0:
            return
        yield status, build_id, offset


def _getter(positions: tuple[int, ...]) -> Callable[[tuple[Any, ...]], Any]:
    if not positions:
        return lambda _r: ()
    if len(positions) == 1:
        (only,) = positions
        return lambda r: (r[only],)
    return operator.itemgetter(*positions)


def _labels(labels: Labels) -> str:
    out = ""
    for key in ("namespace", "pod", "container", "workload"):
        value = getattr(labels, key)
        if value:
            out += f',"{key}":{text(value)}'
    return out


def address(kind: Kind, raw: bytes) -> dict[str, object]:
    """A socket, sockaddr or packet argument as the event shows it."""
    family, sport, dport, valid, protocol, state, saddr, daddr = _ADDR.unpack(raw)
    entry: dict[str, object] = {"family": FAMILIES.get(family, str(family))}
    if kind != Kind.SOCKADDR:
        entry["protocol"] = PROTOCOLS.get(protocol, str(protocol))
    if kind == Kind.SOCK and state:
        entry["state"] = STATES.get(state, str(state))
    if valid:
        if kind != Kind.SOCKADDR:
            entry["saddr"], entry["sport"] = abi.address_from16(saddr), sport
        entry["daddr"], entry["dport"] = abi.address_from16(daddr), dport
    return entry
