"""weir_api.values: every value users write is parsed before it reaches the kernel."""

from __future__ import annotations

import ipaddress

import pytest

from weir_api import values


@pytest.mark.parametrize(
    ("text", "arg_type", "expected"),
    [
        ("42", "int", 42),
        ("-1", "int", -1),
        ("0x1f", "uint32", 31),
        ("0b101", "uint8", 5),
        ("1_000", "size_t", 1000),
        ("18446744073709551615", "uint64", 2**64 - 1),
    ],
)
def test_parse_int(text: str, arg_type: str, expected: int) -> None:
    assert values.parse_int(text, arg_type) == expected


@pytest.mark.parametrize(
    ("text", "arg_type", "message"),
    [
        ("-1", "uint", "does not fit type uint"),
        ("256", "uint8", "range 0..255"),
        ("2147483648", "int", "does not fit"),
        ("ten", "int", "is not an integer"),
        ("1.5", "int", "is not an integer"),
        ("", "int", "is not an integer"),
    ],
)
def test_parse_int_rejects(text: str, arg_type: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        values.parse_int(text, arg_type)


def test_ranges_ports_and_networks() -> None:
    assert values.parse_int_range("1024:65535") == (1024, 65535)
    with pytest.raises(ValueError, match="empty"):
        values.parse_int_range("9:1")
    with pytest.raises(ValueError, match="LOW:HIGH"):
        values.parse_int_range("9")
    assert values.parse_port_range("443") == (443, 443)
    assert values.parse_port_range("8000:8080") == (8000, 8080)
    with pytest.raises(ValueError, match=r"0\.\.65535"):
        values.parse_port_range("70000")
    assert values.parse_network("10.1.2.3/8") == ipaddress.ip_network("10.0.0.0/8")
    assert values.parse_network("::1") == ipaddress.ip_network("::1/128")
    with pytest.raises(ValueError, match="not an IP address or CIDR"):
        values.parse_network("10.0.0.300")


def test_strings_are_bounded_and_nul_free() -> None:
    assert values.parse_string("/etc/") == b"/etc/"
    assert values.parse_string("é") == "é".encode()
    with pytest.raises(ValueError, match="NUL"):
        values.parse_string("a\x00b")
    with pytest.raises(ValueError, match="at most 247 bytes"):
        values.parse_string("x" * 248)
    with pytest.raises(ValueError, match="empty"):
        values.parse_string("")


def test_durations() -> None:
    assert values.parse_duration_ns("10s") == 10_000_000_000
    assert values.parse_duration_ns("1m") == 60_000_000_000
    assert values.parse_duration_ns("500ms") == 500_000_000
    assert values.parse_duration_ns("10") == 10_000_000_000  # seconds, as Tetragon reads it
    for bad in ("10x", "1d", "0ms", "25h", "-1s", "90000"):
        with pytest.raises(ValueError):
            values.parse_duration_ns(bad)


def test_operators_fit_types() -> None:
    assert "Prefix" in values.operators_for("filename")
    assert "Prefix" not in values.operators_for("int")
    assert "NotDAddr" in values.operators_for("sock")
    assert "NotDAddr" not in values.operators_for("string")
    assert set(values.ARG_TYPES) == (
        set(values.INTEGER_TYPES) | values.STRING_TYPES | values.ADDRESS_TYPES | values.NOP_TYPES
    )


def test_parse_match_values_names_the_bad_value() -> None:
    with pytest.raises(values.IndexedValueError) as caught:
        values.parse_match_values("DAddr", "sock", ["10.0.0.0/8", "nope"])
    assert caught.value.index == 1
    parsed = values.parse_match_values("InRange", "int", ["1:5", "10:20"])
    assert parsed.ranges == ((1, 5), (10, 20))


def test_the_syscall_table_is_generated_from_the_kernels_headers() -> None:
    import importlib.util
    import shutil
    from pathlib import Path

    from conftest import ROOT, require

    require(shutil.which("cpp") is not None, "cpp is needed to read the UAPI headers")
    require(Path("/usr/include/asm-generic/unistd.h").exists(), "no UAPI headers (linux-libc-dev)")
    spec = importlib.util.spec_from_file_location(
        "syscalls_table", ROOT / "scripts" / "syscalls_table.py"
    )
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    generated = ROOT / "api" / "weir_api" / "syscalls.py"
    assert module.render() == generated.read_text(), "syscalls.py is stale: run `make crds`"


def test_a_syscall_is_named_for_each_architecture() -> None:
    assert values.parse_syscall("syscall:sys_openat", "x86_64") == 257
    assert values.parse_syscall("syscall:openat", "aarch64") == 56
    assert values.parse_syscall("syscall:openat") == 257  # any: the first that has it
    with pytest.raises(ValueError, match="no syscall named 'open' on aarch64"):
        values.parse_syscall("syscall:open", "aarch64")
    with pytest.raises(ValueError, match="another ABI"):
        values.parse_syscall("syscall:i386/sys_dup")
    parsed = values.parse_match_values("InMap", "syscall64", ["syscall:dup", "7"], "x86_64")
    assert parsed.integers == (32, 7)
    with pytest.raises(ValueError, match=r"spec\.lists has no list of type syscalls named 'x'"):
        values.parse_match_values("InMap", "syscall64", ["list:x"])
