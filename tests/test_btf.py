"""Struct layouts from BTF: a blob built by hand, and this kernel's vmlinux checked
against bpftool's own reading of it."""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
from pathlib import Path

import pytest

from conftest import require
from weir_agent.spec import btf


def blob(types: list[bytes], names: list[str]) -> bytes:
    strings = b"\0" + b"".join(n.encode() + b"\0" for n in names)
    body = b"".join(types)
    header = struct.pack("<HBBIIIII", btf.MAGIC, 1, 0, 24, 0, len(body), len(body), len(strings))
    return header + body + strings


def name_off(names: list[str], name: str) -> int:
    return 1 + sum(len(n) + 1 for n in names[: names.index(name)])


def test_offsets_through_typedefs_and_anonymous_unions() -> None:
    names = ["int", "pair", "outer", "a", "b", "c", "inner_t"]
    n = lambda s: name_off(names, s)  # noqa: E731

    def kind(k: int, vlen: int = 0, kflag: int = 0) -> int:
        return (kflag << 31) | (k << 24) | vlen

    types = [
        struct.pack("<IIII", n("int"), kind(1), 4, 32),  # [1] int (4 extra bytes)
        # [2] anonymous struct { int a; int b; } (bit field form, kflag)
        struct.pack("<III", 0, kind(btf.STRUCT, 2, 1), 8)
        + struct.pack("<III", n("a"), 1, 0)
        + struct.pack("<III", n("b"), 1, (0 << 24) | 32),
        # [3] anonymous union { long pair; struct [2]; }
        struct.pack("<III", 0, kind(btf.UNION, 2), 8)
        + struct.pack("<III", n("pair"), 1, 0)
        + struct.pack("<III", 0, 2, 0),
        struct.pack("<III", n("inner_t"), kind(btf.TYPEDEF), 3),  # [4] typedef of [3]
        # [5] struct outer { int c; <anonymous [4]> at byte 8; }
        struct.pack("<III", n("outer"), kind(btf.STRUCT, 2), 16)
        + struct.pack("<III", n("c"), 1, 0)
        + struct.pack("<III", 0, 4, 64),
    ]
    data = blob(types, names)
    fields = {"A": ("outer", "a"), "B": ("outer", "b"), "C": ("outer", "c")}
    assert btf.offsets(data, fields) == {"A": 8, "B": 12, "C": 0}
    with pytest.raises(btf.BTFError, match="no field nope"):
        btf.offsets(data, {"X": ("outer", "nope")})
    with pytest.raises(btf.BTFError, match="no struct sock"):
        btf.offsets(data)
    with pytest.raises(btf.BTFError, match="bad magic"):
        btf.offsets(b"\0" * 24)


def bpftool_offsets(path: Path) -> dict[str, int]:
    """The same offsets, from `bpftool btf dump` text (another reader of the format)."""
    text = subprocess.run(
        ["bpftool", "btf", "dump", "file", str(path)], capture_output=True, text=True, check=True
    ).stdout
    header = re.compile(r"^\[(\d+)\] (\w+) '([^']*)'(?: type_id=(\d+))?")
    member = re.compile(r"^\t'([^']*)' type_id=(\d+) bits_offset=(\d+)")
    types: dict[int, tuple[str, str, int, list[tuple[str, int, int]]]] = {}
    current: list[tuple[str, int, int]] | None = None
    for line in text.splitlines():
        if found := header.match(line):
            ref = int(found[4]) if found[4] else 0
            current = []
            types[int(found[1])] = (found[2], found[3], ref, current)
        elif (found := member.match(line)) and current is not None:
            current.append((found[1], int(found[2]), int(found[3])))

    def find(type_id: int, field: str) -> tuple[int, int] | None:
        while types[type_id][0] not in ("STRUCT", "UNION"):
            type_id = types[type_id][2]
        for name, ref, bits in types[type_id][3]:
            if name == field:
                return bits, ref
            if name == "(anon)" and (inner := find(ref, field)):
                return bits + inner[0], inner[1]
        return None

    out = {}
    for flag, (struct_name, path_) in btf.SOCK_FIELDS.items():
        type_id = next(i for i, t in types.items() if t[:2] == ("STRUCT", struct_name))
        bits = 0
        for field in path_.split("."):
            found = find(type_id, field)
            assert found is not None, (struct_name, path_)
            bits, type_id = bits + found[0], found[1]
        out[flag] = bits // 8
    return out


def test_this_kernels_sock_layout_agrees_with_bpftool() -> None:
    require(btf.VMLINUX.exists(), f"{btf.VMLINUX} is missing (a kernel without BTF)")
    require(shutil.which("bpftool") is not None, "bpftool is not installed; run `make setup`")
    ours = btf.offsets(btf.VMLINUX.read_bytes())
    assert ours == bpftool_offsets(btf.VMLINUX)
    assert ours["SK_FAMILY"] != ours["SK_DPORT"]
