"""Compile, verify, attach, swap, seed and read: the only module that imports bcc.

Each hook gets a permanent stub (bpf/stub.bpf.c) attached once through a BPF
link; each shape of bpf/hook.bpf.c is compiled once, and every program of that
shape is a copy of its instructions with maps of its own, loaded through the
verifier, configured, and put in the stub's prog-array slot. Replacing the slot
is atomic, so an update loses no event and counts none twice. An edit that
keeps the shape is ``configure``: map writes into the program's spare
configuration, then one flip. With a pin directory, links, slots and maps are
pinned in bpffs and the next agent adopts them.

bcc writes compiler diagnostics to file descriptor 2; ``_captured_stderr``
redirects it to a temporary file during a compile, so the agent can report the
compiler's words. Loads ask for the verifier's log into their own buffer, and
only when they fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import ipaddress
import os
import platform
import re
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from bcc import BPF
from bcc import table as bcc_table
from bcc.libbcc import lib as bcc_lib
from elftools.common.exceptions import ELFError

from weir_agent.kernel import attachable, headers, ringbuf
from weir_agent.spec import abi, btf, codegen
from weir_agent.spec.codegen import Program
from weir_api import limits

_PROCESSED = re.compile(r"processed (\d+) insns")
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 4000


class LoadError(Exception):
    """A program failed in one phase; ``log`` holds the compiler's or verifier's words."""

    def __init__(self, phase: str, message: str, log: str = "") -> None:
        super().__init__(f"{phase} failed: {message}" + (f"\n{log}" if log else ""))
        self.phase = phase
        self.message = message
        self.log = log


@contextlib.contextmanager
def _captured_stderr() -> Iterator[list[str]]:
    """Collect what C code writes to fd 2 while the block runs."""
    sys.stderr.flush()
    out: list[str] = []
    with tempfile.TemporaryFile() as sink:
        saved = os.dup(2)
        os.dup2(sink.fileno(), 2)
        try:
            yield out
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            out.append(sink.read().decode(errors="replace"))


def log_tail(text: str) -> str:
    """The verifier's last lines (where it says why), bounded for reports."""
    lines = [line for line in text.splitlines() if not line.startswith("Running from kernel")]
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return tail[-LOG_TAIL_BYTES:]


def headers_state() -> str:
    """host, kheaders, baked, fallback or missing (see headers.py); points bcc at them."""
    found = headers.locate(platform.release())
    headers.use(found)
    return found.state


# --- bpf(BPF_OBJ_GET_INFO_BY_FD) for sizes, instruction counts and bpf_stats ----------------
class _ProgInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("tag", ctypes.c_uint8 * 8),
        ("jited_prog_len", ctypes.c_uint32),
        ("xlated_prog_len", ctypes.c_uint32),
        ("jited_prog_insns", ctypes.c_uint64),
        ("xlated_prog_insns", ctypes.c_uint64),
        ("load_time", ctypes.c_uint64),
        ("created_by_uid", ctypes.c_uint32),
        ("nr_map_ids", ctypes.c_uint32),
        ("map_ids", ctypes.c_uint64),
        ("name", ctypes.c_char * 16),
        ("ifindex", ctypes.c_uint32),
        ("gpl_compatible", ctypes.c_uint32),
        ("netns_dev", ctypes.c_uint64),
        ("netns_ino", ctypes.c_uint64),
        ("nr_jited_ksyms", ctypes.c_uint32),
        ("nr_jited_func_lens", ctypes.c_uint32),
        ("jited_ksyms", ctypes.c_uint64),
        ("jited_func_lens", ctypes.c_uint64),
        ("btf_id", ctypes.c_uint32),
        ("func_info_rec_size", ctypes.c_uint32),
        ("func_info", ctypes.c_uint64),
        ("nr_func_info", ctypes.c_uint32),
        ("nr_line_info", ctypes.c_uint32),
        ("line_info", ctypes.c_uint64),
        ("jited_line_info", ctypes.c_uint64),
        ("nr_jited_line_info", ctypes.c_uint32),
        ("line_info_rec_size", ctypes.c_uint32),
        ("jited_line_info_rec_size", ctypes.c_uint32),
        ("nr_prog_tags", ctypes.c_uint32),
        ("prog_tags", ctypes.c_uint64),
        ("run_time_ns", ctypes.c_uint64),
        ("run_cnt", ctypes.c_uint64),
        ("recursion_misses", ctypes.c_uint64),
        ("verified_insns", ctypes.c_uint32),
        ("attach_btf_obj_id", ctypes.c_uint32),
        ("attach_btf_id", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
    ]


class _InfoAttr(ctypes.Structure):
    _fields_ = [
        ("bpf_fd", ctypes.c_uint32),
        ("info_len", ctypes.c_uint32),
        ("info", ctypes.c_uint64),
    ]


_SYS_BPF = {"x86_64": 321, "aarch64": 280}.get(platform.machine(), 321)
_BPF_OBJ_GET_INFO_BY_FD = 15
_libc = ctypes.CDLL(None, use_errno=True)


def prog_info(fd: int) -> _ProgInfo:
    info = _ProgInfo()
    attr = _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info))
    result = _libc.syscall(
        _SYS_BPF, _BPF_OBJ_GET_INFO_BY_FD, ctypes.byref(attr), ctypes.sizeof(attr)
    )
    if result != 0:
        raise OSError(ctypes.get_errno(), "BPF_OBJ_GET_INFO_BY_FD")
    return info


@dataclasses.dataclass
class Loaded:
    """One loaded (verified) version of a hook's program."""

    program: Program
    module: Any  # bcc.BPF
    fd: int
    prog_id: int
    instructions: int
    translated_bytes: int
    jited_bytes: int
    compile_ms: float
    load_ms: float
    verifier_summary: str
    active: int = -1  # the configuration copy the program reads (0 or 1; -1: none yet)
    flipped: float = 0.0  # monotonic time of the last flip
    sids: dict[str, int] = dataclasses.field(default_factory=dict)  # rule -> series id
    pin: Path | None = None  # where its maps are pinned
    adopted: bool = False  # its maps, counts and configuration were an earlier agent's
    ring: ringbuf.RingReader | None = None  # a posting program's events, mapped

    def series_id(self, agg: codegen.AggSlot) -> int:
        return self.sids.get(agg.rule, agg.slot)

    def close(self, *, detach: bool = True) -> None:
        """Close this agent's handles; with ``detach``, remove the pinned maps too."""
        if self.ring is not None:
            self.ring.close()
            self.ring = None
        self.module.cleanup()
        if detach and self.pin is not None:
            remove_pins(self.pin)


_PROG_TYPES = {
    "tracepoint": BPF.TRACEPOINT,
    "kprobe": BPF.KPROBE,
    "kretprobe": BPF.KPROBE,
    "uprobe": BPF.KPROBE,
    "uretprobe": BPF.KPROBE,
    "raw_tracepoint": BPF.RAW_TRACEPOINT,
}


def compile_and_load(
    program: Program, *, configured: bool = True, pin: Path | None = None
) -> Loaded:
    """Load ``program`` through the verifier with maps of its own; raises LoadError.

    Compiled with its shape flags (or, ``configured=False``, every flag: the
    specialised build the benchmark compares) once per shape: later programs of the
    same shape load the cached instructions with fresh maps, with no compile. With
    ``pin``, the maps live there: an earlier agent's maps of this shape are adopted,
    with their counts and their configuration."""
    template, compile_ms = _template(program, configured)
    started = time.monotonic()
    try:
        module = _Copy(template, pin)
    except OSError as error:
        raise LoadError("verify", f"creating maps failed: {error}") from error
    fd, (reason, verifier_log) = module.load(_PROG_TYPES[program.kind])
    loaded = time.monotonic()
    if fd < 0:
        module.cleanup()
        raise LoadError(
            "verify",
            f"Failed to load BPF program b'weir_program': {reason}",
            log_tail(verifier_log),
        )
    info = prog_info(fd)
    processed = _PROCESSED.findall(verifier_log)
    result = Loaded(
        program=program,
        module=module,
        fd=fd,
        prog_id=info.id,
        instructions=int(processed[-1]) if processed else int(info.verified_insns),
        translated_bytes=int(info.xlated_prog_len),
        jited_bytes=int(info.jited_prog_len),
        compile_ms=compile_ms,
        load_ms=(loaded - started) * 1000,
        verifier_summary=f"verified: {int(info.verified_insns)} instructions processed",
    )
    try:
        result.pin = pin
        if program.entry_half:
            pass  # saves argument registers for its return half: nothing to configure
        elif configured and module.adopted:
            _adopt(result, program)
        elif configured:
            _seed_classes(result)
            configure(result, program)  # the first: nothing to retire
        else:  # configuration 0 is compiled in: only seeds and series
            _seed_classes(result)
            _write_seeds(module, program.seeds, 0)
            for agg in program.aggregations:
                _reset_series(module, agg.slot, _agg_table(agg))
    except Exception as error:
        result.close(detach=not module.adopted)  # adopted maps: a hook still runs on them
        raise LoadError("verify", f"configuring maps failed: {error!r}") from error
    return result


# --- one compile per shape ---------------------------------------------------------------
TEMPLATES_KEPT = 16  # compiled shapes kept (each holds its instructions and unused maps)
VERIFIER_LOG_BYTES = 1 << 20  # the kernel keeps the log's end when it is longer
# Maps every program uses as they are (the exec tracker's module owns them).
SHARED_MAPS = (b"weir_exes", b"weir_entries", b"weir_starts", b"weir_marks", b"weir_corr_stats")
_BPF_MAP_CREATE = 0
_BPF_MAP_LOOKUP_ELEM = 1
_BPF_MAP_UPDATE_ELEM = 2
_BPF_MAP_TYPE_ARRAY = 2
_BPF_OBJ_PIN = 6
_BPF_OBJ_GET = 7
_BPF_RAW_TRACEPOINT_OPEN = 17
_BPF_LINK_CREATE = 28
_BPF_PERF_EVENT = 41  # the attach type of a link to a perf event
_BPF_PSEUDO_MAP_FD = 1


@dataclasses.dataclass
class _Template:
    """A compiled shape: bcc's module (whose maps are never used) and its instructions."""

    module: Any  # bcc.BPF
    insns: bytes
    map_fds: tuple[int, ...]  # the module's maps the instructions name, in order
    function: bytes = b"weir_program"


_templates: dict[tuple[str, bool], _Template] = {}
_templates_lock = threading.Lock()


def _template(program: Program, configured: bool) -> tuple[_Template, float]:
    """The compiled shape of ``program`` and the milliseconds compiling took (0: cached)."""
    key = (program.shape_digest() if configured else program.digest(), configured)
    flags = program.cflags(configured=configured)
    return _compiled(key, codegen.HOOK_SOURCE, flags, b"weir_program")


def _compiled(
    key: tuple[str, bool], source_name: str, cflags: list[str], function: bytes
) -> tuple[_Template, float]:
    with _templates_lock:
        if key in _templates:
            _templates[key] = _templates.pop(key)  # most recently used last
            return _templates[key], 0.0
        found = headers.locate(platform.release())
        if found.state == "missing":
            raise LoadError("compile", found.problem)
        headers.use(found)
        source = str(codegen.BPF_DIR / source_name)
        started = time.monotonic()
        with _captured_stderr() as compile_log:
            try:
                module = BPF(src_file=source.encode(), cflags=cflags, debug=0)
            except Exception as error:  # bcc raises bare Exception
                failure: Exception | None = error
            else:
                failure = None
        _trim_heap()  # clang's working memory is freed by now; give it back to the system
        if failure is not None:
            raise LoadError("compile", str(failure).splitlines()[0][:500], log_tail(compile_log[0]))
        insns = module.dump_func(function)
        fds = tuple(dict.fromkeys(fd for _, fd in _map_loads(insns)))
        _templates[key] = _Template(module=module, insns=insns, map_fds=fds, function=function)
        while len(_templates) > TEMPLATES_KEPT:
            _templates.pop(next(iter(_templates))).module.cleanup()
        return _templates[key], (time.monotonic() - started) * 1000


def _map_loads(insns: bytes) -> Iterator[tuple[int, int]]:
    """(instruction index, map fd) of each ld_imm64 that loads a map by fd."""
    index = 0
    while index * 8 < len(insns):
        opcode, regs, _off, imm = struct.unpack_from("<BBhi", insns, index * 8)
        if opcode == 0x18:  # ld_imm64 takes two instructions
            if regs >> 4 == _BPF_PSEUDO_MAP_FD:
                yield index, imm
            index += 2
        else:
            index += 1


class _MapInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 64),
    ]


class _MapCreate(ctypes.Structure):
    _fields_ = [
        ("map_type", ctypes.c_uint32),
        ("key_size", ctypes.c_uint32),
        ("value_size", ctypes.c_uint32),
        ("max_entries", ctypes.c_uint32),
        ("map_flags", ctypes.c_uint32),
        ("inner_map_fd", ctypes.c_uint32),
        ("numa_node", ctypes.c_uint32),
        ("map_name", ctypes.c_char * 16),
        ("rest", ctypes.c_uint8 * 48),
    ]


def _bpf(cmd: int, attr: ctypes.Structure) -> int:
    result = int(_libc.syscall(_SYS_BPF, cmd, ctypes.byref(attr), ctypes.sizeof(attr)))
    if result < 0:
        number = ctypes.get_errno()
        raise OSError(number, os.strerror(number))
    return result


def _map_info(fd: int) -> _MapInfo:
    info = _MapInfo()
    _bpf(
        _BPF_OBJ_GET_INFO_BY_FD,
        _InfoAttr(bpf_fd=fd, info_len=ctypes.sizeof(info), info=ctypes.addressof(info)),
    )
    return info


def _same_map(a: int, b: int) -> bool:
    x, y = _map_info(a), _map_info(b)
    fields = ("type", "key_size", "value_size", "max_entries", "map_flags")
    return all(getattr(x, f) == getattr(y, f) for f in fields)


class _ObjAttr(ctypes.Structure):
    _fields_ = [
        ("pathname", ctypes.c_uint64),
        ("bpf_fd", ctypes.c_uint32),
        ("file_flags", ctypes.c_uint32),
        ("path_fd", ctypes.c_int32),
        ("pad", ctypes.c_uint32),
    ]


def _obj_pin(fd: int, path: Path) -> None:
    name = ctypes.create_string_buffer(str(path).encode())
    _bpf(_BPF_OBJ_PIN, _ObjAttr(pathname=ctypes.addressof(name), bpf_fd=fd))


def _obj_get(path: Path) -> int:
    name = ctypes.create_string_buffer(str(path).encode())
    return _bpf(_BPF_OBJ_GET, _ObjAttr(pathname=ctypes.addressof(name)))


class _ElemAttr(ctypes.Structure):
    _fields_ = [
        ("map_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("key", ctypes.c_uint64),
        ("value", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
    ]


def _set_slot(map_fd: int, prog_fd: int) -> None:
    """prog_array[0] = prog_fd: one atomic update (the tail-call swap)."""
    key, value = ctypes.c_uint32(0), ctypes.c_uint32(prog_fd)
    attr = _ElemAttr(
        map_fd=map_fd, key=ctypes.addressof(key), value=ctypes.addressof(value), flags=0
    )
    _bpf(_BPF_MAP_UPDATE_ELEM, attr)


def _clone_map(fd: int) -> int:
    """A new, empty map defined as the map ``fd`` is."""
    info = _map_info(fd)
    attr = _MapCreate(
        map_type=info.type,
        key_size=info.key_size,
        value_size=info.value_size,
        max_entries=info.max_entries,
        map_flags=info.map_flags,
        map_name=info.name,
    )
    return _bpf(_BPF_MAP_CREATE, attr)


class _Copy:
    """A program of a compiled shape with maps of its own, used as bcc's BPF is: tables
    by name (bcc's table classes over this copy's map fds), ring buffers, cleanup."""

    def __init__(self, template: _Template, pin: Path | None = None) -> None:
        """With ``pin``, maps pinned there by an earlier agent are used as they are (their
        counts go on) and new ones are pinned there; ``adopted`` says all were found."""
        self.template = template
        self.module = template.module.module  # what bcc's tables read key/leaf types from
        shared = {template.module.get_table(n).map_fd for n in SHARED_MAPS if _has(template, n)}
        self.fds: dict[int, int] = {}  # the template's map fd -> this copy's
        self.adopted = pin is not None
        self.meta_fd = -1
        try:
            for fd in template.map_fds:
                if fd in shared:
                    self.fds[fd] = fd
                    continue
                path = pin / _map_info(fd).name.decode() if pin is not None else None
                if path is not None and path.exists():
                    self.fds[fd] = _obj_get(path)
                    if not _same_map(fd, self.fds[fd]):  # a pin from another layout
                        os.close(self.fds.pop(fd))
                        path.unlink()
                if fd not in self.fds:
                    self.adopted = False
                    self.fds[fd] = _clone_map(fd)
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        _obj_pin(self.fds[fd], path)
            if pin is not None:  # what the maps were configured for, for the next agent
                meta = pin / "weir_meta"
                if meta.exists():
                    self.meta_fd = _obj_get(meta)
                else:
                    self.meta_fd = _bpf(_BPF_MAP_CREATE, _MapCreate(
                        map_type=_BPF_MAP_TYPE_ARRAY, key_size=4, value_size=32,
                        max_entries=1, map_name=b"weir_meta"))  # fmt: skip
                    pin.mkdir(parents=True, exist_ok=True)
                    _obj_pin(self.meta_fd, meta)
        except OSError:
            self._close_maps()
            raise
        self.prog_fd = -1
        self.tables: dict[bytes, Any] = {}

    def load(self, prog_type: int) -> tuple[int, tuple[str, str]]:
        return self._load(prog_type, self.template.function)

    def _load(self, prog_type: int, function: bytes) -> tuple[int, tuple[str, str]]:
        """Load through the verifier: (fd or -1, (errno text, verifier log)). The log is
        asked for only when the load fails (bcc loads again with it into our buffer), so
        loads need no stderr capture and can run in parallel."""
        insns = bytearray(self.template.insns)
        for index, fd in _map_loads(bytes(insns)):
            struct.pack_into("<i", insns, index * 8 + 4, self.fds[fd])
        buffer = ctypes.create_string_buffer(bytes(insns), len(insns))
        log = ctypes.create_string_buffer(VERIFIER_LOG_BYTES)
        module = self.template.module.module
        self.prog_fd = bcc_lib.bcc_func_load(
            module, prog_type, function, buffer, len(insns),
            bcc_lib.bpf_module_license(module), bcc_lib.bpf_module_kern_version(module),
            0, log, len(log), None, -1,
        )  # fmt: skip
        reason = os.strerror(ctypes.get_errno()) if self.prog_fd < 0 else ""
        return int(self.prog_fd), (reason, log.value.decode(errors="replace"))

    def __getitem__(self, name: bytes) -> Any:
        if name not in self.tables:
            original = self.template.module.get_table(name)
            if original.map_fd not in self.fds:
                raise KeyError(name)
            leaf = getattr(original, "sLeaf", original.Leaf)  # per-CPU tables: one CPU's
            self.tables[name] = bcc_table.Table(
                self, original.map_id, self.fds[original.map_fd], original.Key, leaf, name
            )
        return self.tables[name]

    def write_meta(self, digest: str) -> None:
        if self.meta_fd >= 0:
            key, value = ctypes.c_uint32(0), ctypes.create_string_buffer(digest.encode(), 32)
            _bpf(_BPF_MAP_UPDATE_ELEM, _ElemAttr(map_fd=self.meta_fd, key=ctypes.addressof(key),
                                                 value=ctypes.addressof(value)))  # fmt: skip

    def read_meta(self) -> str:
        if self.meta_fd < 0:
            return ""
        key, value = ctypes.c_uint32(0), ctypes.create_string_buffer(32)
        _bpf(_BPF_MAP_LOOKUP_ELEM, _ElemAttr(map_fd=self.meta_fd, key=ctypes.addressof(key),
                                             value=ctypes.addressof(value)))  # fmt: skip
        return value.value.decode(errors="replace")

    def _close_maps(self) -> None:
        for original, fd in self.fds.items():
            if fd != original:
                os.close(fd)
        self.fds = {}
        if self.meta_fd >= 0:
            os.close(self.meta_fd)
            self.meta_fd = -1

    def cleanup(self) -> None:
        if self.prog_fd >= 0:
            os.close(self.prog_fd)
            self.prog_fd = -1
        self._close_maps()


def _has(template: _Template, name: bytes) -> bool:
    return bool(bcc_lib.bpf_table_fd(template.module.module, name) >= 0)


def _trim_heap() -> None:
    trim = getattr(_libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def _be32(value: int) -> int:
    return int.from_bytes(value.to_bytes(4, "big"), sys.byteorder)


GENERATION_BIT = 128  # matcher ids of configuration copy 1 (bpf/hook.bpf.c, MATCH)
GRACE_SECONDS = 0.05  # runs of a replaced program or configuration copy end within this


def _seed_classes(loaded: Loaded) -> None:
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


def _adopt(loaded: Loaded, program: Program) -> None:
    """Take over maps an earlier agent pinned: its configuration copy and series ids when
    it ran this very program (same digest), else configure this one over them (series of
    every rule start afresh; the hook's counters go on)."""
    module = loaded.module
    _seed_classes(loaded)
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
        _reset_series(module, sids[agg.rule], _agg_table(agg))
    _write_seeds(module, program.seeds, bit)
    table = module[b"config"]
    leaf = table.Leaf()
    values = program.config()
    for agg in program.aggregations:
        values[f"AGG{agg.slot}_SID"] = sids[agg.rule]
    _fill_config(leaf, values)
    leaf.GEN = bit
    table[ctypes.c_int(bit)] = leaf
    module[b"active"][ctypes.c_int(0)] = ctypes.c_uint32(bit)  # the flip
    loaded.flipped = time.monotonic()
    if isinstance(module, _Copy):
        module.write_meta(program.digest())
    retired = {
        loaded.sids[a.rule]: _agg_table(a)
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
            _reset_series(loaded.module, sid, name, overflow=False)


def _wait_grace(loaded: Loaded) -> None:
    left = loaded.flipped + GRACE_SECONDS - time.monotonic()
    if left > 0:
        time.sleep(left)


def _fill_config(leaf: Any, values: dict[str, int]) -> None:
    """Set struct weir_config's fields from flag names: S0_M1_OP is S[0].M[1].OP."""
    for name, value in values.items():
        target: Any = leaf
        if hasattr(leaf, name):  # NUM_SELECTORS, REV_SLOTS
            setattr(leaf, name, value)
            continue
        parts = name.split("_")
        head = parts[0]
        if head.startswith("AGG"):
            target = leaf.AGG[int(head[3:])]
            field = "_".join(parts[1:])
        elif head.startswith("MK"):
            target = leaf.MK[int(head[2:])]
            field = "_".join(parts[1:])
        else:
            target = leaf.S[int(head[1:])]
            rest = parts[1:]
            if rest[0][0] in "MBA" and rest[0][1:].isdigit():
                target = getattr(target, rest[0][0])[int(rest[0][1:])]
                rest = rest[1:]
            field = "_".join(rest)
        setattr(target, field, value)


def _write_seeds(module: Any, seeds: codegen.Seeds, bit: int) -> None:
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
        for value, bits in codegen.range_prefixes(low, high):
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
    for name in (b"str_lpm", b"addr_lpm", b"range_lpm", b"sub_lpm"):
        try:
            table = module[name]
        except KeyError:  # sub_lpm: only in programs with SubString matchers
            continue
        for key in [k for k in table if (_be32(k.matcher) & GENERATION_BIT) == tag]:
            del table[key]
    integers = module[b"int_set"]
    for key in [k for k in integers if (k.matcher & GENERATION_BIT) == tag]:
        del integers[key]


def _reset_series(module: Any, sid: int, name: bytes, *, overflow: bool = True) -> None:
    """Empty series id ``sid`` (entries and count); with ``overflow``, seed its overflow entry."""
    table = module[name]
    for key in [k for k in table if k.slot == sid]:
        del table[key]
    module[b"series"][ctypes.c_int(sid)] = ctypes.c_uint64(0)
    if overflow:
        key = table.Key()
        key.slot, key.overflow = sid, 1
        table[key] = table.Leaf()


def _agg_table(agg: codegen.AggSlot) -> bytes:
    return b"hist" if agg.value >= abi.ValueKind.HIST_EXP2 else b"agg"


def _s64(value: int) -> int:
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


@dataclasses.dataclass
class Stub:
    """The permanent program on a hook: a tail call through ``slot``, attached by a BPF
    link. Pinned (``pin``), the link and the slot outlive the agent: the hook keeps
    running its program while no agent is there, and the next agent adopts it."""

    slot_fd: int
    link_fd: int
    pin: Path | None
    copy: _Copy | None = None  # the stub program this agent loaded (None: adopted)
    adopted: bool = False

    def swap(self, loaded: Loaded) -> None:
        _set_slot(self.slot_fd, loaded.fd)

    def program_ids(self) -> list[int]:
        info = _LinkInfo()
        size, address = ctypes.sizeof(info), ctypes.addressof(info)
        _bpf(_BPF_OBJ_GET_INFO_BY_FD, _InfoAttr(bpf_fd=self.link_fd, info_len=size, info=address))
        return [int(info.prog_id)]

    def close(self, *, detach: bool = True) -> None:
        """Close this agent's handles; with ``detach``, remove the pins too, so the hook
        is detached once nothing else holds them."""
        if detach and self.pin is not None:
            remove_pins(self.pin)
        for fd in (self.link_fd, self.slot_fd):
            os.close(fd)
        if self.copy is not None:
            self.copy.cleanup()


class _LinkInfo(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("id", ctypes.c_uint32),
        ("prog_id", ctypes.c_uint32),
        ("rest", ctypes.c_uint8 * 52),
    ]


def attach_stub(program: Program, first: Loaded, *, pin: Path | None = None) -> Stub:
    """Attach the hook's stub with ``first`` in its slot, or adopt the stub a previous
    agent pinned at ``pin`` and put ``first`` in its slot; raises LoadError."""
    if pin is not None and (pin / "link").exists() and (pin / "slot").exists():
        try:
            stub = Stub(_obj_get(pin / "slot"), _obj_get(pin / "link"), pin, adopted=True)
            stub.swap(first)
        except OSError as error:
            raise LoadError("attach", f"adopting {pin}: {error}") from error
        return stub
    template, _ = _compiled(("stub", True), codegen.STUB_SOURCE, [], b"weir_stub")
    copy = _Copy(template)
    fd, (reason, log) = copy._load(_PROG_TYPES[program.kind], b"weir_stub")
    if fd < 0:
        copy.cleanup()
        raise LoadError("verify", f"stub: {reason}", log_tail(log))
    slot_fd = copy.fds[template.map_fds[0]]
    try:
        _set_slot(slot_fd, first.fd)
        if program.kind == "raw_tracepoint":  # the open returns the link
            link = _raw_tracepoint_open(fd, program.target[0].split(":", 1)[1])
        else:
            event = _perf_event(program)
    except OSError as error:
        copy.cleanup()
        raise LoadError("attach", str(error)) from error
    except LoadError:
        copy.cleanup()
        raise
    if program.kind != "raw_tracepoint":
        try:
            link = _link_create(fd, event)
        except OSError as error:
            copy.cleanup()
            raise LoadError("attach", f"BPF_LINK_CREATE: {error}") from error
        finally:
            os.close(event)
    stub = Stub(os.dup(slot_fd), link, pin, copy=copy)
    if pin is not None:
        try:
            pin.mkdir(parents=True, exist_ok=True)
            _obj_pin(stub.slot_fd, pin / "slot")
            _obj_pin(stub.link_fd, pin / "link")
        except OSError as error:
            stub.close()
            raise LoadError("attach", f"pinning under {pin}: {error}") from error
    return stub


def remove_pins(path: Path) -> None:
    """Remove a pin directory; its objects go once no program or fd holds them (the
    link's pin first, so the hook is detached before anything else goes)."""
    if not path.exists():
        return
    link = path / "link"
    if link.exists():
        link.unlink()
    for child in sorted(path.iterdir()):
        if child.is_dir():
            remove_pins(child)
        else:
            child.unlink()
    path.rmdir()


# --- perf events and links -------------------------------------------------------------
_SYS_PERF_EVENT_OPEN = {"x86_64": 298, "aarch64": 241}.get(platform.machine(), 298)
_PERF_TYPE_TRACEPOINT = 2
_PERF_FLAG_FD_CLOEXEC = 8
_PMUS = Path("/sys/bus/event_source/devices")
TRACEFS_EVENTS = Path("/sys/kernel/tracing/events")


class _PerfAttr(ctypes.Structure):
    _fields_ = [
        ("type", ctypes.c_uint32),
        ("size", ctypes.c_uint32),
        ("config", ctypes.c_uint64),
        ("sample_period", ctypes.c_uint64),
        ("sample_type", ctypes.c_uint64),
        ("read_format", ctypes.c_uint64),
        ("flags", ctypes.c_uint64),
        ("wakeup_events", ctypes.c_uint32),
        ("bp_type", ctypes.c_uint32),
        ("config1", ctypes.c_uint64),
        ("config2", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 56),
    ]


class _LinkAttr(ctypes.Structure):
    _fields_ = [
        ("prog_fd", ctypes.c_uint32),
        ("target_fd", ctypes.c_uint32),
        ("attach_type", ctypes.c_uint32),
        ("flags", ctypes.c_uint32),
        ("bpf_cookie", ctypes.c_uint64),
        ("rest", ctypes.c_uint8 * 32),
    ]


def _perf_event(program: Program) -> int:
    """A perf event on the program's hook, for a BPF link; raises OSError or LoadError."""
    attr = _PerfAttr(size=112, sample_period=1, wakeup_events=1)
    name: Any = None  # a string the kernel reads through config1, alive until the call
    kind, target = program.kind, program.target
    if kind == "tracepoint":
        subsystem, event = target[0].split(":", 1)
        attr.type = _PERF_TYPE_TRACEPOINT
        attr.config = int((TRACEFS_EVENTS / subsystem / event / "id").read_text())
    else:
        pmu = _PMUS / ("kprobe" if kind.startswith("k") else "uprobe")
        if not (pmu / "type").exists():
            raise LoadError("attach", f"this kernel has no {pmu.name} PMU ({pmu})")
        attr.type = int((pmu / "type").read_text())
        if kind.endswith("retprobe"):
            bit = (pmu / "format" / "retprobe").read_text().strip().split(":")[1]
            attr.config = 1 << int(bit)
        if pmu.name == "kprobe":
            name = ctypes.create_string_buffer(target[0].encode())
            attr.config1, attr.config2 = ctypes.addressof(name), 0
        elif target[1][0] in "+@":  # a file offset (and its USDT semaphore's), an address
            path, offset = target[0], int(target[1][1:], 16)
            if target[1].startswith("@"):
                try:
                    offset = attachable.file_offset(path, offset)
                except (OSError, ValueError, ELFError) as error:
                    raise LoadError("attach", str(error)) from None
            if len(target) > 2:
                bit = (pmu / "format" / "ref_ctr_offset").read_text().strip().split(":")[1]
                attr.config |= int(target[2], 16) << int(bit.split("-")[0])
            name = ctypes.create_string_buffer(path.encode())
            attr.config1, attr.config2 = ctypes.addressof(name), offset
        else:
            try:
                path, offset = BPF._check_path_symbol(
                    target[0].encode(), target[1].encode(), None, -1
                )
            except Exception as error:  # bcc raises bare Exception
                raise LoadError("attach", str(error)) from None
            name = ctypes.create_string_buffer(path if isinstance(path, bytes) else path.encode())
            attr.config1, attr.config2 = ctypes.addressof(name), int(offset)
    flags = _PERF_FLAG_FD_CLOEXEC
    fd = int(_libc.syscall(_SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, 0, -1, flags))
    del name
    if fd < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"perf_event_open on {':'.join(target)}: {os.strerror(number)}")
    return fd


class _RawTracepointAttr(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_uint64),
        ("prog_fd", ctypes.c_uint32),
        ("pad", ctypes.c_uint32),
        ("cookie", ctypes.c_uint64),
    ]


def _raw_tracepoint_open(prog_fd: int, event: str) -> int:
    """Attach a raw tracepoint program; the fd is its link (pinnable, like the others)."""
    name = ctypes.create_string_buffer(event.encode())
    attr = _RawTracepointAttr(name=ctypes.addressof(name), prog_fd=prog_fd)
    try:
        return _bpf(_BPF_RAW_TRACEPOINT_OPEN, attr)
    except OSError as error:
        raise OSError(error.errno, f"raw tracepoint {event}: {error.strerror}") from None


def _link_create(prog_fd: int, event_fd: int) -> int:
    attr = _LinkAttr(prog_fd=prog_fd, target_fd=event_fd, attach_type=_BPF_PERF_EVENT)
    return _bpf(_BPF_LINK_CREATE, attr)


# --- reading ---------------------------------------------------------------------------
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


def read_aggregation(loaded: Loaded, agg: codegen.AggSlot) -> list[AggEntry]:
    table = loaded.module[_agg_table(agg)]
    sid = loaded.series_id(agg)
    entries = []
    for key, leaf in table.items():
        if key.slot != sid:
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
    return entries


# --- executables (matchBinaries, groupBy binary) ---------------------------------------
@dataclasses.dataclass
class ExecTracker:
    module: Any

    def paths(self) -> dict[int, str]:
        """binary hash → path, for the processes the kernel has seen exec."""
        table = self.module[b"weir_exes"]
        return {
            int(leaf.hash): bytes(leaf.path.s).split(b"\0", 1)[0].decode(errors="replace")
            for _, leaf in table.items()
        }

    def correlation(self) -> dict[str, CorrelationMap]:
        """marks and clocks: capacity, entries now, and entries LRU evicted (added minus
        deleted minus present, from the counters every program keeps in weir_corr_stats)."""
        counters = self.module[b"weir_corr_stats"]

        def total(which: abi.Corr) -> int:
            return int(counters.sum(ctypes.c_int(int(which))).value)

        out = {}
        for name, table, added, deleted, capacity in (
            ("marks", b"weir_marks", abi.Corr.MARKS_ADDED, abi.Corr.MARKS_DELETED, limits.MARKS),
            (
                "clocks",
                b"weir_starts",
                abi.Corr.CLOCKS_ADDED,
                abi.Corr.CLOCKS_DELETED,
                limits.DURATION_STARTS,
            ),
        ):
            present = sum(1 for _ in self.module[table])
            gone = total(added) - total(deleted) - present
            out[name] = CorrelationMap(capacity=capacity, entries=present, evicted=max(0, gone))
        return out

    def close(self) -> None:
        self.module.cleanup()


@dataclasses.dataclass(frozen=True)
class CorrelationMap:
    """A shared correlation map (marks, duration clocks) as the agent exports it."""

    capacity: int
    entries: int
    evicted: int  # taken by LRU eviction: added, never deleted, no longer present


_tracker: ExecTracker | None = None
_tracker_lock = threading.Lock()


def exec_tracker() -> ExecTracker:
    """The process's one exec tracker, started on first use and kept for its lifetime.

    bcc registers shared tables (weir_exes) by name for the whole process; closing
    the module that owns one leaves later ``extern`` users pointing at a dead map,
    so the tracker is never closed while the process lives."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = start_exec_tracker()
        return _tracker


def tracker_cflags(layout: Mapping[str, int | str]) -> list[str]:
    """exec.bpf.c's flags: with the task's layout (USE_TASK) when this kernel's BTF gives
    all of it, so that it records each process's namespaces and capabilities and gives
    forked processes their parent's entry; without, executables only."""
    fields = btf.TASK_FIELDS
    known = all(isinstance(layout.get(name), int) for name in fields)
    flags = {name: layout[name] if known else 0 for name in fields}
    return [
        *codegen.base_cflags(),
        f"-DUSE_TASK={int(known)}",
        *(f"-D{name}={int(value)}" for name, value in flags.items()),
    ]


def _started_state(entry: Path) -> tuple[list[int], list[int]] | None:
    """A running process's capability sets (abi.CapSet order) and namespace inode
    numbers (abi.Namespace order) from /proc, for processes started before the agent."""
    try:
        fields = dict(line.split(":", 1) for line in (entry / "status").read_text().splitlines())
        caps = [int(fields[name], 16) for name in ("CapEff", "CapInh", "CapPrm")]
        ns = [0] * len(abi.Namespace)
        for which, name in abi.NAMESPACE_FILES.items():
            try:
                ns[which] = os.stat(entry / "ns" / name).st_ino
            except OSError:
                ns[which] = 0  # a namespace kind this kernel does not have
        return caps, ns
    except (OSError, KeyError, ValueError):
        return None


def start_exec_tracker(*, proc: Path = Path("/proc")) -> ExecTracker:
    """Load exec.bpf.c (shared table weir_exes) and seed it from /proc: each process's
    executable, and its namespaces and capabilities as they are now (what it had when it
    started is not known). Use ``exec_tracker()``: one per process."""
    source = str(codegen.BPF_DIR / codegen.EXEC_SOURCE)
    failed: str | None = None
    with _captured_stderr() as log:
        try:
            module = BPF(src_file=source.encode(), cflags=tracker_cflags(btf.kernel_layout()))
        except Exception as error:  # bcc raises bare Exception
            failed = str(error)
    if failed is not None:  # the compiler's words are in the log once the block is left
        raise LoadError("compile", f"exec tracker: {failed}", log_tail(log[0]))
    table = module[b"weir_exes"]
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            path = os.readlink(entry / "exe").encode()
        except OSError:
            continue
        path = path[: abi.MAX_STR - 1]
        leaf = table.Leaf()
        leaf.hash = abi.fnv1a64(path)
        ctypes.memmove(ctypes.addressof(leaf.path) + 8, path, len(path))
        state = _started_state(entry)
        if state is not None:
            caps, ns = state
            for i, value in enumerate(caps):
                leaf.caps[i] = value
            for i, value in enumerate(ns):
                leaf.ns[i] = value
            leaf.started = 1
        table[ctypes.c_uint32(int(entry.name))] = leaf
    return ExecTracker(module=module)


# --- posted events and stacks ------------------------------------------------------------
def event_size(program: Program) -> int:
    """sizeof(struct weir_event) for a posting program (what each ring record holds)."""
    return ctypes.sizeof(abi.event_type(dict(program.flags)))


def open_ring(loaded: Loaded) -> ringbuf.RingReader:
    """Map a posting program's ring buffer for reading (``loaded.ring``)."""
    table = loaded.module[b"events"]
    pages = int(dict(loaded.program.flags)["RINGBUF_PAGES"])
    loaded.ring = ringbuf.RingReader(
        table.map_fd, size=pages * ringbuf.PAGE, record_size=event_size(loaded.program)
    )
    return loaded.ring


def ksym(address: int) -> str:
    """A kernel address as symbol+offset (from /proc/kallsyms, through bcc's cache)."""
    return str(BPF.ksym(address, show_offset=True).decode(errors="replace"))


def set_scope(loaded: Loaded, cgroup_ids: set[int]) -> None:
    """Make the program's scope map hold exactly these cgroup ids."""
    table = loaded.module[b"scope"]
    current = {int(key.value) for key in table}
    for gone in current - cgroup_ids:
        del table[ctypes.c_uint64(gone)]
    for new in cgroup_ids - current:
        table[ctypes.c_uint64(new)] = ctypes.c_uint8(1)
