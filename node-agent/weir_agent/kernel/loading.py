"""Compile (in a child process, cached) and load through the verifier.

Each shape of bpf/hook.bpf.c is compiled once, by compiler.py in a child process, into a
``Compiled`` (objects.py): instructions and map definitions, kept in memory and, with
``CACHE_DIR``, on disk, keyed by the sources, the flags, the kernel, the headers and bcc.
Every program of that shape is a ``Copy``: the instructions with maps of its own, loaded
through the verifier and given its first configuration (configuring.py). The stub each
hook runs (attaching.py) and the exec tracker come the same way. With a pin directory a
copy's maps are pinned in bpffs, and the next agent adopts them.

The compiler's diagnostics are the child's stderr; loads ask for the verifier's log into
their own buffer, and only when they fail.
"""

from __future__ import annotations

import contextlib
import ctypes
import dataclasses
import functools
import hashlib
import importlib.util
import json
import logging
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from elftools.common.exceptions import ELFError

from weir_agent.kernel import attachable, bpf, configuring, headers, objects, ringbuf
from weir_agent.kernel.handles import CorrelationMap, Loaded, LoadError
from weir_agent.spec import abi, btf, programs
from weir_agent.spec.programs import Program
from weir_api import limits

log = logging.getLogger(__name__)

_PROCESSED = re.compile(r"processed (\d+) insns")
LOG_TAIL_LINES = 40
LOG_TAIL_BYTES = 4000


def log_tail(text: str) -> str:
    """The verifier's last lines (where it says why), bounded for reports."""
    lines = [line for line in text.splitlines() if not line.startswith("Running from kernel")]
    tail = "\n".join(lines[-LOG_TAIL_LINES:])
    return tail[-LOG_TAIL_BYTES:]


def headers_state() -> str:
    """btf, host, kheaders, baked, fallback or missing (see headers.py); points the
    compiler at them."""
    found = headers.locate(platform.release())
    headers.use(found)
    return found.state


# Program types (the kernel's enum bpf_prog_type).
PROG_KPROBE, PROG_TRACEPOINT, PROG_RAW_TRACEPOINT = 2, 5, 17
_PROG_TYPES = {
    "tracepoint": PROG_TRACEPOINT,
    "kprobe": PROG_KPROBE,
    "kretprobe": PROG_KPROBE,
    "uprobe": PROG_KPROBE,
    "uretprobe": PROG_KPROBE,
    "raw_tracepoint": PROG_RAW_TRACEPOINT,
}


def compile_and_load(
    program: Program, *, configured: bool = True, pin: Path | None = None
) -> Loaded:
    """Load ``program`` through the verifier with maps of its own; raises LoadError.

    Compiled with its shape flags (or, ``configured=False``, every flag: the
    specialised build the benchmark compares) once per shape: later programs of the
    same shape load the same instructions with fresh maps, with no compile. With
    ``pin``, the maps live there: an earlier agent's maps of this shape are adopted,
    with their counts and their configuration."""
    cflags = program.cflags(configured=configured)
    compiled, compile_ms = compile_source(programs.HOOK_SOURCE, cflags)
    started = time.monotonic()
    shared = _shared_maps(compiled, HOOK_FUNCTION)
    try:
        module = Copy(compiled, pin, shared)
    except OSError as error:
        raise LoadError("verify", f"creating maps failed: {error}") from error
    key = _cache_key(programs.HOOK_SOURCE, cflags)
    fd, reason, verifier_log = module.adopt_program(key), "", ""
    if fd < 0:
        fd, reason, verifier_log = module.load(HOOK_FUNCTION, _PROG_TYPES[program.kind])
        if fd >= 0:
            module.pin_program(key)
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


# --- one compile per shape, in a child, cached -------------------------------------------
HOOK_FUNCTION = "weir_program"
STUB_FUNCTION = "weir_stub"
# Maps every program uses as they are: the exec tracker's, given to programs by name.
SHARED_MAPS = ("weir_exes", "weir_entries", "weir_starts", "weir_marks", "weir_corr_stats")
COMPILE_TIMEOUT = 600.0  # seconds; a compile that takes longer is killed
KEPT_IN_MEMORY = 64  # compiled shapes kept in memory (a few hundred KiB each)
CACHE_DIR: Path | None = None  # compiled shapes kept on disk (set by the agent)

_compiled: dict[str, objects.Compiled] = {}
_compiling: dict[str, threading.Lock] = {}  # one compile per key at a time
_compiled_lock = threading.Lock()


def forget_compiled() -> None:
    """Drop the compiled shapes kept in memory (the benchmark measures a compile)."""
    with _compiled_lock:
        _compiled.clear()


@functools.cache
def _sources_digest() -> str:
    """The C sources' contents, and what compiles them (bcc's package, the kernel)."""
    digest = hashlib.sha256()
    for path in sorted(programs.BPF_DIR.iterdir()):
        if path.suffix in (".c", ".h"):
            digest.update(path.name.encode() + b"\0" + path.read_bytes())
    spec = importlib.util.find_spec("bcc")
    if spec is not None and spec.origin is not None:
        stat = os.stat(spec.origin)
        digest.update(f"bcc {stat.st_size} {stat.st_mtime_ns}".encode())
    digest.update(platform.release().encode() + platform.version().encode())
    with contextlib.suppress(OSError):
        stat = os.stat("/sys/kernel/btf/vmlinux")
        digest.update(f"btf {stat.st_size}".encode())
    return digest.hexdigest()


def _cache_key(source_name: str, cflags: list[str]) -> str:
    text = json.dumps(
        [_sources_digest(), source_name, cflags, os.environ.get("BCC_KERNEL_SOURCE", "")]
    )
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def _cache_dir() -> Path | None:
    """CACHE_DIR when only this user can write it (what it holds gets loaded as root)."""
    if CACHE_DIR is None:
        return None
    try:
        CACHE_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
        stat = CACHE_DIR.stat()
    except OSError as error:
        log.warning("compile cache %s unusable: %s", CACHE_DIR, error)
        return None
    if stat.st_uid != os.geteuid() or stat.st_mode & 0o022:
        log.warning("compile cache %s is not this user's alone; not using it", CACHE_DIR)
        return None
    return CACHE_DIR


def compile_source(source_name: str, cflags: list[str]) -> tuple[objects.Compiled, float]:
    """The compiled source and the milliseconds compiling took (0: from memory or disk);
    raises LoadError."""
    key = _cache_key(source_name, cflags)
    with _compiled_lock:
        if key in _compiled:
            _compiled[key] = _compiled.pop(key)  # most recently used last
            return _compiled[key], 0.0
        lock = _compiling.setdefault(key, threading.Lock())
    with lock:  # another thread may be compiling this very shape
        with _compiled_lock:
            if key in _compiled:
                return _compiled[key], 0.0
        cache = _cache_dir()
        compiled, took = None, 0.0
        if cache is not None:
            with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
                compiled = objects.Compiled.from_json((cache / f"{key}.json").read_text())
        if compiled is None:
            started = time.monotonic()
            compiled = _compile_in_child(source_name, cflags)
            took = (time.monotonic() - started) * 1000
            if cache is not None:
                _store(cache / f"{key}.json", compiled.to_json())
        with _compiled_lock:
            _compiled[key] = compiled
            while len(_compiled) > KEPT_IN_MEMORY:
                _compiled.pop(next(iter(_compiled)))
            _compiling.pop(key, None)
        return compiled, took


def _store(path: Path, text: str) -> None:
    try:
        with tempfile.NamedTemporaryFile("w", dir=path.parent, delete=False) as out:
            out.write(text)
        os.replace(out.name, path)  # whole or not at all, for agents reading meanwhile
    except OSError as error:
        log.warning("compile cache: cannot write %s: %s", path, error)


def _compile_in_child(source_name: str, cflags: list[str]) -> objects.Compiled:
    found = headers.locate(platform.release())
    if found.state == "missing":
        raise LoadError("compile", found.problem)
    headers.use(found)
    request = json.dumps({"source": str(programs.BPF_DIR / source_name), "cflags": cflags})
    try:
        child = subprocess.run(
            [sys.executable, "-m", "weir_agent.kernel.compiler"],
            input=request, capture_output=True, text=True, timeout=COMPILE_TIMEOUT,
            check=False, cwd="/",
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise LoadError("compile", f"the compiler took more than {COMPILE_TIMEOUT:.0f} s") from None
    except OSError as error:
        raise LoadError("compile", f"cannot run the compiler: {error}") from None
    if child.returncode == 0:
        try:
            return objects.Compiled.from_json(child.stdout)
        except (ValueError, KeyError, TypeError) as error:
            raise LoadError("compile", f"the compiler's output is unreadable: {error}") from None
    try:
        message = str(json.loads(child.stdout)["error"])
    except (ValueError, KeyError, TypeError):
        status = child.returncode
        message = (
            f"the compiler was killed by signal {-status}" if status < 0
            else f"the compiler exited with status {status}"
        )  # fmt: skip
    raise LoadError("compile", message, log_tail(child.stderr))


def _shared_maps(compiled: objects.Compiled, function: str) -> dict[str, int]:
    """The exec tracker's maps, by name, when ``function`` uses any of them."""
    names = {compiled.maps[i].name for i in compiled.used(function)}
    if not names & set(SHARED_MAPS):
        return {}
    tracker = exec_tracker()
    return {name: tracker.module.fd(name) for name in SHARED_MAPS}


class Copy(objects.Instance):
    """A hook's program of a compiled shape with maps of its own (objects.Instance), and,
    pinned, ``weir_meta``: what its maps were configured for, for the next agent."""

    def __init__(
        self, compiled: objects.Compiled, pin: Path | None, shared: Mapping[str, int]
    ) -> None:
        super().__init__(compiled, (HOOK_FUNCTION,), pin=pin, shared=shared)
        self.pin = pin
        self.meta_fd = -1
        if pin is None:
            return
        try:
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
            self.close()
            raise

    def adopt_program(self, key: str) -> int:
        """The program an earlier agent pinned here, when it was compiled from the same
        key and uses exactly these maps (no verifier run); -1 when there is none."""
        path = self.pin / f"prog_{key[:16]}" if self.pin is not None else None
        if path is None or not self.adopted or not path.exists():
            return -1
        try:
            fd = bpf.obj_get(path)
        except OSError:
            return -1
        try:
            mine = {int(bpf.map_info(f).id) for f in self.fds.values()}
            if bpf.prog_map_ids(fd) == mine:
                self.prog_fds[HOOK_FUNCTION] = fd
                return fd
        except OSError:
            pass
        os.close(fd)
        return -1

    def pin_program(self, key: str) -> None:
        """Pin the loaded program (in place of any other) for the next agent to adopt."""
        if self.pin is None:
            return
        for old in self.pin.glob("prog_*"):
            old.unlink()
        with contextlib.suppress(OSError):  # a later agent then verifies it again
            bpf.obj_pin(self.prog_fds[HOOK_FUNCTION], self.pin / f"prog_{key[:16]}")

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

    def close(self) -> None:
        super().close()
        if self.meta_fd >= 0:
            os.close(self.meta_fd)
            self.meta_fd = -1

    cleanup = close


def load_stub(program: Program) -> tuple[objects.Instance, int, int]:
    """The stub program for ``program``'s kind of hook, loaded with a slot of its own:
    (its instance, its fd, its slot's fd); raises LoadError."""
    compiled, _ = compile_source(programs.STUB_SOURCE, [])
    instance = objects.Instance(compiled, (STUB_FUNCTION,))
    fd, reason, verifier_log = instance.load(STUB_FUNCTION, _PROG_TYPES[program.kind])
    if fd < 0:
        instance.close()
        raise LoadError("verify", f"stub: {reason}", log_tail(verifier_log))
    return instance, fd, instance.fd("slot")


# --- perf events and links -------------------------------------------------------------
_PMUS = Path("/sys/bus/event_source/devices")
TRACEFS_EVENTS = Path("/sys/kernel/tracing/events")


def perf_event(program: Program) -> int:
    """A perf event on the program's hook, for a BPF link; raises OSError or LoadError."""
    return perf_event_on(program.kind, program.target)


def perf_event_on(kind: str, target: tuple[str, ...]) -> int:
    """A perf event on a hook (a tracepoint "sub:event", a kprobe's symbol, a uprobe's
    path and symbol or offset), for a BPF link; raises OSError or LoadError."""
    attr = bpf.PerfAttr(size=112, sample_period=1, wakeup_events=1)
    name: Any = None  # a string the kernel reads through config1, alive until the call
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
            from weir_agent.kernel import compiler  # bcc resolves symbols (imported when needed)

            try:
                path, offset = compiler.resolve_symbol(target[0], target[1])
            except Exception as error:  # bcc raises bare Exception
                raise LoadError("attach", str(error)) from None
            name = ctypes.create_string_buffer(path.encode())
            attr.config1, attr.config2 = ctypes.addressof(name), offset
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
    """bpf/exec.bpf.c loaded and attached: its maps (``module``) are the ones every
    program shares by name. Pinned (``pin``), its maps and links outlive the agent: it
    keeps recording executables and cgroups, and marks and clocks keep their entries,
    while no agent runs; the next agent adopts the maps."""

    module: objects.Instance
    links: list[int]
    pin: Path | None = None

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

    def unpin(self) -> None:
        if self.pin is not None:
            bpf.remove_pins(self.pin)

    def close(self, *, detach: bool = True) -> None:
        """Close this agent's handles; with ``detach``, remove the pins too."""
        if detach:
            self.unpin()
        for fd in self.links:
            os.close(fd)
        self.links = []
        self.module.close()


_tracker: ExecTracker | None = None
_tracker_lock = threading.Lock()


def exec_tracker(*, pin: Path | None = None) -> ExecTracker:
    """The process's one exec tracker, started on first use and kept for its lifetime
    (every program's shared maps are its); ``pin`` counts at the first call."""
    global _tracker
    with _tracker_lock:
        if _tracker is None:
            _tracker = start_exec_tracker(pin=pin)
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


def _tracker_hook(function: str) -> tuple[str, tuple[str, ...]]:
    """Where one of exec.bpf.c's functions attaches, from its name (bcc's convention)."""
    if function.startswith("tracepoint__"):
        return "tracepoint", (function.removeprefix("tracepoint__").replace("__", ":"),)
    if function.startswith("raw_tracepoint__"):
        return "raw_tracepoint", (function.removeprefix("raw_tracepoint__"),)
    raise LoadError("attach", f"exec tracker: no hook for {function}")


def start_exec_tracker(*, proc: Path = Path("/proc"), pin: Path | None = None) -> ExecTracker:
    """Load and attach exec.bpf.c, then seed weir_exes from /proc: each process's
    executable, and its namespaces and capabilities as they are now (what it had when it
    started is not known). With ``pin``, its maps are adopted from there (marks, clocks
    and what it recorded while no agent ran go on) or pinned there, and its links are
    pinned in place of an earlier agent's. Use ``exec_tracker()``: one per process."""
    compiled, _ = compile_source(programs.EXEC_SOURCE, tracker_cflags(btf.kernel_layout()))
    functions = tuple(sorted(compiled.functions))
    try:
        module = objects.Instance(compiled, functions, pin=pin, every=True)
    except OSError as error:
        raise LoadError("verify", f"exec tracker: creating maps failed: {error}") from error
    tracker = ExecTracker(module=module, links=[], pin=pin)
    try:
        for function in functions:
            kind, target = _tracker_hook(function)
            fd, reason, verifier_log = module.load(function, _PROG_TYPES[kind])
            if fd < 0:
                raise LoadError(
                    "verify", f"exec tracker {function}: {reason}", log_tail(verifier_log)
                )
            if kind == "raw_tracepoint":
                link = bpf.raw_tracepoint_open(fd, target[0])
            else:
                event = perf_event_on(kind, target)
                try:
                    link = bpf.link_create(fd, event)
                finally:
                    os.close(event)
            tracker.links.append(link)
            if pin is not None:  # the new link first, then the old one goes: no gap
                path = pin / "links" / function
                path.parent.mkdir(parents=True, exist_ok=True)
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()
                bpf.obj_pin(link, path)
    except OSError as error:
        tracker.close(detach=False)
        raise LoadError("attach", f"exec tracker: {error}") from error
    except LoadError:
        tracker.close(detach=False)
        raise
    _seed(module[b"weir_exes"], proc)
    return tracker


def _seed(table: objects.Table, proc: Path) -> None:
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
    from weir_agent.kernel import compiler  # bcc's symbol cache (imported when needed)

    return compiler.ksym(address)
