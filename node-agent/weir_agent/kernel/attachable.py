"""Whether a verified program could attach here, without attaching it (``weir check``).

The verifier accepts a kprobe on a function this kernel does not have, and a uprobe on a
binary that is not there: the failure would come only at attach time, on the node. This
looks first: the kernel function in kallsyms and, when readable, in
available_filter_functions (traceable, not inlined or notrace); the binary and its symbol
in the ELF symbol tables; a kprobe or uprobe PMU on this kernel.
"""

from __future__ import annotations

import functools
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile

from weir_agent.spec.programs import Program

PMUS = Path("/sys/bus/event_source/devices")
TRACEFS = Path("/sys/kernel/tracing")
KALLSYMS = Path("/proc/kallsyms")


def check(program: Program) -> tuple[list[str], list[str]]:
    """(problems, notes): a problem means it can never attach as written; a note, that it
    cannot on this host (no kprobe support) though it may on another."""
    if program.kind in {"kprobe", "kretprobe"}:
        return _kernel_function(program.target[0])
    if program.kind in {"uprobe", "uretprobe"}:
        path, symbol = program.target[:2]
        if symbol.startswith("+"):  # a file offset
            return _file_offset(path, int(symbol[1:], 16)), _pmu("uprobe")
        if symbol.startswith("@"):  # a virtual address
            try:
                file_offset(path, int(symbol[1:], 16))
            except (OSError, ELFError, ValueError) as error:
                return [str(error)], _pmu("uprobe")
            return [], _pmu("uprobe")
        return _user_function(path, symbol), _pmu("uprobe")
    if program.kind == "raw_tracepoint":
        subsystem, event = program.target[0].split(":", 1)
        if not (TRACEFS / "events" / subsystem / event).is_dir():
            return [f"this kernel has no tracepoint {subsystem}:{event} (see {TRACEFS})"], []
    return [], []


def _pmu(name: str) -> list[str]:
    if (PMUS / name / "type").exists():
        return []
    return [f"cannot attach on this kernel: no {name} support (no {PMUS / name})"]


def _kernel_function(name: str) -> tuple[list[str], list[str]]:
    notes = _pmu("kprobe")
    known = kernel_functions()
    if known is not None and name not in known:
        return [f"kernel function {name} does not exist on this kernel (not in {KALLSYMS})"], notes
    traceable = traceable_functions()
    if traceable is not None and name not in traceable:
        return [
            f"kernel function {name} cannot be traced (inlined or notrace: not in "
            f"{TRACEFS / 'available_filter_functions'})"
        ], notes
    return [], notes


@functools.cache
def kernel_functions() -> frozenset[str] | None:
    """Text symbols in kallsyms (None when unreadable)."""
    try:
        lines = KALLSYMS.read_text().splitlines()
    except OSError:
        return None
    return frozenset(
        parts[2] for line in lines if len(parts := line.split()) >= 3 and parts[1] in "tT"
    )


@functools.cache
def traceable_functions() -> frozenset[str] | None:
    """available_filter_functions (None when unreadable, e.g. under lockdown)."""
    try:
        lines = (TRACEFS / "available_filter_functions").read_text().splitlines()
    except OSError:
        return None
    return frozenset(line.split()[0] for line in lines if line.strip())


def file_offset(path: str, address: int) -> int:
    """Where a virtual address of an ELF binary is in its file (through the loadable
    segment that maps it); raises OSError, ELFError or ValueError."""
    with open(path, "rb") as stream:
        for segment in ELFFile(stream).iter_segments():
            start, size = segment["p_vaddr"], segment["p_memsz"]
            if segment["p_type"] == "PT_LOAD" and start <= address < start + size:
                return int(address - start + segment["p_offset"])
    raise ValueError(f"address {address:#x} is in no loadable segment of {path}")


def _file_offset(path: str, offset: int) -> list[str]:
    try:
        size = Path(path).stat().st_size
    except FileNotFoundError:
        return [f"{path} does not exist on this host"]
    except OSError as error:
        return [f"{path} cannot be read: {error}"]
    return [] if offset < size else [f"offset {offset:#x} is past the end of {path}"]


def _user_function(path: str, symbol: str) -> list[str]:
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            for table_name in (".symtab", ".dynsym"):
                table = elf.get_section_by_name(table_name)
                if table is None:
                    continue
                for entry in table.iter_symbols():  # type: ignore[attr-defined]
                    if entry.name == symbol or entry.name.split("@")[0] == symbol:
                        return []
    except FileNotFoundError:
        return [f"{path} does not exist on this host"]
    except (OSError, ELFError) as error:
        return [f"{path} is not a readable ELF binary: {error}"]
    return [f"{path} has no symbol {symbol} (in .symtab or .dynsym)"]
