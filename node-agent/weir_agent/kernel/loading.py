"""Compile and load through the verifier: the only module that imports bcc.

Each shape of bpf/hook.bpf.c is compiled once, and every program of that shape is a
copy of its instructions with maps of its own (``Copy``), loaded through the verifier
and given its first configuration (configuring.py). The stub each hook runs
(attaching.py) and the exec tracker are compiled here too, and so are the perf events
whose uprobe targets bcc resolves. With a pin directory a copy's maps are pinned in
bpffs, and the next agent adopts them.

bcc writes compiler diagnostics to file descriptor 2; ``_captured_stderr``
redirects it to a temporary file during a compile, so the agent can report the
compiler's words. Loads ask for the verifier's log into their own buffer, and
only when they fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import os
import platform
import re
import struct
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from bcc import BPF
from bcc import table as bcc_table
from bcc.libbcc import lib as bcc_lib
from elftools.common.exceptions import ELFError

from weir_agent.kernel import attachable, bpf, configuring, headers, ringbuf
from weir_agent.kernel.handles import CorrelationMap, Loaded, LoadError
from weir_agent.spec import abi, btf, programs
from weir_agent.spec.programs import Program
from weir_api import limits

_PROCESSED = re.compile(r"processed (\d+) insns")
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 4000


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
        module = Copy(template, pin)
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
    info = bpf.prog_info(fd)
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
            configuring.adopt(result, program)
        elif configured:
            configuring.seed_classes(result)
            configuring.configure(result, program)  # the first: nothing to retire
        else:  # configuration 0 is compiled in: only seeds and series
            configuring.seed_classes(result)
            configuring.write_seeds(module, program.seeds, 0)
            for agg in program.aggregations:
                configuring.reset_series(module, agg.slot, agg.table)
    except Exception as error:
        result.close(detach=not module.adopted)  # adopted maps: a hook still runs on them
        raise LoadError("verify", f"configuring maps failed: {error!r}") from error
    return result


# --- one compile per shape ---------------------------------------------------------------
TEMPLATES_KEPT = 16  # compiled shapes kept (each holds its instructions and unused maps)
VERIFIER_LOG_BYTES = 1 << 20  # the kernel keeps the log's end when it is longer
# Maps every program uses as they are (the exec tracker's module owns them).
SHARED_MAPS = (b"weir_exes", b"weir_entries", b"weir_starts", b"weir_marks", b"weir_corr_stats")


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
    return _compiled(key, programs.HOOK_SOURCE, flags, b"weir_program")


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
        source = str(programs.BPF_DIR / source_name)
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
            if regs >> 4 == bpf.BPF_PSEUDO_MAP_FD:
                yield index, imm
            index += 2
        else:
            index += 1


class Copy:
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
                path = pin / bpf.map_info(fd).name.decode() if pin is not None else None
                if path is not None and path.exists():
                    self.fds[fd] = bpf.obj_get(path)
                    if not bpf.same_map(fd, self.fds[fd]):  # a pin from another layout
                        os.close(self.fds.pop(fd))
                        path.unlink()
                if fd not in self.fds:
                    self.adopted = False
                    self.fds[fd] = bpf.clone_map(fd)
                    if path is not None:
                        path.parent.mkdir(parents=True, exist_ok=True)
                        bpf.obj_pin(self.fds[fd], path)
            if pin is not None:  # what the maps were configured for, for the next agent
                meta = pin / "weir_meta"
                if meta.exists():
                    self.meta_fd = bpf.obj_get(meta)
                else:
                    self.meta_fd = bpf.call(bpf.BPF_MAP_CREATE, bpf.MapCreate(
                        map_type=bpf.BPF_MAP_TYPE_ARRAY, key_size=4, value_size=32,
                        max_entries=1, map_name=b"weir_meta"))  # fmt: skip
                    pin.mkdir(parents=True, exist_ok=True)
                    bpf.obj_pin(self.meta_fd, meta)
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
            attr = bpf.ElemAttr(
                map_fd=self.meta_fd, key=ctypes.addressof(key), value=ctypes.addressof(value)
            )
            bpf.call(bpf.BPF_MAP_UPDATE_ELEM, attr)

    def read_meta(self) -> str:
        if self.meta_fd < 0:
            return ""
        key, value = ctypes.c_uint32(0), ctypes.create_string_buffer(32)
        attr = bpf.ElemAttr(
            map_fd=self.meta_fd, key=ctypes.addressof(key), value=ctypes.addressof(value)
        )
        bpf.call(bpf.BPF_MAP_LOOKUP_ELEM, attr)
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
    trim = getattr(bpf.libc, "malloc_trim", None)
    if trim is not None:
        trim(0)


def load_stub(program: Program) -> tuple[Copy, int, int]:
    """The stub program for ``program``'s kind of hook, loaded with a slot of its own:
    (its copy, its fd, its slot's fd); raises LoadError."""
    template, _ = _compiled(("stub", True), programs.STUB_SOURCE, [], b"weir_stub")
    copy = Copy(template)
    fd, (reason, log) = copy._load(_PROG_TYPES[program.kind], b"weir_stub")
    if fd < 0:
        copy.cleanup()
        raise LoadError("verify", f"stub: {reason}", log_tail(log))
    return copy, fd, copy.fds[template.map_fds[0]]


# --- perf events and links -------------------------------------------------------------
_PMUS = Path("/sys/bus/event_source/devices")
TRACEFS_EVENTS = Path("/sys/kernel/tracing/events")


def perf_event(program: Program) -> int:
    """A perf event on the program's hook, for a BPF link; raises OSError or LoadError."""
    attr = bpf.PerfAttr(size=112, sample_period=1, wakeup_events=1)
    name: Any = None  # a string the kernel reads through config1, alive until the call
    kind, target = program.kind, program.target
    if kind == "tracepoint":
        subsystem, event = target[0].split(":", 1)
        attr.type = bpf.PERF_TYPE_TRACEPOINT
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
    flags = bpf.PERF_FLAG_FD_CLOEXEC
    fd = int(bpf.libc.syscall(bpf.SYS_PERF_EVENT_OPEN, ctypes.byref(attr), -1, 0, -1, flags))
    del name
    if fd < 0:
        number = ctypes.get_errno()
        raise OSError(number, f"perf_event_open on {':'.join(target)}: {os.strerror(number)}")
    return fd


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

    def cgroup_path(self, cgroup_id: int) -> str | None:
        """The path cgroup_mkdir gave for this cgroup v2 id, if the tracker saw it made
        (its tail, after '...', when longer than the map holds)."""
        table = self.module[b"weir_cgroups"]
        try:
            leaf = table[ctypes.c_uint64(cgroup_id)]
        except KeyError:
            return None
        path = bytes(leaf.path).split(b"\0", 1)[0].decode(errors="replace")
        return f"...{path}" if leaf.truncated else path

    def forget_cgroups(self, cgroup_ids: Iterable[int]) -> None:
        table = self.module[b"weir_cgroups"]
        for cgroup_id in cgroup_ids:
            with contextlib.suppress(KeyError):
                del table[ctypes.c_uint64(cgroup_id)]

    def close(self) -> None:
        self.module.cleanup()


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
        *programs.base_cflags(),
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
    source = str(programs.BPF_DIR / programs.EXEC_SOURCE)
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
