"""User stacks to function names, by build id, after the process is gone.

The kernel records user frames as (build id, file offset) pairs
(BPF_F_USER_BUILD_ID), not as addresses in a process's memory map, so a
crash can be symbolised long after the crashing process was reaped: we only
need a file with that build id. Candidate files come from the event itself
(the executable the exec tracker recorded), from /proc/PID/maps while the
process lives, and from every file seen before. Function names come from the
ELF symbol tables; file:line from ``addr2line`` when the binary has debug info
and binutils is installed.
"""

from __future__ import annotations

import bisect
import dataclasses
import os
import shutil
import subprocess
import threading
from pathlib import Path

from elftools.common.exceptions import ELFError
from elftools.elf.elffile import ELFFile


@dataclasses.dataclass(frozen=True)
class Frame:
    function: str
    module: str
    offset: int
    file: str = ""
    line: int = 0

    def to_json(self) -> dict[str, object]:
        out: dict[str, object] = {
            "function": self.function,
            "module": self.module,
            "offset": f"{self.offset:#x}",
        }
        if self.file:
            out["file"], out["line"] = self.file, self.line
        return out


@dataclasses.dataclass
class _Binary:
    path: str
    build_id: str
    segments: list[tuple[int, int, int]]  # (file offset, file size, vaddr)
    starts: list[int]
    symbols: list[tuple[int, int, str]]  # (start, size, name), sorted


def _load(path: str) -> _Binary | None:
    try:
        with open(path, "rb") as stream:
            elf = ELFFile(stream)
            build_id = ""
            for section in elf.iter_sections():
                if section.header["sh_type"] == "SHT_NOTE":
                    for note in section.iter_notes():  # type: ignore[attr-defined]
                        if note["n_type"] == "NT_GNU_BUILD_ID":
                            build_id = note["n_desc"]
            segments = [
                (seg["p_offset"], seg["p_filesz"], seg["p_vaddr"])
                for seg in elf.iter_segments()
                if seg["p_type"] == "PT_LOAD"
            ]
            symbols: dict[int, tuple[int, int, str]] = {}
            for name in (".symtab", ".dynsym"):
                table = elf.get_section_by_name(name)
                if table is None:
                    continue
                for symbol in table.iter_symbols():  # type: ignore[attr-defined]
                    if symbol["st_info"]["type"] == "STT_FUNC" and symbol["st_value"]:
                        start = int(symbol["st_value"])
                        symbols.setdefault(start, (start, int(symbol["st_size"]), symbol.name))
    except (OSError, ELFError, ValueError):
        return None
    ordered = sorted(symbols.values())
    return _Binary(path, build_id, segments, [s[0] for s in ordered], ordered)


class Symbolizer:
    """Caches binaries by build id and symbolises (build id, offset) frames."""

    def __init__(self) -> None:
        self._by_build_id: dict[str, _Binary] = {}
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()
        self._addr2line = shutil.which("addr2line")
        self._warmed = False

    def _warm(self) -> None:
        """Index the agent's own libraries (libc and friends, shared by many processes) when
        the first stack arrives: about 2 s of ELF parsing, kept off the path to Ready."""
        if not self._warmed:
            self._warmed = True
            self.learn_process(os.getpid())

    def learn(self, path: str) -> None:
        """Index a file (an executable or library) so its build id is known."""
        try:
            mtime = os.stat(path).st_mtime
        except OSError:
            return
        with self._lock:
            if self._seen.get(path) == mtime:
                return
            self._seen[path] = mtime
        binary = _load(path)
        if binary is not None and binary.build_id:
            with self._lock:
                self._by_build_id[binary.build_id] = binary

    def learn_process(self, pid: int) -> None:
        """Index the files mapped by a live process."""
        try:
            maps = Path(f"/proc/{pid}/maps").read_text()
        except OSError:
            return
        for line in maps.splitlines():
            parts = line.split(maxsplit=5)
            if len(parts) == 6 and parts[5].startswith("/"):
                self.learn(parts[5])

    def knows(self, build_id: str) -> bool:
        self._warm()
        with self._lock:
            return build_id in self._by_build_id

    def frame(self, build_id: str, offset: int) -> Frame:
        self._warm()
        with self._lock:
            binary = self._by_build_id.get(build_id)
        if binary is None:
            return Frame(function=f"[unknown build id {build_id[:16]}]", module="", offset=offset)
        vaddr = offset
        for file_offset, size, segment_vaddr in binary.segments:
            if file_offset <= offset < file_offset + size:
                vaddr = offset - file_offset + segment_vaddr
                break
        function = f"{os.path.basename(binary.path)}+{offset:#x}"
        index = bisect.bisect_right(binary.starts, vaddr) - 1
        if index >= 0:
            start, size, name = binary.symbols[index]
            if vaddr < start + max(size, 1):
                function = name
        source, line = self._source(binary.path, vaddr)
        return Frame(function=function, module=binary.path, offset=offset, file=source, line=line)

    def _source(self, path: str, vaddr: int) -> tuple[str, int]:
        if self._addr2line is None:
            return "", 0
        try:
            out = subprocess.run(
                [self._addr2line, "-e", path, f"{vaddr:#x}"],
                capture_output=True,
                text=True,
                timeout=5,
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return "", 0
        where, _, number = out.rpartition(":")
        number = number.split()[0] if number else ""
        if not where or where.startswith("??") or not number.isdigit() or number == "0":
            return "", 0
        return where, int(number)
